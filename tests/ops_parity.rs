//! Every case of tests/reference/ops.json (PyTorch 2.15, float64): outputs and the gradients
//! of the differentiable inputs for the given `grad_output`, in f64 and in f32.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use torchlet::{DType, Tensor};

/// Runs one case; returns the main (differentiated) output and any extra outputs by name.
fn run(case: &Value, x: &BTreeMap<String, Tensor>) -> (Tensor, Vec<(&'static str, Tensor)>) {
    let args = &case["args"];
    let name = case["name"].as_str().unwrap_or("?");
    let arg_i = |k: &str| {
        args[k]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: args.{k}")) as isize
    };
    let arg_f = |k: &str| {
        args[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
    };
    let input = |k: &str| x.get(k).unwrap_or_else(|| panic!("{name}: input {k}"));
    let dim = || args["dim"].as_i64().map(|d| d as isize);
    let keepdim = || args["keepdim"].as_bool().unwrap_or(false);
    let list = |k: &str| -> Vec<Tensor> {
        args[k]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
            .iter()
            .map(|n| input(n.as_str().expect("tensor name")).clone())
            .collect()
    };
    let ints = |k: &str| -> Vec<isize> {
        args[k]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
            .iter()
            .map(|d| d.as_i64().expect("integer") as isize)
            .collect()
    };
    let out = match case["op"].as_str().unwrap_or("") {
        "add" => input("a") + input("b"),
        "sub" => input("a") - input("b"),
        "mul" => input("a") * input("b"),
        "div" => input("a") / input("b"),
        "neg" => -input("x"),
        "exp" => input("x").exp(),
        "log" => input("x").log(),
        "sqrt" => input("x").sqrt(),
        "pow" => input("x").pow(arg_f("exponent")),
        "relu" => input("x").relu(),
        "leaky_relu" => input("x").leaky_relu(arg_f("negative_slope")),
        "sigmoid" => input("x").sigmoid(),
        "tanh" => input("x").tanh(),
        "gelu" => match args["approximate"].as_str() {
            Some("none") => input("x").gelu(),
            Some("tanh") => input("x").gelu_tanh(),
            other => panic!("{name}: unknown gelu approximation {other:?}"),
        },
        "matmul" => input("a").matmul(input("b")),
        "transpose" => input("x").transpose(arg_i("dim0"), arg_i("dim1")),
        "reshape" => input("x").reshape(&ints("shape")),
        "permute" => input("x").permute(&ints("dims")),
        "sum" => match dim() {
            None => input("x").sum(),
            Some(d) => input("x").sum_dim(d, keepdim()),
        },
        "mean" => match dim() {
            None => input("x").mean(),
            Some(d) => input("x").mean_dim(d, keepdim()),
        },
        "max" => {
            let (values, indices) = input("x").max_dim(arg_i("dim"), keepdim());
            return (values, vec![("indices", indices)]);
        }
        "softmax" => input("x").softmax(arg_i("dim")),
        "log_softmax" => input("x").log_softmax(arg_i("dim")),
        "cat" => Tensor::cat(&list("tensors"), arg_i("dim")),
        "stack" => Tensor::stack(&list("tensors"), arg_i("dim")),
        "index_select" => input("x").index_select(arg_i("dim"), input("index")),
        "embedding" => input("weight").embedding(input("indices")),
        "clamp" => input("x").clamp(args["min"].as_f64(), args["max"].as_f64()),
        "composite" => match args["expr"].as_str().unwrap_or("") {
            "x * x + exp(x)" => &(input("x") * input("x")) + &input("x").exp(),
            "sum(tanh(matmul(x, w) + b), dim=1)" => (&input("x").matmul(input("w")) + input("b"))
                .tanh()
                .sum_dim(1, false),
            expr => panic!("{name}: torchlet cannot parse the composite expression {expr:?}"),
        },
        op => panic!("{name}: op {op:?} is not implemented by torchlet"),
    };
    (out, vec![])
}

fn check_all(dtype: DType, (rtol, atol): (f64, f64)) {
    let cases = cases("ops.json");
    assert_eq!(cases.len(), 53, "ops.json should hold 53 cases");
    for case in &cases {
        let name = case["name"].as_str().expect("case name");
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
        let (out, extra) = run(case, &inputs);
        let expected = &case["output"];
        match expected.get("values") {
            Some(values) => {
                assert_close(
                    &format!("{name} ({dtype}) values"),
                    &out,
                    values,
                    rtol,
                    atol,
                );
                for (k, t) in &extra {
                    assert_close(&format!("{name} ({dtype}) {k}"), t, &expected[*k], 0.0, 0.0);
                }
            }
            None => assert_close(
                &format!("{name} ({dtype}) output"),
                &out,
                expected,
                rtol,
                atol,
            ),
        }
        out.backward_with(&tensor(&case["inputs"]["grad_output"], dtype));
        for (k, g) in grads {
            let grad = inputs[k]
                .grad()
                .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
            assert_close(&format!("{name} ({dtype}) grad {k}"), &grad, g, rtol, atol);
        }
    }
}

#[test]
fn every_ops_case_matches_pytorch_in_f64() {
    check_all(DType::F64, F64_TOL);
}

#[test]
fn every_ops_case_matches_pytorch_in_f32() {
    check_all(DType::F32, F32_TOL);
}
