//! Loading the PyTorch reference values of tests/reference (format: tests/reference/README.md).
#![allow(dead_code)]

use serde_json::Value;
use torchlet::{DType, Tensor};

/// The cases of one reference file.
pub fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/reference/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    value
        .as_array()
        .unwrap_or_else(|| panic!("{path}: not a list"))
        .clone()
}

/// A reference tensor as `dtype` (integer tensors stay i64).
pub fn tensor(v: &Value, dtype: DType) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("tensor shape")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let data = v["data"].as_array().expect("tensor data");
    if v.get("dtype").and_then(Value::as_str) == Some("i64") {
        let values: Vec<i64> = data
            .iter()
            .map(|x| x.as_i64().expect("i64 value"))
            .collect();
        return Tensor::from_vec(values, &shape);
    }
    let values: Vec<f64> = data
        .iter()
        .map(|x| x.as_f64().expect("float value"))
        .collect();
    Tensor::from_vec(values, &shape).to_dtype(dtype)
}

/// A float argument of a case.
#[track_caller]
pub fn arg(case: &Value, name: &str) -> f64 {
    case["args"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: args.{name} is not a number", case["name"]))
}

/// A boolean argument of a case.
#[track_caller]
pub fn flag(case: &Value, name: &str) -> bool {
    case["args"][name]
        .as_bool()
        .unwrap_or_else(|| panic!("{}: args.{name} is not a boolean", case["name"]))
}

/// Checks `actual` against the reference tensor `expected`: same shape, and every element
/// within `atol + rtol * |expected|`.
#[track_caller]
pub fn assert_close(what: &str, actual: &Tensor, expected: &Value, rtol: f64, atol: f64) {
    let want = tensor(expected, DType::F64);
    assert_eq!(actual.shape(), want.shape(), "{what}: shape");
    let got = actual.to_vec::<f64>();
    for (i, (g, w)) in got.iter().zip(want.to_vec::<f64>()).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}: element {i} is {g}, PyTorch gives {w}"
        );
    }
}

/// Tolerances for f64 and f32 parity.
pub const F64_TOL: (f64, f64) = (1e-9, 1e-12);
pub const F32_TOL: (f64, f64) = (1e-4, 1e-5);
