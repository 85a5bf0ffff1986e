#!/usr/bin/env bash
# The project's main job: every backend of this machine, the shipped models measured on
# each available one side by side (and on auto), then the sample meters read and the sample plates inspected
# next to their labels. setup.sh installs the ONNX Runtime library the ort-*
# backends load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p accelbench
./target/release/accelbench devices
echo
# Both shipped models on auto (the planner's choice) and every available backend, batch 1
# and 8, side by side; backends that cannot run here are listed by devices with the reason.
./target/release/accelbench compare --plot target/compare.svg "$@"
echo
# The task APIs on the shipped samples, each answer next to its label.
./target/release/accelbench read --labels models/samples/meters.json
echo
./target/release/accelbench inspect --labels models/samples/plates.json
