//! Stage 5 of "What is torch.nn really?": the hand-written update loop becomes an optimizer,
//! `Sgd` (PyTorch's `optim.SGD`) over the model's named parameters, and the loop body is
//! PyTorch's: `loss.backward(); opt.step(); opt.zero_grad();`. Swap in
//! `Adam::new(model.named_parameters(), AdamConfig { lr: 1e-3, ..Default::default() })?`
//! to try Adam.
//!
//! Run with `cargo run --release --example 05_optimizer`; `cargo run --release --example
//! mnist` is the full training job.

use torchlet::data::{DataLoader, Mnist, RandomSampler, TensorDataset};
use torchlet::metrics::{Accuracy, Mean};
use torchlet::nn::functional::cross_entropy;
use torchlet::optim::{Optimizer, Sgd, SgdConfig};
use torchlet::prelude::*;

type TestLoader = DataLoader<TensorDataset<(Tensor, Tensor)>>;

/// Mean loss (each batch weighted by its size) and accuracy over the batches of `dl`.
fn evaluate(model: &impl Layer, dl: &TestLoader) -> (f64, f64) {
    let (mut loss, mut acc) = (Mean::new(), Accuracy::new());
    for (xb, yb) in dl {
        let out = model.forward(&xb);
        loss.update_weighted(cross_entropy(&out, &yb).item(), xb.shape()[0] as f64);
        acc.update(&out, &yb);
    }
    (loss.compute(), acc.compute())
}

fn main() -> torchlet::Result<()> {
    manual_seed(0);
    let (bs, lr, epochs) = (64, 0.1, 5);
    let train = Mnist::vendored(true)?.flatten(true);
    let test = Mnist::vendored(false)?.flatten(true);
    let train_ds = TensorDataset::new((train.images(), train.labels()))?;
    let train_dl = DataLoader::builder(train_ds)
        .batch_size(bs)
        .sampler(RandomSampler::new(train.len())) // or .shuffle(true)
        .seed(0)
        .build()?;
    let test_dl = DataLoader::builder(TensorDataset::new((test.images(), test.labels()))?)
        .batch_size(500)
        .build()?;

    let model = sequential![Linear::new(784, 128), ReLU, Linear::new(128, 10)];
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    println!("{model}");
    println!("parameters: {}", model.num_parameters());
    let config = SgdConfig {
        lr,
        ..Default::default()
    };
    let mut opt = Sgd::new(model.named_parameters(), config)?;

    for epoch in 0..epochs {
        for (xb, yb) in &train_dl {
            let loss = cross_entropy(&model.forward(&xb), &yb);

            loss.backward();
            opt.step();
            opt.zero_grad();
        }
        let (loss, acc) = no_grad(|| evaluate(&model, &test_dl));
        println!("epoch {epoch}: test loss {loss:.4}, test accuracy {acc:.4}");
    }
    Ok(())
}
