//! Every case of tests/reference/seq/losses.json (PyTorch, float64): values and the
//! gradients of the float inputs, in f64 and f32, through the functions and the modules.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use torchlet::nn::functional as F;
use torchlet::nn::{
    BceLoss, CosineEmbeddingLoss, CrossEntropyLoss, HuberLoss, KlDivLoss, NllLoss, Reduction,
};
use torchlet::{DType, Tensor};

fn reduction(case: &Value) -> Reduction {
    match case["args"]["reduction"].as_str() {
        Some("mean") => Reduction::Mean,
        Some("sum") => Reduction::Sum,
        Some("none") => Reduction::None,
        Some("batchmean") => Reduction::BatchMean,
        other => panic!("{}: unknown reduction {other:?}", case["name"]),
    }
}

#[track_caller]
fn arg<'a>(case: &'a Value, k: &str) -> &'a Value {
    let v = &case["args"][k];
    assert!(!v.is_null(), "{}: args.{k} missing", case["name"]);
    v
}

fn float(case: &Value, k: &str) -> f64 {
    arg(case, k).as_f64().expect("float argument")
}

fn int(case: &Value, k: &str) -> i64 {
    arg(case, k).as_i64().expect("integer argument")
}

fn flag(case: &Value, k: &str) -> bool {
    arg(case, k).as_bool().expect("boolean argument")
}

/// The loss of `case` through the function (`via_module` false) or module of its `op`.
fn run(case: &Value, x: &BTreeMap<String, Tensor>, via_module: bool) -> Tensor {
    let name = case["name"].as_str().unwrap_or("?");
    let input = |k: &str| x.get(k).unwrap_or_else(|| panic!("{name}: input {k}"));
    let weight = x.get("weight").cloned();
    let r = reduction(case);
    match (case["op"].as_str().unwrap_or(""), via_module) {
        ("cross_entropy", false) => F::cross_entropy_with(
            input("input"),
            input("target"),
            weight.as_ref(),
            int(case, "ignore_index"),
            r,
            float(case, "label_smoothing"),
        ),
        ("cross_entropy", true) => {
            let mut loss = CrossEntropyLoss::new()
                .ignore_index(int(case, "ignore_index"))
                .reduction(r)
                .label_smoothing(float(case, "label_smoothing"));
            loss.weight = weight;
            loss.forward(input("input"), input("target"))
        }
        ("nll_loss", false) => F::nll_loss_with(
            input("input"),
            input("target"),
            weight.as_ref(),
            int(case, "ignore_index"),
            r,
        ),
        ("nll_loss", true) => {
            let mut loss = NllLoss::new()
                .ignore_index(int(case, "ignore_index"))
                .reduction(r);
            loss.weight = weight;
            loss.forward(input("input"), input("target"))
        }
        ("kl_div", false) => {
            F::kl_div_with(input("input"), input("target"), r, flag(case, "log_target"))
        }
        ("kl_div", true) => KlDivLoss::new()
            .reduction(r)
            .log_target(flag(case, "log_target"))
            .forward(input("input"), input("target")),
        ("huber_loss", false) => {
            F::huber_loss_with(input("input"), input("target"), r, float(case, "delta"))
        }
        ("huber_loss", true) => HuberLoss::new()
            .reduction(r)
            .delta(float(case, "delta"))
            .forward(input("input"), input("target")),
        ("binary_cross_entropy", false) => {
            F::binary_cross_entropy_with(input("input"), input("target"), weight.as_ref(), r)
        }
        ("binary_cross_entropy", true) => {
            let mut loss = BceLoss::new().reduction(r);
            loss.weight = weight;
            loss.forward(input("input"), input("target"))
        }
        ("cosine_embedding_loss", false) => F::cosine_embedding_loss(
            input("input1"),
            input("input2"),
            input("target"),
            float(case, "margin"),
            r,
        ),
        ("cosine_embedding_loss", true) => CosineEmbeddingLoss::new()
            .margin(float(case, "margin"))
            .reduction(r)
            .forward(input("input1"), input("input2"), input("target")),
        (op, _) => panic!("{name}: torchlet has no loss `{op}`"),
    }
}

fn check(dtype: DType, (rtol, atol): (f64, f64), via_module: bool) {
    let all = cases("seq/losses.json");
    assert_eq!(all.len(), 24, "seq/losses.json: every case runs");
    for case in &all {
        let name = case["name"].as_str().unwrap_or_default();
        let grads = case["grads"].as_object().expect("grads");
        let inputs: BTreeMap<String, Tensor> = case["inputs"]
            .as_object()
            .expect("inputs")
            .iter()
            .filter(|(k, _)| *k != "grad_output")
            .map(|(k, v)| {
                let t = tensor(v, dtype);
                let t = if grads.contains_key(k) {
                    t.requires_grad_(true)
                } else {
                    t
                };
                (k.clone(), t)
            })
            .collect();
        let loss = run(case, &inputs, via_module);
        let form = if via_module { "module" } else { "function" };
        let what = format!("{name} ({dtype}, {form})");
        assert_close(&format!("{what} value"), &loss, &case["output"], rtol, atol);
        loss.backward_with(&tensor(&case["inputs"]["grad_output"], dtype));
        assert!(!grads.is_empty(), "{name}: no gradients to compare");
        for (k, g) in grads {
            let grad = inputs[k]
                .grad()
                .unwrap_or_else(|| panic!("{what}: no gradient for {k}"));
            assert_close(&format!("{what} grad {k}"), &grad, g, rtol, atol);
        }
    }
}

#[test]
fn every_seq_losses_case_matches_pytorch_in_f64() {
    check(DType::F64, F64_TOL, false);
}

#[test]
fn every_seq_losses_case_matches_pytorch_in_f32() {
    check(DType::F32, F32_TOL, false);
}

#[test]
fn the_loss_modules_match_pytorch_in_f64() {
    check(DType::F64, F64_TOL, true);
}

#[test]
fn the_loss_modules_match_pytorch_in_f32() {
    check(DType::F32, F32_TOL, true);
}
