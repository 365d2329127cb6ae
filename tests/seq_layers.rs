//! Every case of tests/reference/seq/layers.json (PyTorch 2.15, float64; format:
//! tests/reference/README.md, section "seq/"), run generically in f64 and in f32: the
//! layer is built from the case's `op` and `args`, its parameters are loaded strictly from
//! the inputs named by their state-dict keys (so the keys are checked too), and the outputs
//! and the gradients of every float input are compared with PyTorch's. An `op` without an
//! arm in `run` fails, and so does any case that panics; all failures are listed at once.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use torchlet::nn::functional::scaled_dot_product_attention;
use torchlet::nn::{
    Activation, AdaptiveAvgPool2d, Conv1d, Conv2d, ConvTranspose2d, Embedding, Forward, GRU,
    GroupNorm, InstanceNorm2d, LSTM, LayerNorm, Module, MultiheadAttention, RNN, StateDict,
    TransformerDecoderLayer, TransformerEncoderLayer,
};
use torchlet::{DType, Tensor};

/// The inputs of a case by name, in the test's dtype (i64 tensors stay i64).
type Inputs = BTreeMap<String, Tensor>;

/// What a layer gave: its outputs (`""` for a single tensor, else the keys of the case's
/// output object) and the tensors whose gradients the case lists, by input name.
struct Run {
    outputs: BTreeMap<String, Tensor>,
    grads: Vec<(String, Tensor)>,
}

impl Run {
    fn single(y: Tensor, grads: Vec<(String, Tensor)>) -> Run {
        Run {
            outputs: BTreeMap::from([(String::new(), y)]),
            grads,
        }
    }
}

fn usize_arg(args: &Value, name: &str) -> usize {
    args[name]
        .as_u64()
        .unwrap_or_else(|| panic!("args.{name} is not a size")) as usize
}

fn f64_arg(args: &Value, name: &str) -> f64 {
    args[name]
        .as_f64()
        .unwrap_or_else(|| panic!("args.{name} is not a number"))
}

fn bool_arg(args: &Value, name: &str) -> bool {
    args[name]
        .as_bool()
        .unwrap_or_else(|| panic!("args.{name} is not a boolean"))
}

/// A list-of-sizes argument (`kernel_size: [3, 3]`).
fn sizes(args: &Value, name: &str) -> Vec<usize> {
    args[name]
        .as_array()
        .unwrap_or_else(|| panic!("args.{name} is not a list"))
        .iter()
        .map(|d| d.as_u64().expect("a size") as usize)
        .collect()
}

/// A `[h, w]` argument.
fn pair(args: &Value, name: &str) -> [usize; 2] {
    sizes(args, name)
        .try_into()
        .unwrap_or_else(|v| panic!("args.{name} is not a pair: {v:?}"))
}

/// A `[l]` argument of a 1-D layer.
fn single(args: &Value, name: &str) -> usize {
    match sizes(args, name)[..] {
        [v] => v,
        ref v => panic!("args.{name} is not a one-element list: {v:?}"),
    }
}

/// A layer from tensor to tensor on input `x` whose parameters are the case's inputs.
fn run_layer(
    mut m: impl Module + for<'a> Forward<&'a Tensor, Output = Tensor>,
    x: &Inputs,
    dtype: DType,
) -> Run {
    let mut grads = load(&mut m, x, &["x"], dtype);
    let input = leaf(x, "x");
    let y = m.forward(&input);
    grads.push(("x".into(), input));
    Run::single(y, grads)
}

/// The outputs and gradients of a recurrent layer (`c_n` only for the LSTM).
fn recurrent(
    output: Tensor,
    h_n: Tensor,
    c_n: Option<Tensor>,
    grads: Vec<(String, Tensor)>,
) -> Run {
    let mut outputs = BTreeMap::from([("output".to_string(), output), ("h_n".to_string(), h_n)]);
    outputs.extend(c_n.map(|c| ("c_n".to_string(), c)));
    Run { outputs, grads }
}

/// An LSTM, GRU or RNN with the case's arguments (dropout 0, proj_size 0).
macro_rules! recurrent_layer {
    ($ty:ident, $args:expr) => {{
        let args = $args;
        assert_eq!(f64_arg(args, "dropout"), 0.0, "dropout");
        assert!(args["proj_size"].as_u64().unwrap_or(0) == 0, "proj_size");
        $ty::new(
            usize_arg(args, "input_size"),
            usize_arg(args, "hidden_size"),
        )
        .with_num_layers(usize_arg(args, "num_layers"))
        .with_bias(bool_arg(args, "bias"))
        .with_batch_first(bool_arg(args, "batch_first"))
        .with_bidirectional(bool_arg(args, "bidirectional"))
    }};
}

fn activation(args: &Value) -> Activation {
    match args["activation"].as_str() {
        Some("relu") => Activation::Relu,
        Some("gelu") => Activation::Gelu,
        other => panic!("activation {other:?}"),
    }
}

/// A data input as a leaf that records its gradient.
fn leaf(x: &Inputs, name: &str) -> Tensor {
    x.get(name)
        .unwrap_or_else(|| panic!("input {name}"))
        .detach()
        .requires_grad_(true)
}

/// Loads the case's parameters (every input that is not data, a mask or an upstream
/// gradient) into `m` strictly, in the test's dtype, and returns `m`'s parameters by key.
fn load(m: &mut dyn Module, x: &Inputs, data: &[&str], dtype: DType) -> Vec<(String, Tensor)> {
    m.to_dtype(dtype);
    let sd: StateDict = x
        .iter()
        .filter(|(k, t)| {
            !data.contains(&k.as_str()) && !k.starts_with("grad_output") && t.dtype().is_float()
        })
        .filter(|(k, _)| !k.ends_with("mask"))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    m.load_state_dict(&sd, true)
        .unwrap_or_else(|e| panic!("{e}"));
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.tensor().clone()))
        .collect()
}

fn run(case: &Value, x: &Inputs, dtype: DType) -> Run {
    let args = &case["args"];
    let mask = |k: &str| x.get(k);
    match case["op"].as_str().unwrap() {
        "scaled_dot_product_attention" => {
            let (q, k, v) = (leaf(x, "query"), leaf(x, "key"), leaf(x, "value"));
            let y = scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask("attn_mask"),
                f64_arg(args, "dropout_p"),
                bool_arg(args, "is_causal"),
                args["scale"].as_f64(),
            );
            let grads = vec![("query".into(), q), ("key".into(), k), ("value".into(), v)];
            Run::single(y, grads)
        }
        "MultiheadAttention" => {
            let mut m =
                MultiheadAttention::new(usize_arg(args, "embed_dim"), usize_arg(args, "num_heads"))
                    .with_dropout(f64_arg(args, "dropout"))
                    .with_bias(bool_arg(args, "bias"))
                    .with_kdim_vdim(usize_arg(args, "kdim"), usize_arg(args, "vdim"))
                    .with_batch_first(bool_arg(args, "batch_first"));
            assert!(!bool_arg(args, "add_bias_kv") && !bool_arg(args, "add_zero_attn"));
            let data = ["query", "key", "value"];
            let mut grads = load(&mut m, x, &data, dtype);
            let y = if bool_arg(args, "self_attention") {
                let q = leaf(x, "query");
                let y = m.forward_with(&q, &q, &q, mask("key_padding_mask"), mask("attn_mask"));
                grads.push(("query".into(), q));
                y
            } else {
                let (q, k, v) = (leaf(x, "query"), leaf(x, "key"), leaf(x, "value"));
                let y = m.forward_with(&q, &k, &v, mask("key_padding_mask"), mask("attn_mask"));
                grads.extend([("query".into(), q), ("key".into(), k), ("value".into(), v)]);
                y
            };
            Run::single(y, grads)
        }
        "TransformerEncoderLayer" => {
            let mut m =
                TransformerEncoderLayer::new(usize_arg(args, "d_model"), usize_arg(args, "nhead"))
                    .with_dim_feedforward(usize_arg(args, "dim_feedforward"))
                    .with_dropout(f64_arg(args, "dropout"))
                    .with_activation(activation(args))
                    .with_layer_norm_eps(f64_arg(args, "layer_norm_eps"))
                    .with_batch_first(bool_arg(args, "batch_first"))
                    .with_norm_first(bool_arg(args, "norm_first"))
                    .with_bias(bool_arg(args, "bias"));
            let mut grads = load(&mut m, x, &["src"], dtype);
            let src = leaf(x, "src");
            let y = m.forward_with(&src, mask("src_mask"), mask("src_key_padding_mask"));
            grads.push(("src".into(), src));
            Run::single(y, grads)
        }
        "TransformerDecoderLayer" => {
            let mut m =
                TransformerDecoderLayer::new(usize_arg(args, "d_model"), usize_arg(args, "nhead"))
                    .with_dim_feedforward(usize_arg(args, "dim_feedforward"))
                    .with_dropout(f64_arg(args, "dropout"))
                    .with_activation(activation(args))
                    .with_layer_norm_eps(f64_arg(args, "layer_norm_eps"))
                    .with_batch_first(bool_arg(args, "batch_first"))
                    .with_norm_first(bool_arg(args, "norm_first"))
                    .with_bias(bool_arg(args, "bias"));
            let mut grads = load(&mut m, x, &["tgt", "memory"], dtype);
            let (tgt, memory) = (leaf(x, "tgt"), leaf(x, "memory"));
            let y = m.forward_with(
                &tgt,
                &memory,
                mask("tgt_mask"),
                mask("memory_mask"),
                mask("tgt_key_padding_mask"),
                mask("memory_key_padding_mask"),
            );
            grads.extend([("tgt".into(), tgt), ("memory".into(), memory)]);
            Run::single(y, grads)
        }
        "Embedding" => {
            let (n, d) = (
                usize_arg(args, "num_embeddings"),
                usize_arg(args, "embedding_dim"),
            );
            let mut m = match args["padding_idx"].as_i64() {
                Some(p) => Embedding::with_padding_idx(n, d, p as isize),
                None => Embedding::new(n, d),
            };
            let grads = load(&mut m, x, &["indices"], dtype);
            Run::single(m.forward(&x["indices"]), grads)
        }
        "LayerNorm" => {
            let shape: Vec<usize> = args["normalized_shape"]
                .as_array()
                .expect("normalized_shape")
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let mut m = LayerNorm::new(&shape)
                .with_eps(f64_arg(args, "eps"))
                .with_elementwise_affine(bool_arg(args, "elementwise_affine"))
                .with_bias(bool_arg(args, "bias"));
            let mut grads = load(&mut m, x, &["x"], dtype);
            let input = leaf(x, "x");
            let y = m.forward(&input);
            grads.push(("x".into(), input));
            Run::single(y, grads)
        }
        "LSTM" => {
            let mut m = recurrent_layer!(LSTM, args);
            let mut grads = load(&mut m, x, &["input", "h0", "c0"], dtype);
            let input = leaf(x, "input");
            let (out, (h_n, c_n)) = match (x.get("h0"), x.get("c0")) {
                (Some(_), Some(_)) => {
                    let (h0, c0) = (leaf(x, "h0"), leaf(x, "c0"));
                    let y = m.forward((&input, (&h0, &c0)));
                    grads.extend([("h0".into(), h0), ("c0".into(), c0)]);
                    y
                }
                (None, None) => m.forward(&input),
                _ => panic!("LSTM cases give h0 and c0 together"),
            };
            grads.push(("input".into(), input));
            recurrent(out, h_n, Some(c_n), grads)
        }
        op @ ("GRU" | "RNN") => {
            let mut m: Box<dyn RecurrentNoCell> = if op == "GRU" {
                Box::new(recurrent_layer!(GRU, args))
            } else {
                let nonlinearity = args["nonlinearity"].as_str().expect("nonlinearity");
                Box::new(recurrent_layer!(RNN, args).with_nonlinearity(nonlinearity))
            };
            let mut grads = load(m.as_module_mut(), x, &["input", "h0"], dtype);
            let input = leaf(x, "input");
            let h0 = x.contains_key("h0").then(|| leaf(x, "h0"));
            let (out, h_n) = m.run(&input, h0.as_ref());
            grads.extend(h0.map(|h| ("h0".to_string(), h)));
            grads.push(("input".into(), input));
            recurrent(out, h_n, None, grads)
        }
        "Conv1d" => {
            let m = Conv1d::new(
                usize_arg(args, "in_channels"),
                usize_arg(args, "out_channels"),
                single(args, "kernel_size"),
            )
            .with_stride(single(args, "stride"))
            .with_padding(single(args, "padding"))
            .with_dilation(single(args, "dilation"))
            .with_groups(usize_arg(args, "groups"))
            .with_bias(bool_arg(args, "bias"));
            run_layer(m, x, dtype)
        }
        "Conv2d" => {
            let m = Conv2d::new(
                usize_arg(args, "in_channels"),
                usize_arg(args, "out_channels"),
                pair(args, "kernel_size"),
            )
            .with_stride(pair(args, "stride"))
            .with_padding(pair(args, "padding"))
            .with_dilation(pair(args, "dilation"))
            .with_groups(usize_arg(args, "groups"))
            .with_bias(bool_arg(args, "bias"));
            run_layer(m, x, dtype)
        }
        "ConvTranspose2d" => {
            let m = ConvTranspose2d::new(
                usize_arg(args, "in_channels"),
                usize_arg(args, "out_channels"),
                pair(args, "kernel_size"),
            )
            .with_stride(pair(args, "stride"))
            .with_padding(pair(args, "padding"))
            .with_output_padding(pair(args, "output_padding"))
            .with_dilation(pair(args, "dilation"))
            .with_groups(usize_arg(args, "groups"))
            .with_bias(bool_arg(args, "bias"));
            run_layer(m, x, dtype)
        }
        "AdaptiveAvgPool2d" => {
            run_layer(AdaptiveAvgPool2d::new(pair(args, "output_size")), x, dtype)
        }
        "GroupNorm" => {
            let m = GroupNorm::new(
                usize_arg(args, "num_groups"),
                usize_arg(args, "num_channels"),
            )
            .with_eps(f64_arg(args, "eps"))
            .with_affine(bool_arg(args, "affine"));
            run_layer(m, x, dtype)
        }
        "InstanceNorm2d" => {
            let m = InstanceNorm2d::new(usize_arg(args, "num_features"))
                .with_eps(f64_arg(args, "eps"))
                .with_momentum(args["momentum"].as_f64())
                .with_affine(bool_arg(args, "affine"))
                .with_track_running_stats(bool_arg(args, "track_running_stats"));
            run_layer(m, x, dtype)
        }
        other => panic!("seq/layers.json op `{other}` has no torchlet layer"),
    }
}

/// GRU and RNN behind one interface: `(output, h_n)` from an optional `h0`.
trait RecurrentNoCell {
    fn run(&self, input: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor);
    fn as_module_mut(&mut self) -> &mut dyn Module;
}

macro_rules! recurrent_no_cell {
    ($ty:ty) => {
        impl RecurrentNoCell for $ty {
            fn run(&self, input: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor) {
                match h0 {
                    Some(h0) => self.forward((input, h0)),
                    None => self.forward(input),
                }
            }
            fn as_module_mut(&mut self) -> &mut dyn Module {
                self
            }
        }
    };
}

recurrent_no_cell!(GRU);
recurrent_no_cell!(RNN);

/// Runs one case in `dtype` and compares outputs and gradients; panics on a mismatch.
fn check_case(case: &Value, dtype: DType, (rtol, atol): (f64, f64)) {
    let name = case["name"].as_str().unwrap();
    let inputs: Inputs = case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), tensor(v, dtype)))
        .collect();
    let r = run(case, &inputs, dtype);
    let expected = &case["output"];
    let main_key = if expected.get("shape").is_some() {
        assert_close(
            &format!("{name} ({dtype}) output"),
            &r.outputs[""],
            expected,
            rtol,
            atol,
        );
        String::new()
    } else {
        for (key, want) in expected.as_object().unwrap() {
            let got = r
                .outputs
                .get(key)
                .unwrap_or_else(|| panic!("{name}: torchlet gives no output {key}"));
            assert_close(
                &format!("{name} ({dtype}) output {key}"),
                got,
                want,
                rtol,
                atol,
            );
        }
        "output".to_string()
    };
    let want = case["grads"].as_object().unwrap();
    if want.is_empty() {
        return;
    }
    // One backward of sum_K <grad_output_K, output_K> (+ <grad_output, main output>).
    let mut total: Option<Tensor> = None;
    for (k, g) in inputs.iter().filter(|(k, _)| k.starts_with("grad_output")) {
        let out_key = match k.strip_prefix("grad_output_") {
            Some(key) => key.to_string(),
            None => main_key.clone(),
        };
        let out = r
            .outputs
            .get(&out_key)
            .unwrap_or_else(|| panic!("{name}: no output `{out_key}` for {k}"));
        let term = (out * g).sum();
        total = Some(match total {
            Some(t) => &t + &term,
            None => term,
        });
    }
    total
        .expect("a case with grads has an upstream gradient")
        .backward();
    let mut got_names: Vec<&str> = r.grads.iter().map(|(n, _)| n.as_str()).collect();
    let mut want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    got_names.sort_unstable();
    want_names.sort_unstable();
    assert_eq!(got_names, want_names, "{name}: the gradients compared");
    for (key, t) in &r.grads {
        let g = t
            .grad()
            .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
        assert_close(
            &format!("{name} ({dtype}) grad {key}"),
            &g,
            &want[key.as_str()],
            rtol,
            atol,
        );
    }
}

fn check_all(dtype: DType, tol: (f64, f64)) {
    let all = cases("seq/layers.json");
    assert_eq!(all.len(), 51, "seq/layers.json cases");
    let mut failures = Vec::new();
    for case in &all {
        // Each case on a thread of its own, so that a panic inside one (in a no_grad
        // scope, say) cannot leave state behind for the next.
        let run = std::thread::scope(|s| {
            s.spawn(|| catch_unwind(AssertUnwindSafe(|| check_case(case, dtype, tol))))
                .join()
                .unwrap_or_else(Err)
        });
        if let Err(e) = run {
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
        "{} of {} cases fail in {dtype}:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn seq_layers_match_pytorch_in_f64() {
    check_all(DType::F64, F64_TOL);
}

#[test]
fn seq_layers_match_pytorch_in_f32() {
    check_all(DType::F32, F32_TOL);
}
