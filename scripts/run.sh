#!/usr/bin/env bash
# The project's main job: every backend of this machine, then the shipped models measured on
# each available one, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p accelbench
./target/release/accelbench devices
echo
./target/release/accelbench bench --model crnn --model unet --backend cpu "$@"
