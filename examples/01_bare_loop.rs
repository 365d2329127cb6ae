//! Stage 1 of "What is torch.nn really?": a two-layer network trained with nothing but
//! tensors and autograd. The weights are plain tensors, batches are cut out of the training
//! set by hand, and each weight is updated by hand under `no_grad`.
//!
//! Run with `cargo run --release --example 01_bare_loop`; the next stage is `02_dataloader`.

use torchlet::data::Mnist;
use torchlet::metrics::accuracy;
use torchlet::nn::functional::cross_entropy;
use torchlet::prelude::*;

fn main() -> torchlet::Result<()> {
    manual_seed(0);
    let (bs, lr, epochs) = (64, 0.1, 5);
    let train = Mnist::vendored(true)?.flatten(true);
    let test = Mnist::vendored(false)?.flatten(true);
    let (x_train, y_train) = (train.images(), train.labels());
    let (x_test, y_test) = (test.images(), test.labels());
    let n = x_train.shape()[0];

    // 784 → 128 → 10, weights laid out as nn.Linear's: [out_features, in_features].
    let w1 = (&Tensor::randn(&[128, 784]) / 784f64.sqrt()).requires_grad_(true);
    let b1 = Tensor::zeros(&[128]).requires_grad_(true);
    let w2 = (&Tensor::randn(&[10, 128]) / 128f64.sqrt()).requires_grad_(true);
    let b2 = Tensor::zeros(&[10]).requires_grad_(true);
    let model = |xb: &Tensor| xb.linear(&w1, Some(&b1)).relu().linear(&w2, Some(&b2));

    for epoch in 0..epochs {
        for i in 0..n.div_ceil(bs) {
            let start = i * bs;
            let len = bs.min(n - start);
            let xb = x_train.narrow(0, start, len);
            let yb = y_train.narrow(0, start, len);
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
        let (loss, acc) = no_grad(|| {
            let out = model(&x_test);
            (cross_entropy(&out, &y_test).item(), accuracy(&out, &y_test))
        });
        println!("epoch {epoch}: test loss {loss:.4}, test accuracy {acc:.4}");
    }
    Ok(())
}
