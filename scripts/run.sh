#!/usr/bin/env bash
# The project's main job: every backend of this machine, the shipped models measured on
# each available one side by side, then the sample meters read and the sample plates inspected
# next to their labels. setup.sh installs the ONNX Runtime library the ort-*
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
echo
# The task APIs on the shipped samples, each answer next to its label.
./target/release/accelbench read --labels models/samples/meters.json
echo
./target/release/accelbench inspect --labels models/samples/plates.json
