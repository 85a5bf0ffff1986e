#!/usr/bin/env python3
"""Per-operator times of accel's cpu backend beside ONNX Runtime's CPU provider, on one model.

The two run in alternating rounds (ONNX Runtime with its profiler in this process, accel's
`ACCEL_CPU_PROFILE=all` through `accelbench bench`), so that a shared machine's slow spells
fall on both alike; each operator's time is the median over every round's runs.

    .venv/bin/python scripts/op_times.py models/crnn.onnx --threads 1 [--rounds 4] [--top 20]

Node names differ where the runtimes fuse differently (ONNX Runtime names a fused node after
its output, e.g. `crnn/conv2/Relu:0_nchwc` for accel's `crnn/conv2/BiasAdd`).
"""

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def ort_round(model, threads, runs, into):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "accel-op-times")
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.rand(*shape).astype(np.float32)
    for _ in range(10):
        s.run(None, feeds)
    for _ in range(runs):
        s.run(None, feeds)
    path = s.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
    for name, times in per_node.items():
        into[name].extend(times[-runs:])


def accel_round(accelbench, model, threads, runs, into):
    env = dict(os.environ, ACCEL_CPU_PROFILE="all")
    out = subprocess.run(
        [accelbench, "bench", "--model", model, "--backend", "cpu", "--threads", str(threads),
         "--warmup", "10", "--iters", str(runs)],
        env=env, capture_output=True, text=True, check=True)
    # One dict per run; a step a planned run skips (a Concat written in place) counts as
    # 0 ms in that run rather than dropping out of its median.
    blocks = []
    for line in out.stderr.splitlines():
        if line.startswith("accel-cpu profile:"):
            blocks.append({})
            continue
        m = re.match(r"\s+([\d.]+) ms\s+[\d.]+%\s+(\S+)\s+(\S+)", line)
        if m and blocks:
            blocks[-1][m.group(3)] = float(m.group(1))
    names = set().union(*blocks) if blocks else set()
    for block in blocks:
        for name in names:
            into[name].append(block.get(name, 0.0))


def report(title, per_node, top):
    med = {k: statistics.median(v) for k, v in per_node.items()}
    print(f"{title}: {sum(med.values()):.3f} ms in {len(med)} nodes (sum of medians)")
    for name, ms in sorted(med.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:8.3f} ms  {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--runs", type=int, default=100, help="timed runs per round and runtime")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--accelbench", default="target/release/accelbench")
    a = p.parse_args()
    if not os.path.exists(a.accelbench):
        sys.exit(f"{a.accelbench} is missing: cargo build --release -p accelbench")
    ort_times, accel_times = collections.defaultdict(list), collections.defaultdict(list)
    for _ in range(a.rounds):
        ort_round(a.model, a.threads, a.runs, ort_times)
        accel_round(a.accelbench, a.model, a.threads, a.runs, accel_times)
    report(f"ONNX Runtime {ort.__version__} CPU", ort_times, a.top)
    report("accel cpu", accel_times, a.top)


if __name__ == "__main__":
    main()
