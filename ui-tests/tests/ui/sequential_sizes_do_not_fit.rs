use torchlet::nn::{Linear, ReLU, sequential};

fn main() {
    let _model = sequential![Linear::new(784, 128), ReLU, Linear::new(64, 10)];
}
