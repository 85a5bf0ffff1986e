//! The wgpu backend against the CPU backend and candle-cpu (an independent second oracle),
//! node by node: every operator of both seed graphs (and the other kernels' forms) on small
//! random shapes drawn each run, with fresh random inputs and weights; f32 within 1e-4 and
//! f16 storage within 1e-2, relative to the output's magnitude. The CPU backend and candle
//! are first held to each other (1e-4), so these cases check candle's ops too, with or
//! without an adapter. Runs for real on
//! lavapipe in CI (ACCEL_REQUIRE_WGPU=1 makes a missing adapter a failure); elsewhere a
//! machine without an adapter reports the tests as skipped.

use accel_candle::CandleBackend;
use accel_core::ir::{
    Activation, BinaryOp, Conv, ConvTranspose, Dim, Direction, Gemm, Graph, Lstm, Node, Op, Pool,
    UnaryOp, ValueInfo, Window,
};
use accel_core::{Backend, CompileOptions, DType, Error, Precision, Tensor};
use accel_cpu::CpuBackend;
use accel_tests::{random_f32, wgpu_backend};
use rand::RngExt;
use std::sync::Arc;

const CASES: usize = 12;

fn rng(lo: usize, hi: usize) -> usize {
    rand::rng().random_range(lo..=hi)
}

fn activation() -> Option<Activation> {
    [
        None,
        Some(Activation::Relu),
        Some(Activation::Clip { min: 0.0, max: 6.0 }),
        Some(Activation::Sigmoid),
    ][rng(0, 3)]
}

/// A one-node graph: `inputs` are graph inputs (runtime tensors) or constants, in the
/// node's input order ("" for an absent optional one).
fn graph(op: Op, inputs: &[(&str, Option<&Tensor>, bool)], outputs: usize) -> Graph {
    let node = Node {
        name: "node".into(),
        op,
        // An absent optional input is named "".
        inputs: inputs
            .iter()
            .map(|(n, t, _)| {
                if t.is_some() {
                    n.to_string()
                } else {
                    String::new()
                }
            })
            .collect(),
        outputs: (0..outputs).map(|i| format!("y{i}")).collect(),
    };
    let mut g = Graph {
        opset: 17,
        nodes: vec![node],
        outputs: (0..outputs)
            .map(|i| ValueInfo {
                name: format!("y{i}"),
                dtype: DType::F32,
                shape: None,
            })
            .collect(),
        ..Default::default()
    };
    for (name, t, constant) in inputs {
        let Some(t) = t else { continue };
        if *constant {
            g.constants.insert(name.to_string(), Arc::new((*t).clone()));
        } else {
            g.inputs.push(ValueInfo::new(
                *name,
                DType::F32,
                t.shape().iter().map(|&d| Dim::Known(d)).collect(),
            ));
        }
    }
    g
}

/// Every output of `got` within `tol` of `want`, relative to the largest |want|.
fn assert_close(what: &str, got: &[Tensor], want: &[Tensor], tol: f32, names: (&str, &str)) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (o, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what} output {o}");
        let (g, w) = (g.to_f32_vec().unwrap(), w.to_f32_vec().unwrap());
        let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= tol * scale,
                "{what} output {o}[{i}]: {} {a} vs {} {b} (scale {scale})",
                names.0,
                names.1
            );
        }
    }
}

/// Runs the node on the CPU backend, on candle and on wgpu; every output must agree.
fn check(what: &str, op: Op, inputs: &[(&str, Option<&Tensor>, bool)], outputs: usize) {
    let g = graph(op, inputs, outputs);
    let runtime: Vec<_> = inputs
        .iter()
        .filter(|(_, t, c)| t.is_some() && !c)
        .map(|(_, t, _)| t.unwrap().view())
        .collect();
    let opts = CompileOptions {
        threads: Some(1),
        ..Default::default()
    };
    let want = CpuBackend::new()
        .compile(&g, &opts)
        .and_then(|e| e.run(&runtime))
        .unwrap_or_else(|e| panic!("{what} on cpu: {e}"));
    let oracle = CandleBackend::cpu()
        .compile(&g, &opts)
        .and_then(|e| e.run(&runtime))
        .unwrap_or_else(|e| panic!("{what} on candle-cpu: {e}"));
    assert_close(what, &want, &oracle, 1e-4, ("cpu", "candle-cpu"));
    let Some(gpu) = wgpu_backend() else { return };
    // f32 within 1e-4; f16 storage (where the adapter has it) within 1e-2.
    for (precision, tol) in [(Precision::F32, 1e-4f32), (Precision::F16, 1e-2)] {
        let opts = CompileOptions {
            precision,
            ..Default::default()
        };
        let exe = match gpu.compile(&g, &opts) {
            Ok(e) => e,
            Err(e) if precision == Precision::F16 && e.to_string().contains("SHADER_F16") => {
                eprintln!("SKIPPED {what} in f16: {e}");
                continue;
            }
            Err(e) => panic!("{what} on wgpu ({precision}): {e}"),
        };
        // The second run reuses the planned buffers and the mapped upload buffer.
        for run in 0..2 {
            let got = exe
                .run(&runtime)
                .unwrap_or_else(|e| panic!("{what} on wgpu {precision} (run {run}): {e}"));
            let what = format!("{what} ({precision}, run {run})");
            assert_close(&what, &got, &want, tol, ("wgpu", "cpu"));
            assert_close(&what, &got, &oracle, tol, ("wgpu", "candle-cpu"));
        }
    }
}

/// A node reading runtime input x, constant weights w and an optional constant bias.
fn check_weighted(what: &str, op: Op, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) {
    check(
        what,
        op,
        &[
            ("x", Some(x), false),
            ("w", Some(w), true),
            ("b", bias, true),
        ],
        1,
    );
}

fn window(k: [usize; 2], s: [usize; 2], d: [usize; 2], p: [usize; 4]) -> Window {
    Window {
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        dilations: d.to_vec(),
        pads: p.to_vec(),
        ..Default::default()
    }
}

#[test]
fn conv_matches_the_cpu_backend() {
    for case in 0..CASES {
        // Dense (with 16 or more output channels through the tiled implicit GEMM, fewer
        // direct), grouped and depthwise in turn.
        let (group, icg, ocg) = match case % 3 {
            0 if case % 2 == 0 => (1, rng(1, 20), rng(16, 70)),
            0 => (1, rng(1, 9), rng(1, 12)),
            1 => (rng(2, 3), rng(1, 4), rng(1, 4)),
            _ => (rng(2, 12), 1, 1),
        };
        let k = [rng(1, 3), rng(1, 3)];
        let (s, d) = ([rng(1, 2), rng(1, 2)], [1, rng(1, 2)]);
        let p = [rng(0, k[0] - 1), rng(0, k[1] - 1), rng(0, 1), rng(0, 1)];
        let x = random_f32(&[rng(1, 2), icg * group, rng(5, 14), rng(5, 17)], -1.0, 1.0);
        let w = random_f32(&[ocg * group, icg, k[0], k[1]], -1.0, 1.0);
        let b = random_f32(&[ocg * group], -1.0, 1.0);
        let op = Op::Conv(Conv {
            window: window(k, s, d, p),
            group,
            activation: activation(),
        });
        let bias = (case % 2 == 0).then_some(&b);
        let what = format!(
            "Conv x{:?} w{:?} s{s:?} d{d:?} p{p:?} g{group}",
            x.shape(),
            w.shape()
        );
        check_weighted(&what, op, &x, &w, bias);
    }
}

#[test]
fn conv_transpose_matches_the_cpu_backend() {
    for case in 0..CASES {
        let group = if case % 3 == 2 { 2 } else { 1 };
        // Undilated one-group layers with 16 or more output channels take the per-phase
        // implicit GEMM, the rest the gather.
        let (icg, ocg) = if case % 2 == 0 {
            (rng(1, 20), rng(16, 40))
        } else {
            (rng(1, 8), rng(1, 8))
        };
        let k = [rng(1, 4), rng(1, 4)];
        let s = [rng(1, 3), rng(1, 3)];
        let d = if case % 4 == 1 { [2, 1] } else { [1, 1] };
        let p = [
            rng(0, k[0] - 1),
            rng(0, k[1] - 1),
            rng(0, k[0] - 1),
            rng(0, k[1] - 1),
        ];
        // Tall and wide enough that the pads leave at least one output row and column.
        let h = rng(2, 8) + (p[0] + p[2]).div_ceil(s[0]);
        let w_in = rng(2, 8) + (p[1] + p[3]).div_ceil(s[1]);
        let x = random_f32(&[rng(1, 2), icg * group, h, w_in], -1.0, 1.0);
        let w = random_f32(&[icg * group, ocg, k[0], k[1]], -1.0, 1.0);
        let b = random_f32(&[ocg * group], -1.0, 1.0);
        let op = Op::ConvTranspose(ConvTranspose {
            window: window(k, s, d, p),
            group,
            output_padding: vec![],
            output_shape: None,
            activation: activation(),
        });
        let what = format!(
            "ConvTranspose x{:?} w{:?} s{s:?} d{d:?} p{p:?}",
            x.shape(),
            w.shape()
        );
        let bias = (case % 2 == 0).then_some(&b);
        check_weighted(&what, op, &x, &w, bias);
    }
}

#[test]
fn one_dimensional_conv_and_pool_match_the_cpu_backend() {
    for case in 0..CASES / 2 {
        let (c, oc, k, s) = (rng(1, 6), rng(1, 20), rng(1, 4), rng(1, 2));
        let x = random_f32(&[rng(1, 2), c, rng(6, 40)], -1.0, 1.0);
        let w = random_f32(&[oc, c, k], -1.0, 1.0);
        let b = random_f32(&[oc], -1.0, 1.0);
        let window = Window {
            kernel_shape: vec![k],
            strides: vec![s],
            dilations: vec![1],
            pads: vec![rng(0, k - 1), rng(0, k - 1)],
            ..Default::default()
        };
        let op = Op::Conv(Conv {
            window: window.clone(),
            group: 1,
            activation: activation(),
        });
        let what = format!("Conv1d x{:?} w{:?} {window:?}", x.shape(), w.shape());
        check_weighted(&what, op, &x, &w, Some(&b));
        let pool = Pool {
            window,
            ceil_mode: case % 2 == 1,
            count_include_pad: false,
        };
        let op = if case % 2 == 0 {
            Op::MaxPool(pool)
        } else {
            Op::AveragePool(pool)
        };
        check(
            &format!("{} 1-D x{:?}", op.name(), x.shape()),
            op,
            &[("x", Some(&x), false)],
            1,
        );
    }
}

#[test]
fn pools_match_the_cpu_backend() {
    for case in 0..CASES {
        let k = [rng(1, 3), rng(1, 3)];
        let s = [rng(1, 2), rng(1, 2)];
        let p = [
            rng(0, k[0] - 1),
            rng(0, k[1] - 1),
            rng(0, k[0] - 1),
            rng(0, k[1] - 1),
        ];
        let x = random_f32(&[rng(1, 2), rng(1, 5), rng(4, 11), rng(4, 11)], -1.0, 1.0);
        let attrs = Pool {
            window: window(k, s, [1, 1], p),
            ceil_mode: case % 3 == 0,
            count_include_pad: case % 4 == 1,
        };
        let op = match case % 4 {
            0 | 2 => Op::MaxPool(attrs),
            1 => Op::AveragePool(attrs),
            _ => Op::GlobalAveragePool,
        };
        let what = format!("{} x{:?} k{k:?} s{s:?} p{p:?}", op.name(), x.shape());
        check(&what, op, &[("x", Some(&x), false)], 1);
    }
}

#[test]
fn matmul_and_gemm_match_the_cpu_backend() {
    for case in 0..CASES {
        let (m, k, n) = (rng(1, 40), rng(1, 40), rng(1, 40));
        // Batched with a broadcast weight (the CRNN's dense layers), 2-D, and a batch of A
        // against a batch of B.
        let (sa, sb) = match case % 3 {
            0 => (vec![rng(1, 3), m, k], vec![k, n]),
            1 => (vec![m, k], vec![k, n]),
            _ => (vec![2, 1, m, k], vec![3, k, n]),
        };
        let (a, b) = (random_f32(&sa, -1.0, 1.0), random_f32(&sb, -1.0, 1.0));
        let what = format!("MatMul {sa:?} x {sb:?}");
        let op = Op::MatMul {
            activation: activation(),
        };
        check(
            &what,
            op,
            &[("a", Some(&a), false), ("b", Some(&b), true)],
            1,
        );

        let (ta, tb) = (case % 2 == 1, case % 4 >= 2);
        let a = random_f32(&if ta { [k, m] } else { [m, k] }, -1.0, 1.0);
        let b = random_f32(&if tb { [n, k] } else { [k, n] }, -1.0, 1.0);
        let c_shape = if case % 3 == 0 { vec![n] } else { vec![m, n] };
        let c = random_f32(&c_shape, -1.0, 1.0);
        let op = Op::Gemm(Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: ta,
            trans_b: tb,
            activation: activation(),
        });
        let what = format!("Gemm {m}x{k}x{n} trans {ta} {tb} c{:?}", c.shape());
        check(
            &what,
            op,
            &[
                ("a", Some(&a), false),
                ("b", Some(&b), true),
                ("c", Some(&c), true),
            ],
            1,
        );
    }
}

#[test]
fn lstm_matches_the_cpu_backend() {
    for case in 0..CASES {
        let direction = [
            Direction::Forward,
            Direction::Reverse,
            Direction::Bidirectional,
        ][case % 3];
        let nd = direction.num_directions();
        let (h, input) = (rng(1, 70), rng(1, 30));
        let (seq, batch) = (rng(1, 10), rng(1, 3));
        // Every fourth case batch-first (layout 1: X [batch, seq, input], states
        // [batch, directions, hidden]).
        let layout = usize::from(case % 4 == 1);
        let (x_shape, state) = if layout == 1 {
            ([batch, seq, input], [batch, nd, h])
        } else {
            ([seq, batch, input], [nd, batch, h])
        };
        let x = random_f32(&x_shape, -1.0, 1.0);
        let w = random_f32(&[nd, 4 * h, input], -0.5, 0.5);
        let r = random_f32(&[nd, 4 * h, h], -0.5, 0.5);
        let b = random_f32(&[nd, 8 * h], -0.5, 0.5);
        let h0 = random_f32(&state, -1.0, 1.0);
        let c0 = random_f32(&state, -1.0, 1.0);
        let initial = case % 2 == 1;
        let op = Op::Lstm(Lstm {
            hidden_size: h,
            direction,
            clip: (case % 4 == 3).then_some(0.7),
            input_forget: case % 6 == 5,
            layout,
        });
        let what = format!(
            "LSTM {direction:?} hidden {h} x{:?} initial {initial}",
            x.shape()
        );
        check(
            &what,
            op,
            &[
                ("x", Some(&x), false),
                ("w", Some(&w), true),
                ("r", Some(&r), true),
                ("b", Some(&b), true),
                ("", None, true),
                ("h0", initial.then_some(&h0), false),
                ("c0", initial.then_some(&c0), false),
            ],
            3,
        );
    }
}

#[test]
fn softmax_and_elementwise_ops_match_the_cpu_backend() {
    for case in 0..CASES {
        let shape = vec![rng(1, 3), rng(1, 7), rng(1, 13)];
        let x = random_f32(&shape, -3.0, 3.0);
        let axis = rng(0, 2) as i64 - if case % 2 == 0 { 3 } else { 0 };
        let op = Op::Softmax {
            axis,
            legacy: false,
        };
        check(
            &format!("Softmax x{shape:?} axis {axis}"),
            op,
            &[("x", Some(&x), false)],
            1,
        );
        let op = Op::LogSoftmax {
            axis,
            legacy: case % 3 == 0,
        };
        check(
            &format!("LogSoftmax x{shape:?} axis {axis}"),
            op,
            &[("x", Some(&x), false)],
            1,
        );

        for u in [
            UnaryOp::Relu,
            UnaryOp::Sigmoid,
            UnaryOp::Tanh,
            UnaryOp::Exp,
            UnaryOp::Neg,
            UnaryOp::Abs,
        ] {
            check(
                &format!("{u:?} x{shape:?}"),
                Op::Unary(u),
                &[("x", Some(&x), false)],
                1,
            );
        }
        let (lo, hi) = (Tensor::scalar(-0.5f32), Tensor::scalar(1.5f32));
        check(
            "Clip",
            Op::Clip,
            &[
                ("x", Some(&x), false),
                ("lo", Some(&lo), true),
                ("hi", Some(&hi), true),
            ],
            1,
        );
        // Broadcasting: a bias row (the CRNN's dense layers), a per-channel column, equal
        // shapes (the U-Net's residual adds).
        let other = match case % 3 {
            0 => vec![shape[2]],
            1 => vec![shape[0], 1, 1],
            _ => shape.clone(),
        };
        let y = random_f32(&other, 0.5, 2.0);
        for b in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
        ] {
            check(
                &format!("{b:?} {shape:?} {other:?}"),
                Op::Binary(b),
                &[("x", Some(&x), false), ("y", Some(&y), case % 2 == 0)],
                1,
            );
        }
    }
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

#[test]
fn layout_ops_match_the_cpu_backend() {
    for case in 0..CASES {
        let shape = vec![rng(1, 3), rng(1, 5), rng(1, 6), rng(1, 7)];
        let x = random_f32(&shape, -1.0, 1.0);
        let mut perm: Vec<usize> = (0..4).collect();
        perm.rotate_left(case % 4);
        perm.swap(0, case % 3);
        let op = Op::Transpose {
            perm: Some(perm.clone()),
        };
        check(
            &format!("Transpose {shape:?} {perm:?}"),
            op,
            &[("x", Some(&x), false)],
            1,
        );

        // Concat along a random axis, one part a runtime input and one a constant.
        let axis = case % 4;
        let mut other = shape.clone();
        other[axis] = rng(1, 4);
        let y = random_f32(&other, -1.0, 1.0);
        let op = Op::Concat { axis: axis as i64 };
        check(
            &format!("Concat {shape:?} {other:?} axis {axis}"),
            op,
            &[("x", Some(&x), false), ("y", Some(&y), case % 2 == 0)],
            1,
        );

        // Slices with negative starts and steps.
        let ax = case % 4;
        let dim = shape[ax] as i64;
        let (starts, ends, steps) = if case % 2 == 0 {
            (ints(&[0]), ints(&[dim.max(1)]), ints(&[2]))
        } else {
            (ints(&[-1]), ints(&[-dim - 1]), ints(&[-1]))
        };
        let axes = ints(&[ax as i64]);
        check(
            &format!("Slice {shape:?} axis {ax}"),
            Op::Slice,
            &[
                ("x", Some(&x), false),
                ("starts", Some(&starts), true),
                ("ends", Some(&ends), true),
                ("axes", Some(&axes), true),
                ("steps", Some(&steps), true),
            ],
            1,
        );

        // A reshape shares its input's buffer.
        let target = ints(&[shape[0] as i64, -1]);
        check(
            &format!("Reshape {shape:?}"),
            Op::Reshape { allowzero: false },
            &[("x", Some(&x), false), ("shape", Some(&target), true)],
            1,
        );
    }
}

#[test]
fn batch_norm_matches_the_cpu_backend() {
    let c = rng(1, 9);
    let x = random_f32(&[2, c, rng(1, 5), rng(1, 5)], -1.0, 1.0);
    let (g, b, m) = (
        random_f32(&[c], 0.5, 1.5),
        random_f32(&[c], -1.0, 1.0),
        random_f32(&[c], -1.0, 1.0),
    );
    let v = random_f32(&[c], 0.1, 2.0);
    check(
        "BatchNormalization",
        Op::BatchNormalization { epsilon: 1e-5 },
        &[
            ("x", Some(&x), false),
            ("g", Some(&g), true),
            ("b", Some(&b), true),
            ("m", Some(&m), true),
            ("v", Some(&v), true),
        ],
        1,
    );
}

#[test]
fn an_op_without_a_kernel_is_an_error_naming_it_and_its_node() {
    let Some(gpu) = wgpu_backend() else { return };
    let x = random_f32(&[2, 3], -1.0, 1.0);
    let g = graph(Op::Unary(UnaryOp::Erf), &[("x", Some(&x), false)], 1);
    match gpu.compile(&g, &CompileOptions::default()) {
        Err(e @ Error::InvalidNode { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("node") && msg.contains("Erf"), "{msg}");
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("Erf compiled on wgpu"),
    }
}

#[test]
fn a_tensor_past_the_binding_limit_is_refused_before_anything_is_allocated() {
    let Some(gpu) = wgpu_backend() else { return };
    let mib: usize = gpu
        .device()
        .details
        .iter()
        .find(|(k, _)| k == "max storage binding")
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .expect("devices lists the binding limit");
    // Past the limit (listed rounded down to whole MiB) by at least one value.
    let n = ((mib + 1) << 20) / 4 + 1;
    let g = Graph {
        opset: 17,
        inputs: vec![ValueInfo::new("x", DType::F32, vec![Dim::Known(n)])],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: None,
        }],
        nodes: vec![Node {
            name: "relu".into(),
            op: Op::Unary(UnaryOp::Relu),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
        }],
        ..Default::default()
    };
    match gpu.compile(&g, &CompileOptions::default()) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("'x'") && msg.contains("MiB") && msg.contains("batch"),
                "{msg}"
            );
        }
        Ok(_) => panic!("a {n}-value tensor compiled past a {mib} MiB binding limit"),
    }
}

#[test]
fn each_input_shape_gets_its_program_and_old_ones_are_rebuilt_when_needed() {
    let Some(gpu) = wgpu_backend() else { return };
    let mut g = graph(
        Op::Unary(UnaryOp::Sigmoid),
        &[("x", Some(&random_f32(&[1, 7], 0.0, 1.0)), false)],
        1,
    );
    g.inputs[0].shape = Some(vec![Dim::Sym("batch".into()), Dim::Known(7)]);
    let exe = gpu.compile(&g, &CompileOptions::default()).unwrap();
    // More batch sizes than an executable keeps programs for, then the first again.
    for batch in [1, 2, 3, 4, 5, 6, 1, 3] {
        let x = random_f32(&[batch, 7], -3.0, 3.0);
        let got = exe.run(&[x.view()]).unwrap()[0].to_f32_vec().unwrap();
        assert_eq!(got.len(), batch * 7);
        for (a, v) in got.iter().zip(x.to_f32_vec().unwrap()) {
            assert!(
                (a - 1.0 / (1.0 + (-v).exp())).abs() <= 1e-6,
                "batch {batch}"
            );
        }
    }
}
