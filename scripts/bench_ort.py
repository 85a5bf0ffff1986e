#!/usr/bin/env python3
"""ONNX Runtime (CPU provider) latency on the same models, for side-by-side numbers with
`accelbench bench` until the in-process ORT backend lands. Usage:
bench_ort.py MODEL.onnx... [--threads 2] [--batch 1] [--iters 50] [--warmup 5]"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    print(f"{'model':<24} {'runtime':<22} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'img/s':>8}")
    for m in a.models:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        shape = [a.batch if not isinstance(d, int) else d for d in i.shape]
        x = np.random.default_rng().random(shape, dtype=np.float32)
        for _ in range(a.warmup):
            s.run(None, {i.name: x})
        t = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            s.run(None, {i.name: x})
            t.append((time.perf_counter() - t0) * 1e3)
        t.sort()
        p50, p90 = t[len(t) // 2], t[int(len(t) * 0.9) - 1]
        name = m.rsplit("/", 1)[-1]
        print(f"{name:<24} {'ort ' + ort.__version__ + f' {a.threads}t':<22} {a.batch:>5} {p50:>8.3f} {p90:>8.3f} {a.batch * 1e3 / p50:>8.1f}")


if __name__ == "__main__":
    main()
