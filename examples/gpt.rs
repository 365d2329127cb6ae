//! A decoder-only transformer (a small GPT) trained from scratch.
//!
//! By default it learns minGPT's addition task: the model reads two 2-digit numbers and
//! writes the digits of their sum (least significant first, as minGPT does). 500 of the
//! 10,000 pairs are held out and never trained on; the exact-match accuracy on them is
//! reported as training goes, and a few greedy completions are shown at the end.
//! `--text FILE` instead trains a character-level model on any UTF-8 file and samples
//! from it.
//!
//! AdamW with a linear warm-up and cosine decay ([`LambdaLr::warmup_cosine`]) stepped per
//! batch, gradient clipping at norm 1, and a training checkpoint after every round of
//! steps that `--resume` continues from.
//!
//! ```sh
//! cargo run --release --example gpt                         # the addition task
//! cargo run --release --example gpt -- --resume             # continue from gpt.ckpt
//! cargo run --release --example gpt -- --text README.md     # a character-level model
//! cargo run --release --example gpt -- --help
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use torchlet::checkpoint::{TrainingCheckpoint, seed_epoch};
use torchlet::nn::{Activation, TransformerEncoderLayer};
use torchlet::optim::{AdamWConfig, LambdaLr, clip_grad_norm_};
use torchlet::prelude::*;

type Error = Box<dyn std::error::Error>;

const HELP: &str = "\
usage: gpt [--text FILE] [--steps N] [--resume] [--checkpoint PATH] [--seed N]

  (no --text)        minGPT's addition task: a + b for two-digit a, b, 500 pairs held out
  --text FILE        a character-level model of FILE (UTF-8), sampled at the end
  --steps N          training steps (default 1500 for addition, 1000 for text)
  --resume           continue from the checkpoint
  --checkpoint PATH  where the checkpoint is written after every round (default gpt.ckpt,
                     gpt-text.ckpt with --text)
  --seed N           seed of the run (default 1337)
";

/// A GPT: token and learned position embeddings, a stack of pre-norm causal Transformer
/// blocks (PyTorch's `TransformerEncoderLayer` with `norm_first=True`), a final LayerNorm
/// and a linear head. Its keys are those of the same model written in PyTorch
/// (`blocks.0.self_attn.in_proj_weight`, …).
#[derive(Module)]
struct Gpt {
    tok_emb: Embedding,
    pos_emb: Embedding,
    blocks: Vec<TransformerEncoderLayer>,
    ln_f: LayerNorm,
    head: Linear,
}

/// The sizes of a [`Gpt`].
#[derive(Clone, Copy, Debug)]
struct Config {
    vocab: usize,
    block_size: usize,
    d_model: usize,
    nhead: usize,
    num_layers: usize,
}

impl Gpt {
    fn new(c: Config) -> Gpt {
        let block = || {
            TransformerEncoderLayer::new(c.d_model, c.nhead)
                .with_dim_feedforward(4 * c.d_model)
                .with_dropout(0.0)
                .with_activation(Activation::Gelu)
                .with_batch_first(true)
                .with_norm_first(true)
        };
        Gpt {
            tok_emb: Embedding::new(c.vocab, c.d_model),
            pos_emb: Embedding::new(c.block_size, c.d_model),
            blocks: (0..c.num_layers).map(|_| block()).collect(),
            ln_f: LayerNorm::new(&[c.d_model]),
            head: Linear::new(c.d_model, c.vocab),
        }
    }
}

/// `[T, T]`, 1 above the diagonal: position t attends to 0..=t.
fn causal_mask(t: usize) -> Tensor {
    let m: Vec<i64> = (0..t * t).map(|n| i64::from(n % t > n / t)).collect();
    Tensor::from_vec(m, &[t, t])
}

impl Forward<&Tensor> for Gpt {
    type Output = Tensor;

    /// Token ids `[B, T]` → logits `[B, T, vocab]`.
    fn forward(&self, ids: &Tensor) -> Tensor {
        let t = ids.size(1);
        let mask = causal_mask(t);
        let mut h = &self.tok_emb.forward(ids) + &self.pos_emb.forward(&Tensor::arange(t));
        for block in &self.blocks {
            h = block.forward_with(&h, Some(&mask), None);
        }
        self.head.forward(&self.ln_f.forward(&h))
    }
}

/// Extends each row of `ids` by `n` tokens, each the most likely next one (greedy).
fn generate_greedy(model: &Gpt, ids: &Tensor, n: usize) -> Tensor {
    no_grad(|| {
        let mut ids = ids.clone();
        for _ in 0..n {
            let logits = model.forward(&ids);
            let last = logits.select(1, ids.size(1) - 1);
            ids = Tensor::cat(&[ids, last.argmax(-1, true)], 1);
        }
        ids
    })
}

/// A training task: batches of inputs and targets, and what to report.
trait Task {
    fn config(&self) -> Config;
    fn batch_size(&self) -> usize;
    /// A batch of `batch` examples: (input ids, targets) and the loss on them.
    fn loss(&self, model: &Gpt, batch: usize) -> Tensor;
    /// A line about the model's progress (held-out accuracy, a sample).
    fn report(&self, model: &Gpt) -> String;
    /// What to show at the end.
    fn show(&self, model: &Gpt);
}

/// minGPT's addition: `a1 a0 b1 b0 c0 c1 c2` with `c = a + b` written least significant
/// digit first; the loss is on the three sum digits only.
struct Addition {
    train: Vec<(i64, i64)>,
    test: Vec<(i64, i64)>,
}

impl Addition {
    fn new(seed: u64) -> Addition {
        manual_seed(seed);
        let pairs: Vec<(i64, i64)> = permutation(10_000)
            .into_iter()
            .map(|i| (i as i64 / 100, i as i64 % 100))
            .collect();
        let (test, train) = pairs.split_at(500);
        Addition {
            train: train.to_vec(),
            test: test.to_vec(),
        }
    }

    fn digits(&(a, b): &(i64, i64)) -> [i64; 7] {
        let c = a + b;
        [a / 10, a % 10, b / 10, b % 10, c % 10, c / 10 % 10, c / 100]
    }

    /// The exact-match accuracy of greedy completions of `pairs`.
    fn accuracy(model: &Gpt, pairs: &[(i64, i64)]) -> f64 {
        let rows: Vec<[i64; 7]> = pairs.iter().map(Addition::digits).collect();
        let prompts: Vec<i64> = rows.iter().flat_map(|r| r[..4].to_vec()).collect();
        let out = generate_greedy(model, &Tensor::from_vec(prompts, &[rows.len(), 4]), 3);
        let out = out.to_vec::<i64>();
        let correct = rows
            .iter()
            .zip(out.chunks(7))
            .filter(|(want, got)| want[..] == got[..])
            .count();
        correct as f64 / rows.len() as f64
    }
}

/// A random permutation of `0..n` from the global generator.
fn permutation(n: usize) -> Vec<usize> {
    let keys = Tensor::rand(&[n]).to_vec::<f32>();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&i, &j| keys[i].total_cmp(&keys[j]));
    idx
}

impl Task for Addition {
    fn config(&self) -> Config {
        Config {
            vocab: 10,
            block_size: 6,
            d_model: 64,
            nhead: 4,
            num_layers: 2,
        }
    }

    fn batch_size(&self) -> usize {
        64
    }

    fn loss(&self, model: &Gpt, batch: usize) -> Tensor {
        let picks = Tensor::randint(0, self.train.len() as i64, &[batch]).to_vec::<i64>();
        let rows: Vec<i64> = picks
            .iter()
            .flat_map(|&i| Addition::digits(&self.train[i as usize]))
            .collect();
        let seq = Tensor::from_vec(rows, &[batch, 7]);
        let x = seq.narrow(1, 0, 6).contiguous_copy();
        let y = seq.narrow(1, 4, 3).contiguous_copy().reshape(&[-1]);
        // Positions 3, 4, 5 predict the sum digits (tokens 4, 5, 6).
        let logits = model.forward(&x).narrow(1, 3, 3).reshape(&[-1, 10]);
        cross_entropy(&logits, &y)
    }

    fn report(&self, model: &Gpt) -> String {
        format!(
            "held-out exact match {:.2}%",
            100.0 * Addition::accuracy(model, &self.test)
        )
    }

    fn show(&self, model: &Gpt) {
        let acc_train = Addition::accuracy(model, &self.train[..1000]);
        let acc_test = Addition::accuracy(model, &self.test);
        println!(
            "exact match: {:.2}% on 1000 training pairs, {:.2}% on the {} held-out pairs",
            100.0 * acc_train,
            100.0 * acc_test,
            self.test.len()
        );
        let shown: Vec<(i64, i64)> = self.test[..5].to_vec();
        let rows: Vec<i64> = shown
            .iter()
            .flat_map(|p| Addition::digits(p)[..4].to_vec())
            .collect();
        let out = generate_greedy(model, &Tensor::from_vec(rows, &[shown.len(), 4]), 3);
        for ((a, b), d) in shown.iter().zip(out.to_vec::<i64>().chunks(7)) {
            let sum = d[4] + 10 * d[5] + 100 * d[6];
            let mark = if sum == a + b { "ok" } else { "WRONG" };
            println!("  {a:>2} + {b:>2} = {sum:>3}   (digits {d:?}) {mark}");
        }
    }
}

/// A character-level model of a text file: every window of `block_size + 1` characters.
struct Text {
    chars: Vec<char>,
    ids: Vec<i64>,
    block_size: usize,
}

impl Text {
    fn new(path: &PathBuf) -> Result<Text, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--text {}: {e} (the file must be UTF-8 text)",
                path.display()
            )
        })?;
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        let block_size = 64;
        let ids: Vec<i64> = text
            .chars()
            .map(|c| chars.binary_search(&c).unwrap_or_default() as i64)
            .collect();
        if ids.len() <= block_size + 1 {
            return Err(format!(
                "--text {}: {} characters; need more than {}",
                path.display(),
                ids.len(),
                block_size + 1
            )
            .into());
        }
        Ok(Text {
            chars,
            ids,
            block_size,
        })
    }

    /// `n` characters sampled from the model after `prompt`, at temperature 0.8.
    fn sample(&self, model: &Gpt, prompt: &[i64], n: usize) -> String {
        let mut ids = prompt.to_vec();
        no_grad(|| {
            for _ in 0..n {
                let start = ids.len().saturating_sub(self.block_size);
                let ctx = Tensor::from_vec(ids[start..].to_vec(), &[1, ids.len() - start]);
                let logits = model.forward(&ctx);
                let last = logits.select(1, ctx.size(1) - 1).reshape(&[-1]);
                let probs = last.div_scalar(0.8).softmax(-1).to_vec::<f32>();
                let u = Tensor::rand(&[1]).to_vec::<f32>()[0];
                let (mut acc, mut pick) = (0.0, probs.len() - 1);
                for (i, p) in probs.iter().enumerate() {
                    acc += p;
                    if u < acc {
                        pick = i;
                        break;
                    }
                }
                ids.push(pick as i64);
            }
        });
        ids.iter().map(|&i| self.chars[i as usize]).collect()
    }
}

impl Task for Text {
    fn config(&self) -> Config {
        Config {
            vocab: self.chars.len(),
            block_size: self.block_size,
            d_model: 96,
            nhead: 4,
            num_layers: 3,
        }
    }

    fn batch_size(&self) -> usize {
        32
    }

    fn loss(&self, model: &Gpt, batch: usize) -> Tensor {
        let t = self.block_size;
        let high = (self.ids.len() - t - 1) as i64;
        let starts = Tensor::randint(0, high, &[batch]).to_vec::<i64>();
        let mut xs = Vec::with_capacity(batch * t);
        let mut ys = Vec::with_capacity(batch * t);
        for &s in &starts {
            let s = s as usize;
            xs.extend_from_slice(&self.ids[s..s + t]);
            ys.extend_from_slice(&self.ids[s + 1..s + t + 1]);
        }
        let logits = model.forward(&Tensor::from_vec(xs, &[batch, t]));
        let vocab = self.chars.len() as isize;
        cross_entropy(
            &logits.reshape(&[-1, vocab]),
            &Tensor::from_vec(ys, &[batch * t]),
        )
    }

    fn report(&self, model: &Gpt) -> String {
        let sample = self.sample(model, &self.ids[..1], 60);
        format!("sample: {:?}", sample)
    }

    fn show(&self, model: &Gpt) {
        println!(
            "--- sample ---\n{}\n---",
            self.sample(model, &self.ids[..1], 400)
        );
    }
}

struct Args {
    text: Option<PathBuf>,
    steps: Option<usize>,
    resume: bool,
    checkpoint: Option<PathBuf>,
    seed: u64,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, Error> {
    let mut args = Args {
        text: None,
        steps: None,
        resume: false,
        checkpoint: None,
        seed: 1337,
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value; see --help"))
        };
        match a.as_str() {
            "--text" => args.text = Some(PathBuf::from(value("--text")?)),
            "--checkpoint" => args.checkpoint = Some(PathBuf::from(value("--checkpoint")?)),
            "--steps" => {
                let v = value("--steps")?;
                let n = v
                    .parse()
                    .map_err(|_| format!("--steps: {v:?} is not a number of steps"))?;
                args.steps = Some(n);
            }
            "--seed" => {
                let v = value("--seed")?;
                args.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: {v:?} is not a non-negative integer"))?;
            }
            "--resume" => args.resume = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}; see --help").into()),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gpt: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("gpt: {e}");
            ExitCode::from(2)
        }
    }
}

/// Steps per round: progress is printed and the checkpoint written after each.
const ROUND: usize = 250;

fn run(args: &Args) -> Result<(), Error> {
    let (task, default_steps, default_ckpt): (Box<dyn Task>, usize, &str) = match &args.text {
        Some(path) => (Box::new(Text::new(path)?), 1000, "gpt-text.ckpt"),
        None => (Box::new(Addition::new(args.seed)), 1500, "gpt.ckpt"),
    };
    let steps = args.steps.unwrap_or(default_steps).max(ROUND);
    let ckpt_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_ckpt));
    let batch = task.batch_size();
    let lr = 1e-3;

    manual_seed(args.seed);
    let config = task.config();
    let mut model = Gpt::new(config);
    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr,
            weight_decay: 0.1,
            ..Default::default()
        },
    )?;
    let mut sched = LambdaLr::warmup_cosine(&opt, steps / 20, steps, 0.1)?;
    let mut round = 0;
    if args.resume {
        let ckpt = TrainingCheckpoint::load(&ckpt_path)?;
        ckpt.restore(&mut model, &mut opt, Some(&mut sched))
            .map_err(|e| format!("{}: cannot resume: {e}", ckpt_path.display()))?;
        round = ckpt.epoch as usize;
        println!(
            "resumed from {} after step {}",
            ckpt_path.display(),
            round * ROUND
        );
    }
    println!(
        "{config:?}: {} parameters; batch {batch}, AdamW lr {lr} with warm-up and cosine decay, \
         {steps} steps",
        model.num_parameters()
    );
    println!("{model}");

    let start = Instant::now();
    let rounds = steps.div_ceil(ROUND);
    while round < rounds {
        seed_epoch(args.seed, round as u64);
        model.train();
        let mut loss_sum = 0.0;
        for _ in 0..ROUND {
            let loss = task.loss(&model, batch);
            opt.zero_grad();
            loss.backward();
            clip_grad_norm_(model.parameters(), 1.0, 2.0);
            opt.step();
            sched.step();
            loss_sum += loss.item();
        }
        round += 1;
        model.eval();
        println!(
            "step {:>5}/{}: loss {:.4}, lr {:.2e}, {}, {:.1} s",
            round * ROUND,
            rounds * ROUND,
            loss_sum / ROUND as f64,
            opt.lr(),
            task.report(&model),
            start.elapsed().as_secs_f64()
        );
        TrainingCheckpoint::capture(&model, &opt, Some(&sched), round as u64, args.seed)
            .save(&ckpt_path)?;
    }
    println!(
        "trained in {:.1} s; checkpoint {}",
        start.elapsed().as_secs_f64(),
        ckpt_path.display()
    );
    model.eval();
    task.show(&model);
    Ok(())
}
