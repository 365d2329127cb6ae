use torchlet::nn::sequential;

fn main() {
    let _model = sequential![];
}
