//! W5 of ../shared/bench/README.md: a tiny GPT (token + position embeddings, two pre-norm
//! `TransformerEncoderLayer`s of width 128 with 4 heads, feed-forward 512, GELU, no dropout,
//! causal; final LayerNorm, linear head; 421,440 parameters), batch 32, AdamW lr 3e-4,
//! cross-entropy over every position; 3 untimed warm-up steps, then 60 timed steps over
//! sequences `x[i+1] = (5·x[i] + 3) mod 64` from SplitMix64 starts (seed 7), as
//! `torch_peer.py w5` does.

use std::time::Instant;
use torchlet::nn::{
    Activation, TransformerEncoder, TransformerEncoderLayer, generate_square_subsequent_mask,
};
use torchlet::optim::AdamWConfig;
use torchlet::prelude::*;

const VOCAB: usize = 64;
const BLOCK: usize = 64;
const EMBD: usize = 128;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const BATCH: usize = 32;
const STEPS: usize = 60;

#[derive(Module)]
struct TinyGPT {
    tok: Embedding,
    pos: Embedding,
    blocks: TransformerEncoder,
    ln_f: LayerNorm,
    head: Linear,
    #[module(skip)]
    mask: Tensor,
}

impl TinyGPT {
    /// Built in torch_peer.py's order (tok, pos, the layer, ln_f, head), so that after the
    /// same seed the initial weights are PyTorch's.
    fn new() -> TinyGPT {
        let tok = Embedding::new(VOCAB, EMBD);
        let pos = Embedding::new(BLOCK, EMBD);
        let layer = TransformerEncoderLayer::new(EMBD, HEADS)
            .with_dim_feedforward(4 * EMBD)
            .with_dropout(0.0)
            .with_activation(Activation::Gelu)
            .with_batch_first(true)
            .with_norm_first(true);
        TinyGPT {
            tok,
            pos,
            blocks: TransformerEncoder::new(layer, LAYERS),
            ln_f: LayerNorm::new(&[EMBD]),
            head: Linear::new(EMBD, VOCAB),
            mask: generate_square_subsequent_mask(BLOCK),
        }
    }
}

impl Forward<&Tensor> for TinyGPT {
    type Output = Tensor;
    fn forward(&self, idx: &Tensor) -> Tensor {
        let t = idx.size(1);
        let x = &self.tok.forward(idx) + &self.pos.forward(&Tensor::arange(t));
        let mask = self.mask.narrow(0, 0, t).narrow(1, 0, t);
        let x = self.blocks.forward_with(&x, Some(&mask), None);
        self.head.forward(&self.ln_f.forward(&x))
    }
}

/// `n` sequences of `BLOCK + 1` tokens, as torch_peer.py's `w5_data`.
fn data(n: usize, seed: u64) -> Tensor {
    let mut state = seed;
    let mut next_u64 = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n * (BLOCK + 1));
    for _ in 0..n {
        let mut t = (next_u64() % VOCAB as u64) as i64;
        for _ in 0..=BLOCK {
            out.push(t);
            t = (5 * t + 3) % VOCAB as i64;
        }
    }
    Tensor::from_vec(out, &[n, BLOCK + 1])
}

/// Runs W5 and returns (tokens/s, steps/s, seconds, final loss, parameters, page faults per
/// step).
pub fn run() -> Result<(f64, f64, f64, f64, usize, f64), torchlet::Error> {
    let data = data(BATCH * 8, 7);
    manual_seed(0);
    let model = TinyGPT::new();
    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr: 3e-4,
            ..Default::default()
        },
    )?;
    let nb = data.size(0) / BATCH;
    let batches: Vec<(Tensor, Tensor)> = (0..nb)
        .map(|i| {
            let b = data.narrow(0, i * BATCH, BATCH);
            (
                b.narrow(1, 0, BLOCK).contiguous_copy(),
                b.narrow(1, 1, BLOCK).contiguous_copy().reshape(&[-1]),
            )
        })
        .collect();
    let mut step = |s: usize| {
        let (x, y) = &batches[s % nb];
        let logits = model.forward(x);
        let loss = cross_entropy(&logits.reshape(&[-1, VOCAB as isize]), y);
        opt.zero_grad();
        loss.backward();
        opt.step();
        loss.item()
    };
    for s in 0..3 {
        step(s);
    }
    let start = Instant::now();
    let mut last = f64::NAN;
    let mut faults = super::FaultCounter::default();
    for s in 0..STEPS {
        last = step(s);
        faults.step();
    }
    let secs = start.elapsed().as_secs_f64();
    faults.end();
    let tokens = (STEPS * BATCH * BLOCK) as f64;
    Ok((
        tokens / secs,
        STEPS as f64 / secs,
        secs,
        last,
        model.num_parameters(),
        faults.per_step(),
    ))
}
