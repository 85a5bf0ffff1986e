#!/usr/bin/env python3
"""Writes fresh random inputs and ONNX Runtime's outputs for model-level parity tests.

Every run draws new inputs (no fixed seed), so the Rust parity test sees different data each
time. Usage: reference_outputs.py OUT_DIR MODEL.onnx... [--batches 1 3]
"""
import argparse
import json
import os
import re

import numpy as np
import onnxruntime as ort

ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 3])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng()
    cases = []
    for model in args.models:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        stem = safe(os.path.splitext(os.path.basename(model))[0])
        for batch in args.batches:
            feeds, inputs = {}, {}
            for i in sess.get_inputs():
                shape = [batch if (k == 0 and not isinstance(d, int)) else d for k, d in enumerate(i.shape)]
                if any(not isinstance(d, int) for d in shape):
                    raise SystemExit(f"{model}: input {i.name} has free dims {i.shape} besides the batch")
                if shape[0] != batch:
                    continue  # fixed batch size that differs from this case
                arr = rng.random(shape, dtype=np.float64).astype(ORT_TYPES[i.type])
                feeds[i.name] = arr
                path = f"{stem}_b{batch}_in_{safe(i.name)}.npy"
                np.save(os.path.join(args.out, path), arr)
                inputs[i.name] = path
            if len(feeds) != len(sess.get_inputs()):
                continue
            outputs = {}
            for o, val in zip(sess.get_outputs(), sess.run(None, feeds)):
                path = f"{stem}_b{batch}_out_{safe(o.name)}.npy"
                np.save(os.path.join(args.out, path), val)
                outputs[o.name] = path
            cases.append({"model": os.path.abspath(model), "batch": batch, "inputs": inputs, "outputs": outputs})
            print(f"reference: {model} batch {batch}: {', '.join(outputs)}")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"onnxruntime": ort.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
