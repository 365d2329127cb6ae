#!/usr/bin/env python3
"""torchlet and PyTorch side by side on DESIGN.md's workloads, alternating runs.

usage: python3 benches/compare.py [w1 w2 w3 w5 gemm] [--rounds 3] [--python ~/torch-venv/bin/python]

Builds `examples/bench.rs` in release, then runs torchlet and ../shared/bench/torch_peer.py
one after the other, `--rounds` times each, and prints the median and the spread (min..max)
of each figure with the ratio torchlet / PyTorch. Install PyTorch first:
    python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch numpy
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "bench", "torch_peer.py")
FIGURE = {"w1": "samples_per_s", "w2": "samples_per_s", "w3": "steps_per_s", "w5": "steps_per_s",
          "gemm": "gflops_median"}


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="*", default=["w1", "w2", "w3", "gemm"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", default=os.path.expanduser("~/torch-venv/bin/python"))
    ap.add_argument("--peer", default=PEER, help="path of torch_peer.py")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--example", "bench"], cwd=ROOT, check=True)
    ours = os.path.join(ROOT, "target", "release", "examples", "bench")
    rows = []
    for w in a.workloads:
        res = {"torchlet": [], "pytorch": []}
        for _ in range(a.rounds):
            res["torchlet"].append(run([ours, w]))
            res["pytorch"].append(run([a.python, a.peer, w]))
        key = FIGURE[w]
        for peer in ("torchlet", "pytorch"):
            for r in res[peer]:
                print(json.dumps(r), file=sys.stderr)
        med = {p: statistics.median(r[key] for r in res[p]) for p in res}
        spread = {p: (min(r[key] for r in res[p]), max(r[key] for r in res[p])) for p in res}
        rss = {p: statistics.median(r.get("peak_rss_mb") or 0 for r in res[p]) for p in res}
        acc = {p: statistics.median(r["test_acc"] for r in res[p]) if res[p][0].get("test_acc") is not None else None for p in res}
        if w == "w5":  # no test set: the final training loss tells whether the same computation ran
            acc = {p: statistics.median(r["final_loss"] for r in res[p]) for p in res}
        rows.append((w, key, med, spread, rss, acc))
    print(f"| workload | figure | torchlet median (min..max) | PyTorch median (min..max) | ratio | peak RSS MB (torchlet / PyTorch) | test acc or W5 final loss (torchlet / PyTorch) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w, key, med, spread, rss, acc in rows:
        fmt = lambda p: f"{med[p]:,.1f} ({spread[p][0]:,.1f}..{spread[p][1]:,.1f})"
        accs = "n/a" if acc["torchlet"] is None else f"{acc['torchlet']:.4f} / {acc['pytorch']:.4f}"
        print(f"| {w} | {key} | {fmt('torchlet')} | {fmt('pytorch')} | {med['torchlet'] / med['pytorch']:.2f}x | "
              f"{rss['torchlet']:.0f} / {rss['pytorch']:.0f} | {accs} |")


if __name__ == "__main__":
    main()
