//! Every optimized CPU kernel against a plain reference implementation of the same node
//! (`reference.rs`: the ONNX definitions as loops, f64 sums), on shapes drawn at random each run (odd sizes that fill no SIMD register or tile
//! included) with fresh random weights and inputs. Tolerance: 1e-4 relative to the output's
//! magnitude. The ISA under test is the detected one; scripts/test.sh runs this file again
//! with `ACCEL_CPU_ISA=avx2` and `=portable` so every kernel family is checked.

use accel_core::ir::{
    Activation, AutoPad, Conv, ConvTranspose, Dim, Direction, Gemm, Graph, Lstm, Node, Op, Pool,
    ValueInfo, Window,
};
use accel_core::{Backend, CompileOptions, DType, Executable, Tensor};
use accel_cpu::CpuBackend;
use accel_tests::random_f32;
use rand::RngExt;
use std::sync::Arc;

mod reference;
use reference::{ConvParams, Nchw};

const CASES: usize = 40;

fn rng_usize(lo: usize, hi: usize) -> usize {
    rand::rng().random_range(lo..=hi)
}

fn activation() -> Option<Activation> {
    match rng_usize(0, 3) {
        0 => None,
        1 => Some(Activation::Relu),
        2 => Some(Activation::Clip { min: 0.0, max: 6.0 }),
        _ => Some(Activation::Sigmoid),
    }
}

fn tensor((data, shape): (Vec<f32>, Vec<usize>)) -> Tensor {
    Tensor::from_vec(shape, data).expect("reference shape")
}

fn nchw(t: &Tensor) -> Nchw<'_> {
    let s = t.shape();
    Nchw {
        data: t.as_slice::<f32>().unwrap(),
        shape: [s[0], s[1], s[2], s[3]],
    }
}

fn f32s(t: &Option<Tensor>) -> Option<&[f32]> {
    t.as_ref().map(|t| t.as_slice::<f32>().unwrap())
}

/// One node reading input "x" (and constants), compiled on the CPU backend with 1 and 2
/// threads, whose outputs must match `want`.
fn check(what: &str, op: Op, x: Tensor, consts: Vec<(&str, Option<Tensor>)>, want: Vec<Tensor>) {
    let outputs = want.len();
    let mut inputs = vec!["x".to_string()];
    inputs.extend(consts.iter().map(|(n, t)| {
        if t.is_some() {
            n.to_string()
        } else {
            String::new()
        }
    }));
    let node = Node {
        name: what.into(),
        op,
        inputs,
        outputs: (0..outputs).map(|i| format!("y{i}")).collect(),
    };
    check_graph(what, vec![node], x, consts, want);
}

/// Nodes reading input "x" (and constants) and writing outputs "y0", "y1", ..., compiled
/// on the CPU backend with 1 and 2 threads, whose outputs must match `want`.
fn check_graph(
    what: &str,
    nodes: Vec<Node>,
    x: Tensor,
    consts: Vec<(&str, Option<Tensor>)>,
    want: Vec<Tensor>,
) {
    let outputs = want.len();
    let mut g = Graph {
        opset: 17,
        inputs: vec![ValueInfo::new(
            "x",
            DType::F32,
            x.shape().iter().map(|&d| Dim::Known(d)).collect(),
        )],
        outputs: (0..outputs)
            .map(|i| ValueInfo {
                name: format!("y{i}"),
                dtype: DType::F32,
                shape: None,
            })
            .collect(),
        nodes,
        ..Default::default()
    };
    for (n, t) in &consts {
        if let Some(t) = t {
            g.constants.insert(n.to_string(), Arc::new(t.clone()));
        }
    }
    for threads in [1, 2] {
        let exe = CpuBackend::new()
            .compile(
                &g,
                &CompileOptions {
                    threads: Some(threads),
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // The first run allocates and plans memory; the second writes into the plan.
        for got in [exe.run(&[x.view()]), exe.run(&[x.view()])] {
            let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
            for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.shape(), w.shape(), "{what} output {o}");
                let (g, w) = (g.to_f32_vec().unwrap(), w.to_f32_vec().unwrap());
                let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale || (a.is_nan() && b.is_nan()),
                        "{what} ({threads} threads) output {o}[{i}]: {a} vs reference {b} (scale {scale})"
                    );
                }
            }
        }
    }
}

fn window(k: [usize; 2], s: [usize; 2], d: [usize; 2], p: [usize; 4]) -> Window {
    Window {
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        dilations: d.to_vec(),
        pads: p.to_vec(),
        auto_pad: AutoPad::NotSet,
    }
}

/// A Conv node with `params` on x, weights and bias, checked against the reference.
fn check_conv(what: &str, x: Tensor, wt: Tensor, bias: Option<Tensor>, params: ConvParams) {
    let oc = wt.shape()[0];
    let want = reference::conv(&nchw(&x), wt.as_slice().unwrap(), f32s(&bias), oc, &params);
    let op = Op::Conv(Conv {
        window: window(params.kernel, params.strides, params.dilations, params.pads),
        group: params.group,
        activation: params.activation,
    });
    check(
        what,
        op,
        x,
        vec![("w", Some(wt)), ("b", bias)],
        vec![tensor(want)],
    );
}

#[test]
fn conv_matches_reference_on_random_shapes() {
    for case in 0..CASES {
        let group = match case % 3 {
            0 => 1,
            1 => rng_usize(2, 3),
            _ => 0, // depthwise, set below
        };
        let (icg, ocg, group) = if group == 0 {
            (1, 1, rng_usize(2, 24))
        } else {
            (rng_usize(1, 9), rng_usize(1, 19), group)
        };
        let k = [rng_usize(1, 4), rng_usize(1, 4)];
        let s = [rng_usize(1, 3), rng_usize(1, 3)];
        let d = [rng_usize(1, 2), rng_usize(1, 2)];
        let p = [
            rng_usize(0, 2),
            rng_usize(0, 2),
            rng_usize(0, 2),
            rng_usize(0, 2),
        ];
        let h = (k[0] - 1) * d[0] + 1 + rng_usize(0, 20);
        let w = (k[1] - 1) * d[1] + 1 + rng_usize(0, 40);
        let n = rng_usize(1, 2);
        let x = random_f32(&[n, icg * group, h, w], -1.0, 1.0);
        let wt = random_f32(&[ocg * group, icg, k[0], k[1]], -1.0, 1.0);
        let bias = (case % 2 == 0).then(|| random_f32(&[ocg * group], -1.0, 1.0));
        let what = format!(
            "Conv x{:?} w{:?} strides {s:?} dilations {d:?} pads {p:?} group {group}",
            x.shape(),
            wt.shape()
        );
        let params = ConvParams {
            kernel: k,
            strides: s,
            dilations: d,
            pads: p,
            group,
            activation: activation(),
        };
        check_conv(&what, x, wt, bias, params);
    }
}

/// Dense 3x3 stride-1 convolutions deep and wide enough for the Winograd path (the CRNN's
/// conv2), with odd sizes that leave partial tiles and partial panels, asymmetric pads.
#[test]
fn winograd_conv_matches_reference_on_random_shapes() {
    for case in 0..CASES / 2 {
        let (ic, oc) = (rng_usize(8, 40), rng_usize(8, 40));
        let p: [usize; 4] = std::array::from_fn(|_| rng_usize(0, 2));
        let (h, w) = (rng_usize(3, 20), rng_usize(50, 130));
        let x = random_f32(&[rng_usize(1, 2), ic, h, w], -1.0, 1.0);
        let wt = random_f32(&[oc, ic, 3, 3], -1.0, 1.0);
        let bias = (case % 2 == 0).then(|| random_f32(&[oc], -1.0, 1.0));
        let what = format!(
            "Winograd Conv x{:?} w{:?} pads {p:?}",
            x.shape(),
            wt.shape()
        );
        let params = ConvParams {
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: p,
            group: 1,
            activation: activation(),
        };
        check_conv(&what, x, wt, bias, params);
    }
}

/// Strided convolutions whose windows stop short of the input's end, so that the padded
/// input has the input's own size although it has a leading pad (random values; the first
/// shape is one the random cases once caught with the padded copy wrongly skipped).
#[test]
fn strided_conv_with_a_leading_pad_matches_reference() {
    for (x, w, strides, dilations, pads) in [
        ([2, 8, 17, 26], [3, 8, 2, 4], [2, 1], [2, 1], [1, 0, 0, 0]),
        ([1, 3, 15, 40], [7, 3, 3, 3], [2, 2], [1, 1], [1, 1, 0, 0]),
        ([1, 4, 9, 33], [6, 4, 3, 2], [3, 1], [1, 2], [2, 0, 0, 0]),
    ] {
        let what =
            format!("Conv x{x:?} w{w:?} strides {strides:?} dilations {dilations:?} pads {pads:?}");
        let params = ConvParams {
            kernel: [w[2], w[3]],
            strides,
            dilations,
            pads,
            group: 1,
            activation: activation(),
        };
        let bias = random_f32(&[w[0]], -1.0, 1.0);
        let (x, w) = (random_f32(&x, -1.0, 1.0), random_f32(&w, -1.0, 1.0));
        check_conv(&what, x, w, Some(bias), params);
    }
}

/// Stem convolutions (1 to 4 input channels, strides 1 to 4, one group): the direct kernel on
/// AVX-512F and AVX2, im2col + GEMM on the portable path.
#[test]
fn stem_conv_matches_reference_on_random_shapes() {
    for _ in 0..CASES {
        let (c, oc) = (rng_usize(1, 4), rng_usize(1, 37));
        let k = [rng_usize(1, 5), rng_usize(1, 5)];
        // Left pads past the stride too: the first input column then lands in a later
        // column phase.
        let p = [
            rng_usize(0, 5),
            rng_usize(0, 5),
            rng_usize(0, 2),
            rng_usize(0, 2),
        ];
        let (h, w) = (k[0] + rng_usize(0, 12), k[1] + rng_usize(0, 60));
        let x = random_f32(&[rng_usize(1, 2), c, h, w], -1.0, 1.0);
        let wt = random_f32(&[oc, c, k[0], k[1]], -1.0, 1.0);
        let bias = Some(random_f32(&[oc], -1.0, 1.0));
        let strides = [rng_usize(1, 4), rng_usize(1, 4)];
        let params = ConvParams {
            kernel: k,
            strides,
            dilations: [1, 1],
            pads: p,
            group: 1,
            activation: activation(),
        };
        let what = format!(
            "stem Conv x{:?} w{:?} strides {strides:?} pads {p:?}",
            x.shape(),
            wt.shape()
        );
        check_conv(&what, x, wt, bias, params);
    }
}

/// A Conv followed by a 2x2 MaxPool at stride 2, which the CPU backend takes into the conv:
/// stem convs (few input channels: the direct kernel pools row pairs), deep 3x3 convs on
/// wide inputs (Winograd pools each tile) and the rest (the GEMM path pools a scratch copy);
/// odd and even sizes, every activation, NaN inputs (a NaN in a window wins), against conv
/// then pool by their definitions.
#[test]
fn conv_with_max_pool_matches_reference() {
    for case in 0..CASES {
        // Every eighth case has one NaN, through a 1x1 conv so that it reaches one pixel of
        // its pool window: the top left one, which a plain max would drop.
        let nan = case % 8 == 7;
        let kind = case % 3;
        let (c, oc) = match kind {
            0 => (rng_usize(1, 4), rng_usize(1, 37)),
            1 => (rng_usize(8, 16), rng_usize(8, 20)),
            _ => (rng_usize(5, 12), rng_usize(1, 20)),
        };
        let k = match (nan, kind) {
            (true, _) => [1, 1],
            (false, 1) => [3, 3],
            _ => [rng_usize(1, 4), rng_usize(1, 4)],
        };
        let p = if nan {
            [0; 4]
        } else {
            let q = if kind == 1 { 1 } else { 2 };
            [
                rng_usize(0, q),
                rng_usize(0, q),
                rng_usize(0, q),
                rng_usize(0, q),
            ]
        };
        let (h, w) = match kind {
            // Wide enough for Winograd's panels (96 columns: 24 tiles, 3/4 of 32).
            1 => (rng_usize(4, 14), rng_usize(100, 140)),
            _ => (k[0] + 1 + rng_usize(0, 12), k[1] + 1 + rng_usize(0, 80)),
        };
        let mut x = random_f32(&[rng_usize(1, 2), c, h, w], -1.0, 1.0);
        if nan {
            let mut v = x.to_f32_vec().unwrap();
            let (y, xo) = (2 * rng_usize(0, h / 2 - 1), 2 * rng_usize(0, w / 2 - 1));
            v[y * w + xo] = f32::NAN;
            x = Tensor::from_vec(x.shape().to_vec(), v).unwrap();
        }
        let wt = random_f32(&[oc, c, k[0], k[1]], -1.0, 1.0);
        let bias = Some(random_f32(&[oc], -1.0, 1.0));
        let params = ConvParams {
            kernel: k,
            strides: [1, 1],
            dilations: [1, 1],
            pads: p,
            group: 1,
            activation: activation(),
        };
        let conv = tensor(reference::conv(
            &nchw(&x),
            wt.as_slice().unwrap(),
            f32s(&bias),
            oc,
            &params,
        ));
        let want = max_pool_2x2(&conv);
        let what = format!(
            "Conv x{:?} w{:?} pads {p:?} + MaxPool 2x2",
            x.shape(),
            wt.shape()
        );
        let nodes = vec![
            Node {
                name: "conv".into(),
                op: Op::Conv(Conv {
                    window: window(k, [1, 1], [1, 1], p),
                    group: 1,
                    activation: params.activation,
                }),
                inputs: vec!["x".into(), "w".into(), "b".into()],
                outputs: vec!["c".into()],
            },
            Node {
                name: "pool".into(),
                op: Op::MaxPool(Pool {
                    window: window([2, 2], [2, 2], [1, 1], [0; 4]),
                    ceil_mode: false,
                    count_include_pad: false,
                }),
                inputs: vec!["c".into()],
                outputs: vec!["y0".into()],
            },
        ];
        check_graph(
            &what,
            nodes,
            x,
            vec![("w", Some(wt)), ("b", bias)],
            vec![want],
        );
    }
}

/// MaxPool 2x2 at stride 2 by its definition, a NaN in a window giving NaN (as the CPU
/// backend's pool does; the reference's comparisons skip NaN).
fn max_pool_2x2(x: &Tensor) -> Tensor {
    let [n, c, h, w] = nchw(x).shape;
    let v = x.as_slice::<f32>().unwrap();
    let (oh, ow) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in v.chunks_exact(h * w) {
        for y in 0..oh {
            for xo in 0..ow {
                let at = |dy: usize, dx: usize| plane[(2 * y + dy) * w + 2 * xo + dx];
                let window = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                out.push(if window.iter().any(|v| v.is_nan()) {
                    f32::NAN
                } else {
                    window.into_iter().fold(f32::NEG_INFINITY, f32::max)
                });
            }
        }
    }
    Tensor::from_vec(vec![n, c, oh, ow], out).unwrap()
}

/// The fusion above happens, but not where the conv's output is read twice.
#[test]
fn max_pool_fuses_into_conv_only_where_it_may() {
    for second_reader in [false, true] {
        let known = |s: &[usize]| -> Vec<Dim> { s.iter().map(|&d| Dim::Known(d)).collect() };
        let mut nodes = vec![
            Node {
                name: "conv".into(),
                op: Op::Conv(Conv {
                    window: window([3, 3], [1, 1], [1, 1], [1; 4]),
                    group: 1,
                    activation: Some(Activation::Relu),
                }),
                inputs: vec!["x".into(), "w".into()],
                outputs: vec!["c".into()],
            },
            Node {
                name: "pool".into(),
                op: Op::MaxPool(Pool {
                    window: window([2, 2], [2, 2], [1, 1], [0; 4]),
                    ceil_mode: false,
                    count_include_pad: false,
                }),
                inputs: vec!["c".into()],
                outputs: vec!["y".into()],
            },
        ];
        let mut outputs = vec![ValueInfo::new("y", DType::F32, known(&[1, 8, 5, 10]))];
        if second_reader {
            nodes.push(Node {
                name: "relu".into(),
                op: Op::Unary(accel_core::ir::UnaryOp::Relu),
                inputs: vec!["c".into()],
                outputs: vec!["z".into()],
            });
            outputs.push(ValueInfo::new("z", DType::F32, known(&[1, 8, 10, 20])));
        }
        let mut g = Graph {
            opset: 17,
            inputs: vec![ValueInfo::new("x", DType::F32, known(&[1, 3, 10, 20]))],
            outputs,
            nodes,
            ..Default::default()
        };
        g.constants
            .insert("w".into(), Arc::new(random_f32(&[8, 3, 3, 3], -1.0, 1.0)));
        let exe = accel_cpu::CpuExecutable::new(&g, 1, accel_core::Precision::F32).unwrap();
        let steps = exe.step_names();
        assert_eq!(
            steps.contains(&"pool"),
            second_reader,
            "steps {steps:?} (conv read twice: {second_reader})"
        );
        let outs = exe
            .run(&[random_f32(&[1, 3, 10, 20], -1.0, 1.0).view()])
            .unwrap();
        assert_eq!(outs[0].shape(), [1, 8, 5, 10]);
    }
}

/// Conv followed by Add(conv, x) with matching shapes: the Add is fused into the Conv's
/// epilogue (GEMM 1x1 and 3x3, depthwise) and must equal conv + x from the reference.
#[test]
fn residual_add_fuses_into_conv_and_matches_reference() {
    for case in 0..CASES {
        let c = rng_usize(1, 20);
        let (k, group) = match case % 3 {
            0 => (1, 1),
            1 => (3, 1),
            _ => (3, c),
        };
        let pad = k / 2;
        let x = random_f32(
            &[rng_usize(1, 2), c, rng_usize(1, 12), rng_usize(1, 40)],
            -1.0,
            1.0,
        );
        let wt = random_f32(&[c, c / group, k, k], -1.0, 1.0);
        let bias = random_f32(&[c], -1.0, 1.0);
        let params = ConvParams {
            kernel: [k, k],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [pad; 4],
            group,
            activation: activation(),
        };
        let (mut want, shape) = reference::conv(
            &nchw(&x),
            wt.as_slice().unwrap(),
            Some(bias.as_slice().unwrap()),
            c,
            &params,
        );
        want.iter_mut()
            .zip(x.as_slice::<f32>().unwrap())
            .for_each(|(w, &v)| *w += v);
        let known = |t: &Tensor| -> Vec<Dim> { t.shape().iter().map(|&d| Dim::Known(d)).collect() };
        let mut g = Graph {
            opset: 17,
            inputs: vec![ValueInfo::new("x", DType::F32, known(&x))],
            outputs: vec![ValueInfo {
                name: "y".into(),
                dtype: DType::F32,
                shape: None,
            }],
            nodes: vec![
                Node {
                    name: "conv".into(),
                    op: Op::Conv(Conv {
                        window: window(
                            params.kernel,
                            params.strides,
                            params.dilations,
                            params.pads,
                        ),
                        group,
                        activation: params.activation,
                    }),
                    inputs: vec!["x".into(), "w".into(), "b".into()],
                    outputs: vec!["c".into()],
                },
                Node {
                    name: "add".into(),
                    op: Op::Binary(accel_core::ir::BinaryOp::Add),
                    inputs: vec!["c".into(), "x".into()],
                    outputs: vec!["y".into()],
                },
            ],
            ..Default::default()
        };
        g.constants.insert("w".into(), Arc::new(wt));
        g.constants.insert("b".into(), Arc::new(bias));
        accel_core::passes::infer_shapes(&mut g).unwrap();
        let what = format!("Conv k{k} group {group} + Add, x{:?}", x.shape());
        for threads in [1, 2] {
            let exe = accel_cpu::CpuExecutable::new(&g, threads, accel_core::Precision::F32)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                exe.steps(),
                ["Conv+residual conv"],
                "{what}: the Add was not fused"
            );
            for run in ["first", "planned"] {
                let got = accel_core::Executable::run(&exe, &[x.view()])
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .remove(0);
                assert_eq!(got.shape(), shape.as_slice());
                let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.as_slice::<f32>().unwrap().iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{what} ({threads} threads, {run} run) [{i}]: {a} vs reference {b}"
                    );
                }
            }
        }
    }
}

/// MobileNet's depthwise 3x3 at stride 1 and 2 (a dedicated kernel), 'same' and asymmetric
/// padding, planes from 1x1 to wider than two register blocks.
#[test]
fn depthwise_3x3_matches_reference_on_random_shapes() {
    for case in 0..CASES {
        let stride = 1 + case % 2;
        let channels = rng_usize(1, 20);
        let p = [
            rng_usize(0, 1),
            rng_usize(0, 1),
            rng_usize(0, 2),
            rng_usize(0, 2),
        ];
        let h = rng_usize(3 - p[0] - p[2].min(1), 20);
        let w = rng_usize(3 - p[1] - p[3].min(1), 70);
        let x = random_f32(&[rng_usize(1, 2), channels, h, w], -1.0, 1.0);
        let wt = random_f32(&[channels, 1, 3, 3], -1.0, 1.0);
        let bias = Some(random_f32(&[channels], -1.0, 1.0));
        let params = ConvParams {
            kernel: [3, 3],
            strides: [stride; 2],
            dilations: [1, 1],
            pads: p,
            group: channels,
            activation: activation(),
        };
        let what = format!("depthwise 3x3 x{:?} stride {stride} pads {p:?}", x.shape());
        check_conv(&what, x, wt, bias, params);
    }
}

#[test]
fn conv_transpose_matches_reference_on_random_shapes() {
    for case in 0..CASES {
        // Every fourth case dilated, every fourth grouped.
        let group = if case % 4 == 3 { 2 } else { 1 };
        let d = if case % 4 == 2 {
            [2, rng_usize(1, 2)]
        } else {
            [1, 1]
        };
        let (icg, ocg) = (rng_usize(1, 12), rng_usize(1, 20));
        let k = [rng_usize(1, 4), rng_usize(1, 4)];
        let s = [rng_usize(1, 3), rng_usize(1, 3)];
        let p = [
            rng_usize(0, k[0] - 1),
            rng_usize(0, k[1] - 1),
            rng_usize(0, k[0] - 1),
            rng_usize(0, k[1] - 1),
        ];
        // Tall enough that the padding leaves at least one output row and column. Odd
        // cases have outputs of at least 16 x 20, past the gather map's 256 pixels, so both
        // col2im paths are checked.
        let (h0, w0) = if case % 2 == 1 {
            (rng_usize(16, 20), rng_usize(20, 30))
        } else {
            (rng_usize(1, 12), rng_usize(1, 20))
        };
        let h = h0 + (p[0] + p[2]).div_ceil(s[0]);
        let w = w0 + (p[1] + p[3]).div_ceil(s[1]);
        let x = random_f32(&[rng_usize(1, 2), icg * group, h, w], -1.0, 1.0);
        let wt = random_f32(&[icg * group, ocg, k[0], k[1]], -1.0, 1.0);
        let bias = (case % 2 == 0).then(|| random_f32(&[ocg * group], -1.0, 1.0));
        let what = format!(
            "ConvTranspose x{:?} w{:?} strides {s:?} dilations {d:?} pads {p:?} group {group}",
            x.shape(),
            wt.shape()
        );
        let params = ConvParams {
            kernel: k,
            strides: s,
            dilations: d,
            pads: p,
            group,
            activation: activation(),
        };
        let want =
            reference::conv_transpose(&nchw(&x), wt.as_slice().unwrap(), f32s(&bias), ocg, &params);
        let op = Op::ConvTranspose(ConvTranspose {
            window: window(k, s, d, p),
            group,
            output_padding: vec![],
            output_shape: None,
            activation: params.activation,
        });
        check(
            &what,
            op,
            x,
            vec![("w", Some(wt)), ("b", bias)],
            vec![tensor(want)],
        );
    }
}

/// Stride-2 ConvTransposes with 3 or 4 taps, deep and wide enough that the backend runs
/// them by Winograd per output phase (`conv_transpose_winograd`): every pad, both kernel
/// sizes per axis, batches of 1 and 2.
#[test]
fn stride2_conv_transpose_by_phases_matches_reference() {
    for _ in 0..CASES {
        let (ic, oc) = (rng_usize(8, 24), rng_usize(8, 20));
        let k = [rng_usize(3, 4), rng_usize(3, 4)];
        let p = [
            rng_usize(0, k[0] - 1),
            rng_usize(0, k[1] - 1),
            rng_usize(0, k[0] - 1),
            rng_usize(0, k[1] - 1),
        ];
        // At least 10 x 10 inputs: 25 tiles per phase or more, which fill the GEMM panels.
        let (h, w) = (rng_usize(10, 20), rng_usize(10, 40));
        let x = random_f32(&[rng_usize(1, 2), ic, h, w], -1.0, 1.0);
        let wt = random_f32(&[ic, oc, k[0], k[1]], -1.0, 1.0);
        let bias = Some(random_f32(&[oc], -1.0, 1.0));
        let what = format!(
            "ConvTranspose x{:?} w{:?} strides [2, 2] pads {p:?}",
            x.shape(),
            wt.shape()
        );
        let params = ConvParams {
            kernel: k,
            strides: [2, 2],
            dilations: [1, 1],
            pads: p,
            group: 1,
            activation: activation(),
        };
        let want =
            reference::conv_transpose(&nchw(&x), wt.as_slice().unwrap(), f32s(&bias), oc, &params);
        let op = Op::ConvTranspose(ConvTranspose {
            window: window(k, [2, 2], [1, 1], p),
            group: 1,
            output_padding: vec![],
            output_shape: None,
            activation: params.activation,
        });
        check(
            &what,
            op,
            x,
            vec![("w", Some(wt)), ("b", bias)],
            vec![tensor(want)],
        );
    }
}

#[test]
fn matmul_and_gemm_match_reference_on_random_shapes() {
    for _ in 0..CASES {
        let (m, k, n) = (rng_usize(1, 70), rng_usize(1, 70), rng_usize(1, 70));
        let batches = rng_usize(1, 3);
        let x = random_f32(&[batches, m, k], -1.0, 1.0);
        let b = random_f32(&[k, n], -1.0, 1.0);
        let what = format!("MatMul x{:?} b{:?}", x.shape(), b.shape());
        let (xv, bv) = (x.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let want: Vec<f32> = (0..batches)
            .flat_map(|i| reference::matmul(&xv[i * m * k..(i + 1) * m * k], bv, m, k, n, false))
            .collect();
        let want = tensor((want, vec![batches, m, n]));
        check(
            &what,
            Op::MatMul { activation: None },
            x,
            vec![("b", Some(b))],
            vec![want],
        );

        let trans_b = rng_usize(0, 1) == 1;
        let x = random_f32(&[m, k], -1.0, 1.0);
        let b_shape = if trans_b { [n, k] } else { [k, n] };
        let b = random_f32(&b_shape, -1.0, 1.0);
        let c = random_f32(&[n], -1.0, 1.0);
        let what = format!("Gemm x{:?} b{:?} trans_b {trans_b}", x.shape(), b.shape());
        let act = activation();
        let mut want = reference::matmul(
            x.as_slice().unwrap(),
            b.as_slice().unwrap(),
            m,
            k,
            n,
            trans_b,
        );
        let cv = c.as_slice::<f32>().unwrap();
        for (i, v) in want.iter_mut().enumerate() {
            *v += cv[i % n];
            *v = act.map_or(*v, |a| a.apply(*v));
        }
        let op = Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b,
            activation: act,
        });
        let want = tensor((want, vec![m, n]));
        check(
            &what,
            op,
            x,
            vec![("b", Some(b)), ("c", Some(c))],
            vec![want],
        );
    }
}

#[test]
fn lstm_matches_reference_on_random_shapes() {
    for case in 0..CASES {
        let direction = [
            Direction::Forward,
            Direction::Reverse,
            Direction::Bidirectional,
        ][case % 3];
        let nd = direction.num_directions();
        let (h, input) = (rng_usize(1, 70), rng_usize(1, 40));
        let (seq, batch) = (rng_usize(1, 12), rng_usize(1, 3));
        let x = random_f32(&[seq, batch, input], -1.0, 1.0);
        let w = random_f32(&[nd, 4 * h, input], -0.5, 0.5);
        let r = random_f32(&[nd, 4 * h, h], -0.5, 0.5);
        let b = random_f32(&[nd, 8 * h], -0.5, 0.5);
        let what = format!("LSTM {direction:?} hidden {h} x{:?}", x.shape());
        let [y, yh, yc] = reference::lstm(
            x.as_slice().unwrap(),
            seq,
            batch,
            input,
            w.as_slice().unwrap(),
            r.as_slice().unwrap(),
            b.as_slice().unwrap(),
            h,
            direction,
        );
        let want = vec![
            tensor((y, vec![seq, nd, batch, h])),
            tensor((yh, vec![nd, batch, h])),
            tensor((yc, vec![nd, batch, h])),
        ];
        let op = Op::Lstm(Lstm {
            hidden_size: h,
            direction,
            clip: None,
            input_forget: false,
            layout: 0,
        });
        check(
            &what,
            op,
            x,
            vec![("w", Some(w)), ("r", Some(r)), ("b", Some(b))],
            want,
        );
    }
}

#[test]
fn pools_match_reference_on_random_shapes() {
    for case in 0..CASES {
        let max = case % 2 == 0;
        // Every fourth case is the CRNN's 2x2 stride-2 pool, which has its own fast path.
        let (k, s, p) = if case % 4 < 2 {
            ([2, 2], [2, 2], [0; 4])
        } else {
            let k = [rng_usize(1, 3), rng_usize(1, 3)];
            (
                k,
                [rng_usize(1, 3), rng_usize(1, 3)],
                [
                    rng_usize(0, k[0] - 1),
                    rng_usize(0, k[1] - 1),
                    rng_usize(0, k[0] - 1),
                    rng_usize(0, k[1] - 1),
                ],
            )
        };
        let x = random_f32(
            &[
                rng_usize(1, 2),
                rng_usize(1, 9),
                k[0] + rng_usize(0, 15),
                k[1] + rng_usize(0, 30),
            ],
            -1.0,
            1.0,
        );
        let pool = Pool {
            window: window(k, s, [1, 1], p),
            ceil_mode: case % 3 == 0,
            count_include_pad: case % 5 == 0,
        };
        let what = format!(
            "{} x{:?} kernel {k:?} strides {s:?} pads {p:?} ceil {}",
            if max { "MaxPool" } else { "AveragePool" },
            x.shape(),
            pool.ceil_mode
        );
        let params = ConvParams {
            kernel: k,
            strides: s,
            dilations: [1, 1],
            pads: p,
            group: 1,
            activation: None,
        };
        let want = reference::pool(
            &nchw(&x),
            max,
            &params,
            pool.ceil_mode,
            pool.count_include_pad,
        );
        let op = if max {
            Op::MaxPool(pool)
        } else {
            Op::AveragePool(pool)
        };
        check(&what, op, x, vec![], vec![tensor(want)]);
    }
}

/// `Precision::F16` keeps the GEMM-packed weights of both shipped models as f16: the U-Net's
/// weights take about half the memory, the CRNN's about 70% (its LSTMs' recurrent weights,
/// 45% of the model, stay f32). Rounding every weight to f16 moves the outputs: on random
/// inputs the mean difference to f32 stays below 1e-4 and the largest below 3e-2 (the
/// U-Net's sigmoid, where a few pixels sit near 0.5, sees up to about 1.5e-2).
#[test]
fn f16_weights_halve_memory_and_stay_close() {
    use accel_core::{Executable, Precision, passes};
    use accel_cpu::CpuExecutable;
    for (file, shape, max_share) in [
        ("crnn.onnx", [1, 50, 350, 3], 0.75),
        ("unet128.onnx", [1, 128, 128, 3], 0.55),
    ] {
        let path = accel_tests::model_path(file);
        let mut g = accel_core::onnx::load_model(&path).expect("loads");
        passes::optimize(&mut g).expect("optimizes");
        let x = random_f32(&shape, 0.0, 1.0);
        let full = CpuExecutable::new(&g, 2, Precision::F32).expect("compiles");
        let half = CpuExecutable::new(&g, 2, Precision::F16).expect("compiles");
        let (a, b) = (
            full.run(&[x.view()]).expect("runs").remove(0),
            half.run(&[x.view()]).expect("runs").remove(0),
        );
        let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        let mean = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum::<f32>() / a.len() as f32;
        println!(
            "{file}: weights {:.2} MB f32, {:.2} MB f16; |f16 - f32| max {err:.2e} mean {mean:.2e} (output scale {scale:.2})",
            full.weight_bytes() as f64 / 1e6,
            half.weight_bytes() as f64 / 1e6
        );
        assert!(
            err <= 3e-2 * scale,
            "{file}: f16 max error {err} (scale {scale})"
        );
        assert!(
            mean <= 1e-4 * scale,
            "{file}: f16 mean error {mean} (scale {scale})"
        );
        assert!(
            (half.weight_bytes() as f64) < max_share * full.weight_bytes() as f64,
            "{file}: f16 weights {} bytes vs f32 {}",
            half.weight_bytes(),
            full.weight_bytes()
        );
    }
}

/// A Reshape whose target is a run-time input: the same input shapes give different output
/// shapes, so the executor must not replay a memory plan recorded for the first target.
#[test]
fn shapes_set_by_data_are_not_planned() {
    let node = |name: &str, op: Op, inputs: &[&str], output: &str| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![output.into()],
    };
    let g = Graph {
        opset: 17,
        inputs: vec![
            ValueInfo::new("x", DType::F32, vec![Dim::Known(6)]),
            ValueInfo::new("s", DType::I64, vec![Dim::Known(2)]),
        ],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: None,
        }],
        nodes: vec![
            node(
                "reshape",
                Op::Reshape { allowzero: false },
                &["x", "s"],
                "r",
            ),
            node(
                "relu",
                Op::Unary(accel_core::ir::UnaryOp::Relu),
                &["r"],
                "y",
            ),
        ],
        ..Default::default()
    };
    let exe = accel_cpu::CpuExecutable::new(&g, 2, accel_core::Precision::F32).unwrap();
    let x = random_f32(&[6], -1.0, 1.0);
    let want: Vec<f32> = x
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    for target in [[2i64, 3], [3, 2], [2, 3], [6, 1]] {
        let s = Tensor::from_vec(vec![2], target.to_vec()).unwrap();
        let y = accel_core::Executable::run(&exe, &[x.view(), s.view()])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), [target[0] as usize, target[1] as usize]);
        assert_eq!(y.as_slice::<f32>().unwrap(), want.as_slice());
    }
}
