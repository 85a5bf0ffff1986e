//! The wgpu pipeline cache on disk: written after compiling, and a corrupt file is ignored
//! (pipelines are compiled afresh) and replaced. One test in its own binary: it points
//! ACCEL_CACHE_DIR at a fresh folder before any device exists.

use accel_core::ir::{Dim, Graph, Node, Op, UnaryOp, ValueInfo};
use accel_core::{CompileOptions, DType};
use accel_tests::{random_f32, wgpu_backend};

fn sigmoid_graph() -> Graph {
    Graph {
        opset: 17,
        inputs: vec![ValueInfo::new(
            "x",
            DType::F32,
            vec![Dim::Known(3), Dim::Known(5)],
        )],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: None,
        }],
        nodes: vec![Node {
            name: "s".into(),
            op: Op::Unary(UnaryOp::Sigmoid),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
        }],
        ..Default::default()
    }
}

#[test]
fn the_pipeline_cache_is_saved_and_a_corrupt_one_replaced() {
    let dir = std::env::temp_dir().join(format!("accel-wgpu-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: the only test of this binary sets it before any other thread exists.
    unsafe { std::env::set_var("ACCEL_CACHE_DIR", &dir) };
    let Some(gpu) = wgpu_backend() else { return };
    let info = gpu.device();
    if !info
        .details
        .iter()
        .any(|(_, v)| v.contains("pipeline-cache"))
        || !info.name.contains("Vulkan")
    {
        eprintln!(
            "SKIPPED wgpu pipeline cache: {} keeps none on disk",
            info.name
        );
        return;
    }
    let g = sigmoid_graph();
    let x = random_f32(&[3, 5], -4.0, 4.0);
    let want: Vec<f32> = x
        .to_f32_vec()
        .unwrap()
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    let check = |backend: &dyn accel_core::Backend| {
        let exe = backend.compile(&g, &CompileOptions::default()).unwrap();
        let got = exe.run(&[x.view()]).unwrap()[0].to_f32_vec().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    };
    check(&*gpu);
    let files: Vec<_> = std::fs::read_dir(dir.join("wgpu"))
        .expect("cache folder")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "one cache file: {files:?}");
    let path = files[0].path();
    let saved = std::fs::read(&path).unwrap();
    assert!(!saved.is_empty());

    // A fresh probe creates a new device, which reads the (now corrupt) file.
    std::fs::write(&path, b"not a pipeline cache").unwrap();
    let fresh = accel_wgpu::probe()
        .into_iter()
        .find_map(|p| p.backend.ok())
        .unwrap();
    check(&*fresh);
    let rewritten = std::fs::read(&path).unwrap();
    assert_ne!(
        rewritten, b"not a pipeline cache",
        "the corrupt file was not replaced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
