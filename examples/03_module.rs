//! Stage 3 of "What is torch.nn really?": the four loose weight tensors become the article's
//! two-layer `OurModule`, written with `#[derive(Module)]`, which registers `l1` and `l2` (its
//! named parameters and printed tree are shown first). The update loops over
//! `model.parameters()` and `model.zero_grad()` clears the gradients.
//!
//! Run with `cargo run --release --example 03_module`; the next stage is `04_sequential`.

use torchlet::data::{DataLoader, Mnist, RandomSampler, TensorDataset};
use torchlet::metrics::{Accuracy, Mean};
use torchlet::nn::functional::cross_entropy;
use torchlet::prelude::*;

/// `l2(relu(l1(x)))`, PyTorch's `OurModule` with `self.l1` and `self.l2`.
#[derive(Module)]
struct OurModule {
    l1: Linear,
    l2: Linear,
}

impl OurModule {
    fn new() -> OurModule {
        OurModule {
            l1: Linear::new(784, 128),
            l2: Linear::new(128, 10),
        }
    }
}

impl Forward<&Tensor> for OurModule {
    type Output = Tensor;

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }
}

type TestLoader = DataLoader<TensorDataset<(Tensor, Tensor)>>;

/// Mean loss (each batch weighted by its size) and accuracy over the batches of `dl`.
fn evaluate(model: &OurModule, dl: &TestLoader) -> (f64, f64) {
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

    let model = OurModule::new();
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    println!("{model}");
    println!("parameters: {}", model.num_parameters());

    for epoch in 0..epochs {
        for (xb, yb) in &train_dl {
            let loss = cross_entropy(&model.forward(&xb), &yb);

            loss.backward();
            no_grad(|| {
                for p in model.parameters() {
                    if let Some(grad) = p.grad() {
                        p.sub_(&(&grad * lr));
                    }
                }
                model.zero_grad();
            });
        }
        let (loss, acc) = no_grad(|| evaluate(&model, &test_dl));
        println!("epoch {epoch}: test loss {loss:.4}, test accuracy {acc:.4}");
    }
    Ok(())
}
