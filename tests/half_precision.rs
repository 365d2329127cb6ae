//! Half-precision checkpoints (tests/reference/interop/seq): PyTorch's bfloat16 and float16
//! copies of the tiny GPT's weights load as f32 state dicts, hold the f32 weights rounded to
//! nearest (within the rounding bound and the manifest's tolerance), and torchlet writes the
//! very same bytes when it saves the f32 weights in those precisions.

use serde_json::Value;
use std::path::PathBuf;
use torchlet::serialize::{self, Precision};
use torchlet::{DType, nn::StateDict};

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/interop/seq")
        .join(file)
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(path("manifest.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("manifest has no {name}"))
        .clone()
}

/// Loads the half-precision file `file` and checks it against the f32 weights: same keys
/// and shapes, f32 tensors, each value within `relative` of the f32 one (or `absolute`, for
/// values too small for the format's precision), and within the manifest's tolerance.
fn check_against_f32(file: &str, name: &str, relative: f64, absolute: f64) -> StateDict {
    let full = serialize::load_file(path("gpt.safetensors")).unwrap();
    let half = serialize::load_file(path(file)).unwrap();
    let tolerance = manifest(name)["suggested_tolerance"].as_f64().unwrap();
    assert_eq!(
        half.keys().collect::<Vec<_>>(),
        full.keys().collect::<Vec<_>>(),
        "{file}: keys in data order"
    );
    assert_eq!(half.len(), 30);
    for (key, h) in half.iter() {
        let f = full.get(key).unwrap();
        assert_eq!(h.dtype(), DType::F32, "{file} {key}: widened to f32");
        assert_eq!(h.shape(), f.shape(), "{file} {key}");
        for (a, b) in h.to_vec::<f64>().iter().zip(f.to_vec::<f64>()) {
            let err = (a - b).abs();
            assert!(
                err <= relative * b.abs() + absolute && err <= tolerance,
                "{file} {key}: {a} is not {b} rounded"
            );
        }
    }
    half
}

#[test]
fn bfloat16_weights_load_as_the_f32_weights_rounded() {
    // bfloat16 keeps 8 significant bits: rounding moves a value by at most half a step,
    // 2^-8 of its power of two.
    check_against_f32("gpt.bf16.safetensors", "gpt_bf16", 2f64.powi(-8), 0.0);
}

#[test]
fn float16_weights_load_as_the_f32_weights_rounded() {
    // float16 keeps 11 significant bits down to 2^-14, then steps of 2^-24.
    check_against_f32(
        "gpt.f16.safetensors",
        "gpt_f16",
        2f64.powi(-11),
        2f64.powi(-25),
    );
}

#[test]
fn saving_the_f32_weights_in_half_precision_writes_pytorchs_bytes() {
    let full = serialize::load_file(path("gpt.safetensors")).unwrap();
    for (precision, file) in [
        (Precision::BF16, "gpt.bf16.safetensors"),
        (Precision::F16, "gpt.f16.safetensors"),
    ] {
        let out = serialize::temp_path(&format!("half-{file}"));
        serialize::save_file_as(&full, &out, precision).unwrap();
        let ours = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        let theirs = std::fs::read(path(file)).unwrap();
        assert!(
            ours == theirs,
            "{file}: torchlet's {precision:?} file differs from PyTorch's"
        );
    }
}

#[test]
fn half_precision_files_round_trip_exactly() {
    for file in ["gpt.bf16.safetensors", "gpt.f16.safetensors"] {
        let precision = if file.contains("bf16") {
            Precision::BF16
        } else {
            Precision::F16
        };
        let half = serialize::load_file(path(file)).unwrap();
        let out = serialize::temp_path(&format!("round-trip-{file}"));
        serialize::save_file_as(&half, &out, precision).unwrap();
        let back = serialize::load_file(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        for (key, t) in half.iter() {
            assert_eq!(
                back.get(key).unwrap().to_vec::<f32>(),
                t.to_vec::<f32>(),
                "{file} {key}"
            );
        }
    }
}
