//! `accelbench read`: meter readings from images.

use crate::labels::{self, Labels};
use crate::{finish, json_f32, print_json, resolve_model, table};
use accel::{ImageSource, MeterReader, Result};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Crops of a meter's digit window (PNG, JPEG, BMP, GIF, TIFF or WebP); all go through the
    /// model in one batch.
    #[arg(required_unless_present = "labels", value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// JSON list of {"image": path, "reading": "004521"} (paths relative to the file): its
    /// images are read too, and each reading is shown next to its label.
    #[arg(long, value_name = "FILE.json")]
    labels: Option<PathBuf>,
    /// Backend id, or auto (the planner measures the available backends on this model and
    /// picks the fastest that agrees with the cpu reference; plans are cached).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// ONNX file, or a shipped model name (crnn, unet).
    #[arg(long, default_value = "crnn")]
    model: String,
    /// Worker threads. Default: the backend's (physical cores for cpu).
    #[arg(long)]
    threads: Option<usize>,
    /// Number of digits the meter shows; a reading with another count is an error.
    #[arg(long)]
    digits: Option<usize>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(mut a: Args) -> Result<ExitCode> {
    let labels = match &a.labels {
        Some(file) => {
            let (labels, images) = Labels::load(file, "reading")?;
            a.images.extend(images);
            Some(labels)
        }
        None => None,
    };
    let model = resolve_model(&a.model)?;
    let mut reader = MeterReader::from_model(&model, a.backend.as_str())?.expected_digits(a.digits);
    if let Some(t) = a.threads {
        reader = reader.threads(t);
    }
    let sources: Vec<ImageSource> = a.images.iter().map(ImageSource::from).collect();
    let results = reader.read(&sources)?;
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    let mut errors = Vec::new();
    let (mut labelled, mut matched) = (0, 0);
    for (path, r) in a.images.iter().zip(results) {
        let image = path.display().to_string();
        let expected = labels.as_ref().and_then(|l| l.get(path));
        match r {
            Ok(m) => {
                let got = Value::String(m.reading.clone());
                labelled += usize::from(expected.is_some());
                matched += usize::from(expected == Some(&got));
                let digits: Vec<Value> = m
                    .digits
                    .iter()
                    .map(|d| {
                        json!({
                            "digit": d.digit,
                            "confidence": json_f32(d.confidence),
                            "frames": [d.frames.0, d.frames.1],
                        })
                    })
                    .collect();
                let mut row = vec![
                    image.clone(),
                    if m.reading.is_empty() {
                        "(none)".to_string()
                    } else {
                        m.reading.clone()
                    },
                ];
                if labels.is_some() {
                    row.push(labels::cell(expected));
                    row.push(labels::mark(expected, &got).to_string());
                }
                row.push(format!("{:.3}", m.confidence));
                row.push(
                    m.digits
                        .iter()
                        .map(|d| format!("{}:{:.2}", d.digit, d.confidence))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                cells.push(row);
                let mut json_row = json!({
                    "image": image,
                    "reading": m.reading,
                    "confidence": json_f32(m.confidence),
                    "digits": digits,
                });
                if let Some(e) = expected {
                    json_row["label"] = e.clone();
                }
                rows.push(json_row);
            }
            Err(e) => {
                rows.push(json!({"image": image, "error": e.to_string()}));
                errors.push(e);
            }
        }
    }
    if a.json {
        let tally = labels.is_some().then_some((labelled, matched));
        print_json(&labels::json_doc(&model, &reader.backend(), rows, tally))?;
    } else if !cells.is_empty() {
        let header: &[&str] = if labels.is_some() {
            &[
                "image",
                "reading",
                "label",
                "wrong",
                "confidence",
                "digit:confidence",
            ]
        } else {
            &["image", "reading", "confidence", "digit:confidence"]
        };
        println!("{}", table::render(header, &cells));
        if labels.is_some() {
            println!("{}", labels::summary(matched, labelled, "readings"));
        }
    }
    Ok(finish(&errors))
}
