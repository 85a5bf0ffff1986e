//! The ONNX Runtime backends run for real: ort-cpu and ort-openvino on both shipped models
//! against the CPU backend and against candle-cpu (an independent second oracle), the CUDA provider's "unavailable" report, and the placement check
//! that refuses a provider which registered but took no node.

use accel_candle::CandleBackend;
use accel_core::{Backend, CompileOptions, Tensor, passes};
use accel_cpu::CpuBackend;
use accel_ort::{OrtBackend, OrtConfig, Provider};
use accel_tests::{max_abs_diff, model_path, random_f32, require};

fn ort_available() -> bool {
    require(
        accel_ort::runtime(None).is_ok(),
        "ONNX Runtime backends",
        "no libonnxruntime found; run scripts/setup.sh",
    )
}

/// Reports ort-openvino skipped with its reason when this library has no OpenVINO (fails in CI).
fn openvino_available() -> bool {
    let probe = OrtBackend::new(Provider::OpenVino, OrtConfig::default());
    require(
        probe.is_ok(),
        "ort-openvino",
        probe.as_ref().err().map_or("", |s| s.as_str()),
    )
}

fn check_model(file: &str, input_shape: &[usize], provider: Provider, tolerance: f32) {
    let mut g = accel_core::onnx::load_model(model_path(file)).unwrap();
    passes::optimize(&mut g).unwrap();
    let reference = CpuBackend::new()
        .compile(&g, &CompileOptions::default())
        .unwrap();
    let oracle = CandleBackend::cpu()
        .compile(&g, &CompileOptions::default())
        .unwrap();
    let ort = OrtBackend::new(provider, OrtConfig::default())
        .unwrap_or_else(|r| panic!("{}: {r}", provider.id()));
    let exe = ort
        .compile(
            &g,
            &CompileOptions {
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    for batch in [1, 3] {
        let mut shape = input_shape.to_vec();
        shape[0] = batch;
        let x: Tensor = random_f32(&shape, 0.0, 1.0);
        let got = exe.run(&[x.view()]).unwrap();
        for (name, oracle) in [("cpu", &reference), ("candle-cpu", &oracle)] {
            let want = oracle.run(&[x.view()]).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let d = max_abs_diff(g, w);
                eprintln!(
                    "{} {file} batch {batch}: max abs diff vs {name} {d:.2e}",
                    provider.id()
                );
                assert!(
                    d <= tolerance,
                    "{} {file} batch {batch}: {d} > {tolerance} against {name}",
                    provider.id()
                );
            }
        }
    }
}

#[test]
fn ort_cpu_matches_cpu_backend_on_both_models() {
    if !ort_available() {
        return;
    }
    check_model("crnn.onnx", &[1, 50, 350, 3], Provider::Cpu, 1e-4);
    check_model("unet128.onnx", &[1, 128, 128, 3], Provider::Cpu, 1e-4);
}

#[test]
fn ort_openvino_matches_cpu_backend_on_both_models() {
    if !ort_available() {
        return;
    }
    if !openvino_available() {
        return;
    }
    check_model("crnn.onnx", &[1, 50, 350, 3], Provider::OpenVino, 1e-3);
    check_model("unet128.onnx", &[1, 128, 128, 3], Provider::OpenVino, 1e-3);
}

#[test]
fn absent_provider_is_unavailable_with_a_reason() {
    if !ort_available() {
        return;
    }
    let probes = accel_ort::probe();
    for id in ["ort-cuda", "ort-tensorrt"] {
        let p = probes.iter().find(|p| p.id == id).expect("listed");
        match &p.backend {
            Err(reason) => assert!(reason.to_lowercase().contains(&id[4..]), "{id}: {reason}"),
            Ok(_) => eprintln!("{id} is available on this machine; nothing to check"),
        }
    }
    let cpu = probes.iter().find(|p| p.id == "ort-cpu").expect("listed");
    assert!(cpu.backend.is_ok());
}

#[test]
fn provider_that_takes_no_node_is_refused() {
    if !ort_available() || !openvino_available() {
        return;
    }
    // ORT accepts a lower-case device type, registers OpenVINO, then places nothing on it.
    let cfg = OrtConfig {
        openvino_device: "cpu".into(),
        ..Default::default()
    };
    match OrtBackend::new(Provider::OpenVino, cfg) {
        Err(reason) => assert!(
            reason.contains("took none of the graph's nodes"),
            "{reason}"
        ),
        Ok(_) => panic!(
            "OpenVINO with device_type 'cpu' placed nodes; the pitfall check has nothing to catch"
        ),
    }
}

#[test]
fn profile_parsing_counts_nodes_per_provider() {
    let json = r#"[{"cat":"Session","name":"model_run"},
        {"cat":"Node","name":"conv_kernel_time","args":{"provider":"CPUExecutionProvider"}},
        {"cat":"Node","name":"conv_fence_before","args":{"provider":"CPUExecutionProvider"}},
        {"cat":"Node","name":"OVEP_1_kernel_time","args":{"provider":"OpenVINOExecutionProvider"}},
        {"cat":"Node","name":"relu_kernel_time","args":{"provider":"CPUExecutionProvider"}}]"#;
    let counts = accel_ort::node_providers(json);
    assert_eq!(
        counts,
        vec![
            ("CPUExecutionProvider".to_string(), 2),
            ("OpenVINOExecutionProvider".to_string(), 1)
        ]
    );
    assert!(accel_ort::node_providers("not json").is_empty());
}

#[test]
fn ort_runs_accels_optimized_graph_too() {
    if !ort_available() {
        return;
    }
    // The same comparison with ORT given accel's optimized graph re-serialized.
    for (file, shape) in [
        ("crnn.onnx", [2, 50, 350, 3]),
        ("unet128.onnx", [2, 128, 128, 3]),
    ] {
        let mut g = accel_core::onnx::load_model(model_path(file)).unwrap();
        passes::optimize(&mut g).unwrap();
        let reference = CpuBackend::new()
            .compile(&g, &CompileOptions::default())
            .unwrap();
        let cfg = OrtConfig {
            run_optimized_graph: true,
            ..Default::default()
        };
        let exe = OrtBackend::new(Provider::Cpu, cfg)
            .unwrap()
            .compile(&g, &CompileOptions::default())
            .unwrap();
        let x = random_f32(&shape, 0.0, 1.0);
        let d = max_abs_diff(
            &exe.run(&[x.view()]).unwrap()[0],
            &reference.run(&[x.view()]).unwrap()[0],
        );
        eprintln!("ort-cpu on accel's optimized {file}: max abs diff vs cpu {d:.2e}");
        assert!(d <= 1e-4, "{file}: {d}");
    }
}
