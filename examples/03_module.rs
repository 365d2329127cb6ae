//! The article's two-layer model written with `#[derive(Module)]`: its named parameters,
//! its printed tree, and one forward and backward pass on random input.
//!
//! Run with `cargo run --example 03_module`.

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

fn main() {
    manual_seed(0);
    let model = OurModule::new();
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    println!("{model}");
    println!("parameters: {}", model.num_parameters());

    let xb = Tensor::randn(&[64, 784]);
    let loss = model.forward(&xb).pow(2.0).mean();
    loss.backward();
    println!("loss {:.4}", loss.item());
    for (name, p) in model.named_parameters() {
        let grad = p.grad().map_or(0.0, |g| g.abs().sum().item());
        println!("{name}: |grad| sum {grad:.4}");
    }
    model.zero_grad();
}
