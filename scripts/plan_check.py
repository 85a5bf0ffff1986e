#!/usr/bin/env python3
"""The planner's "done when": does `accelbench plan` name a winner within 10% of the fastest
backend that `accelbench bench` measures right after it?

For each model and round: a fresh plan (empty cache), then one bench of `auto` (served from
that plan) beside every backend the plan measured, interleaved in rounds; prints the
winner's p50 over the fastest p50.

    scripts/plan_check.py [--rounds 3] [--model crnn --model unet] [--bin PATH]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--model", action="append")
ap.add_argument("--bin", default="./target/release/accelbench")
a = ap.parse_args()
cache = tempfile.mkdtemp(prefix="accel-plan-check-")
env = dict(os.environ, ACCEL_CACHE_DIR=cache)


def run(*args):
    out = subprocess.run([a.bin, *args, "--json"], env=env, capture_output=True, check=True)
    return json.loads(out.stdout)


ratios = []
for model in a.model or ["crnn", "unet"]:
    for _ in range(a.rounds):
        shutil.rmtree(os.path.join(cache, "plans"), ignore_errors=True)
        plan = run("plan", "--model", model)
        won = plan["candidates"][plan["winner_index"]]
        ids = sorted({c["backend"] for c in plan["candidates"] if c["status"] == "ok"})
        args = ["bench", "--model", model, "--backend", "auto", "--iters", "200"]
        for i in ids:
            args += ["--backend", i]
        rows = [r for r in run(*args)["results"] if r["status"] == "ok"]
        auto = next(r for r in rows if r["backend"] == "auto")
        best = min((r for r in rows if r["backend"] != "auto"), key=lambda r: r["p50_ms"])
        ratio = auto["p50_ms"] / best["p50_ms"]
        ratios.append(ratio)
        print(
            f"{model}: plan chose {won['backend']} ({won['threads']} threads, "
            f"{won['p50_ms']:.3f} ms when planned, planning {plan['planning_ms']:.0f} ms); "
            f"bench: auto {auto['p50_ms']:.3f} ms, fastest {best['backend']} "
            f"{best['p50_ms']:.3f} ms; ratio {ratio:.3f}"
        )
print(f"within 10%: {sum(r <= 1.10 for r in ratios)} of {len(ratios)}")
shutil.rmtree(cache, ignore_errors=True)
