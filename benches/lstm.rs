//! Forward + backward of a small LSTM (f32): one layer, input 32, hidden 128, batch 32,
//! 50 time steps, batch-first, loss = sum of the outputs.
//!
//!     cargo bench --bench lstm
//!     ~/torch-venv/bin/python benches/lstm_torch.py   # the same in PyTorch
//!
//! Prints one JSON line (median of the timed repetitions).

use std::time::Instant;
use torchlet::nn::{Forward, LSTM, Module};
use torchlet::{Tensor, manual_seed};

const BATCH: usize = 32;
const STEPS: usize = 50;
const INPUT: usize = 32;
const HIDDEN: usize = 128;

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
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"peer\":\"torchlet\",\"bench\":\"lstm_fwd_bwd\",\"median_ms\":{:.2},\"best_ms\":{:.2},\"worst_ms\":{:.2}}}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
