//! The task APIs: read a meter's digits ([`MeterReader`]) and find defects on a plate
//! ([`DefectInspector`]), from image files, encoded bytes or pixels. The pure pieces (decoding,
//! preprocessing, CTC decoding, connected components) are public here so they can be tested
//! and reused on their own.

mod defect;
mod image;
mod meter;

pub use self::defect::{
    DEFAULT_AREA_THRESHOLD_PCT, DefectInspector, Inspection, Region, connected_components,
    upsample_threshold,
};
pub use self::image::{
    DecodedImage, ImageLimits, ImageSource, decode_image, jpeg_downscale, push_unit_f32,
    resize_for_model,
};
pub use self::meter::{
    CtcToken, DigitReading, MeterReader, MeterReading, ctc_greedy, reading_from,
};

use crate::{Backend, Session};
use accel_core::ir::Dim;
use accel_core::{DType, Error, Graph, Result, Tensor, TensorView, passes};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A task's model: loaded and optimized once, compiled on first use so that `.threads(n)`
/// after construction does not compile twice.
pub(crate) struct TaskModel {
    path: PathBuf,
    graph: Graph,
    backend: String,
    threads: Option<usize>,
    pub(crate) limits: ImageLimits,
    /// Input width and height (NHWC, 3 channels).
    pub(crate) width: u32,
    pub(crate) height: u32,
    session: OnceLock<Session>,
}

/// An image decoded and resized into the batch: what the post-processing needs to know of it.
pub(crate) struct Prepared {
    pub name: String,
    /// Size of the decoded image (after any JPEG DCT downscaling).
    pub width: u32,
    pub height: u32,
    pub source_width: u32,
    pub source_height: u32,
}

fn model_err(path: &Path, what: &str) -> Error {
    Error::InvalidModel(format!("{}: {what}", path.display()))
}

impl TaskModel {
    /// Loads the model and checks that its input is one f32 NHWC RGB image of fixed size.
    /// The backend is checked here too, so an unavailable one fails at construction.
    pub(crate) fn load(path: &Path, backend: &Backend) -> Result<TaskModel> {
        let mut graph = accel_core::onnx::load_model(path)?;
        passes::optimize(&mut graph)?;
        let [input] = graph.inputs.as_slice() else {
            return Err(model_err(
                path,
                &format!(
                    "a task model takes one image input, this one has {}",
                    graph.inputs.len()
                ),
            ));
        };
        let dims: Vec<Option<usize>> = input
            .shape
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(Dim::known)
            .collect();
        let (height, width) = match dims.as_slice() {
            [_, Some(h), Some(w), Some(3)] if input.dtype == DType::F32 && *h > 0 && *w > 0 => {
                (*h, *w)
            }
            _ => {
                return Err(model_err(
                    path,
                    &format!(
                        "input '{}' is {} {}; a task model takes f32 [N, H, W, 3] (NHWC RGB) \
                         with H and W fixed",
                        input.name,
                        input.dtype,
                        input.shape_string()
                    ),
                ));
            }
        };
        if graph.outputs.is_empty() {
            return Err(model_err(path, "the model has no output"));
        }
        let to_u32 = |v: usize| u32::try_from(v).map_err(|_| model_err(path, "input too large"));
        let backend = backend.resolve().to_string();
        if backend != "auto" {
            crate::available_backend(&backend)?;
        }
        Ok(TaskModel {
            path: path.to_path_buf(),
            width: to_u32(width)?,
            height: to_u32(height)?,
            graph,
            backend,
            threads: None,
            limits: ImageLimits::default(),
            session: OnceLock::new(),
        })
    }

    pub(crate) fn set_threads(&mut self, threads: usize) {
        self.threads = Some(threads);
        self.session = OnceLock::new();
    }

    /// The backend runs go to: under `auto`, the plan's choice once the model has run
    /// ("auto" before).
    pub(crate) fn backend(&self) -> String {
        self.session
            .get()
            .map_or_else(|| self.backend.clone(), Session::backend)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn session(&self) -> Result<&Session> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let mut builder = Session::builder().backend(&self.backend);
        if let Some(t) = self.threads {
            builder = builder.threads(t);
        }
        if self.backend == "auto" {
            builder = builder.model_hash(accel_planner::sha256_file(&self.path)?);
        }
        let s = builder.compile(self.graph.clone())?;
        // Two threads racing here both compile; one result is kept.
        Ok(self.session.get_or_init(|| s))
    }

    /// Decodes every image and resizes it into one NHWC batch. Only the model-size copy of an
    /// image is kept, so a long list of photos does not hold every full-size image at once.
    pub(crate) fn prepare(&self, images: &[ImageSource]) -> (Vec<Result<Prepared>>, Vec<f32>) {
        let min_side = self.width.max(self.height);
        let mut batch = Vec::new();
        let prepared = images
            .iter()
            .enumerate()
            .map(|(i, source)| {
                let name = source.name(i);
                let d = decode_image(source, &name, &self.limits, min_side)?;
                push_unit_f32(
                    &resize_for_model(&d.image, self.width, self.height),
                    &mut batch,
                );
                Ok(Prepared {
                    name,
                    width: d.image.width(),
                    height: d.image.height(),
                    source_width: d.source_width,
                    source_height: d.source_height,
                })
            })
            .collect();
        (prepared, batch)
    }

    /// Decodes the images and runs all that decoded through the model as one batch. The
    /// output (None when no image decoded) has one row per `Ok` entry, in order.
    pub(crate) fn infer(
        &self,
        images: &[ImageSource],
    ) -> Result<(Vec<Result<Prepared>>, Option<Tensor>)> {
        let (prepared, batch) = self.prepare(images);
        let n = prepared.iter().filter(|p| p.is_ok()).count();
        if n == 0 {
            return Ok((prepared, None));
        }
        let out = self.run(&batch, n)?;
        if out.shape().first() != Some(&n) {
            return Err(model_err(
                &self.path,
                &format!("output shape {:?} for a batch of {n}", out.shape()),
            ));
        }
        Ok((prepared, Some(out)))
    }

    /// Runs the model once on `n` images and returns its first output.
    fn run(&self, batch: &[f32], n: usize) -> Result<Tensor> {
        let shape = [n, self.height as usize, self.width as usize, 3];
        let view = TensorView::from_slice(&shape, batch)?;
        let session = self.session()?;
        let mut outputs = session.run(&[view])?;
        if outputs.is_empty() {
            return Err(model_err(&self.path, "the model returned no output"));
        }
        Ok(outputs.swap_remove(0))
    }
}

/// Walks a batch output one image at a time.
pub(crate) struct BatchRows<'a> {
    data: &'a [f32],
    per_image: usize,
    next: usize,
}

pub(crate) fn batch_rows(data: &[f32], per_image: usize) -> BatchRows<'_> {
    BatchRows {
        data,
        per_image,
        next: 0,
    }
}

impl<'a> BatchRows<'a> {
    pub(crate) fn next_row(&mut self) -> Result<&'a [f32]> {
        let start = self.next;
        let end = start + self.per_image;
        self.next = end;
        self.data
            .get(start..end)
            .ok_or_else(|| Error::Other("the model returned fewer results than images".into()))
    }
}
