//! Per-kernel CPU benchmarks: the GEMM shapes of both seed graphs and whole operators
//! (depthwise 3x3, the stem conv, the bidirectional LSTM). Throughput is reported in
//! elements = FLOPs, so criterion prints GFLOP/s ("Gelem/s").

use accel_benches::random_vec;
use accel_core::ir::{
    Activation, AutoPad, Conv, ConvTranspose, Dim, Direction, Graph, Lstm, Node, Op, ValueInfo,
    Window,
};
use accel_core::{Backend, CompileOptions, DType, Executable, Tensor};
use accel_cpu::CpuBackend;
use accel_cpu::kernels::gemm::{Blocking, Epilogue, PackedA, PackedB, gemm, gemm_panel};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

fn gemm_shapes(c: &mut Criterion) {
    // (name, M, K, N): CRNN conv2 as GEMM, CRNN dense, LSTM input projection, U-Net decoder,
    // the U-Net's up1-up3 ConvTransposes (up1: W^T [64 oc * 16 taps, 320 ic] by 8x8 input
    // pixels).
    let shapes = [
        ("crnn_conv2_64x288x4375", 64, 288, 4375),
        ("crnn_dense_87x768x64", 87, 768, 64),
        ("crnn_lstm1_proj_87x64x512", 87, 64, 512),
        ("unet_up_256x2048x256", 256, 2048, 256),
        ("unet_convt_up1_1024x320x64", 1024, 320, 64),
        ("unet_convt_up2_512x160x256", 512, 160, 256),
        ("unet_convt_up3_256x80x1024", 256, 80, 1024),
        ("square_512", 512, 512, 512),
    ];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut group = c.benchmark_group("gemm");
    for (name, m, k, n) in shapes {
        let a = PackedA::pack(&random_vec(m * k), m, k, k, 1);
        let b = PackedB::pack(&random_vec(k * n), k, n, n, 1);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| pool.install(|| gemm(&a, &b, &mut out, n, Epilogue::NONE)))
        });
    }
    group.finish();
}

/// The GEMMs of one Winograd block of the CRNN's conv2, on one thread: 36 products of a
/// packed U (64 x 32) by one B panel (32 x nr), written 36 * nr apart as the kernel does.
fn winograd_block_gemms(c: &mut Criterion) {
    let (m, k, pos) = (64, 32, 36);
    let nr = Blocking::active().nr;
    let us: Vec<PackedA> = (0..pos)
        .map(|_| PackedA::pack(&random_vec(m * k), m, k, k, 1))
        .collect();
    let v = random_vec(pos * k * nr);
    let mut out = vec![0.0f32; m * pos * nr];
    let mut group = c.benchmark_group("gemm");
    group.throughput(Throughput::Elements((2 * m * k * nr * pos) as u64));
    group.bench_function("winograd_block_36x_64x32xnr_1thread", |bench| {
        bench.iter(|| {
            for (p, u) in us.iter().enumerate() {
                let panel = &v[p * k * nr..][..k * nr];
                gemm_panel(u, panel, nr, &mut out[p * nr..], pos * nr, Epilogue::NONE);
            }
        })
    });
    group.finish();
}

/// A one-node graph on the CPU backend (default threads) with random constants.
fn one_node(op: Op, x: &[usize], consts: Vec<(&str, Vec<usize>)>) -> (Box<dyn Executable>, Tensor) {
    let mut g = Graph {
        opset: 17,
        inputs: vec![ValueInfo::new(
            "x",
            DType::F32,
            x.iter().map(|&d| Dim::Known(d)).collect(),
        )],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: None,
        }],
        nodes: vec![Node {
            name: "op".into(),
            op,
            inputs: std::iter::once("x".to_string())
                .chain(consts.iter().map(|c| c.0.to_string()))
                .collect(),
            outputs: vec!["y".into()],
        }],
        ..Default::default()
    };
    for (name, shape) in consts {
        let n = shape.iter().product();
        let t = Tensor::from_vec(shape, random_vec(n)).expect("shape");
        g.constants.insert(name.into(), Arc::new(t));
    }
    let exe = CpuBackend::new()
        .compile(&g, &CompileOptions::default())
        .expect("compiles");
    let input = Tensor::from_vec(x.to_vec(), random_vec(x.iter().product())).expect("shape");
    (exe, input)
}

fn conv_op(k: usize, stride: usize, pad: usize, group: usize) -> Op {
    Op::Conv(Conv {
        window: Window {
            kernel_shape: vec![k, k],
            strides: vec![stride; 2],
            dilations: vec![],
            pads: vec![pad; 4],
            auto_pad: AutoPad::NotSet,
        },
        group,
        activation: Some(Activation::Clip { min: 0.0, max: 6.0 }),
    })
}

/// The U-Net decoder's stride-2 ConvTranspose with kernel k and pads [p0, p0, p1, p1].
fn conv_transpose_op(k: usize, pads: [usize; 2]) -> Op {
    Op::ConvTranspose(ConvTranspose {
        window: Window {
            kernel_shape: vec![k, k],
            strides: vec![2, 2],
            dilations: vec![],
            pads: vec![pads[0], pads[0], pads[1], pads[1]],
            auto_pad: AutoPad::NotSet,
        },
        group: 1,
        output_padding: vec![],
        output_shape: None,
        activation: None,
    })
}

/// (name, op, input shape, constants with their shapes, FLOPs)
type OpCase = (
    &'static str,
    Op,
    Vec<usize>,
    Vec<(&'static str, Vec<usize>)>,
    usize,
);

/// Depthwise 3x3 (U-Net encoder), a small-k pointwise conv (U-Net block_1_expand), the
/// CRNN's convs (conv2 by implicit GEMM, the stem by the direct kernel), the U-Net's
/// stride-2 stem (direct, phase rows) and the CRNN's
/// bidirectional LSTMs (input GEMM + recurrence), as whole operators.
fn operators(c: &mut Criterion) {
    let mut group = c.benchmark_group("op");
    let cases: Vec<OpCase> = vec![
        (
            "depthwise3x3_s1_96x32x32",
            conv_op(3, 1, 1, 96),
            vec![1, 96, 32, 32],
            vec![("w", vec![96, 1, 3, 3]), ("b", vec![96])],
            2 * 9 * 96 * 32 * 32,
        ),
        (
            "depthwise3x3_s2_96x64x64",
            conv_op(3, 2, 1, 96),
            vec![1, 96, 64, 64],
            vec![("w", vec![96, 1, 3, 3]), ("b", vec![96])],
            2 * 9 * 96 * 32 * 32,
        ),
        (
            "pointwise_8to48_64x64",
            conv_op(1, 1, 0, 1),
            vec![1, 8, 64, 64],
            vec![("w", vec![48, 8, 1, 1]), ("b", vec![48])],
            2 * 8 * 48 * 64 * 64,
        ),
        (
            "crnn_conv2_32to64_25x175",
            conv_op(3, 1, 1, 1),
            vec![1, 32, 25, 175],
            vec![("w", vec![64, 32, 3, 3]), ("b", vec![64])],
            2 * 288 * 64 * 25 * 175,
        ),
        (
            "crnn_stem_conv_3to32_50x350",
            conv_op(3, 1, 1, 1),
            vec![1, 3, 50, 350],
            vec![("w", vec![32, 3, 3, 3]), ("b", vec![32])],
            2 * 27 * 32 * 50 * 350,
        ),
        (
            "unet_stem_conv_3to16_s2_128x128",
            conv_op(3, 2, 1, 1),
            vec![1, 3, 128, 128],
            vec![("w", vec![16, 3, 3, 3]), ("b", vec![16])],
            2 * 27 * 16 * 64 * 64,
        ),
        (
            "unet_up0_convtranspose_112to128_k4s2_4x4",
            conv_transpose_op(4, [1, 1]),
            vec![1, 112, 4, 4],
            vec![("w", vec![112, 128, 4, 4]), ("b", vec![128])],
            2 * 112 * 128 * 16 * 16,
        ),
        (
            "unet_up1_convtranspose_320to64_k4s2_8x8",
            conv_transpose_op(4, [1, 1]),
            vec![1, 320, 8, 8],
            vec![("w", vec![320, 64, 4, 4]), ("b", vec![64])],
            2 * 320 * 64 * 16 * 64,
        ),
        (
            "unet_up2_convtranspose_160to32_k4s2_16x16",
            conv_transpose_op(4, [1, 1]),
            vec![1, 160, 16, 16],
            vec![("w", vec![160, 32, 4, 4]), ("b", vec![32])],
            2 * 160 * 32 * 16 * 256,
        ),
        (
            "unet_up3_convtranspose_80to16_k4s2_32x32",
            conv_transpose_op(4, [1, 1]),
            vec![1, 80, 32, 32],
            vec![("w", vec![80, 16, 4, 4]), ("b", vec![16])],
            2 * 80 * 16 * 16 * 1024,
        ),
        (
            "unet_last_convtranspose_64to1_k3s2_64x64",
            conv_transpose_op(3, [0, 1]),
            vec![1, 64, 64, 64],
            vec![("w", vec![64, 1, 3, 3]), ("b", vec![1])],
            2 * 64 * 9 * 64 * 64,
        ),
        (
            "crnn_bilstm_h128_in64_seq87",
            Op::Lstm(Lstm {
                hidden_size: 128,
                direction: Direction::Bidirectional,
                clip: None,
                input_forget: false,
                layout: 0,
            }),
            vec![87, 1, 64],
            vec![
                ("w", vec![2, 512, 64]),
                ("r", vec![2, 512, 128]),
                ("b", vec![2, 1024]),
            ],
            2 * 2 * 87 * 512 * (64 + 128),
        ),
        (
            "crnn_bilstm2_h64_in256_seq87",
            Op::Lstm(Lstm {
                hidden_size: 64,
                direction: Direction::Bidirectional,
                clip: None,
                input_forget: false,
                layout: 0,
            }),
            vec![87, 1, 256],
            vec![
                ("w", vec![2, 256, 256]),
                ("r", vec![2, 256, 64]),
                ("b", vec![2, 512]),
            ],
            2 * 2 * 87 * 256 * (256 + 64),
        ),
    ];
    for (name, op, x, consts, flops) in cases {
        let (exe, input) = one_node(op, &x, consts);
        let views = [input.view()];
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(name, |b| b.iter(|| exe.run(&views).expect("runs")));
    }
    group.finish();
}

criterion_group!(benches, gemm_shapes, winograd_block_gemms, operators);
criterion_main!(benches);
