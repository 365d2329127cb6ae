//! Stage 2 of "What is torch.nn really?": the hand-cut batches of stage 1 give way to a
//! `TensorDataset`, a `RandomSampler` that shuffles it every epoch and a `DataLoader` that
//! batches it. The weights and their update are still written by hand.
//!
//! Run with `cargo run --release --example 02_dataloader`; the next stage is `03_module`.

use torchlet::data::{DataLoader, Mnist, RandomSampler, TensorDataset};
use torchlet::metrics::{Accuracy, Mean};
use torchlet::nn::functional::cross_entropy;
use torchlet::prelude::*;

type TestLoader = DataLoader<TensorDataset<(Tensor, Tensor)>>;

/// Mean loss (each batch weighted by its size) and accuracy over the batches of `dl`.
fn evaluate(model: &impl Fn(&Tensor) -> Tensor, dl: &TestLoader) -> (f64, f64) {
    let (mut loss, mut acc) = (Mean::new(), Accuracy::new());
    for (xb, yb) in dl {
        let out = model(&xb);
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

    // 784 → 128 → 10, weights laid out as nn.Linear's: [out_features, in_features].
    let w1 = (&Tensor::randn(&[128, 784]) / 784f64.sqrt()).requires_grad_(true);
    let b1 = Tensor::zeros(&[128]).requires_grad_(true);
    let w2 = (&Tensor::randn(&[10, 128]) / 128f64.sqrt()).requires_grad_(true);
    let b2 = Tensor::zeros(&[10]).requires_grad_(true);
    let model = |xb: &Tensor| xb.linear(&w1, Some(&b1)).relu().linear(&w2, Some(&b2));

    for epoch in 0..epochs {
        for (xb, yb) in &train_dl {
            let loss = cross_entropy(&model(&xb), &yb);

            loss.backward();
            no_grad(|| {
                for p in [&w1, &b1, &w2, &b2] {
                    if let Some(grad) = p.grad() {
                        p.sub_(&(&grad * lr));
                    }
                    p.zero_grad();
                }
            });
        }
        let (loss, acc) = no_grad(|| evaluate(&model, &test_dl));
        println!("epoch {epoch}: test loss {loss:.4}, test accuracy {acc:.4}");
    }
    Ok(())
}
