#!/usr/bin/env bash
# The project's main job: every backend of this machine, then the shipped models measured on
# each available one, side by side. setup.sh installs the ONNX Runtime library the ort-*
# backends load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p accelbench
./target/release/accelbench devices
echo
# Backends that cannot run here are listed with the reason instead of failing the run.
./target/release/accelbench bench --model crnn --model unet \
    --backend cpu --backend ort-cpu --backend ort-openvino --backend ort-cuda --backend ort-tensorrt "$@"
