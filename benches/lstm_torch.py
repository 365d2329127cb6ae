"""PyTorch peer of benches/lstm.rs: forward + backward of LSTM(32, 128), batch 32, 50 steps."""
import json
import time

import torch

torch.manual_seed(0)
lstm = torch.nn.LSTM(32, 128, batch_first=True)
x = torch.randn(32, 50, 32)


def step():
    out, _ = lstm(x)
    out.sum().backward()
    lstm.zero_grad()


for _ in range(3):
    step()
wall, cpu = [], []
for _ in range(15):
    t, c = time.perf_counter(), time.thread_time()
    step()
    wall.append((time.perf_counter() - t) * 1e3)
    cpu.append((time.thread_time() - c) * 1e3)
print(json.dumps({"peer": "pytorch", "bench": "lstm_fwd_bwd",
                  "median_ms": round(sorted(wall)[7], 2), "cpu_ms": round(sorted(cpu)[7], 2),
                  "threads": torch.get_num_threads()}))
