use torchlet::nn::{Linear, Module, ReLU, sequential, Forward};
use torchlet::Tensor;

#[derive(Module)]
struct Block {
    fc: Linear,
}

fn main() {
    let model = sequential![Linear::new(4, 8), Block { fc: Linear::new(8, 8) }, ReLU];
    let _y = model.forward(&Tensor::zeros(&[1, 4]));
}
