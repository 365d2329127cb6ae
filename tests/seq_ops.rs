//! Every case of tests/reference/seq/ops.json (PyTorch, float64): outputs and the gradients
//! of the differentiable inputs for the given upstream gradients, in f64 and in f32.
//!
//! A case's outputs are named (`""` for a single tensor output, `values`/`indices` for sort
//! and topk, `0`, `1`, … for chunk and split); the upstream gradient of output `K` is
//! `inputs.grad_output_K` (`inputs.grad_output` for the main one), and all of them are
//! applied in one backward pass through `Σ_K <grad_output_K, output_K>`.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use torchlet::nn::functional::one_hot;
use torchlet::{DType, Tensor};

type Outputs = Vec<(String, Tensor)>;

/// A `dim` argument that may be an int, a list of ints, or `null` (all dimensions).
fn dims(v: &Value, ndim: usize) -> Vec<isize> {
    match v {
        Value::Null => (0..ndim as isize).collect(),
        Value::Number(n) => vec![n.as_i64().expect("integer dim") as isize],
        Value::Array(a) => a
            .iter()
            .map(|d| d.as_i64().expect("integer dim") as isize)
            .collect(),
        other => panic!("dim {other} is neither an int, a list nor null"),
    }
}

fn parts(p: Vec<Tensor>) -> Outputs {
    p.into_iter()
        .enumerate()
        .map(|(i, t)| (i.to_string(), t))
        .collect()
}

/// Runs one case, giving its named outputs.
fn run(case: &Value, x: &BTreeMap<String, Tensor>) -> Outputs {
    let args = &case["args"];
    let name = case["name"].as_str().unwrap_or("?");
    let int = |k: &str| {
        args[k]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
    };
    let float = |k: &str| {
        args[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
    };
    let flag = |k: &str| {
        args[k]
            .as_bool()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
    };
    let input = |k: &str| x.get(k).unwrap_or_else(|| panic!("{name}: input {k}"));
    let ints = |k: &str| -> Vec<usize> {
        args[k]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: args.{k}"))
            .iter()
            .map(|d| d.as_u64().expect("non-negative integer") as usize)
            .collect()
    };
    let x_dims = || dims(&args["dim"], input("x").dim());
    let keepdim = || flag("keepdim");
    let single = |t: Tensor| vec![(String::new(), t)];
    let pair = |(values, indices): (Tensor, Tensor)| {
        vec![
            ("values".to_string(), values),
            ("indices".to_string(), indices),
        ]
    };
    match case["op"].as_str().unwrap_or("") {
        "where" => single(input("cond").where_cond(input("a"), input("b"))),
        "masked_fill" => single(input("x").masked_fill(input("mask"), float("value"))),
        "triu" => single(input("x").triu(int("diagonal"))),
        "tril" => single(input("x").tril(int("diagonal"))),
        "chunk" => parts(input("x").chunk(int("chunks") as usize, int("dim") as isize)),
        "split" => {
            let d = int("dim") as isize;
            parts(match &args["split_size_or_sections"] {
                Value::Array(_) => input("x").split_with_sizes(&ints("split_size_or_sections"), d),
                v => input("x").split(v.as_u64().expect("split size") as usize, d),
            })
        }
        "repeat" => single(input("x").repeat(&ints("repeats"))),
        "var" => single(input("x").var_dims(&x_dims(), float("correction"), keepdim())),
        "std" => single(input("x").std_dims(&x_dims(), float("correction"), keepdim())),
        "cumsum" => single(input("x").cumsum(int("dim") as isize)),
        "sin" => single(input("x").sin()),
        "cos" => single(input("x").cos()),
        "rsqrt" => single(input("x").rsqrt()),
        "silu" => single(input("x").silu()),
        "mish" => single(input("x").mish()),
        "softplus" => single(input("x").softplus(float("beta"), float("threshold"))),
        "norm" => {
            let d = x_dims();
            single(input("x").vector_norm(float("p"), Some(&d), keepdim()))
        }
        "logsumexp" => single(input("x").logsumexp_dims(&x_dims(), keepdim())),
        "one_hot" => {
            let n = int("num_classes");
            single(one_hot(input("x"), (n >= 0).then_some(n as usize)))
        }
        "topk" => {
            // torchlet's topk always sorts; every case asks for sorted values.
            assert!(flag("sorted"), "{name}: unsorted topk has no fixed order");
            pair(input("x").topk(int("k") as usize, int("dim") as isize, flag("largest")))
        }
        "sort" => pair(input("x").sort(int("dim") as isize, flag("descending"))),
        "minimum" => single(input("a").minimum(input("b"))),
        "maximum" => single(input("a").maximum(input("b"))),
        op => panic!("{name}: op {op:?} is not implemented by torchlet"),
    }
}

/// The reference tensor of output `key` (`""`: the output itself).
fn expected<'a>(case: &'a Value, key: &str) -> &'a Value {
    if key.is_empty() {
        &case["output"]
    } else {
        &case["output"][key]
    }
}

fn check_all(dtype: DType, (rtol, atol): (f64, f64)) {
    let cases = cases("seq/ops.json");
    assert_eq!(cases.len(), 47, "seq/ops.json should hold 47 cases");
    for case in &cases {
        let name = case["name"].as_str().expect("case name");
        let grads = case["grads"].as_object().expect("grads");
        let raw = case["inputs"].as_object().expect("inputs");
        let inputs: BTreeMap<String, Tensor> = raw
            .iter()
            .filter(|(k, _)| !k.starts_with("grad_output"))
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
        let outputs = run(case, &inputs);
        let main = match outputs.first().map(|(k, _)| k.as_str()) {
            Some("values") => "values",
            _ => "",
        };
        let mut objective: Option<Tensor> = None;
        for (key, out) in &outputs {
            let want = expected(case, key);
            let what = format!("{name} ({dtype}) output {key}");
            if out.dtype() == DType::I64 {
                assert_eq!(want["dtype"], "i64", "{what}: torchlet gives int64");
                assert_close(&what, out, want, 0.0, 0.0);
                continue;
            }
            assert_close(&what, out, want, rtol, atol);
            let upstream = if key == main {
                raw.get("grad_output")
                    .or(raw.get(&format!("grad_output_{key}")))
            } else {
                raw.get(&format!("grad_output_{key}"))
            };
            if let Some(g) = upstream {
                let term = (out * &tensor(g, dtype)).sum();
                objective = Some(match objective {
                    Some(o) => &o + &term,
                    None => term,
                });
            }
        }
        let keys: Vec<&str> = outputs.iter().map(|(k, _)| k.as_str()).collect();
        let want_keys: Vec<String> = match case["output"].get("shape") {
            Some(_) => vec![String::new()],
            None => case["output"]
                .as_object()
                .expect("output object")
                .keys()
                .cloned()
                .collect(),
        };
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        let mut want_sorted: Vec<&str> = want_keys.iter().map(String::as_str).collect();
        want_sorted.sort_unstable();
        assert_eq!(sorted_keys, want_sorted, "{name}: output names");
        match objective {
            Some(o) => o.backward(),
            None => assert!(
                grads.is_empty(),
                "{name}: gradients but no upstream gradient"
            ),
        }
        for (k, g) in grads {
            let grad = inputs[k]
                .grad()
                .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
            assert_close(&format!("{name} ({dtype}) grad {k}"), &grad, g, rtol, atol);
        }
    }
}

#[test]
fn every_seq_ops_case_matches_pytorch_in_f64() {
    check_all(DType::F64, F64_TOL);
}

#[test]
fn every_seq_ops_case_matches_pytorch_in_f32() {
    check_all(DType::F32, F32_TOL);
}
