//! The shipped models' quality bars, measured through accel's task APIs on held-out sets that
//! scripts/test.sh regenerates with models/synth/make_set.py (seed synth.EVAL_SEED, never
//! used in training):
//!   CRNN: full-reading accuracy >= 98%, character accuracy >= 99.5%;
//!   U-Net: mean IoU of the defect class >= 0.80 over defective plates, and at most 2% of
//!   clean plates flagged (defect area over DEFAULT_AREA_THRESHOLD_PCT).
//! The numbers are printed so that a run shows what the models actually reach.

use accel::tasks::DEFAULT_AREA_THRESHOLD_PCT;
use accel::{DefectInspector, ImageSource, MeterReader};
use accel_tests::{require, testdata_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BATCH: usize = 64;

fn held_out(kind: &str) -> Option<(PathBuf, Vec<Value>)> {
    let dir = testdata_dir().join("heldout").join(kind);
    let labels = dir.join("labels.json");
    let ok = require(
        labels.exists(),
        &format!("held-out {kind}"),
        &format!(
            "{} missing (scripts/test.sh generates it)",
            labels.display()
        ),
    );
    if !ok {
        return None;
    }
    let text = std::fs::read_to_string(&labels).expect("labels.json readable");
    let entries: Vec<Value> = serde_json::from_str(&text).expect("labels.json is a JSON list");
    assert!(!entries.is_empty(), "{} is empty", labels.display());
    Some((dir, entries))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("label entry without {key}: {v}"))
}

/// Levenshtein distance between two digit strings.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diag + usize::from(ca != cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[test]
fn edit_distance_reference() {
    assert_eq!(edits("", ""), 0);
    assert_eq!(edits("1234", "1234"), 0);
    assert_eq!(edits("1234", "124"), 1);
    assert_eq!(edits("1234", "12345"), 1);
    assert_eq!(edits("1234", "1294"), 1);
    assert_eq!(edits("", "123"), 3);
}

#[test]
fn meter_reader_meets_its_accuracy_bar() {
    let Some((dir, entries)) = held_out("meters") else {
        return;
    };
    let reader = MeterReader::new("cpu").expect("CRNN loads");
    let (mut exact, mut errors, mut chars) = (0usize, 0usize, 0usize);
    let mut wrong = Vec::new();
    for chunk in entries.chunks(BATCH) {
        let paths: Vec<PathBuf> = chunk
            .iter()
            .map(|e| dir.join(str_field(e, "image")))
            .collect();
        let sources: Vec<ImageSource> = paths.iter().map(|p| ImageSource::Path(p)).collect();
        let results = reader.read(&sources).expect("batch runs");
        for (entry, result) in chunk.iter().zip(results) {
            let label = str_field(entry, "reading");
            let got = result.expect("held-out image decodes").reading;
            chars += label.len();
            errors += edits(&got, label);
            if got == label {
                exact += 1;
            } else if wrong.len() < 10 {
                wrong.push(format!("{label} read as {got}"));
            }
        }
    }
    let n = entries.len();
    let reading_acc = exact as f64 / n as f64;
    let char_acc = 1.0 - errors as f64 / chars as f64;
    println!(
        "CRNN held-out ({n} meters): reading accuracy {:.2}%, character accuracy {:.3}%; e.g. {wrong:?}",
        reading_acc * 100.0,
        char_acc * 100.0
    );
    assert!(
        reading_acc >= 0.98,
        "reading accuracy {reading_acc:.4} < 0.98; {wrong:?}"
    );
    assert!(
        char_acc >= 0.995,
        "character accuracy {char_acc:.5} < 0.995"
    );
}

fn load_mask(path: &Path) -> Vec<bool> {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    img.to_luma8().pixels().map(|p| p.0[0] >= 128).collect()
}

#[test]
fn defect_inspector_meets_its_quality_bar() {
    let Some((dir, entries)) = held_out("plates") else {
        return;
    };
    let inspector = DefectInspector::new("cpu").expect("U-Net loads");
    let (mut ious, mut clean, mut clean_flagged, mut missed) = (Vec::new(), 0usize, 0usize, 0usize);
    let (mut inter_sum, mut union_sum) = (0usize, 0usize);
    for chunk in entries.chunks(BATCH) {
        let paths: Vec<PathBuf> = chunk
            .iter()
            .map(|e| dir.join(str_field(e, "image")))
            .collect();
        let sources: Vec<ImageSource> = paths.iter().map(|p| ImageSource::Path(p)).collect();
        let results = inspector.inspect(&sources).expect("batch runs");
        for (entry, result) in chunk.iter().zip(results) {
            let got = result.expect("held-out image decodes");
            let truth = load_mask(&dir.join(str_field(entry, "mask")));
            assert_eq!(truth.len(), got.mask.as_raw().len(), "mask size");
            let defective = entry["defective"].as_bool().expect("defective flag");
            if defective {
                let pred = got.mask.as_raw().iter().map(|&v| v >= 128);
                let (inter, union) = pred.zip(&truth).fold((0, 0), |(i, u), (p, &t)| {
                    (i + usize::from(p && t), u + usize::from(p || t))
                });
                ious.push(inter as f64 / union as f64);
                inter_sum += inter;
                union_sum += union;
                missed += usize::from(!got.defective);
            } else {
                clean += 1;
                clean_flagged += usize::from(got.defective);
            }
        }
    }
    assert!(
        !ious.is_empty() && clean > 0,
        "the set needs both clean and defective plates"
    );
    let mean_iou = ious.iter().sum::<f64>() / ious.len() as f64;
    let pooled_iou = inter_sum as f64 / union_sum as f64;
    let flagged = clean_flagged as f64 / clean as f64;
    println!(
        "U-Net held-out ({} plates, {} defective): mean IoU {mean_iou:.4} (pooled {pooled_iou:.4}), \
         clean plates flagged {:.2}% (area > {DEFAULT_AREA_THRESHOLD_PCT}%), defective plates missed {missed}",
        entries.len(),
        ious.len(),
        flagged * 100.0
    );
    assert!(
        mean_iou >= 0.80,
        "mean IoU of the defect class {mean_iou:.4} < 0.80"
    );
    assert!(
        flagged <= 0.02,
        "{:.2}% of clean plates flagged (> 2%)",
        flagged * 100.0
    );
}
