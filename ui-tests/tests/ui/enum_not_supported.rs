use torchlet::nn::Module;

#[derive(Module)]
enum Model {
    A,
}

fn main() {}
