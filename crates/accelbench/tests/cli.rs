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

/// `plan --json`: the contract's fields, every candidate with its numbers or its reason, a
/// second call served from the cache, and a corrupt cache file ignored with a warning on
/// stderr (stdout stays one JSON document).
#[test]
fn plan_json_names_a_winner_and_a_second_call_hits_the_cache() {
    let dir = tmp("plan-cache");
    let _ = std::fs::remove_dir_all(dir.join("plans"));
    let plan = || {
        let out = Command::new(env!("CARGO_BIN_EXE_accelbench"))
            .args([
                "plan",
                "--model",
                "crnn",
                "--backend",
                "cpu",
                "--budget-ms",
                "200",
            ])
            .args(["--json"])
            .env("ACCEL_CACHE_DIR", &dir)
            .output()
            .expect("accelbench runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
        (v, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (first, _) = plan();
    assert_eq!(first["winner"], "cpu");
    assert_eq!(first["objective"], "latency");
    assert_eq!(first["cache"], "miss");
    let candidates = first["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty());
    for c in candidates {
        assert_eq!(c["backend"], "cpu");
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["p50_ms"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["runs"].as_u64().unwrap() >= 1, "{c}");
    }
    let (second, _) = plan();
    assert_eq!(second["cache"], "hit");
    assert_eq!(second["candidates"], first["candidates"]);
    assert!(second["elapsed_ms"].as_f64().is_some());

    let files: Vec<_> = std::fs::read_dir(dir.join("plans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::write(&files[0], "{\"key\": 1").unwrap();
    let (third, stderr) = plan();
    assert_eq!(third["cache"], "miss");
    assert!(
        stderr.contains("warning: ignoring the plan cache file"),
        "{stderr}"
    );
    let (fourth, _) = plan();
    assert_eq!(fourth["cache"], "hit");
}

/// `verify`: exit 0 when every backend agrees, 1 (and the offender named with its measured
/// difference) when one does not.
#[test]
fn verify_exits_1_when_a_backend_disagrees() {
    let out = accelbench(&["verify", "--model", "crnn", "--backend", "cpu", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["passed"], true);
    assert_eq!(v["results"][0]["max_abs_diff"], 0.0);
    let ort = accel::available_backend("ort-cpu");
    if !require(
        ort.is_ok(),
        "verify against ort-cpu",
        "no ONNX Runtime library",
    ) {
        return;
    }
    // ONNX Runtime sums in another order: not bit-identical, so a zero tolerance rejects it.
    let out = accelbench(&[
        "verify",
        "--model",
        "crnn",
        "--backend",
        "ort-cpu",
        "--tolerance",
        "0",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["passed"], false);
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["status"], "rejected", "{r}");
        let d = r["max_abs_diff"].as_f64().unwrap();
        assert!(d > 0.0 && d < 1e-4, "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains(&format!("{d:.2e}")),
            "{r}"
        );
    }
}

/// `compare`: one row per model, batch and backend in JSON and CSV, and an SVG figure with
/// a band per model and batch.
#[test]
fn compare_writes_json_csv_and_a_plot() {
    let dir = tmp("compare");
    let svg = dir.join("compare.svg");
    let base = [
        "compare",
        "--model",
        "crnn",
        "--batch",
        "1,2",
        "--backend",
        "cpu",
        "--iters",
        "3",
        "--warmup",
        "1",
    ];
    let mut args = base.to_vec();
    args.extend(["--json", "--plot", svg.to_str().unwrap()]);
    let out = accelbench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for (r, batch) in rows.iter().zip([1, 2]) {
        assert_eq!(r["model"], "crnn.onnx");
        assert_eq!(r["backend"], "cpu");
        assert_eq!(r["batch"], batch);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["iters"], 3);
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0);
    }
    let figure = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(
        figure.starts_with("<svg"),
        "{}",
        &figure[..figure.len().min(80)]
    );
    for band in ["crnn.onnx, batch 1", "crnn.onnx, batch 2"] {
        assert!(figure.contains(&format!("{band}: latency")), "{band}");
        assert!(figure.contains(&format!("{band}: images/s")), "{band}");
    }
    let mut args = base.to_vec();
    args.push("--csv");
    let out = accelbench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("model,backend,device,batch,"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("crnn.onnx,cpu,") && lines[2].starts_with("crnn.onnx,cpu,"));
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

/// `accelbench bench --model models/crnn.onnx <args> --json`, parsed; None (after saying
/// why) when the model is missing outside CI.
fn bench_crnn_json(what: &str, args: &[&str]) -> Option<serde_json::Value> {
    let model = model_path("crnn.onnx");
    if !require(model.exists(), what, "models/crnn.onnx is missing") {
        return None;
    }
    let mut all = vec!["bench", "--model", model.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push("--json");
    let out = accelbench(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("one JSON document"))
}

#[test]
fn bench_json_has_the_contract_fields() {
    let args = [
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
    ];
    let Some(v) = bench_crnn_json("accelbench bench", &args) else {
        return;
    };
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
    // The reference (cpu, by default) against itself; one measured backend, one round.
    assert_eq!(cpu["ratio_to_reference"].as_f64(), Some(1.0));
    assert_eq!(
        (cpu["iters"].as_u64(), cpu["rounds"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(results[1]["status"], "unavailable");
    assert!(!results[1]["reason"].as_str().unwrap().is_empty());
}

/// Several measured backends take turns: the timed runs are split into rounds, every
/// backend gets all its runs, and each row says how it compares with the reference.
#[test]
fn bench_interleaves_backends_in_rounds() {
    let args = [
        "--backend",
        "cpu",
        "--backend",
        "cpu",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--iters",
        "7",
        "--rounds",
        "3",
    ];
    let Some(v) = bench_crnn_json("accelbench bench rounds", &args) else {
        return;
    };
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(
            (r["iters"].as_u64(), r["rounds"].as_u64()),
            (Some(7), Some(3))
        );
        assert!(r["ratio_to_reference"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// A small PNG written with the image crate.
fn write_png(path: &std::path::Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 40) as u8, (y * 90) as u8, 128])
    })
    .save(path)
    .unwrap();
}

#[test]
fn bad_images_give_one_error_line_and_exit_1() {
    let dir = tmp("bad-images");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("text.png");
    std::fs::write(&text, b"just some text, not pixels\n").unwrap();
    let missing = dir.join("missing.png");
    for (file, reason) in [
        (&empty, "empty"),
        (&text, "not an image"),
        (&missing, "cannot read"),
    ] {
        let f = file.to_str().unwrap();
        for cmd in ["read", "inspect"] {
            let out = accelbench(&[cmd, f, "--backend", "cpu"]);
            assert_eq!(out.status.code(), Some(1), "{cmd} {f}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{cmd} {f}: {err}");
            assert!(err.starts_with("error: image "), "{err}");
            assert!(err.contains(f) && err.contains(reason), "{err}");
            assert!(out.stdout.is_empty(), "{cmd} {f}");
        }
    }
}

#[test]
fn one_pixel_png_is_read_and_inspected() {
    let dir = tmp("one-pixel");
    let img = dir.join("one.png");
    write_png(&img, 1, 1);
    let f = img.to_str().unwrap();
    let out = accelbench(&["read", f, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let r = &v["results"][0];
    assert_eq!(r["image"], f);
    let reading = r["reading"].as_str().unwrap();
    assert!(reading.bytes().all(|b| b.is_ascii_digit()), "{r}");
    assert_eq!(r["digits"].as_array().unwrap().len(), reading.len());
    let c = r["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c), "{r}");
    // `read` defaults to auto: the JSON names what the plan chose.
    let chosen = v["backend"].as_str().unwrap();
    assert!(!chosen.is_empty() && chosen != "auto", "{chosen}");

    let mask = dir.join("mask.png");
    let out = accelbench(&["inspect", f, "--json", "--mask", mask.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let r = &v["results"][0];
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(1), Some(1))
    );
    for field in ["defect_area_pct", "defective", "regions", "mask"] {
        assert!(r.get(field).is_some(), "missing {field}: {r}");
    }
    assert_eq!(
        image::open(&mask).unwrap().into_luma8().dimensions(),
        (1, 1)
    );

    // Human output is a table naming the image.
    let out = accelbench(&["read", f, "--threads", "1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("one.png"));
}

#[test]
fn a_failed_image_does_not_hide_the_others() {
    let dir = tmp("mixed");
    let good = dir.join("good.png");
    write_png(&good, 40, 20);
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"").unwrap();
    let other = dir.join("other.png");
    write_png(&other, 20, 40);
    let mask = dir.join("m.png");
    let files = [
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        other.to_str().unwrap(),
    ];
    let mut args = vec!["inspect", "--json", "--mask", mask.to_str().unwrap()];
    args.extend(files);
    let out = accelbench(&args);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].get("defect_area_pct").is_some());
    assert!(results[1]["error"].as_str().unwrap().contains("empty"));
    assert_eq!(results[2]["width"], 20);
    assert!(dir.join("m_good.png").exists() && dir.join("m_other.png").exists());
    assert!(!dir.join("m_bad.png").exists());

    let mut args = vec!["read", "--json"];
    args.extend(files);
    let out = accelbench(&args);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(v["results"][0].get("reading").is_some());
    assert!(v["results"][1].get("error").is_some());
}

/// The shipped samples (models/samples/{meters,plates}.json, written by
/// models/synth/make_set.py) through `--labels`: every image is answered and every answer
/// equals its label.
#[test]
fn sample_images_match_their_labels() {
    for (cmd, file, count) in [("read", "meters.json", 8), ("inspect", "plates.json", 6)] {
        let index = model_path("samples").join(file);
        assert!(index.exists(), "{} is missing", index.display());
        let index = index.display().to_string();
        let out = accelbench(&[cmd, "--json", "--labels", &index]);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), count, "{cmd}: one result per sample");
        let wrong: Vec<String> = results
            .iter()
            .filter(|r| {
                let field = if cmd == "read" {
                    "reading"
                } else {
                    "defective"
                };
                r["label"] != r[field]
            })
            .map(|r| r.to_string())
            .collect();
        assert!(
            wrong.is_empty(),
            "{cmd} disagrees with the labels:\n{}",
            wrong.join("\n")
        );
        assert_eq!(
            v["labels"]["labelled"], count,
            "{cmd}: every sample has a label"
        );
        assert_eq!(v["labels"]["matched"], count);

        // The human table shows the labels and the tally.
        let out = accelbench(&[cmd, "--labels", &index]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("label") && text.contains(&format!("{count} of {count}")),
            "{text}"
        );
    }
}
