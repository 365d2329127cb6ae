"""Writes tests/reference/rng/rng.json: what PyTorch's CPU generator draws after
torch.manual_seed, for tests/rng_parity.rs.

    ~/torch-venv/bin/python tests/reference/rng/make.py

Run with PyTorch 2.15 (CPU build, x86-64: its float normal_ kernel for 16 or more
elements is the AVX2 one, which PyTorch also runs on AVX-512 machines).

Every case seeds with torch.manual_seed(case["seed"]) and then runs its `steps` in
order, so the draws of one step start where the previous step's ended:

- op steps (`rand`, `randn`, `randint`, `uniform_`, `normal_`, `dropout` of ones in
  training mode) give their values;
- `module` steps build the module described by `module` with PyTorch's constructor and
  give its initial state_dict (keys in PyTorch's order);
- `init` steps apply a torch.nn.init function to a fresh tensor of `dtype`.

Float values are written as strings, Python's repr of the value as a double (exact for an
f32 value too): a reader parses them with a correctly rounded parser (Rust's
`str::parse`; serde_json's own number parser may be one ulp off). A module step's
`keys` lists the state_dict's float entries in PyTorch's order.
"""
import json
import math
import os

import torch
from torch import nn


def flat(t):
    if t.dtype in (torch.int64, torch.int32):
        return {"shape": list(t.shape), "dtype": "i64", "data": t.flatten().tolist()}
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.float", "f"),
            "data": [repr(x) for x in t.flatten().tolist()]}


DT = {"f32": torch.float32, "f64": torch.float64}


def op_step(step):
    op, shape, dt = step["op"], step["shape"], DT.get(step.get("dtype", "f32"))
    if op == "rand":
        return torch.rand(shape, dtype=dt)
    if op == "randn":
        return torch.randn(shape, dtype=dt)
    if op == "randint":
        return torch.randint(step["low"], step["high"], shape)
    if op == "uniform_":
        return torch.empty(shape, dtype=dt).uniform_(step["from"], step["to"])
    if op == "dropout":
        return nn.functional.dropout(torch.ones(shape, dtype=dt), step["p"], training=True)
    if op == "normal_":
        return torch.empty(shape, dtype=dt).normal_(step["mean"], step["std"])
    raise ValueError(op)


def build(m):
    kind, a = m["kind"], m.get("args", {})
    if kind == "Linear":
        return nn.Linear(a["in"], a["out"], bias=a.get("bias", True))
    if kind == "Conv1d":
        return nn.Conv1d(a["in"], a["out"], a["k"], groups=a.get("groups", 1), bias=a.get("bias", True))
    if kind == "Conv2d":
        return nn.Conv2d(a["in"], a["out"], tuple(a["k"]), groups=a.get("groups", 1), bias=a.get("bias", True))
    if kind == "ConvTranspose2d":
        return nn.ConvTranspose2d(a["in"], a["out"], tuple(a["k"]), groups=a.get("groups", 1),
                                  bias=a.get("bias", True))
    if kind == "Embedding":
        return nn.Embedding(a["num"], a["dim"], padding_idx=a.get("padding_idx"))
    if kind == "LayerNorm":
        return nn.LayerNorm(a["shape"])
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(a["c"])
    if kind == "MultiheadAttention":
        return nn.MultiheadAttention(a["e"], a["heads"], bias=a.get("bias", True),
                                     kdim=a.get("kdim"), vdim=a.get("vdim"), batch_first=True)
    if kind in ("TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder"):
        cls = nn.TransformerDecoderLayer if kind == "TransformerDecoderLayer" else nn.TransformerEncoderLayer
        layer = cls(a["d"], a["heads"], dim_feedforward=a["ff"], dropout=0.0, bias=a.get("bias", True),
                    batch_first=True, norm_first=a.get("norm_first", False))
        if kind == "TransformerEncoder":
            return nn.TransformerEncoder(layer, a["layers"], enable_nested_tensor=False)
        return layer
    if kind in ("LSTM", "GRU", "RNN"):
        return getattr(nn, kind)(a["in"], a["hidden"], num_layers=a.get("layers", 1), bias=a.get("bias", True),
                                 bidirectional=a.get("bidirectional", False))
    if kind == "TinyGPT":
        return TinyGPT(**a)
    raise ValueError(kind)


class TinyGPT(nn.Module):
    """The W5 model of ../shared/bench/torch_peer.py at a smaller size."""

    def __init__(self, vocab, block, embd, heads, layers):
        super().__init__()
        self.tok = nn.Embedding(vocab, embd)
        self.pos = nn.Embedding(block, embd)
        layer = nn.TransformerEncoderLayer(embd, heads, dim_feedforward=4 * embd, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(embd)
        self.head = nn.Linear(embd, vocab)


def init_step(step):
    t = torch.empty(step["shape"], dtype=DT[step["dtype"]])
    fn, a = step["init"], step.get("args", {})
    if fn == "kaiming_uniform_":
        nn.init.kaiming_uniform_(t, a=a["a"])
    elif fn == "kaiming_normal_":
        nn.init.kaiming_normal_(t, a=a["a"])
    elif fn == "xavier_uniform_":
        nn.init.xavier_uniform_(t, gain=a["gain"])
    elif fn == "xavier_normal_":
        nn.init.xavier_normal_(t, gain=a["gain"])
    elif fn == "uniform_":
        nn.init.uniform_(t, a["a"], a["b"])
    elif fn == "normal_":
        nn.init.normal_(t, a["mean"], a["std"])
    else:
        raise ValueError(fn)
    return t


def run(case):
    torch.manual_seed(case["seed"])
    for step in case["steps"]:
        if "op" in step:
            step["output"] = flat(op_step(step))
        elif "init" in step:
            step["output"] = flat(init_step(step))
        else:
            m = build(step["module"])
            sd = {k: v for k, v in m.state_dict().items() if v.is_floating_point()}
            step["keys"] = list(sd)
            step["output"] = {k: flat(v) for k, v in sd.items()}
    return case


def mod(kind, **args):
    return {"module": {"kind": kind, "args": args}}


CASES = [
    {"name": "ops_in_sequence", "seed": 0, "steps": [
        {"op": "rand", "shape": [5]},
        {"op": "rand", "shape": [3], "dtype": "f64"},
        {"op": "randn", "shape": [7]},            # scalar path: 4 pairs, one sine kept
        {"op": "randn", "shape": [3]},            # starts with the kept sine
        {"op": "randn", "shape": [37]},           # vectorised, ragged tail
        {"op": "randn", "shape": [2, 16]},        # vectorised, whole blocks
        {"op": "randn", "shape": [40], "dtype": "f64"},
        {"op": "randn", "shape": [5], "dtype": "f64"},
        {"op": "randint", "shape": [20], "low": 0, "high": 10},
        {"op": "randint", "shape": [6], "low": -5, "high": 2 ** 30},  # two words per value
        {"op": "uniform_", "shape": [100], "from": -0.3, "to": 0.7},
        {"op": "uniform_", "shape": [20], "from": -0.3, "to": 0.7, "dtype": "f64"},
        {"op": "normal_", "shape": [64], "mean": 0.5, "std": 0.02},
        {"op": "normal_", "shape": [9], "mean": -1.0, "std": 3.0},
        {"op": "normal_", "shape": [33], "mean": 2.0, "std": 0.5, "dtype": "f64"},
    ]},
    # PyTorch's CPU dropout is bernoulli_(1 - p): one double uniform per element where MKL's
    # generator is not used (AMD processors, builds without MKL), as on the machine that
    # wrote this file.
    {"name": "dropout", "seed": 2, "steps": [
        {"op": "dropout", "shape": [1000], "p": 0.25},
        {"op": "dropout", "shape": [7], "p": 0.5, "dtype": "f64"},
        {"op": "rand", "shape": [3]},
    ]},
    {"name": "randn_large", "seed": 3, "steps": [{"op": "randn", "shape": [1000, 7]}]},
    {"name": "init_f64", "seed": 1, "steps": [
        {"init": "kaiming_uniform_", "shape": [30, 20], "dtype": "f64", "args": {"a": math.sqrt(5)}},
        {"init": "uniform_", "shape": [30], "dtype": "f64", "args": {"a": -1 / math.sqrt(20), "b": 1 / math.sqrt(20)}},
        {"init": "xavier_uniform_", "shape": [24, 8], "dtype": "f64", "args": {"gain": 1.0}},
        {"init": "normal_", "shape": [10, 8], "dtype": "f64", "args": {"mean": 0.0, "std": 1.0}},
        {"init": "kaiming_normal_", "shape": [6, 4, 3], "dtype": "f64", "args": {"a": 0.0}},
        {"init": "xavier_normal_", "shape": [5, 3], "dtype": "f64", "args": {"gain": 2.0}},
        {"init": "kaiming_normal_", "shape": [6, 4, 3], "dtype": "f32", "args": {"a": 0.0}},
        {"init": "xavier_normal_", "shape": [5, 3], "dtype": "f32", "args": {"gain": 2.0}},
    ]},
    {"name": "linear", "seed": 0, "steps": [mod("Linear", **{"in": 20, "out": 30}),
                                             mod("Linear", **{"in": 5, "out": 3, "bias": False})]},
    {"name": "conv", "seed": 0, "steps": [
        mod("Conv2d", **{"in": 3, "out": 8, "k": [3, 3]}),
        mod("Conv2d", **{"in": 4, "out": 6, "k": [3, 2], "groups": 2, "bias": False}),
        mod("Conv1d", **{"in": 4, "out": 6, "k": 3}),
        mod("ConvTranspose2d", **{"in": 3, "out": 5, "k": [3, 3]}),
        mod("ConvTranspose2d", **{"in": 4, "out": 6, "k": [2, 2], "groups": 2}),
    ]},
    {"name": "embedding_and_norms", "seed": 0, "steps": [
        mod("Embedding", num=10, dim=8),
        mod("Embedding", num=3, dim=4),         # 12 values: the scalar normal path
        mod("Embedding", num=10, dim=3, padding_idx=1),
        mod("LayerNorm", shape=[8]),
        mod("BatchNorm2d", c=4),
    ]},
    {"name": "multihead_attention", "seed": 0, "steps": [
        mod("MultiheadAttention", e=8, heads=2),
        mod("MultiheadAttention", e=8, heads=2, bias=False),
        mod("MultiheadAttention", e=8, heads=2, kdim=5, vdim=3),
    ]},
    {"name": "transformer", "seed": 0, "steps": [
        mod("TransformerEncoderLayer", d=16, heads=4, ff=32),
        mod("TransformerEncoder", d=16, heads=4, ff=32, layers=2, norm_first=True),
        mod("TransformerEncoderLayer", d=8, heads=2, ff=12, bias=False),
        mod("TransformerDecoderLayer", d=8, heads=2, ff=12),
    ]},
    {"name": "recurrent", "seed": 0, "steps": [
        mod("LSTM", **{"in": 10, "hidden": 20}),
        mod("LSTM", **{"in": 4, "hidden": 6, "layers": 2, "bidirectional": True}),
        mod("GRU", **{"in": 5, "hidden": 7}),
        mod("GRU", **{"in": 4, "hidden": 5, "bias": False}),
        mod("RNN", **{"in": 3, "hidden": 4}),
    ]},
    {"name": "tiny_gpt", "seed": 0, "steps": [mod("TinyGPT", vocab=16, block=8, embd=16, heads=4, layers=2)]},
]

if __name__ == "__main__":
    out = [run(c) for c in CASES]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rng.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": out}, f, separators=(",", ":"))
    print(path, os.path.getsize(path), "bytes")
