//! End to end against PyTorch (tests/reference/training.json): a Linear → ReLU → Linear
//! classifier trained with cross-entropy and SGD, step by step. The model is built from raw
//! parameters (`x.matmul(&w.t()) + b`), named as `nn.Sequential` names them.

mod common;

use common::{assert_close, cases, tensor};
use serde_json::Value;
use torchlet::nn::Parameter;
use torchlet::nn::functional::cross_entropy;
use torchlet::optim::{Optimizer, Sgd, SgdConfig};
use torchlet::{DType, Tensor};

const NAMES: [&str; 4] = ["0.weight", "0.bias", "2.weight", "2.bias"];

fn forward(params: &[Parameter], x: &Tensor) -> Tensor {
    let linear = |x: &Tensor, w: &Parameter, b: &Parameter| &x.matmul(&w.t()) + &**b;
    let h = linear(x, &params[0], &params[1]).relu();
    linear(&h, &params[2], &params[3])
}

fn sgd_config(case: &Value) -> SgdConfig {
    let o = &case["args"]["optimizer"];
    assert_eq!(o["kind"], "SGD", "{}: the optimizer kind", case["name"]);
    let f = |k: &str| o[k].as_f64().unwrap_or_else(|| panic!("optimizer.{k}"));
    let b = |k: &str| o[k].as_bool().unwrap_or_else(|| panic!("optimizer.{k}"));
    SgdConfig {
        lr: f("lr"),
        momentum: f("momentum"),
        dampening: f("dampening"),
        weight_decay: f("weight_decay"),
        nesterov: b("nesterov"),
        maximize: b("maximize"),
    }
}

fn train(case: &Value, dtype: DType, (rtol, atol): (f64, f64)) {
    let name = case["name"].as_str().unwrap_or_default();
    let params: Vec<Parameter> = NAMES
        .iter()
        .map(|n| Parameter::new(tensor(&case["inputs"][*n], dtype)))
        .collect();
    let named: Vec<(String, Parameter)> = NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(params.clone())
        .collect();
    let mut opt = Sgd::new(named, sgd_config(case)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let x = tensor(&case["inputs"]["x"], dtype);
    let targets = tensor(&case["inputs"]["targets"], dtype);
    let batches = x.size(0);
    let mut losses = Vec::with_capacity(batches);
    for i in 0..batches {
        opt.zero_grad();
        let loss = cross_entropy(&forward(&params, &x.select(0, i)), &targets.select(0, i));
        losses.push(loss.item());
        loss.backward();
        opt.step();
    }
    let losses = Tensor::from_vec(losses, &[batches]);
    assert_close(
        &format!("{name} ({dtype}) losses"),
        &losses,
        &case["output"]["losses"],
        rtol,
        atol,
    );
    for (n, p) in NAMES.iter().zip(&params) {
        assert_close(
            &format!("{name} ({dtype}) final {n}"),
            p,
            &case["output"]["params"][*n],
            rtol,
            atol,
        );
    }
}

#[test]
fn mlp_training_matches_pytorch_step_by_step() {
    let all = cases("training.json");
    assert_eq!(all.len(), 1, "training.json: every case runs");
    for case in &all {
        assert_eq!(case["kind"], "mlp_classifier", "{}: kind", case["name"]);
        train(case, DType::F64, (1e-9, 1e-12));
        train(case, DType::F32, (1e-4, 1e-5));
    }
}
