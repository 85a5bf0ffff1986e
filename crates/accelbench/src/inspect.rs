//! `accelbench inspect`: defect masks, areas and regions from plate images.

use crate::labels::{self, Labels};
use crate::{finish, json_f32, print_json, resolve_model, table};
use accel::{DefectInspector, ImageSource, Result};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Images of light-guide plates (PNG, JPEG, BMP, GIF, TIFF or WebP); all go through the
    /// model in one batch.
    #[arg(required_unless_present = "labels", value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// JSON list of {"image": path, "defective": true|false} (paths relative to the file):
    /// its images are inspected too, and each verdict is shown next to its label.
    #[arg(long, value_name = "FILE.json")]
    labels: Option<PathBuf>,
    /// Backend id, or auto (the planner measures the available backends on this model and
    /// picks the fastest that agrees with the cpu reference; plans are cached).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// ONNX file, or a shipped model name (crnn, unet).
    #[arg(long, default_value = "unet")]
    model: String,
    /// Worker threads. Default: the backend's (physical cores for cpu).
    #[arg(long)]
    threads: Option<usize>,
    /// Write each defect mask (PNG, 0 or 255, at the image's size). With one image the mask
    /// goes to OUT.png itself; with several, to OUT_<image stem>.png next to it
    /// (--mask out/m.png a.jpg b.jpg writes out/m_a.png and out/m_b.png); image stems that
    /// repeat get _<position of the image on the command line> as well.
    #[arg(long, value_name = "OUT.png")]
    mask: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where each image's mask goes (see `--mask`).
pub fn mask_paths(out: &Path, images: &[PathBuf]) -> Vec<PathBuf> {
    if images.len() == 1 {
        return vec![out.to_path_buf()];
    }
    let stem_of = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned())
    };
    let out_stem = stem_of(out);
    let ext = out
        .extension()
        .map_or_else(|| "png".to_string(), |e| e.to_string_lossy().into_owned());
    let stems: Vec<String> = images.iter().map(|p| stem_of(p)).collect();
    stems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let repeated = stems.iter().filter(|t| *t == s).count() > 1;
            let name = if repeated {
                format!("{out_stem}_{s}_{}.{ext}", i + 1)
            } else {
                format!("{out_stem}_{s}.{ext}")
            };
            out.with_file_name(name)
        })
        .collect()
}

pub fn run(mut a: Args) -> Result<ExitCode> {
    let labels = match &a.labels {
        Some(file) => {
            let (labels, images) = Labels::load(file, "defective")?;
            a.images.extend(images);
            Some(labels)
        }
        None => None,
    };
    let model = resolve_model(&a.model)?;
    let mut inspector = DefectInspector::from_model(&model, a.backend.as_str())?;
    if let Some(t) = a.threads {
        inspector = inspector.threads(t);
    }
    let sources: Vec<ImageSource> = a.images.iter().map(ImageSource::from).collect();
    let results = inspector.inspect(&sources)?;
    let masks = a.mask.as_deref().map(|m| mask_paths(m, &a.images));
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    let mut errors = Vec::new();
    let (mut labelled, mut matched) = (0, 0);
    for (i, (path, r)) in a.images.iter().zip(results).enumerate() {
        let image = path.display().to_string();
        let expected = labels.as_ref().and_then(|l| l.get(path));
        let mask = masks.as_ref().and_then(|m| m.get(i));
        let written = r.and_then(|ins| {
            if let Some(m) = mask {
                ins.save_mask(m)?;
            }
            Ok(ins)
        });
        match written {
            Ok(ins) => {
                let got = Value::Bool(ins.defective);
                labelled += usize::from(expected.is_some());
                matched += usize::from(expected == Some(&got));
                let regions: Vec<Value> = ins
                    .regions
                    .iter()
                    .map(|r| {
                        json!({
                            "x": r.x,
                            "y": r.y,
                            "width": r.width,
                            "height": r.height,
                            "area_px": r.area_px,
                            "mean_prob": json_f32(r.mean_prob),
                        })
                    })
                    .collect();
                let mut row = json!({
                    "image": image,
                    "width": ins.width,
                    "height": ins.height,
                    "source_width": ins.source_width,
                    "source_height": ins.source_height,
                    "defect_area_pct": json_f32(ins.defect_area_pct),
                    "defective": ins.defective,
                    "regions": regions,
                });
                if let Some(m) = mask {
                    row["mask"] = json!(m.display().to_string());
                }
                if let Some(e) = expected {
                    row["label"] = e.clone();
                }
                let size = if (ins.width, ins.height) == (ins.source_width, ins.source_height) {
                    format!("{}x{}", ins.width, ins.height)
                } else {
                    format!(
                        "{}x{} (of {}x{})",
                        ins.width, ins.height, ins.source_width, ins.source_height
                    )
                };
                let mut cell = vec![
                    image,
                    size,
                    format!("{:.3}", ins.defect_area_pct),
                    labels::cell(Some(&got)),
                ];
                if labels.is_some() {
                    cell.push(labels::cell(expected));
                    cell.push(labels::mark(expected, &got).to_string());
                }
                cell.push(ins.regions.len().to_string());
                cell.push(mask.map_or("-".to_string(), |m| m.display().to_string()));
                cells.push(cell);
                rows.push(row);
            }
            Err(e) => {
                rows.push(json!({"image": image, "error": e.to_string()}));
                errors.push(e);
            }
        }
    }
    if a.json {
        let tally = labels.is_some().then_some((labelled, matched));
        print_json(&labels::json_doc(&model, &inspector.backend(), rows, tally))?;
    } else if !cells.is_empty() {
        let header: &[&str] = if labels.is_some() {
            &[
                "image",
                "size",
                "defect %",
                "defective",
                "label",
                "wrong",
                "regions",
                "mask",
            ]
        } else {
            &["image", "size", "defect %", "defective", "regions", "mask"]
        };
        println!("{}", table::render(header, &cells));
        if labels.is_some() {
            println!("{}", labels::summary(matched, labelled, "verdicts"));
        }
    }
    Ok(finish(&errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_image_uses_the_name_as_given() {
        let p = mask_paths(Path::new("out/m.png"), &[PathBuf::from("a/b.jpg")]);
        assert_eq!(p, vec![PathBuf::from("out/m.png")]);
    }

    #[test]
    fn several_images_get_their_stems_and_repeats_their_position() {
        let imgs: Vec<PathBuf> = ["a/x.jpg", "b/y.png", "c/x.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let p = mask_paths(Path::new("out/m.png"), &imgs);
        assert_eq!(
            p,
            vec![
                PathBuf::from("out/m_x_1.png"),
                PathBuf::from("out/m_y.png"),
                PathBuf::from("out/m_x_3.png"),
            ]
        );
    }
}
