use torchlet::nn::{Linear, Module};

#[derive(Module)]
struct Model {
    #[module(rename = fc1)]
    fc: Linear,
}

fn main() {}
