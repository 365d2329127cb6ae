use torchlet::nn::{Linear, Module};

#[derive(Module)]
struct Model {
    fc: Linear,
    hidden_size: usize,
}

fn main() {}
