//! Sequence-model checkpoints written by PyTorch (tests/reference/interop/seq, see its
//! README.md): each loads strictly into a torchlet definition written with
//! `#[derive(Module)]` and built from the manifest's `config`, with no key renaming; the
//! keys, shapes and printed tree equal the manifest's, and the logits match PyTorch's.

use serde_json::Value;
use std::path::PathBuf;
use torchlet::nn::{
    Activation, Embedding, Forward, LSTM, LayerNorm, Linear, Module, TransformerEncoder,
    TransformerEncoderLayer,
};
use torchlet::{Tensor, serialize};

/// The manifest's TinyGPT: token + learned position embeddings, a pre-norm causal
/// Transformer encoder stack, a final LayerNorm and a linear head.
#[derive(Module)]
struct TinyGPT {
    tok_emb: Embedding,
    pos_emb: Embedding,
    encoder: TransformerEncoder,
    ln_f: LayerNorm,
    head: Linear,
}

impl TinyGPT {
    fn from_config(c: &Value) -> TinyGPT {
        let get = |k: &str| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("config.{k} is not a size")) as usize
        };
        let (vocab, d_model) = (get("vocab"), get("d_model"));
        let layer = TransformerEncoderLayer::new(d_model, get("nhead"))
            .with_dim_feedforward(get("dim_ff"))
            .with_dropout(0.0)
            .with_activation(Activation::Gelu)
            .with_batch_first(true)
            .with_norm_first(true);
        TinyGPT {
            tok_emb: Embedding::new(vocab, d_model),
            pos_emb: Embedding::new(get("max_len"), d_model),
            encoder: TransformerEncoder::new(layer, get("num_layers")),
            ln_f: LayerNorm::new(&[d_model]),
            head: Linear::new(d_model, vocab),
        }
    }
}

/// `[T, T]` i64, 1 above the diagonal: PyTorch's `triu(ones(T, T, dtype=bool), 1)`.
fn causal_mask(t: usize) -> Tensor {
    let m: Vec<i64> = (0..t * t).map(|n| i64::from(n % t > n / t)).collect();
    Tensor::from_vec(m, &[t, t])
}

impl Forward<&Tensor> for TinyGPT {
    type Output = Tensor;
    fn forward(&self, ids: &Tensor) -> Tensor {
        let t = ids.size(1);
        let h = &self.tok_emb.forward(ids) + &self.pos_emb.forward(&Tensor::arange(t));
        let h = self.encoder.forward_with(&h, Some(&causal_mask(t)), None);
        self.head.forward(&self.ln_f.forward(&h))
    }
}

/// The manifest's LSTMClassifier: embedding, a batch-first multi-layer LSTM, and a linear
/// head on the last layer's final hidden state.
#[derive(Module)]
struct LSTMClassifier {
    emb: Embedding,
    lstm: LSTM,
    fc: Linear,
}

impl LSTMClassifier {
    fn from_config(c: &Value) -> LSTMClassifier {
        let get = |k: &str| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("config.{k} is not a size")) as usize
        };
        let (emb_dim, hidden) = (get("emb_dim"), get("hidden"));
        LSTMClassifier {
            emb: Embedding::new(get("vocab"), emb_dim),
            lstm: LSTM::new(emb_dim, hidden)
                .with_num_layers(get("num_layers"))
                .with_batch_first(true),
            fc: Linear::new(hidden, get("num_classes")),
        }
    }
}

impl Forward<&Tensor> for LSTMClassifier {
    type Output = Tensor;
    fn forward(&self, ids: &Tensor) -> Tensor {
        let (_, (h_n, _)) = self.lstm.forward(&self.emb.forward(ids));
        // PyTorch's h_n[-1]: the last layer's final hidden state.
        self.fc.forward(&h_n.select(0, h_n.size(0) - 1))
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/interop/seq")
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.into_iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("manifest has no {name}"))
}

/// Checks keys and printed tree against the manifest, loads the weights strictly, runs the
/// recorded input in eval mode and compares with PyTorch's output within `tol`.
fn check<M: Module + for<'a> Forward<&'a Tensor, Output = Tensor>>(
    name: &str,
    mut model: M,
    tol: f64,
) {
    let m = manifest(name);
    let keys: Vec<(String, Vec<usize>)> = model
        .state_dict()
        .iter()
        .map(|(k, t)| (k.clone(), t.shape()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = m["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                serde_json::from_value(e[0].clone()).unwrap(),
                serde_json::from_value(e[1].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, want, "{name}: ordered keys and shapes");
    println!("{model}", model = model.as_dyn());
    assert_eq!(
        model.as_dyn().to_string(),
        m["module_repr"].as_str().unwrap(),
        "{name}: printed tree"
    );
    let weights = dir().join(m["weights"].as_str().unwrap());
    let report = serialize::load_into(&mut model, weights, true).unwrap();
    assert!(report.missing_keys.is_empty() && report.unexpected_keys.is_empty());
    let io = serialize::load_file(dir().join(m["io"].as_str().unwrap())).unwrap();
    let (input, output) = (io.get("input").unwrap(), io.get("output").unwrap());
    model.eval();
    let y = model.forward(input);
    assert_eq!(y.shape(), output.shape(), "{name}: output shape");
    let worst = y
        .to_vec::<f32>()
        .iter()
        .zip(output.to_vec::<f32>())
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    println!("{name}: max |torchlet - PyTorch| = {worst:e} (tolerance {tol:e})");
    assert!(worst <= tol, "{name}: logits differ by {worst:e} > {tol:e}");
}

#[test]
fn pytorch_gpt_loads_and_reproduces_its_logits() {
    let m = manifest("gpt");
    // float32 precision: PyTorch's own float32 logits are f64_max_abs_diff from float64;
    // another summation order may land a few times that far.
    let tol = (10.0 * m["f64_max_abs_diff"].as_f64().unwrap()).max(1e-5);
    check("gpt", TinyGPT::from_config(&m["config"]), tol);
}

/// The same weights rounded to bfloat16 / float16 by PyTorch load into the float32 model
/// (widened on load) and land within the manifest's `suggested_tolerance` of the float32
/// logits, as PyTorch itself does (`expected_max_abs_diff`).
#[test]
fn pytorch_gpt_in_bf16_and_f16_loads_and_reproduces_its_logits() {
    for name in ["gpt_bf16", "gpt_f16"] {
        let m = manifest(name);
        let tol = m["suggested_tolerance"].as_f64().unwrap();
        check(name, TinyGPT::from_config(&m["config"]), tol);
    }
}

#[test]
fn pytorch_lstm_classifier_loads_and_reproduces_its_logits() {
    let m = manifest("lstm_classifier");
    let tol = (10.0 * m["f64_max_abs_diff"].as_f64().unwrap()).max(1e-5);
    check(
        "lstm_classifier",
        LSTMClassifier::from_config(&m["config"]),
        tol,
    );
}
