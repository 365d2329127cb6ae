//! Parity of the losses with PyTorch (tests/reference/losses.json): values and input
//! gradients, in f64 and f32, through the functions and the loss modules.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use torchlet::nn::functional as F;
use torchlet::nn::{
    BceWithLogitsLoss, CrossEntropyLoss, L1Loss, MseLoss, NllLoss, Reduction, SmoothL1Loss,
};
use torchlet::{DType, Tensor};

fn reduction(case: &Value) -> Reduction {
    match case["args"]["reduction"].as_str() {
        Some("mean") => Reduction::Mean,
        Some("sum") => Reduction::Sum,
        Some("none") => Reduction::None,
        other => panic!("{}: unknown reduction {other:?}", case["name"]),
    }
}

fn optional(case: &Value, name: &str, dtype: DType) -> Option<Tensor> {
    case["inputs"].get(name).map(|v| tensor(v, dtype))
}

/// The loss of `case` through the function of its `op`.
fn functional(case: &Value, input: &Tensor, target: &Tensor, dtype: DType) -> Tensor {
    let r = reduction(case);
    let weight = optional(case, "weight", dtype);
    match case["op"].as_str().unwrap_or_default() {
        "mse_loss" => F::mse_loss_with(input, target, r),
        "l1_loss" => F::l1_loss_with(input, target, r),
        "smooth_l1_loss" => F::smooth_l1_loss_with(
            input,
            target,
            r,
            case["args"]["beta"].as_f64().unwrap_or(1.0),
        ),
        "cross_entropy" => F::cross_entropy_with(
            input,
            target,
            weight.as_ref(),
            -100,
            r,
            case["args"]["label_smoothing"].as_f64().unwrap_or(0.0),
        ),
        "nll_loss" => F::nll_loss_with(input, target, weight.as_ref(), -100, r),
        "binary_cross_entropy_with_logits" => F::binary_cross_entropy_with_logits_with(
            input,
            target,
            weight.as_ref(),
            optional(case, "pos_weight", dtype).as_ref(),
            r,
        ),
        op => panic!("{}: torchlet has no loss `{op}`", case["name"]),
    }
}

/// The loss of `case` through the loss module of its `op`.
fn module(case: &Value, input: &Tensor, target: &Tensor, dtype: DType) -> Tensor {
    let r = reduction(case);
    let weight = optional(case, "weight", dtype);
    match case["op"].as_str().unwrap_or_default() {
        "mse_loss" => MseLoss::new().reduction(r).forward(input, target),
        "l1_loss" => L1Loss::new().reduction(r).forward(input, target),
        "smooth_l1_loss" => SmoothL1Loss::new()
            .reduction(r)
            .beta(case["args"]["beta"].as_f64().unwrap_or(1.0))
            .forward(input, target),
        "cross_entropy" => {
            let mut loss = CrossEntropyLoss::new()
                .reduction(r)
                .label_smoothing(case["args"]["label_smoothing"].as_f64().unwrap_or(0.0));
            loss.weight = weight;
            loss.forward(input, target)
        }
        "nll_loss" => {
            let mut loss = NllLoss::new().reduction(r);
            loss.weight = weight;
            loss.forward(input, target)
        }
        "binary_cross_entropy_with_logits" => {
            let mut loss = BceWithLogitsLoss::new().reduction(r);
            loss.weight = weight;
            loss.pos_weight = optional(case, "pos_weight", dtype);
            loss.forward(input, target)
        }
        op => panic!("{}: torchlet has no loss module for `{op}`", case["name"]),
    }
}

fn check(dtype: DType, (rtol, atol): (f64, f64), via_module: bool) {
    let all = cases("losses.json");
    assert_eq!(all.len(), 14, "losses.json: every case runs");
    for case in &all {
        let name = case["name"].as_str().unwrap_or_default();
        let input = tensor(&case["inputs"]["input"], dtype).requires_grad_(true);
        let target = tensor(&case["inputs"]["target"], dtype);
        let loss = if via_module {
            module(case, &input, &target, dtype)
        } else {
            functional(case, &input, &target, dtype)
        };
        assert_close(
            &format!("{name} ({dtype}) value"),
            &loss,
            &case["output"],
            rtol,
            atol,
        );
        loss.backward_with(&tensor(&case["inputs"]["grad_output"], dtype));
        let grad = input
            .grad()
            .unwrap_or_else(|| panic!("{name}: no gradient for input"));
        assert_close(
            &format!("{name} ({dtype}) grad"),
            &grad,
            &case["grads"]["input"],
            rtol,
            atol,
        );
    }
}

#[test]
fn losses_match_pytorch_in_f64() {
    check(DType::F64, F64_TOL, false);
}

#[test]
fn losses_match_pytorch_in_f32() {
    check(DType::F32, F32_TOL, false);
}

#[test]
fn loss_modules_match_pytorch() {
    check(DType::F64, F64_TOL, true);
}
