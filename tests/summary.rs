//! `summary` (torchinfo's table) and the parameter counts, on a model that mixes a derived
//! struct, a typed chain and a frozen layer.

use torchlet::Tensor;
use torchlet::nn::{
    BatchNorm2d, Conv2d, Flatten, Forward, Linear, MaxPool2d, Module, ReLU, Sequential, sequential,
    summary,
};

#[derive(Module)]
struct Net {
    features: Sequential<(Conv2d, BatchNorm2d, ReLU, MaxPool2d)>,
    flatten: Flatten,
    head: Linear,
}

impl Forward<&Tensor> for Net {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.head
            .forward(&self.flatten.forward(&self.features.forward(x)))
    }
}

fn net() -> Net {
    Net {
        features: sequential![
            Conv2d::new(1, 4, 3).with_padding(1),
            BatchNorm2d::new(4),
            ReLU,
            MaxPool2d::new(2)
        ],
        flatten: Flatten::new(),
        head: Linear::new(4 * 14 * 14, 10),
    }
}

#[test]
fn trainable_parameters_leave_out_frozen_ones() {
    let model = net();
    // conv 1·4·3·3 + 4, batch norm 4 + 4, head 784·10 + 10.
    assert_eq!(model.num_parameters(), 40 + 8 + 7850);
    model.features.requires_grad_(false);
    assert_eq!(model.num_trainable_parameters(), 7850);
}

#[test]
fn summary_lists_every_layer_with_its_output_shape_and_parameters() {
    let mut model = net();
    model.head.requires_grad_(false);
    let s = summary(&mut model, &Tensor::zeros(&[2, 1, 28, 28]));
    let want = "\
==================================================================
Layer (name)                      Output shape             Param #
==================================================================
Net                               [2, 10]                       --
├─features (Sequential)           [2, 4, 14, 14]                --
│ ├─0 (Conv2d)                    [2, 4, 28, 28]                40
│ ├─1 (BatchNorm2d)               [2, 4, 28, 28]                 8
│ ├─2 (ReLU)                      [2, 4, 28, 28]                --
│ └─3 (MaxPool2d)                 [2, 4, 14, 14]                --
├─flatten (Flatten)               [2, 784]                      --
└─head (Linear)                   [2, 10]                    7,850
==================================================================
Input shape: [2, 1, 28, 28]
Total params: 7,898
Trainable params: 48
Non-trainable params: 7,850
==================================================================";
    assert_eq!(s.to_string(), want, "\n{s}");
    assert_eq!((s.total_params(), s.trainable_params()), (7898, 48));
}

#[test]
fn summary_runs_in_eval_mode_and_restores_each_modules_mode() {
    let mut model = net();
    model.head.eval();
    let running_mean = |m: &Net| {
        m.features
            .layers
            .1
            .running_mean
            .as_ref()
            .unwrap()
            .to_vec::<f32>()
    };
    let before = running_mean(&model);
    summary(&mut model, &Tensor::randn(&[2, 1, 28, 28]));
    // Batch norm ran in evaluation mode: its running statistics were left alone.
    assert_eq!(running_mean(&model), before);
    assert!(model.features.layers.1.is_training());
    assert!(!model.head.is_training());
}
