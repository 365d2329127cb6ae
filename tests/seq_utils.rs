//! Every case of tests/reference/seq/utils.json (PyTorch 2.15): a module built from the
//! case's class and constructor kwargs (PyTorch's defaults for those not given) has
//! PyTorch's state-dict keys and shapes, parameters, buffers, named modules with their
//! class names, and printed form. A class without an arm in `build` fails, as does any case
//! that panics; all failures are listed at once.

use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};
use torchlet::nn::{
    Activation, Conv1d, ConvTranspose2d, Embedding, GRU, GroupNorm, InstanceNorm2d, LSTM,
    LayerNorm, Module, MultiheadAttention, RNN, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer,
};

fn cases() -> Vec<Value> {
    let path = format!(
        "{}/tests/reference/seq/utils.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn size(kw: &Value, name: &str, default: Option<usize>) -> usize {
    kw[name]
        .as_u64()
        .map(|v| v as usize)
        .or(default)
        .unwrap_or_else(|| panic!("kwargs.{name} is required"))
}

fn number(kw: &Value, name: &str, default: f64) -> f64 {
    kw[name].as_f64().unwrap_or(default)
}

fn flag(kw: &Value, name: &str, default: bool) -> bool {
    kw[name].as_bool().unwrap_or(default)
}

fn encoder_layer(kw: &Value) -> TransformerEncoderLayer {
    let activation = match kw["activation"].as_str().unwrap_or("relu") {
        "relu" => Activation::Relu,
        "gelu" => Activation::Gelu,
        other => panic!("activation {other}"),
    };
    TransformerEncoderLayer::new(size(kw, "d_model", None), size(kw, "nhead", None))
        .with_dim_feedforward(size(kw, "dim_feedforward", Some(2048)))
        .with_dropout(number(kw, "dropout", 0.1))
        .with_activation(activation)
        .with_layer_norm_eps(number(kw, "layer_norm_eps", 1e-5))
        .with_batch_first(flag(kw, "batch_first", false))
        .with_norm_first(flag(kw, "norm_first", false))
        .with_bias(flag(kw, "bias", true))
}

fn layer_norm(kw: &Value) -> LayerNorm {
    let shape: Vec<usize> = match &kw["normalized_shape"] {
        Value::Array(dims) => dims.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
        v => vec![v.as_u64().expect("normalized_shape") as usize],
    };
    LayerNorm::new(&shape)
        .with_eps(number(kw, "eps", 1e-5))
        .with_elementwise_affine(flag(kw, "elementwise_affine", true))
        .with_bias(flag(kw, "bias", true))
}

/// An LSTM, GRU or RNN from PyTorch's kwargs and defaults.
macro_rules! recurrent {
    ($ty:ident, $kw:expr) => {{
        let kw = $kw;
        $ty::new(size(kw, "input_size", None), size(kw, "hidden_size", None))
            .with_num_layers(size(kw, "num_layers", Some(1)))
            .with_bias(flag(kw, "bias", true))
            .with_batch_first(flag(kw, "batch_first", false))
            .with_bidirectional(flag(kw, "bidirectional", false))
    }};
}

/// The module of a case, from its class name and kwargs.
fn build(class: &str, kw: &Value) -> Box<dyn Module> {
    match class {
        "MultiheadAttention" => {
            let e = size(kw, "embed_dim", None);
            Box::new(
                MultiheadAttention::new(e, size(kw, "num_heads", None))
                    .with_dropout(number(kw, "dropout", 0.0))
                    .with_bias(flag(kw, "bias", true))
                    .with_kdim_vdim(size(kw, "kdim", Some(e)), size(kw, "vdim", Some(e)))
                    .with_batch_first(flag(kw, "batch_first", false)),
            )
        }
        "TransformerEncoder" => {
            let enc = TransformerEncoder::new(
                encoder_layer(&kw["encoder_layer"]),
                size(kw, "num_layers", None),
            );
            Box::new(match &kw["norm"] {
                Value::Null => enc,
                norm => enc.with_norm(layer_norm(norm)),
            })
        }
        "TransformerEncoderLayer" => Box::new(encoder_layer(kw)),
        "TransformerDecoderLayer" => {
            let activation = match kw["activation"].as_str().unwrap_or("relu") {
                "gelu" => Activation::Gelu,
                _ => Activation::Relu,
            };
            Box::new(
                TransformerDecoderLayer::new(size(kw, "d_model", None), size(kw, "nhead", None))
                    .with_dim_feedforward(size(kw, "dim_feedforward", Some(2048)))
                    .with_dropout(number(kw, "dropout", 0.1))
                    .with_activation(activation)
                    .with_layer_norm_eps(number(kw, "layer_norm_eps", 1e-5))
                    .with_batch_first(flag(kw, "batch_first", false))
                    .with_norm_first(flag(kw, "norm_first", false))
                    .with_bias(flag(kw, "bias", true)),
            )
        }
        "LayerNorm" => Box::new(layer_norm(kw)),
        "Embedding" => {
            let (n, d) = (
                size(kw, "num_embeddings", None),
                size(kw, "embedding_dim", None),
            );
            Box::new(match kw["padding_idx"].as_i64() {
                Some(p) => Embedding::with_padding_idx(n, d, p as isize),
                None => Embedding::new(n, d),
            })
        }
        "LSTM" => Box::new(recurrent!(LSTM, kw)),
        "GRU" => Box::new(recurrent!(GRU, kw)),
        "RNN" => Box::new(
            recurrent!(RNN, kw).with_nonlinearity(kw["nonlinearity"].as_str().unwrap_or("tanh")),
        ),
        "GroupNorm" => Box::new(
            GroupNorm::new(size(kw, "num_groups", None), size(kw, "num_channels", None))
                .with_eps(number(kw, "eps", 1e-5))
                .with_affine(flag(kw, "affine", true))
                .with_bias(flag(kw, "bias", true)),
        ),
        "InstanceNorm2d" => Box::new(
            InstanceNorm2d::new(size(kw, "num_features", None))
                .with_eps(number(kw, "eps", 1e-5))
                .with_momentum(Some(number(kw, "momentum", 0.1)))
                .with_affine(flag(kw, "affine", false))
                .with_bias(flag(kw, "bias", true))
                .with_track_running_stats(flag(kw, "track_running_stats", false)),
        ),
        "Conv1d" => Box::new(
            Conv1d::new(
                size(kw, "in_channels", None),
                size(kw, "out_channels", None),
                size(kw, "kernel_size", None),
            )
            .with_stride(size(kw, "stride", Some(1)))
            .with_padding(size(kw, "padding", Some(0)))
            .with_dilation(size(kw, "dilation", Some(1)))
            .with_groups(size(kw, "groups", Some(1)))
            .with_bias(flag(kw, "bias", true)),
        ),
        "ConvTranspose2d" => Box::new(
            ConvTranspose2d::new(
                size(kw, "in_channels", None),
                size(kw, "out_channels", None),
                size(kw, "kernel_size", None),
            )
            .with_stride(size(kw, "stride", Some(1)))
            .with_padding(size(kw, "padding", Some(0)))
            .with_output_padding(size(kw, "output_padding", Some(0)))
            .with_dilation(size(kw, "dilation", Some(1)))
            .with_groups(size(kw, "groups", Some(1)))
            .with_bias(flag(kw, "bias", true)),
        ),
        other => panic!("seq/utils.json module `{other}` has no torchlet arm"),
    }
}

fn shapes(v: &Value) -> Vec<(String, Vec<usize>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let dims = e[1].as_array().unwrap().iter();
            let shape = dims.map(|d| d.as_u64().unwrap() as usize).collect();
            (e[0].as_str().unwrap().to_string(), shape)
        })
        .collect()
}

fn check_case(case: &Value) {
    let name = case["name"].as_str().unwrap();
    assert_eq!(case["kind"], "state_dict", "{name}: kind");
    let args = &case["args"];
    let model = build(args["module"].as_str().unwrap(), &args["kwargs"]);
    let out = &case["output"];
    let sd: Vec<_> = model
        .state_dict()
        .iter()
        .map(|(k, t)| (k.clone(), t.shape()))
        .collect();
    assert_eq!(sd, shapes(&out["state_dict"]), "{name}: state_dict");
    let params: Vec<_> = model
        .named_parameters()
        .into_iter()
        .map(|(k, p)| (k, p.shape()))
        .collect();
    assert_eq!(params, shapes(&out["parameters"]), "{name}: parameters");
    let buffers: Vec<_> = model
        .named_buffers()
        .into_iter()
        .map(|(k, b)| (k, b.shape()))
        .collect();
    assert_eq!(buffers, shapes(&out["buffers"]), "{name}: buffers");
    let modules: Vec<(String, String)> = model
        .named_modules()
        .into_iter()
        .map(|(n, m)| (n, m.class_name().to_string()))
        .collect();
    let want: Vec<(String, String)> = serde_json::from_value(out["modules"].clone()).unwrap();
    assert_eq!(modules, want, "{name}: modules");
    assert_eq!(
        model.to_string(),
        args["repr"].as_str().unwrap(),
        "{name}: repr"
    );
}

#[test]
fn seq_state_dicts_and_reprs_match_pytorch() {
    let all = cases();
    assert_eq!(all.len(), 14, "seq/utils.json cases");
    let mut failures = Vec::new();
    for case in &all {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check_case(case))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", case["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
