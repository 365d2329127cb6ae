use torchlet::nn::{Linear, Module};
use torchlet::Tensor;

#[derive(Module)]
struct Model {
    fc: Linear,
    extra: Vec<Tensor>,
}

fn main() {}
