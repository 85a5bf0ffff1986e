//! Every graph pass keeps the graph's outputs: each small graph runs on the CPU backend before
//! and after `passes::optimize`, on fresh random weights and inputs, and must agree within
//! 1e-6 (relative to the output's magnitude; BatchNorm folding reassociates products).

use accel_core::ir::{
    AutoPad, BinaryOp, Conv, ConvTranspose, Dim, Gemm, Graph, Node, Op, UnaryOp, ValueInfo, Window,
};
use accel_core::{Backend, CompileOptions, DType, Tensor, passes};
use accel_cpu::CpuBackend;
use accel_tests::random_f32;
use std::sync::Arc;

fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

fn graph(
    input: (&str, &[usize]),
    output: &str,
    nodes: Vec<Node>,
    consts: Vec<(&str, Tensor)>,
) -> Graph {
    let mut g = Graph {
        opset: 17,
        inputs: vec![ValueInfo::new(
            input.0,
            DType::F32,
            input.1.iter().map(|&d| Dim::Known(d)).collect(),
        )],
        outputs: vec![ValueInfo {
            name: output.into(),
            dtype: DType::F32,
            shape: None,
        }],
        nodes,
        ..Default::default()
    };
    for (n, t) in consts {
        g.constants.insert(n.into(), Arc::new(t));
    }
    g
}

fn conv(k: usize, stride: usize, pad: usize, group: usize) -> Op {
    Op::Conv(Conv {
        window: Window {
            kernel_shape: vec![k, k],
            strides: vec![stride; 2],
            dilations: vec![],
            pads: vec![pad; 4],
            auto_pad: AutoPad::NotSet,
        },
        group,
        activation: None,
    })
}

fn run(g: &Graph, x: &Tensor) -> Tensor {
    let exe = CpuBackend::new()
        .compile(g, &CompileOptions::default())
        .expect("compiles");
    exe.run(&[x.view()]).expect("runs").remove(0)
}

/// Optimizes `g`, checks the outputs agree and returns the optimized node kinds.
fn check(g: Graph, x: Tensor) -> Vec<&'static str> {
    let before = run(&g, &x);
    let mut opt = g.clone();
    passes::optimize(&mut opt).expect("optimizes");
    let after = run(&opt, &x);
    assert_eq!(before.shape(), after.shape());
    let (b, a) = (before.to_f32_vec().unwrap(), after.to_f32_vec().unwrap());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (p, q) in b.iter().zip(&a) {
        assert!(
            (p - q).abs() <= 1e-6 * scale,
            "{p} vs {q} (output scale {scale})"
        );
    }
    opt.nodes.iter().map(|n| n.op.name()).collect()
}

fn bn_params(c: usize) -> Vec<Tensor> {
    vec![
        random_f32(&[c], 0.5, 1.5),
        random_f32(&[c], -0.5, 0.5),
        random_f32(&[c], -0.5, 0.5),
        random_f32(&[c], 0.5, 1.5),
    ]
}

#[test]
fn batchnorm_folds_into_conv() {
    let p = bn_params(8);
    let g = graph(
        ("x", &[2, 3, 9, 9]),
        "y",
        vec![
            node("conv", conv(3, 2, 1, 1), &["x", "w", "b"], &["c"]),
            node(
                "bn",
                Op::BatchNormalization { epsilon: 1e-3 },
                &["c", "s", "bb", "m", "v"],
                &["y"],
            ),
        ],
        vec![
            ("w", random_f32(&[8, 3, 3, 3], -1.0, 1.0)),
            ("b", random_f32(&[8], -1.0, 1.0)),
            ("s", p[0].clone()),
            ("bb", p[1].clone()),
            ("m", p[2].clone()),
            ("v", p[3].clone()),
        ],
    );
    assert_eq!(check(g, random_f32(&[2, 3, 9, 9], -1.0, 1.0)), vec!["Conv"]);
}

#[test]
fn mul_add_after_conv_transpose_fold_like_tf2onnx_batchnorm() {
    let op = Op::ConvTranspose(ConvTranspose {
        window: Window {
            kernel_shape: vec![4, 4],
            strides: vec![2, 2],
            dilations: vec![],
            pads: vec![1; 4],
            auto_pad: AutoPad::NotSet,
        },
        group: 1,
        output_padding: vec![],
        output_shape: None,
        activation: None,
    });
    let g = graph(
        ("x", &[1, 6, 5, 5]),
        "y",
        vec![
            node("up", op, &["x", "w"], &["c"]),
            node("mul", Op::Binary(BinaryOp::Mul), &["c", "scale"], &["d"]),
            node("add", Op::Binary(BinaryOp::Add), &["shift", "d"], &["e"]),
            node("relu", Op::Unary(UnaryOp::Relu), &["e"], &["y"]),
        ],
        vec![
            ("w", random_f32(&[6, 4, 4, 4], -1.0, 1.0)),
            ("scale", random_f32(&[1, 4, 1, 1], 0.5, 1.5)),
            ("shift", random_f32(&[4, 1, 1], -0.5, 0.5)),
        ],
    );
    assert_eq!(
        check(g, random_f32(&[1, 6, 5, 5], -1.0, 1.0)),
        vec!["ConvTranspose"]
    );
}

#[test]
fn activations_fuse_into_conv_and_gemm() {
    for act in [
        Op::Unary(UnaryOp::Relu),
        Op::Clip,
        Op::Unary(UnaryOp::Sigmoid),
    ] {
        let act_inputs: &[&str] = if act == Op::Clip {
            &["c", "lo", "hi"]
        } else {
            &["c"]
        };
        let g = graph(
            ("x", &[1, 4, 7, 7]),
            "y",
            vec![
                node("dw", conv(3, 1, 1, 4), &["x", "w"], &["c"]),
                node("act", act.clone(), act_inputs, &["y"]),
            ],
            vec![
                ("w", random_f32(&[4, 1, 3, 3], -3.0, 3.0)),
                ("lo", Tensor::scalar(0.0f32)),
                ("hi", Tensor::scalar(6.0f32)),
            ],
        );
        assert_eq!(
            check(g, random_f32(&[1, 4, 7, 7], -2.0, 2.0)),
            vec!["Conv"],
            "{act:?}"
        );
    }
    let gemm = Op::Gemm(Gemm {
        alpha: 0.5,
        beta: 2.0,
        trans_a: false,
        trans_b: true,
        activation: None,
    });
    let g = graph(
        ("x", &[3, 10]),
        "y",
        vec![
            node("fc", gemm, &["x", "w", "b"], &["c"]),
            node("relu", Op::Unary(UnaryOp::Relu), &["c"], &["y"]),
        ],
        vec![
            ("w", random_f32(&[5, 10], -1.0, 1.0)),
            ("b", random_f32(&[5], -1.0, 1.0)),
        ],
    );
    assert_eq!(check(g, random_f32(&[3, 10], -1.0, 1.0)), vec!["Gemm"]);
}

#[test]
fn nhwc_transposes_cancel_and_identities_vanish() {
    // tf2onnx shape: NHWC input -> NCHW conv -> back to NHWC -> NCHW again for the next conv.
    let g = graph(
        ("x", &[1, 6, 6, 3]),
        "y",
        vec![
            node(
                "t0",
                Op::Transpose {
                    perm: Some(vec![0, 3, 1, 2]),
                },
                &["x"],
                &["a"],
            ),
            node("c0", conv(3, 1, 1, 1), &["a", "w0"], &["b"]),
            node(
                "t1",
                Op::Transpose {
                    perm: Some(vec![0, 2, 3, 1]),
                },
                &["b"],
                &["c"],
            ),
            node("id", Op::Identity, &["c"], &["d"]),
            node(
                "t2",
                Op::Transpose {
                    perm: Some(vec![0, 3, 1, 2]),
                },
                &["d"],
                &["e"],
            ),
            node("drop", Op::Dropout, &["e"], &["f"]),
            node("c1", conv(1, 1, 0, 1), &["f", "w1"], &["y"]),
        ],
        vec![
            ("w0", random_f32(&[5, 3, 3, 3], -1.0, 1.0)),
            ("w1", random_f32(&[2, 5, 1, 1], -1.0, 1.0)),
        ],
    );
    assert_eq!(
        check(g, random_f32(&[1, 6, 6, 3], -1.0, 1.0)),
        vec!["Transpose", "Conv", "Conv"]
    );
}

#[test]
fn constant_subgraphs_fold_and_dead_nodes_go() {
    // The Reshape target is computed from Shape(x); a dead branch computes something unused.
    let g = graph(
        ("x", &[2, 3, 4]),
        "y",
        vec![
            node(
                "shape",
                Op::Shape {
                    start: 0,
                    end: Some(1),
                },
                &["x"],
                &["s"],
            ),
            node(
                "concat",
                Op::Concat { axis: 0 },
                &["s", "minus1"],
                &["target"],
            ),
            node(
                "reshape",
                Op::Reshape { allowzero: false },
                &["x", "target"],
                &["r"],
            ),
            node(
                "wt",
                Op::Transpose {
                    perm: Some(vec![1, 0]),
                },
                &["w"],
                &["w_t"],
            ),
            node("mm", Op::MatMul { activation: None }, &["r", "w_t"], &["y"]),
            node("dead", Op::Unary(UnaryOp::Exp), &["x"], &["unused"]),
        ],
        vec![
            ("minus1", Tensor::from_vec(vec![1], vec![-1i64]).unwrap()),
            ("w", random_f32(&[5, 12], -1.0, 1.0)),
        ],
    );
    assert_eq!(
        check(g, random_f32(&[2, 3, 4], -1.0, 1.0)),
        vec!["Reshape", "MatMul"]
    );
}

#[test]
fn zero_pad_folds_into_strided_conv() {
    // tf2onnx's explicit "same" padding before a stride-2 depthwise conv.
    let g = graph(
        ("x", &[1, 4, 9, 9]),
        "y",
        vec![
            node(
                "pad",
                Op::Pad {
                    mode: accel_core::ir::PadMode::Constant,
                },
                &["x", "pads"],
                &["p"],
            ),
            node("dw", conv(3, 2, 0, 4), &["p", "w"], &["y"]),
        ],
        vec![
            (
                "pads",
                Tensor::from_vec(vec![8], vec![0i64, 0, 0, 0, 0, 0, 1, 1]).unwrap(),
            ),
            ("w", random_f32(&[4, 1, 3, 3], -1.0, 1.0)),
        ],
    );
    assert_eq!(check(g, random_f32(&[1, 4, 9, 9], -1.0, 1.0)), vec!["Conv"]);
}
