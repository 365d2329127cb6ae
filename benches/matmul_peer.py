#!/usr/bin/env python3
"""`benches/matmul.rs` beside torch.matmul on the same shapes (benches/matmul_shapes.txt),
alternating the two `--rounds` times; prints GFLOP/s medians and torchlet / PyTorch.

usage: python3 benches/matmul_peer.py [--cpu] [--rounds 3] [--filter w5] [--python ~/torch-venv/bin/python]
Needs `cargo bench --bench matmul --no-run` first (or lets cargo build it).
PyTorch runs with torch.set_num_threads(2), as torch_peer.py does.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(ROOT, "benches", "matmul_shapes.txt")

TORCH = r'''
import json, sys, time, torch
cpu = "--cpu" in sys.argv
torch.set_num_threads(1 if cpu else 2)
clock = time.thread_time if cpu else time.perf_counter
torch.manual_seed(0)
flt = sys.argv[2]
def operand(batch, r, c, t):
    shape = [c, r] if t else [r, c]
    if batch: shape = [batch] + shape
    x = torch.randn(shape)
    return x.transpose(-1, -2) if t else x
for line in open(sys.argv[1]):
    if not line.strip() or line.startswith("#"): continue
    name, batch, m, k, n, lay = line.split()
    if flt not in name: continue
    batch, m, k, n = int(batch), int(m), int(k), int(n)
    a = operand(batch, m, k, lay[0] == "T"); b = operand(batch, k, n, lay[1] == "T")
    t = clock(); torch.matmul(a, b); torch.matmul(a, b)
    once = max((clock() - t) / 2, 1e-7)
    reps = min(max(int(0.3 / once), 5), 2000); ts = []
    for _ in range(reps):
        t = clock(); torch.matmul(a, b); ts.append(clock() - t)
    ts.sort(); s = ts[reps // 2]
    print(json.dumps({"peer": "pytorch", "bench": name,
                      "gflops": 2 * max(batch, 1) * m * k * n / s / 1e9, "median_us": s * 1e6}))
'''


def lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--filter", default="")
    ap.add_argument("--cpu", action="store_true",
                    help="one thread each, timed by on-CPU seconds (steady on a busy machine)")
    ap.add_argument("--python", default=os.path.expanduser("~/torch-venv/bin/python"))
    a = ap.parse_args()
    build = subprocess.run(["cargo", "bench", "--bench", "matmul", "--no-run", "--message-format=json"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout
    exe = [json.loads(l)["executable"] for l in build.splitlines()
           if '"executable":"' in l and json.loads(l)["target"]["name"] == "matmul"][-1]
    res = {}
    for _ in range(a.rounds):
        cpu = ["--cpu"] if a.cpu else []
        for peer, cmd in (("torchlet", [exe, *([a.filter] if a.filter else []), *cpu]),
                          ("pytorch", [a.python, "-c", TORCH, SHAPES, a.filter, *cpu])):
            for r in lines(cmd):
                res.setdefault(r["bench"], {}).setdefault(peer, []).append(r["gflops"])
    print(f"{'shape':<14}{'torchlet':>10}{'pytorch':>10}{'ratio':>8}   (GFLOP/s, medians of {a.rounds}; spread)")
    for name, r in res.items():
        t, p = statistics.median(r["torchlet"]), statistics.median(r["pytorch"])
        sp = lambda v: f"{min(v):.0f}-{max(v):.0f}"
        print(f"{name:<14}{t:>10.1f}{p:>10.1f}{t / p:>8.2f}   {sp(r['torchlet'])} / {sp(r['pytorch'])}")


if __name__ == "__main__":
    sys.exit(main())
