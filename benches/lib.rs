//! Helpers shared by the benchmarks.

use rand::RngExt;

pub fn random_vec(n: usize) -> Vec<f32> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}
