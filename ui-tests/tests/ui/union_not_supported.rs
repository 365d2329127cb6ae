use torchlet::nn::Module;

#[derive(Module)]
union Model {
    a: u32,
}

fn main() {}
