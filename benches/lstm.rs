//! Forward + backward of a small LSTM (f32): one layer, input 32, hidden 128, batch 32,
//! 50 time steps, batch-first, loss = sum of the outputs.
//!
//!     cargo bench --bench lstm
//!     ~/torch-venv/bin/python benches/lstm_torch.py   # the same in PyTorch
//!
//! Prints one JSON line: medians of the timed repetitions, wall-clock and the calling
//! thread's CPU time (Linux; steadier than wall time on a busy machine; run both with
//! `RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1` to compare one core with one core).

use std::time::Instant;
use torchlet::nn::{Forward, LSTM, Module};
use torchlet::{Tensor, manual_seed};

const BATCH: usize = 32;
const STEPS: usize = 50;
const INPUT: usize = 32;
const HIDDEN: usize = 128;

/// CPU time of the calling thread in milliseconds (0 where /proc is unavailable).
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    manual_seed(0);
    let lstm = LSTM::new(INPUT, HIDDEN).with_batch_first(true);
    let x = Tensor::randn(&[BATCH, STEPS, INPUT]);
    let step = || {
        let (out, _) = lstm.forward(&x);
        out.sum().backward();
        lstm.zero_grad();
    };
    for _ in 0..3 {
        step();
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let (t, c) = (Instant::now(), thread_cpu_ms());
        step();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(thread_cpu_ms() - c);
    }
    println!(
        "{{\"peer\":\"torchlet\",\"bench\":\"lstm_fwd_bwd\",\"median_ms\":{:.2},\"cpu_ms\":{:.2},\"threads\":\"{}\"}}",
        median(wall),
        median(cpu),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
}
