//! Memory planning: every intermediate f32 value of a run gets a fixed region of one arena,
//! chosen from the values' lifetimes so that values alive at the same time never overlap
//! (greedy by size, as TFLite's arena planner: the largest value is placed first, each at the
//! lowest offset that is free for its whole lifetime).

/// Region offsets and lengths are multiples of this many f32s (64 bytes: one cache line and
/// one AVX-512 register).
pub const ALIGN: usize = 16;

/// A value that needs `len` f32s from step `first` (its producer) to step `last` (its last
/// reader), inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
    pub len: usize,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Offsets (in f32s, aligned to [`ALIGN`]) for each value, and the arena length they need.
pub fn plan(values: &[Lifetime]) -> (Vec<usize>, usize) {
    let padded = |v: &Lifetime| v.len.div_ceil(ALIGN) * ALIGN;
    let mut order: Vec<usize> = (0..values.len()).collect();
    // Largest first; ties by first use keep the plan deterministic.
    order.sort_by_key(|&i| (std::cmp::Reverse(padded(&values[i])), values[i].first, i));
    let mut offsets = vec![0; values.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(values.len());
    let mut total = 0;
    for i in order {
        let v = &values[i];
        let len = padded(v);
        // Regions of values alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| values[j].overlaps(v))
            .map(|&j| (offsets[j], offsets[j] + padded(&values[j])))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (start, end) in busy {
            if start >= at + len {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        total = total.max(at + len);
        placed.push(i);
    }
    (offsets, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn check(values: &[Lifetime], offsets: &[usize], total: usize) {
        for (i, a) in values.iter().enumerate() {
            assert_eq!(offsets[i] % ALIGN, 0);
            assert!(offsets[i] + a.len <= total);
            for (j, b) in values.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) && a.len > 0 && b.len > 0 {
                    let (sa, sb) = (offsets[i], offsets[j]);
                    assert!(
                        sa + a.len <= sb || sb + b.len <= sa,
                        "values {i} {a:?} at {sa} and {j} {b:?} at {sb} overlap"
                    );
                }
            }
        }
    }

    #[test]
    fn live_values_never_share_memory() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let steps = rng.random_range(1..40);
            let values: Vec<Lifetime> = (0..rng.random_range(1..60))
                .map(|_| {
                    let first = rng.random_range(0..steps);
                    Lifetime {
                        first,
                        last: rng.random_range(first..steps),
                        len: rng.random_range(0..5000),
                    }
                })
                .collect();
            let (offsets, total) = plan(&values);
            check(&values, &offsets, total);
            // Never more than giving every value its own region.
            let separate: usize = values.iter().map(|v| v.len.div_ceil(ALIGN) * ALIGN).sum();
            assert!(total <= separate);
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c -> d, each read only by the next: two regions suffice.
        let values: Vec<Lifetime> = (0..4)
            .map(|i| Lifetime {
                first: i,
                last: i + 1,
                len: 1000,
            })
            .collect();
        let (offsets, total) = plan(&values);
        check(&values, &offsets, total);
        assert_eq!(total, 2 * 1008);
    }
}
