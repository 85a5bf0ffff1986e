//! The CPU backend's memory plan: once a graph has run with some input shapes, later runs
//! with those shapes write every intermediate value into the planned arena and take kernel
//! scratch from the pool, so the heap sees only the outputs they return and small
//! bookkeeping (shape vectors). A counting allocator measures it; the outputs must not change.

use accel_core::{Backend, CompileOptions, Executable, Tensor, TensorView, passes};
use accel_cpu::CpuBackend;
use accel_tests::{max_abs_diff, model_path, random_f32};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Allocations of at least `LARGE` bytes: tensor data, not bookkeeping.
static LARGE_CALLS: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = 4096;

fn count(size: usize) {
    BYTES.fetch_add(size, Ordering::Relaxed);
    CALLS.fetch_add(1, Ordering::Relaxed);
    if size >= LARGE {
        LARGE_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn check_model(file: &str, input_shape: &[usize]) {
    let mut g = accel_core::onnx::load_model(model_path(file)).unwrap();
    passes::optimize(&mut g).unwrap();
    let exe = CpuBackend::new()
        .compile(
            &g,
            &CompileOptions {
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    let x = random_f32(input_shape, 0.0, 1.0);
    let views = [x.view()];
    let first = exe.run(&views).unwrap();
    let large_outputs = first.iter().filter(|t| t.len() * 4 >= LARGE).count();
    // The plan is built after the first run and its arena after the second. Pooled kernel
    // scratch settles once the pool holds a buffer for every request that can be alive at
    // once, which depends on how rayon happened to split the parallel kernels so far (a
    // busy machine may run a parallel loop on one thread, and a later run on two needs one
    // more buffer). So runs are measured until one allocates only its outputs: each such
    // allocation adds a buffer the pool keeps, and the pool must settle within a few runs.
    let mut settled = None;
    for run in 2..=MAX_RUNS {
        let (bytes, calls, large, outs) = measured_run(exe.as_ref(), &views);
        for (a, b) in first.iter().zip(&outs) {
            assert_eq!(
                max_abs_diff(a, b),
                0.0,
                "{file}: a planned run changed the result"
            );
        }
        // Only the returned outputs may be tensor-sized; the rest is shape bookkeeping.
        if run > 2 && large <= large_outputs {
            settled = Some((run, bytes, calls, large, outs));
            break;
        }
    }
    let mem = exe.memory();
    let arena = mem.arena.expect("the CPU backend reports its arena");
    assert!(arena > 0, "{file}: no arena was planned");
    let Some((run, bytes, calls, large, outs)) = settled else {
        panic!(
            "{file} {input_shape:?}: {MAX_RUNS} runs and every planned run still made allocations of {LARGE} B or more beyond its {large_outputs} large outputs"
        );
    };
    let out_bytes: usize = outs.iter().map(|t| t.len() * 4).sum();
    eprintln!(
        "{file} {input_shape:?}: run {run} allocated {bytes} B in {calls} calls, {large} of them of {LARGE} B or more (outputs {out_bytes} B); arena {arena} B, scratch {:?} B, weights {:?} B",
        mem.scratch, mem.weights
    );
}

/// Runs after which the arena and the scratch pool must have settled.
const MAX_RUNS: usize = 12;

/// Bytes, allocations and large allocations made by one run, and its outputs.
fn measured_run(exe: &dyn Executable, views: &[TensorView]) -> (usize, usize, usize, Vec<Tensor>) {
    let load = || {
        (
            BYTES.load(Ordering::SeqCst),
            CALLS.load(Ordering::SeqCst),
            LARGE_CALLS.load(Ordering::SeqCst),
        )
    };
    let before = load();
    let outs = exe.run(views).unwrap();
    let after = load();
    (
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        outs,
    )
}

/// One test for both models: the allocator counts every thread of the process, so nothing
/// else may run while a run is measured. The U-Net at batch 2 on two threads runs as two
/// image-parallel sub-batches, which write their outputs straight into the batch's.
#[test]
fn planned_runs_allocate_only_outputs() {
    check_model("crnn.onnx", &[2, 50, 350, 3]);
    check_model("unet128.onnx", &[1, 128, 128, 3]);
    check_model("unet128.onnx", &[2, 128, 128, 3]);
}
