//! The command-line contract: JSON shapes, output file naming, exit codes and error lines.

use accel_core::npy::{read_npy, write_npy};
use accel_tests::{max_abs_diff, model_path, random_f32, require};
use std::process::Command;

fn accelbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accelbench"))
        .args(args)
        .output()
        .expect("accelbench runs")
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("accelbench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn devices_json_lists_cpu_and_explains_the_rest() {
    let out = accelbench(&["devices", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let rows = v["backends"].as_array().unwrap();
    let cpu = rows
        .iter()
        .find(|r| r["backend"] == "cpu")
        .expect("cpu listed");
    assert_eq!(cpu["status"], "available");
    for r in rows.iter().filter(|r| r["status"] == "unavailable") {
        assert!(!r["reason"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    assert!(rows.iter().any(|r| r["backend"] == "ort-cuda"));
}

#[test]
fn bad_model_exits_nonzero_with_one_line() {
    let dir = tmp("bad");
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, b"definitely not protobuf \xff\xff\xff").unwrap();
    for args in [
        vec![
            "infer",
            "--model",
            bad.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ],
        vec!["bench", "--model", bad.to_str().unwrap(), "--iters", "1"],
        vec![
            "infer",
            "--model",
            "/nonexistent/m.onnx",
            "--out",
            dir.to_str().unwrap(),
        ],
    ] {
        let out = accelbench(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?} stderr: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn infer_writes_one_npy_per_output_and_matches_library() {
    let model = model_path("crnn.onnx");
    if !require(
        model.exists(),
        "accelbench infer",
        "models/crnn.onnx is missing",
    ) {
        return;
    }
    let dir = tmp("infer");
    let x = random_f32(&[2, 50, 350, 3], 0.0, 1.0);
    let input = dir.join("x.npy");
    write_npy(&input, &x).unwrap();
    let session = accel::Session::builder().load(&model).unwrap();
    let name = session.inputs()[0].name.clone();
    let spec = format!("{name}={}", input.display());
    let out_dir = dir.join("out");
    let out = accelbench(&[
        "infer",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "--input",
        &spec,
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let expected = session.run(&[x.view()]).unwrap();
    for (vi, want) in session.outputs().iter().zip(&expected) {
        let safe: String = vi
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let got = read_npy(out_dir.join(format!("{safe}.npy"))).unwrap();
        assert_eq!(max_abs_diff(&got, want), 0.0);
    }
    assert_eq!(v["outputs"].as_array().unwrap().len(), expected.len());
}

#[test]
fn bench_json_has_the_contract_fields() {
    let model = model_path("crnn.onnx");
    if !require(
        model.exists(),
        "accelbench bench",
        "models/crnn.onnx is missing",
    ) {
        return;
    }
    let out = accelbench(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "--backend",
        "ort-cuda",
        "--warmup",
        "1",
        "--iters",
        "3",
        "--batch",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let results = v["results"].as_array().unwrap();
    let cpu = &results[0];
    for field in [
        "backend",
        "device",
        "batch",
        "threads",
        "precision",
        "status",
        "init_ms",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "throughput_ips",
        "peak_mem_mb",
        "energy_mj",
        "max_abs_diff",
    ] {
        assert!(cpu.get(field).is_some(), "missing {field}: {cpu}");
    }
    assert_eq!(cpu["status"], "ok");
    assert_eq!(cpu["batch"], 2);
    assert!(cpu["p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(cpu["max_abs_diff"].as_f64(), Some(0.0));
    assert_eq!(results[1]["status"], "unavailable");
    assert!(!results[1]["reason"].as_str().unwrap().is_empty());
}
