//! Per-kernel CPU benchmarks on the GEMM shapes of both seed graphs. Throughput is reported
//! in elements = FLOPs, so criterion prints GFLOP/s ("Gelem/s").

use accel_benches::random_vec;
use accel_cpu::kernels::gemm::{Epilogue, PackedA, PackedB, gemm};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn gemm_shapes(c: &mut Criterion) {
    // (name, M, K, N): CRNN conv2 as GEMM, CRNN dense, LSTM input projection, U-Net decoder.
    let shapes = [
        ("crnn_conv2_64x288x4375", 64, 288, 4375),
        ("crnn_dense_87x768x64", 87, 768, 64),
        ("crnn_lstm1_proj_87x64x512", 87, 64, 512),
        ("unet_up_256x2048x256", 256, 2048, 256),
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

criterion_group!(benches, gemm_shapes);
criterion_main!(benches);
