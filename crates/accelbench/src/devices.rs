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
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn run(a: Args) -> accel::Result<()> {
    let rows: Vec<Row> = accel::probe_backends()
        .into_iter()
        .map(|e| match e.backend {
            Ok(b) => Row {
                backend: e.id,
                status: "available",
                device: b.device().name,
                reason: None,
            },
            Err(r) => Row {
                backend: e.id,
                status: "unavailable",
                device: String::new(),
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
    Ok(())
}
