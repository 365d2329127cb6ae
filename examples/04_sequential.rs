//! Stage 4 of "What is torch.nn really?": the hand-written `OurModule` and its `forward`
//! become one `sequential!` chain, PyTorch's `nn.Sequential(nn.Linear(784, 128), nn.ReLU(),
//! nn.Linear(128, 10))`, whose layers are named `0`, `1`, `2`.
//!
//! Run with `cargo run --release --example 04_sequential`; the next stage is `05_optimizer`.

use torchlet::data::{DataLoader, Mnist, RandomSampler, TensorDataset};
use torchlet::metrics::{Accuracy, Mean};
use torchlet::nn::functional::cross_entropy;
use torchlet::nn::summary;
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

    let mut model = sequential![Linear::new(784, 128), ReLU, Linear::new(128, 10)];
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    println!("{model}");
    // torchinfo's table: each layer's output shape and parameter count, for a batch of 64.
    println!("{}", summary(&mut model, &Tensor::zeros(&[bs, 784])));

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
