#!/usr/bin/env bash
# Installs what the tests and the ORT backends need: a project-local virtual environment
# (.venv) with ONNX (its node conformance cases), ONNX Runtime (reference outputs) and NumPy,
# and .ort/, the ONNX Runtime library accel's ort-* backends load (PyPI's
# onnxruntime-openvino wheel: libonnxruntime 1.24 with the CPU and OpenVINO providers and
# OpenVINO's CPU plugin). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

REQS="onnx==1.20.0 onnxruntime==1.32.0 numpy==2.3.5"
ORT_WHEEL="onnxruntime-openvino==1.24.1"
STAMP=.venv/.accel-setup
ORT_STAMP=.ort/.accel-setup

command -v python3 >/dev/null || { echo "setup: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
if ! { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQS" ]; }; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check $REQS
    echo "$REQS" > "$STAMP"
    echo "setup: .venv ready ($REQS)"
fi

# The library is unpacked from the wheel, not pip-installed: it must not shadow .venv's
# onnxruntime module, and ORT looks for provider libraries next to the file it was loaded from.
if ! { [ -f "$ORT_STAMP" ] && [ "$(cat "$ORT_STAMP")" = "$ORT_WHEEL" ]; }; then
    rm -rf .ort && mkdir -p .ort/wheel
    if .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d .ort/wheel "$ORT_WHEEL"; then
        .venv/bin/python -m zipfile -e .ort/wheel/*.whl .ort/
        rm -rf .ort/wheel
        echo "$ORT_WHEEL" > "$ORT_STAMP"
        echo "setup: .ort ready ($(ls .ort/onnxruntime/capi/libonnxruntime.so.*))"
    else
        # No OpenVINO wheel for this platform: accel falls back to .venv's onnxruntime
        # (CPU provider only), which its library search finds by itself.
        rm -rf .ort
        echo "setup: no $ORT_WHEEL wheel here; ort-cpu will use .venv's onnxruntime, ort-openvino is unavailable"
    fi
fi
