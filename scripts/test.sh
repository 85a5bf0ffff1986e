#!/usr/bin/env bash
# The project's test command: sets up what the tests need, generates fresh reference data,
# then runs formatting, lint and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
PY=.venv/bin/python

# A shipped model re-saved with its weights in an external data file next to it.
rm -rf target/accel-testdata/external && mkdir -p target/accel-testdata/external
$PY -c 'import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True, location="crnn_external.onnx.data", size_threshold=1024)' \
    models/crnn.onnx target/accel-testdata/external/crnn_external.onnx

# Fresh random inputs and ONNX Runtime outputs for every shipped model and test fixture.
rm -rf target/accel-testdata/parity
$PY scripts/reference_outputs.py target/accel-testdata/parity models/*.onnx tests/fixtures/*.onnx \
    target/accel-testdata/external/crnn_external.onnx --batches 1 3 8

# Held-out meters and plates for the shipped models' quality bars (tests/task_accuracy.rs),
# regenerated from the evaluation seed, which training never uses.
rm -rf target/accel-testdata/heldout
EVAL_SEED="$($PY -c 'import sys; sys.path.insert(0, "models"); import synth; print(synth.EVAL_SEED)')"
$PY models/synth/make_set.py meters --seed "$EVAL_SEED" --count 1000 --out target/accel-testdata/heldout/meters
$PY models/synth/make_set.py plates --seed "$EVAL_SEED" --count 400 --out target/accel-testdata/heldout/plates

ACCEL_ONNX_NODE_DIR="$($PY -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/node"))')"
export ACCEL_ONNX_NODE_DIR
# setup.sh installed lavapipe: a wgpu test that finds no adapter is a failure, not a skip.
export ACCEL_REQUIRE_WGPU=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc
# Every kernel family the CPU runs must agree with the references, not only the detected
# one: AVX2 on an AVX-512 machine, and the portable path (what aarch64 compiles) everywhere.
for isa in avx2 portable; do
    ACCEL_CPU_ISA=$isa cargo test -p accel-cpu -p accel-tests --lib --test cpu_kernels --test passes --test model_parity --test onnx_node
done
