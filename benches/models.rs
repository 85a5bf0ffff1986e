//! Whole-model latency on the CPU backend, batch 1, for the shipped models.

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
        let session = Session::builder()
            .backend("cpu")
            .load(&path)
            .expect("model compiles");
        let n = shape.iter().product();
        let input = Tensor::from_vec(
            shape,
            random_vec(n).iter().map(|x| x.abs()).collect::<Vec<_>>(),
        )
        .expect("shape");
        let views: Vec<TensorView> = vec![input.view()];
        c.bench_function(&format!("cpu/{name}/batch1"), |b| {
            b.iter(|| session.run(&views).expect("runs"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = models
}
criterion_main!(benches);
