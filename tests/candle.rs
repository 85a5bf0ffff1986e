//! The candle backend (candle-cpu) as an independent implementation of accel's IR: every
//! shipped model and test fixture (tf2onnx and PyTorch exports) against ONNX Runtime's
//! outputs at batch 1, 3 and 8 within 1e-4, and against the CPU backend on fresh random
//! inputs; bad requests get typed errors.

use accel_candle::CandleBackend;
use accel_core::ir::{BinaryOp, Dim, Graph, Node, Op, ValueInfo};
use accel_core::{Backend, CompileOptions, DType, Error, Precision, Tensor, passes};
use accel_cpu::CpuBackend;
use accel_tests::{max_abs_diff, model_path, parity_cases, random_f32};
use std::sync::Arc;

const TOLERANCE: f32 = 1e-4;

fn load(model: &str) -> Graph {
    let mut g = accel_core::onnx::load_model(model).unwrap_or_else(|e| panic!("{model}: {e}"));
    passes::optimize(&mut g).unwrap_or_else(|e| panic!("{model}: {e}"));
    g
}

#[test]
fn candle_matches_onnx_runtime_on_every_model() {
    let Some(cases) = parity_cases("candle model parity vs ONNX Runtime") else {
        return;
    };
    let backend = CandleBackend::cpu();
    let mut failures = Vec::new();
    let mut compiled: Vec<(String, Box<dyn accel_core::Executable>, Graph)> = Vec::new();
    for case in &cases {
        let (model, batch) = (&case.model, case.batch);
        if !compiled.iter().any(|(m, _, _)| m == model) {
            let g = load(model);
            let exe = backend
                .compile(&g, &CompileOptions::default())
                .unwrap_or_else(|e| panic!("{model} on candle-cpu: {e}"));
            compiled.push((model.clone(), exe, g));
        }
        let (_, exe, g) = compiled.iter().find(|(m, _, _)| m == model).unwrap();
        let inputs = case.inputs(g);
        let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
        let outs = exe
            .run(&views)
            .unwrap_or_else(|e| panic!("{model} batch {batch} on candle-cpu: {e}"));
        for (vi, got) in g.outputs.iter().zip(&outs) {
            let d = max_abs_diff(got, &case.expected(&vi.name));
            eprintln!(
                "candle-cpu parity {model} batch {batch} output {}: max abs diff {d:.2e}",
                vi.name
            );
            if d.is_nan() || d > TOLERANCE {
                failures.push(format!(
                    "{model} batch {batch} output {}: max abs diff {d}",
                    vi.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "candle-cpu differs from ONNX Runtime beyond {TOLERANCE}:\n{}",
        failures.join("\n")
    );
}

/// The two independent implementations on fresh random images, batch 1 and 2.
#[test]
fn candle_and_the_cpu_backend_agree_on_both_models() {
    for (file, image) in [("crnn.onnx", [50, 350, 3]), ("unet128.onnx", [128, 128, 3])] {
        let g = load(model_path(file).to_str().unwrap());
        let opts = CompileOptions::default();
        let cpu = CpuBackend::new().compile(&g, &opts).unwrap();
        let candle = CandleBackend::cpu().compile(&g, &opts).unwrap();
        for batch in [1, 2] {
            let x = random_f32(&[&[batch], &image[..]].concat(), 0.0, 1.0);
            let want = cpu.run(&[x.view()]).unwrap();
            let got = candle.run(&[x.view()]).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let d = max_abs_diff(g, w);
                eprintln!("{file} batch {batch}: candle-cpu vs cpu max abs diff {d:.2e}");
                assert!(d <= TOLERANCE, "{file} batch {batch}: {d} > {TOLERANCE}");
            }
        }
    }
}

fn one_node(op: Op, inputs: &[(&str, &[usize])], consts: Vec<(&str, Tensor)>) -> Graph {
    let mut g = Graph {
        opset: 17,
        nodes: vec![Node {
            name: "the_node".into(),
            op,
            inputs: inputs
                .iter()
                .map(|(n, _)| n.to_string())
                .chain(consts.iter().map(|(n, _)| n.to_string()))
                .collect(),
            outputs: vec!["y".into()],
        }],
        inputs: inputs
            .iter()
            .map(|(n, s)| {
                ValueInfo::new(*n, DType::F32, s.iter().map(|&d| Dim::Known(d)).collect())
            })
            .collect(),
        outputs: vec![ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: None,
        }],
        ..Default::default()
    };
    for (n, t) in consts {
        g.constants.insert(n.into(), Arc::new(t));
    }
    g
}

#[test]
fn bad_requests_get_typed_errors() {
    let backend = CandleBackend::cpu();
    let opts = CompileOptions::default();
    // An operator candle does not run: refused at compile time, naming the op and node.
    let pow = one_node(
        Op::Binary(BinaryOp::Pow),
        &[("a", &[2]), ("b", &[2])],
        vec![],
    );
    match backend.compile(&pow, &opts) {
        Err(Error::UnsupportedOp { op_type, node, .. }) => {
            assert_eq!((op_type.as_str(), node.as_str()), ("Pow", "the_node"))
        }
        Err(e) => panic!("Pow: expected UnsupportedOp, got {e}"),
        Ok(_) => panic!("Pow compiled on candle-cpu"),
    }
    // f16 is refused with the reason.
    let add = one_node(
        Op::Binary(BinaryOp::Add),
        &[("a", &[2, 3]), ("b", &[2, 3])],
        vec![],
    );
    let f16 = CompileOptions {
        precision: Precision::F16,
        ..Default::default()
    };
    let e = backend.compile(&add, &f16).err().expect("f16 is refused");
    assert!(e.to_string().contains("f32 only"), "{e}");
    // Wrong input shapes and dtypes are caught before anything runs.
    let exe = backend.compile(&add, &opts).unwrap();
    let (a, b) = (
        random_f32(&[2, 3], -1.0, 1.0),
        random_f32(&[3, 2], -1.0, 1.0),
    );
    match exe.run(&[a.view(), b.view()]) {
        Err(Error::ShapeMismatch { name, .. }) => assert_eq!(name, "b"),
        other => panic!("expected a shape mismatch for b, got {other:?}"),
    }
    let ints = Tensor::from_vec(vec![2, 3], vec![1i64; 6]).unwrap();
    assert!(matches!(
        exe.run(&[a.view(), ints.view()]),
        Err(Error::DTypeMismatch { .. })
    ));
    // What only shows at run time (a reshape target that does not fit) names the node.
    let mut reshape = one_node(Op::Reshape { allowzero: false }, &[("x", &[2, 3])], vec![]);
    reshape.nodes[0].inputs.push("shape".into());
    reshape
        .inputs
        .push(ValueInfo::new("shape", DType::I64, vec![Dim::Known(2)]));
    let exe = backend.compile(&reshape, &opts).unwrap();
    let target = Tensor::from_vec(vec![2], vec![4i64, 4]).unwrap();
    match exe.run(&[a.view(), target.view()]) {
        Err(Error::InvalidNode { node, message, .. }) => {
            assert_eq!(node, "the_node");
            assert!(message.contains("cannot reshape"), "{message}");
        }
        other => panic!("expected an error naming the node, got {other:?}"),
    }
}

#[test]
fn probing_lists_candle_cpu_and_says_why_cuda_is_absent() {
    let probes = accel_candle::probe();
    let ids: Vec<&str> = probes.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, accel_candle::BACKEND_IDS);
    let cpu = probes[0]
        .backend
        .as_ref()
        .expect("candle-cpu is always available");
    assert_eq!(cpu.device().kind, "cpu");
    // Without the `cuda` feature (or a CUDA device) the reason says what is missing.
    if let Err(reason) = &probes[1].backend {
        assert!(reason.to_lowercase().contains("cuda"), "{reason}");
    }
}

/// A ceil-mode overhang row crossing an explicit end pad column counts in no divisor (ONNX
/// Runtime and ONNX's reference agree); candle once counted that corner.
#[test]
fn an_average_pool_overhang_counts_nowhere() {
    use accel_core::ir::{Pool, Window};
    let op = Op::AveragePool(Pool {
        window: Window {
            kernel_shape: vec![3, 3],
            strides: vec![2, 1],
            pads: vec![1, 0, 0, 2],
            ..Default::default()
        },
        ceil_mode: true,
        count_include_pad: true,
    });
    let g = one_node(op, &[("x", &[1, 2, 7, 9])], vec![]);
    let x = random_f32(&[1, 2, 7, 9], -1.0, 1.0);
    let opts = CompileOptions::default();
    let want = CpuBackend::new()
        .compile(&g, &opts)
        .unwrap()
        .run(&[x.view()])
        .unwrap();
    let got = CandleBackend::cpu()
        .compile(&g, &opts)
        .unwrap()
        .run(&[x.view()])
        .unwrap();
    assert_eq!(got[0].shape(), &[1, 2, 4, 9]);
    let d = max_abs_diff(&got[0], &want[0]);
    assert!(d <= 1e-6, "candle-cpu vs cpu: {d}");
}
