#!/usr/bin/env bash
# Installs what the tests need into a project-local virtual environment (.venv): ONNX (its
# node conformance cases), ONNX Runtime (reference outputs) and NumPy. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

REQS="onnx==1.20.0 onnxruntime==1.32.0 numpy==2.3.5"
STAMP=.venv/.accel-setup
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQS" ]; then
    exit 0
fi
command -v python3 >/dev/null || { echo "setup: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check $REQS
echo "$REQS" > "$STAMP"
echo "setup: .venv ready ($REQS)"
