//! `accelbench devices`

use crate::{print_json, table};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    backend: String,
    status: &'static str,
    device: String,
    /// "cpu", "discrete-gpu", "integrated-gpu", ...
    #[serde(skip_serializing_if = "String::is_empty")]
    kind: String,
    /// What tells devices apart: ISA, driver, features, limits.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    details: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn run(a: Args) -> accel::Result<()> {
    let rows: Vec<Row> = accel::probe_backends()
        .into_iter()
        .map(|e| match e.backend {
            Ok(b) => {
                let info = b.device();
                Row {
                    backend: e.id,
                    status: "available",
                    device: info.name,
                    kind: info.kind,
                    details: info
                        .details
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect(),
                    reason: None,
                }
            }
            Err(r) => Row {
                backend: e.id,
                status: "unavailable",
                device: String::new(),
                kind: String::new(),
                details: Default::default(),
                reason: Some(r),
            },
        })
        .collect();
    if a.json {
        return print_json(&serde_json::json!({ "backends": rows }));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.status.to_string(),
                if r.device.is_empty() {
                    r.reason.clone().unwrap_or_default()
                } else {
                    r.device.clone()
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["backend", "status", "device / reason"], &cells)
    );
    for r in rows.iter().filter(|r| !r.details.is_empty()) {
        println!("\n{} ({}):", r.backend, r.kind);
        for (k, v) in &r.details {
            println!("  {k}: {}", v.as_str().unwrap_or_default());
        }
    }
    Ok(())
}
