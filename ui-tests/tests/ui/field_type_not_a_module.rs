use torchlet::nn::{Linear, Module};

struct Config;

#[derive(Module)]
struct Model {
    fc: Linear,
    config: Config,
}

fn main() {}
