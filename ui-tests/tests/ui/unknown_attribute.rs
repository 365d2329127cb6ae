use torchlet::nn::{Linear, Module};

#[derive(Module)]
struct Model {
    #[module(frozen)]
    fc: Linear,
}

fn main() {}
