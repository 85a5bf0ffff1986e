//! Whole-model latency, batch 1, for the shipped models on the CPU backend and on the first
//! wgpu adapter (where there is one: lavapipe in CI, a GPU elsewhere; wall clock, readback
//! included).

use accel::{Session, Tensor, TensorView};
use accel_benches::random_vec;
use criterion::{Criterion, criterion_group, criterion_main};

fn models(c: &mut Criterion) {
    for (name, shape) in [
        ("crnn", vec![1, 50, 350, 3]),
        ("unet", vec![1, 128, 128, 3]),
    ] {
        let Some(path) = accel::shipped_model(name).filter(|p| p.exists()) else {
            eprintln!("SKIPPED model bench {name}: models/ not found");
            continue;
        };
        let n = shape.iter().product();
        let input = Tensor::from_vec(
            shape,
            random_vec(n).iter().map(|x| x.abs()).collect::<Vec<_>>(),
        )
        .expect("shape");
        let views: Vec<TensorView> = vec![input.view()];
        for backend in ["cpu", "wgpu"] {
            let session = match Session::builder().backend(backend).load(&path) {
                Ok(s) => s,
                Err(e) if backend != "cpu" => {
                    eprintln!("SKIPPED model bench {backend}/{name}: {e}");
                    continue;
                }
                Err(e) => panic!("{name} on {backend}: {e}"),
            };
            c.bench_function(&format!("{backend}/{name}/batch1"), |b| {
                b.iter(|| session.run(&views).expect("runs"))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = models
}
criterion_main!(benches);
