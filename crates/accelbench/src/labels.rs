//! `--labels FILE` for `read` and `inspect`: a JSON list of `{"image": path, <field>: value}`
//! (paths relative to the file's folder), whose images are added to the command's and whose
//! values are printed next to the answers.

use accel::{Error, Result};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Labels {
    by_image: HashMap<PathBuf, Value>,
}

impl Labels {
    /// Reads FILE and returns the labels and the images it lists, in its order.
    pub fn load(file: &Path, field: &'static str) -> Result<(Labels, Vec<PathBuf>)> {
        let bad =
            |reason: String| Error::Other(format!("labels file {}: {reason}", file.display()));
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let entries: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON list: {e}")))?;
        let dir = file.parent().unwrap_or(Path::new(""));
        let mut images = Vec::with_capacity(entries.len());
        let mut by_image = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let image = entry["image"]
                .as_str()
                .ok_or_else(|| bad(format!("entry {i} has no \"image\" string")))?;
            let value = entry
                .get(field)
                .cloned()
                .ok_or_else(|| bad(format!("entry {i} ({image}) has no \"{field}\"")))?;
            let path = dir.join(image);
            by_image.insert(key(&path), value);
            images.push(path);
        }
        Ok((Labels { by_image }, images))
    }

    pub fn get(&self, image: &Path) -> Option<&Value> {
        self.by_image.get(&key(image))
    }
}

/// Images named two ways (./a.png, a.png) are one image.
fn key(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// "x" for a label the answer does not match, "" where it does or there is no label.
pub fn mark(expected: Option<&Value>, got: &Value) -> &'static str {
    match expected {
        Some(e) if e != got => "x",
        _ => "",
    }
}

/// A label as a table cell: strings without quotes, "-" when there is none.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_string(),
    }
}

/// "7 of 8 readings match the labels".
pub fn summary(matched: usize, labelled: usize, what: &str) -> String {
    format!("{matched} of {labelled} {what} match the labels")
}

/// The `--json` document of `read` and `inspect`: model, backend, one row per image, and
/// with `--labels` how many images were labelled and how many answers matched.
pub fn json_doc(
    model: &Path,
    backend: &str,
    rows: Vec<Value>,
    tally: Option<(usize, usize)>,
) -> Value {
    let mut doc = json!({
        "model": model.display().to_string(),
        "backend": backend,
        "results": rows,
    });
    if let Some((labelled, matched)) = tally {
        doc["labels"] = json!({"labelled": labelled, "matched": matched});
    }
    doc
}
