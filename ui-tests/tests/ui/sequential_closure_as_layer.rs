use torchlet::nn::{Forward, Linear, sequential};
use torchlet::Tensor;

fn main() {
    let model = sequential![Linear::new(4, 8), |x: &Tensor| x.relu(), Linear::new(8, 2)];
    let _y = model.forward(&Tensor::zeros(&[1, 4]));
}
