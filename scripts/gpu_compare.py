#!/usr/bin/env python3
"""accel's wgpu backend beside PyTorch CUDA eager on the same GPU, in one script (issue #6).

Builds the seed architectures with models/export_torch.py (random deterministic weights: the
CRNN; the U-Net 128 as shipped, alpha 0.35 and decoder 128..16; and at full width, alpha 1.0
and decoder 512..64, DESIGN.md's anchor graph), exports each to ONNX, then times

  - accelbench bench --backend wgpu on the ONNX file (wall-clock p50 and kernel time from
    timestamp queries), and
  - the same torch module on CUDA, eager, fp32 with TF32 off (strict) and with PyTorch's
    default (cuDNN may use TF32), median of CUDA-event-timed runs after a warm-up,

at each batch size, and prints one table. Needs torch with CUDA and a Vulkan driver for
wgpu (see the device README's loader recipe). Usage:

    python3 scripts/gpu_compare.py --accelbench target/release/accelbench [--batches 1 64]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import export_torch as et  # noqa: E402


def torch_ms(model, shape, batch, iters, tf32):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    x = torch.rand((batch,) + shape, device="cuda")
    with torch.no_grad():
        for _ in range(10):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def accel_ms(accelbench, onnx_path, batch, iters):
    out = subprocess.run(
        [accelbench, "bench", "--model", onnx_path, "--backend", "wgpu", "--batch", str(batch),
         "--iters", str(iters), "--warmup", "10", "--json"],
        check=False, capture_output=True, text=True)
    if out.returncode != 0:
        return None, None, out.stderr.strip().splitlines()[-1:] or ["accelbench failed"]
    r = json.loads(out.stdout)["results"][0]
    if r["status"] != "ok":
        return None, None, [r.get("reason", r["status"])]
    return r["p50_ms"], r.get("kernel_p50_ms"), []


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--accelbench", default="target/release/accelbench")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--iters", type=int, default=50)
    a = p.parse_args()
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    models = [
        ("crnn", lambda: et.build_crnn(), (3, 50, 350), "probs"),
        ("unet128", lambda: et.build_unet(), (3, 128, 128), "mask"),
        ("unet128_full", lambda: et.build_unet(alpha=1.0, decoder=(512, 256, 128, 64)),
         (3, 128, 128), "mask"),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, shape, out_name in models:
            model = build()
            path = os.path.join(tmp, name + ".onnx")
            x = torch.rand((2,) + shape)
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                              input_names=["image"], output_names=[out_name],
                              dynamic_axes={"image": {0: "batch"}, out_name: {0: "batch"}})
            cuda = model.cuda().eval()
            for b in a.batches:
                wall, kernel, notes = accel_ms(a.accelbench, path, b, a.iters)
                strict = torch_ms(cuda, shape, b, a.iters, tf32=False)
                default = torch_ms(cuda, shape, b, a.iters, tf32=True)
                rows.append((name, b, wall, kernel, strict, default, notes))
                print(rows[-1], flush=True)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print()
    print(f"{'model':14} {'batch':>5} {'wgpu ms':>9} {'kernel ms':>9} {'torch fp32':>10} "
          f"{'torch dflt':>10} {'wgpu img/s':>10} {'torch img/s':>11} {'ratio':>6}")
    for name, b, wall, kernel, strict, default, notes in rows:
        ips = None if wall is None else b * 1e3 / wall
        tips = b * 1e3 / strict
        ratio = None if ips is None else ips / tips
        print(f"{name:14} {b:>5} {fmt(wall):>9} {fmt(kernel):>9} {fmt(strict):>10} "
              f"{fmt(default):>10} {fmt(ips):>10} {fmt(tips):>11} {fmt(ratio):>6} {' '.join(notes)}")
    print("ratio: wgpu throughput over torch fp32 (TF32 off) throughput; torch dflt lets cuDNN use TF32")


if __name__ == "__main__":
    main()
