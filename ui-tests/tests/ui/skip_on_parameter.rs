use torchlet::nn::{Module, Parameter};

#[derive(Module)]
struct Model {
    #[module(skip)]
    scale: Parameter,
}

fn main() {}
