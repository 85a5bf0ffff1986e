//! Defect inspection: the U-Net's probability map upsampled to the image, thresholded, split
//! into regions; [`DefectInspector`] runs a batch of images through the model.

use super::{ImageLimits, ImageSource, Prepared, TaskModel};
use crate::Backend;
use accel_core::{Error, Result};
use image::{GrayImage, ImageFormat};
use std::path::Path;

/// A plate is defective when more than this percentage of its area is defect. A placeholder
/// until it is tuned on labelled plates.
pub const DEFAULT_AREA_THRESHOLD_PCT: f32 = 0.05;

/// One connected defect region (8-connectivity), in mask pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// Bounding box: left, top, width, height.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// Pixels in the region (not the box).
    pub area_px: u64,
    /// Mean defect probability over the region's pixels.
    pub mean_prob: f32,
}

/// The result of [`connected_components`]: `labels[i]` is 0 for background, else k for
/// `regions[k - 1]`.
#[derive(Clone, Debug)]
pub struct Components {
    pub labels: Vec<u32>,
    pub regions: Vec<Region>,
}

/// Connected components of the nonzero pixels of a row-major `width` x `height` mask, with
/// 8-connectivity (diagonal neighbours join). Two passes with union-find, no recursion, so
/// any mask that fits in memory works. `prob(x, y)` gives each pixel's weight for
/// [`Region::mean_prob`]. Regions come in the order of their first pixel (top to bottom, left
/// to right).
pub fn connected_components(
    mask: &[u8],
    width: u32,
    height: u32,
    mut prob: impl FnMut(u32, u32) -> f32,
) -> Result<Components> {
    let (w, h) = (width as usize, height as usize);
    if w.checked_mul(h) != Some(mask.len()) {
        return Err(Error::Shape(format!(
            "connected_components: a {width}x{height} mask needs {} bytes, got {}",
            w as u128 * h as u128,
            mask.len()
        )));
    }
    if mask.len() >= u32::MAX as usize {
        return Err(Error::Shape(format!(
            "connected_components: {width}x{height} has too many pixels to label"
        )));
    }
    // First pass: provisional labels, equivalences in a union-find forest (`parent[0]` is the
    // background).
    let mut labels = vec![0u32; mask.len()];
    let mut parent: Vec<u32> = vec![0];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if mask[i] == 0 {
                continue;
            }
            // Already visited neighbours: west, north-west, north, north-east.
            let mut label = 0u32;
            let mut join = |other: u32, parent: &mut Vec<u32>| {
                if other == 0 {
                    return;
                }
                if label == 0 {
                    label = find(parent, other);
                } else {
                    label = union(parent, label, other);
                }
            };
            if x > 0 {
                join(labels[i - 1], &mut parent);
            }
            if y > 0 {
                let up = i - w;
                if x > 0 {
                    join(labels[up - 1], &mut parent);
                }
                join(labels[up], &mut parent);
                if x + 1 < w {
                    join(labels[up + 1], &mut parent);
                }
            }
            if label == 0 {
                label = parent.len() as u32;
                parent.push(label);
            }
            labels[i] = label;
        }
    }
    // Second pass: final labels numbered by first appearance, with boxes, areas and weights.
    let mut region_of_root = vec![0u32; parent.len()];
    let mut regions: Vec<Region> = Vec::new();
    let mut prob_sums: Vec<f64> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if labels[i] == 0 {
                continue;
            }
            let root = find(&mut parent, labels[i]) as usize;
            if region_of_root[root] == 0 {
                regions.push(Region {
                    x: x as u32,
                    y: y as u32,
                    width: 0,
                    height: 0,
                    area_px: 0,
                    mean_prob: 0.0,
                });
                prob_sums.push(0.0);
                region_of_root[root] = regions.len() as u32;
            }
            let k = region_of_root[root];
            labels[i] = k;
            let r = &mut regions[k as usize - 1];
            let (xu, yu) = (x as u32, y as u32);
            // Boxes are kept as x0, y0, x1 (exclusive), y1 while counting.
            if xu < r.x {
                r.width += r.x - xu;
                r.x = xu;
            }
            r.width = r.width.max(xu + 1 - r.x);
            r.height = r.height.max(yu + 1 - r.y);
            r.area_px += 1;
            prob_sums[k as usize - 1] += f64::from(prob(xu, yu));
        }
    }
    for (r, s) in regions.iter_mut().zip(prob_sums) {
        r.mean_prob = (s / r.area_px as f64) as f32;
    }
    Ok(Components { labels, regions })
}

fn find(parent: &mut [u32], mut a: u32) -> u32 {
    while parent[a as usize] != a {
        // Path halving keeps the trees flat without recursion.
        parent[a as usize] = parent[parent[a as usize] as usize];
        a = parent[a as usize];
    }
    a
}

/// Joins the sets of `a` and `b`; the smaller root becomes the root of both.
fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// Bilinear sampling of a `pw` x `ph` map at `width` x `height` (pixel centres aligned, edges
/// clamped), with each column's and row's taps computed once.
struct Upsampler<'a> {
    map: &'a [f32],
    pw: usize,
    cols: Vec<(usize, usize, f32)>,
    rows: Vec<(usize, usize, f32)>,
}

fn taps(src: usize, dst: u32) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / f64::from(dst);
    (0..dst)
        .map(|d| {
            let s = ((f64::from(d) + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(src - 1);
            (i0, i1, (s - i0 as f64) as f32)
        })
        .collect()
}

impl<'a> Upsampler<'a> {
    fn new(map: &'a [f32], pw: u32, ph: u32, width: u32, height: u32) -> Result<Self> {
        let (pw, ph) = (pw as usize, ph as usize);
        if pw == 0 || ph == 0 || pw.checked_mul(ph) != Some(map.len()) {
            return Err(Error::Shape(format!(
                "probability map of {} values is not {pw}x{ph}",
                map.len()
            )));
        }
        Ok(Upsampler {
            map,
            pw,
            cols: taps(pw, width),
            rows: taps(ph, height),
        })
    }

    fn at(&self, x: u32, y: u32) -> f32 {
        let (x0, x1, fx) = self.cols[x as usize];
        let (y0, y1, fy) = self.rows[y as usize];
        let p = |xx: usize, yy: usize| self.map[yy * self.pw + xx];
        let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * fx;
        let bottom = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * fx;
        top + (bottom - top) * fy
    }
}

/// The `pw` x `ph` probability map upsampled bilinearly to `width` x `height`, as a mask:
/// 255 where the probability is above `threshold`, else 0. No full-size float map is made.
pub fn upsample_threshold(
    probs: &[f32],
    pw: u32,
    ph: u32,
    width: u32,
    height: u32,
    threshold: f32,
) -> Result<GrayImage> {
    let up = Upsampler::new(probs, pw, ph, width, height)?;
    Ok(GrayImage::from_fn(width, height, |x, y| {
        image::Luma([if up.at(x, y) > threshold { 255 } else { 0 }])
    }))
}

/// One image's inspection.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Size of the mask: the decoded image's. A JPEG above `ImageLimits::max_pixels` is
    /// decoded downscaled, so this can be 1/2 to 1/8 of `source_width` x `source_height`.
    pub width: u32,
    pub height: u32,
    /// The image's own size; multiply region coordinates by `source_width / width` to map them
    /// onto it.
    pub source_width: u32,
    pub source_height: u32,
    /// 255 for defect pixels, 0 elsewhere, `width` x `height`.
    pub mask: GrayImage,
    /// Percentage of the mask's pixels that are defect (0 to 100).
    pub defect_area_pct: f32,
    pub regions: Vec<Region>,
    /// `defect_area_pct` is above the inspector's area threshold.
    pub defective: bool,
}

impl Inspection {
    /// Writes the mask as a PNG (whatever the extension), 0 and 255.
    pub fn save_mask(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.mask
            .save_with_format(path, ImageFormat::Png)
            .map_err(|e| match e {
                image::ImageError::IoError(io) => Error::io(path, io),
                other => Error::Other(format!("cannot write mask {}: {other}", path.display())),
            })
    }
}

/// Finds defects on light-guide plates with the U-Net (`models/unet128.onnx`, or another
/// model with its input and output: f32 `[N, H, W, 3]` in `[0, 1]`, probabilities
/// `[N, h, w, 1]`).
///
/// ```no_run
/// use accel::{DefectInspector, ImageSource};
/// let inspector = DefectInspector::new("auto")?.threshold(0.5);
/// let path = std::path::Path::new("plate.png");
/// for r in inspector.inspect(&[ImageSource::Path(path)])? {
///     let i = r?;
///     println!("{:.2}% defect, {} regions", i.defect_area_pct, i.regions.len());
///     i.save_mask("plate_mask.png")?;
/// }
/// # Ok::<(), accel::Error>(())
/// ```
pub struct DefectInspector {
    model: TaskModel,
    threshold: f32,
    area_threshold_pct: f32,
    min_region_px: usize,
}

impl DefectInspector {
    /// The shipped U-Net (`accel::shipped_model("unet")`) on `backend` ("auto", "cpu", ...).
    pub fn new(backend: impl Into<Backend>) -> Result<Self> {
        let path = crate::shipped_model("unet").ok_or_else(|| {
            Error::Other(
                "the shipped defect model unet128.onnx is not found; set ACCEL_MODELS_DIR or \
                 use DefectInspector::from_model"
                    .into(),
            )
        })?;
        Self::from_model(path, backend)
    }

    /// A U-Net from an ONNX file, with the shipped model's input and output.
    pub fn from_model(path: impl AsRef<Path>, backend: impl Into<Backend>) -> Result<Self> {
        Ok(DefectInspector {
            model: TaskModel::load(path.as_ref(), &backend.into())?,
            threshold: 0.5,
            area_threshold_pct: DEFAULT_AREA_THRESHOLD_PCT,
            min_region_px: 1,
        })
    }

    /// Worker threads; the backend's default otherwise.
    pub fn threads(mut self, threads: usize) -> Self {
        self.model.set_threads(threads);
        self
    }

    /// A pixel is defect when its probability is above this (0 to 1, default 0.5).
    pub fn threshold(mut self, prob: f32) -> Self {
        self.threshold = prob;
        self
    }

    /// A plate is defective when its defect area is above this percentage (0 to 100, default
    /// [`DEFAULT_AREA_THRESHOLD_PCT`]).
    pub fn area_threshold_pct(mut self, pct: f32) -> Self {
        self.area_threshold_pct = pct;
        self
    }

    /// Regions smaller than this many pixels are noise: they are cleared from the mask and
    /// count towards neither the area nor the regions. Default 1 (keep everything).
    pub fn min_region_px(mut self, px: usize) -> Self {
        self.min_region_px = px;
        self
    }

    pub fn image_limits(mut self, limits: ImageLimits) -> Self {
        self.model.limits = limits;
        self
    }

    /// The backend id the model runs on (under `auto`, the plan's choice once it has run).
    pub fn backend(&self) -> String {
        self.model.backend()
    }

    pub fn model_path(&self) -> &Path {
        self.model.path()
    }

    /// Inspects every image; all that decode go through the model in one batch. The outer
    /// error is the model's or backend's (or a threshold out of range); each image has its own
    /// result.
    pub fn inspect(&self, images: &[ImageSource]) -> Result<Vec<Result<Inspection>>> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::Other(format!(
                "the pixel threshold must be in [0, 1], got {}",
                self.threshold
            )));
        }
        if !(0.0..=100.0).contains(&self.area_threshold_pct) {
            return Err(Error::Other(format!(
                "the area threshold must be a percentage in [0, 100], got {}",
                self.area_threshold_pct
            )));
        }
        let (prepared, out) = self.model.infer(images)?;
        let (mh, mw, probs) = match &out {
            None => (0, 0, &[][..]),
            Some(t) => match t.shape() {
                [_, h, w, 1] | [_, h, w] => (*h, *w, t.as_slice::<f32>()?),
                s => {
                    return Err(Error::InvalidModel(format!(
                        "{}: output shape {s:?}; a defect model outputs [N, H, W, 1]",
                        self.model.path().display()
                    )));
                }
            },
        };
        let to_u32 =
            |v: usize| u32::try_from(v).map_err(|_| Error::InvalidModel("mask too large".into()));
        let (mh, mw) = (to_u32(mh)?, to_u32(mw)?);
        let mut rows = super::batch_rows(probs, mh as usize * mw as usize);
        Ok(prepared
            .into_iter()
            .map(|p| self.postprocess(p?, rows.next_row()?, mw, mh))
            .collect())
    }

    fn postprocess(&self, p: Prepared, probs: &[f32], pw: u32, ph: u32) -> Result<Inspection> {
        let up = Upsampler::new(probs, pw, ph, p.width, p.height)?;
        let mut mask = GrayImage::from_fn(p.width, p.height, |x, y| {
            image::Luma([if up.at(x, y) > self.threshold { 255 } else { 0 }])
        });
        let Components {
            labels,
            mut regions,
        } = connected_components(mask.as_raw(), p.width, p.height, |x, y| up.at(x, y))?;
        if self.min_region_px > 1 {
            let small: Vec<bool> = regions
                .iter()
                .map(|r| r.area_px < self.min_region_px as u64)
                .collect();
            for (m, &l) in mask.iter_mut().zip(&labels) {
                if l != 0 && small[l as usize - 1] {
                    *m = 0;
                }
            }
            regions.retain(|r| r.area_px >= self.min_region_px as u64);
        }
        let defect_px: u64 = regions.iter().map(|r| r.area_px).sum();
        let total = u64::from(p.width) * u64::from(p.height);
        let defect_area_pct = (defect_px as f64 * 100.0 / total as f64) as f32;
        Ok(Inspection {
            width: p.width,
            height: p.height,
            source_width: p.source_width,
            source_height: p.source_height,
            mask,
            defect_area_pct,
            defective: defect_area_pct > self.area_threshold_pct,
            regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask from rows of '#' (set) and '.' (clear).
    fn mask(rows: &[&str]) -> (Vec<u8>, u32, u32) {
        let w = rows[0].len() as u32;
        let m = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'#') * 255))
            .collect();
        (m, w, rows.len() as u32)
    }

    fn regions(rows: &[&str]) -> Vec<Region> {
        let (m, w, h) = mask(rows);
        connected_components(&m, w, h, |_, _| 1.0).unwrap().regions
    }

    fn bbox(r: &Region) -> (u32, u32, u32, u32, u64) {
        (r.x, r.y, r.width, r.height, r.area_px)
    }

    #[test]
    fn two_blobs() {
        let r = regions(&["##....", "##..##", "....##", "....#."]);
        assert_eq!(r.len(), 2);
        assert_eq!(bbox(&r[0]), (0, 0, 2, 2, 4));
        assert_eq!(bbox(&r[1]), (4, 1, 2, 3, 5));
        assert_eq!(r[0].mean_prob, 1.0);
    }

    #[test]
    fn diagonal_touch_is_one_region() {
        let r = regions(&["#...", ".#..", "..#.", "...#"]);
        assert_eq!(r.len(), 1);
        assert_eq!(bbox(&r[0]), (0, 0, 4, 4, 4));
        // The anti-diagonal joins through the north-east neighbour.
        let r = regions(&["...#", "..#.", ".#..", "#..."]);
        assert_eq!(r.len(), 1);
        assert_eq!(bbox(&r[0]), (0, 0, 4, 4, 4));
    }

    #[test]
    fn u_shape_merges_late_and_keeps_its_box() {
        // The two arms get different provisional labels until the bottom row joins them.
        let r = regions(&["#..#", "#..#", "####"]);
        assert_eq!(r.len(), 1);
        assert_eq!(bbox(&r[0]), (0, 0, 4, 3, 8));
        // A region whose leftmost pixel comes after its first one.
        let r = regions(&["..#", ".#.", "#.."]);
        assert_eq!(bbox(&r[0]), (0, 0, 3, 3, 3));
    }

    #[test]
    fn regions_touching_every_border() {
        let r = regions(&["###", "#.#", "###"]);
        assert_eq!(r.len(), 1);
        assert_eq!(bbox(&r[0]), (0, 0, 3, 3, 8));
        let r = regions(&["#.#", "...", "#.#"]);
        assert_eq!(r.len(), 4);
        assert_eq!(bbox(&r[3]), (2, 2, 1, 1, 1));
        assert!(regions(&["...", "..."]).is_empty());
    }

    #[test]
    fn labels_match_regions_and_bad_sizes_are_errors() {
        let (m, w, h) = mask(&["#.#", "#.."]);
        let c = connected_components(&m, w, h, |x, _| x as f32).unwrap();
        assert_eq!(c.labels, vec![1, 0, 2, 1, 0, 0]);
        assert_eq!(c.regions[1].mean_prob, 2.0);
        assert!(connected_components(&m, 4, 2, |_, _| 0.0).is_err());
        assert!(
            connected_components(&[], 0, 0, |_, _| 0.0)
                .unwrap()
                .regions
                .is_empty()
        );
    }

    #[test]
    fn large_mask_needs_no_recursion() {
        // A serpentine single region: deep for any recursive flood fill.
        let (w, h) = (1000u32, 1000u32);
        let m: Vec<u8> = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let open_end = if (y / 2) % 2 == 0 { w - 1 } else { 0 };
                    u8::from(y % 2 == 0 || x == open_end)
                })
            })
            .collect();
        let c = connected_components(&m, w, h, |_, _| 0.5).unwrap();
        assert_eq!(c.regions.len(), 1);
        assert_eq!(
            c.regions[0].area_px,
            m.iter().filter(|&&v| v != 0).count() as u64
        );
    }

    #[test]
    fn upsampling_keeps_a_flat_map_flat_and_thresholds() {
        let m = upsample_threshold(&[0.7; 4], 2, 2, 5, 3, 0.5).unwrap();
        assert_eq!(m.dimensions(), (5, 3));
        assert!(m.pixels().all(|p| p.0[0] == 255));
        // Left column 0, right column 1: the left half of the output stays below 0.5.
        let m = upsample_threshold(&[0.0, 1.0, 0.0, 1.0], 2, 2, 4, 1, 0.5).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 0, 255, 255]);
        assert!(upsample_threshold(&[0.0; 3], 2, 2, 4, 4, 0.5).is_err());
        let one = upsample_threshold(&[0.9], 1, 1, 1, 1, 0.5).unwrap();
        assert_eq!(one.as_raw(), &vec![255]);
    }
}
