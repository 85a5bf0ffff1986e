//! Model-level parity: every shipped model and test fixture (tf2onnx and PyTorch exports) on the
//! CPU backend against ONNX Runtime's outputs, batch 1, 3 and 8 (8 splits into image-parallel
//! sub-batches on two or more threads), max abs diff <= 1e-4.
//! The reference data is generated fresh by scripts/reference_outputs.py (the README's test
//! command runs it) into target/accel-testdata/parity; the set includes the CRNN re-saved with
//! its weights in an external data file, so external data is covered at model level.
//! Each case runs three times on one executable: the first run allocates and records the
//! memory plan, the second and third run in the planned arena (the third reusing it).

use accel_core::{Backend, CompileOptions, passes};
use accel_cpu::CpuBackend;
use accel_tests::{max_abs_diff, parity_cases};

const TOLERANCE: f32 = 1e-4;

#[test]
fn cpu_matches_onnx_runtime_on_every_model() {
    let Some(cases) = parity_cases("model parity vs ONNX Runtime") else {
        return;
    };
    let mut failures = Vec::new();
    for case in &cases {
        let (model, batch) = (&case.model, case.batch);
        let mut g = accel_core::onnx::load_model(model).unwrap_or_else(|e| panic!("{model}: {e}"));
        passes::optimize(&mut g).unwrap_or_else(|e| panic!("{model}: {e}"));
        let exe = CpuBackend::new()
            .compile(&g, &CompileOptions::default())
            .unwrap();
        let inputs = case.inputs(&g);
        let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
        for run in ["allocating", "planned", "planned again"] {
            let outs = exe
                .run(&views)
                .unwrap_or_else(|e| panic!("{model} batch {batch} ({run} run): {e}"));
            for (vi, got) in g.outputs.iter().zip(&outs) {
                let d = max_abs_diff(got, &case.expected(&vi.name));
                eprintln!(
                    "parity {model} batch {batch} output {} ({run} run): max abs diff {d:.2e}",
                    vi.name
                );
                if d.is_nan() || d > TOLERANCE {
                    failures.push(format!(
                        "{model} batch {batch} output {} ({run} run): max abs diff {d}",
                        vi.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "outputs differ from ONNX Runtime beyond {TOLERANCE}:\n{}",
        failures.join("\n")
    );
}
