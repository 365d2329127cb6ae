//! torchlet's global generator against PyTorch's: every case of
//! tests/reference/rng/rng.json (written by make.py beside it, PyTorch 2.15 on x86-64)
//! seeds with `manual_seed`, runs its steps in order (tensor draws, `nn.init` functions,
//! module constructors) and must give PyTorch's values bit for bit, f32 and f64 alike: the
//! same seed, the same calls in the same order, the same numbers. A step kind or module
//! without an arm here fails; all failures are listed at once.

use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use torchlet::nn::{
    Activation, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, Dropout, Embedding, Forward, GRU,
    LSTM, LayerNorm, Linear, Module, MultiheadAttention, RNN, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, init,
};
use torchlet::{DType, Tensor, manual_seed};

/// The generator is global: the cases take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn reference() -> Vec<Value> {
    let path = format!(
        "{}/tests/reference/rng/rng.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    v["cases"].as_array().expect("cases").clone()
}

fn usize_list(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a list of sizes")
        .iter()
        .map(|d| d.as_u64().expect("a size") as usize)
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn size(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a size in {v}")) as usize
}

fn dtype(step: &Value) -> DType {
    match step["dtype"].as_str().unwrap_or("f32") {
        "f32" => DType::F32,
        "f64" => DType::F64,
        other => panic!("unknown dtype {other}"),
    }
}

/// `t` against the reference tensor `expected`: same shape, same dtype, equal values (f32
/// compared as f32, so every bit must match).
fn check(what: &str, t: &Tensor, expected: &Value) -> Result<(), String> {
    let shape = usize_list(&expected["shape"]);
    if t.shape() != shape {
        return Err(format!("{what}: shape {:?}, PyTorch {shape:?}", t.shape()));
    }
    let data = expected["data"].as_array().expect("data");
    let mismatch = |i: usize, ours: String, theirs: String| {
        Err(format!(
            "{what}: element {i} of {}: torchlet {ours}, PyTorch {theirs}",
            data.len()
        ))
    };
    match expected["dtype"].as_str() {
        Some("i64") => {
            let ours = t.to_vec::<i64>();
            for (i, (a, b)) in ours.iter().zip(data).enumerate() {
                if Some(*a) != b.as_i64() {
                    return mismatch(i, a.to_string(), b.to_string());
                }
            }
        }
        Some("f32") => {
            if t.dtype() != DType::F32 {
                return Err(format!("{what}: dtype {:?}, PyTorch f32", t.dtype()));
            }
            for (i, (a, b)) in t.to_vec::<f32>().iter().zip(data).enumerate() {
                let b = parse(b) as f32;
                if a.to_bits() != b.to_bits() {
                    return mismatch(i, format!("{a:e}"), format!("{b:e}"));
                }
            }
        }
        Some("f64") => {
            if t.dtype() != DType::F64 {
                return Err(format!("{what}: dtype {:?}, PyTorch f64", t.dtype()));
            }
            for (i, (a, b)) in t.to_vec::<f64>().iter().zip(data).enumerate() {
                let b = parse(b);
                if a.to_bits() != b.to_bits() {
                    return mismatch(i, format!("{a:e}"), format!("{b:e}"));
                }
            }
        }
        other => return Err(format!("{what}: unknown reference dtype {other:?}")),
    }
    Ok(())
}

/// A reference float, written as a string (see make.py) and parsed with correct rounding.
fn parse(v: &Value) -> f64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("float {v} is not a string"));
    s.parse().unwrap_or_else(|e| panic!("float {s}: {e}"))
}

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::full_dtype(shape, 0.0, dtype)
}

fn op_step(step: &Value) -> Tensor {
    let shape = usize_list(&step["shape"]);
    let dt = dtype(step);
    match step["op"].as_str().expect("op") {
        "rand" if dt == DType::F32 => Tensor::rand(&shape),
        "rand" => zeros(&shape, dt).uniform_(0.0, 1.0).clone(),
        "randn" if dt == DType::F32 => Tensor::randn(&shape),
        "randn" => zeros(&shape, dt).normal_(0.0, 1.0).clone(),
        "randint" => Tensor::randint(
            step["low"].as_i64().expect("low"),
            step["high"].as_i64().expect("high"),
            &shape,
        ),
        "uniform_" => zeros(&shape, dt)
            .uniform_(num(step, "from"), num(step, "to"))
            .clone(),
        "normal_" => zeros(&shape, dt)
            .normal_(num(step, "mean"), num(step, "std"))
            .clone(),
        "dropout" => Dropout::new(num(step, "p")).forward(&Tensor::full_dtype(&shape, 1.0, dt)),
        other => panic!("no torchlet arm for op {other}"),
    }
}

fn init_step(step: &Value) -> Tensor {
    let t = zeros(&usize_list(&step["shape"]), dtype(step));
    let a = &step["args"];
    match step["init"].as_str().expect("init") {
        "kaiming_uniform_" => init::kaiming_uniform_(&t, num(a, "a")),
        "kaiming_normal_" => init::kaiming_normal_(&t, num(a, "a")),
        "xavier_uniform_" => init::xavier_uniform_(&t, num(a, "gain")),
        "xavier_normal_" => init::xavier_normal_(&t, num(a, "gain")),
        "uniform_" => init::uniform_(&t, num(a, "a"), num(a, "b")),
        "normal_" => init::normal_(&t, num(a, "mean"), num(a, "std")),
        other => panic!("no torchlet arm for init {other}"),
    }
    t
}

/// The W5 model of the benchmark (examples/bench/w5.rs), smaller.
#[derive(Module)]
struct TinyGpt {
    tok: Embedding,
    pos: Embedding,
    blocks: TransformerEncoder,
    ln_f: LayerNorm,
    head: Linear,
}

fn opt_bool(a: &Value, key: &str, default: bool) -> bool {
    a[key].as_bool().unwrap_or(default)
}

/// A transformer layer's builder chain as a PyTorch user would write it.
macro_rules! transformer_layer {
    ($ty:ident, $a:expr) => {{
        let a = $a;
        $ty::new(size(a, "d"), size(a, "heads"))
            .with_dim_feedforward(size(a, "ff"))
            .with_dropout(0.0)
            .with_bias(opt_bool(a, "bias", true))
            .with_batch_first(true)
            .with_norm_first(opt_bool(a, "norm_first", false))
    }};
}

fn build(m: &Value) -> Box<dyn Module> {
    let a = &m["args"];
    let bias = opt_bool(a, "bias", true);
    let groups = a["groups"].as_u64().unwrap_or(1) as usize;
    match m["kind"].as_str().expect("kind") {
        "Linear" => Box::new(Linear::with_bias(size(a, "in"), size(a, "out"), bias)),
        "Conv1d" => Box::new(
            Conv1d::new(size(a, "in"), size(a, "out"), size(a, "k"))
                .with_groups(groups)
                .with_bias(bias),
        ),
        "Conv2d" => {
            let k = usize_list(&a["k"]);
            Box::new(
                Conv2d::new(size(a, "in"), size(a, "out"), (k[0], k[1]))
                    .with_groups(groups)
                    .with_bias(bias),
            )
        }
        "ConvTranspose2d" => {
            let k = usize_list(&a["k"]);
            Box::new(
                ConvTranspose2d::new(size(a, "in"), size(a, "out"), (k[0], k[1]))
                    .with_groups(groups)
                    .with_bias(bias),
            )
        }
        "Embedding" => Box::new(match a["padding_idx"].as_i64() {
            Some(p) => Embedding::with_padding_idx(size(a, "num"), size(a, "dim"), p as isize),
            None => Embedding::new(size(a, "num"), size(a, "dim")),
        }),
        "LayerNorm" => Box::new(LayerNorm::new(&usize_list(&a["shape"]))),
        "BatchNorm2d" => Box::new(BatchNorm2d::new(size(a, "c"))),
        "MultiheadAttention" => {
            let e = size(a, "e");
            let (kdim, vdim) = (
                a["kdim"].as_u64().map_or(e, |k| k as usize),
                a["vdim"].as_u64().map_or(e, |v| v as usize),
            );
            Box::new(
                MultiheadAttention::new(e, size(a, "heads"))
                    .with_bias(bias)
                    .with_kdim_vdim(kdim, vdim)
                    .with_batch_first(true),
            )
        }
        "TransformerEncoderLayer" => Box::new(transformer_layer!(TransformerEncoderLayer, a)),
        "TransformerDecoderLayer" => Box::new(transformer_layer!(TransformerDecoderLayer, a)),
        "TransformerEncoder" => Box::new(TransformerEncoder::new(
            transformer_layer!(TransformerEncoderLayer, a),
            size(a, "layers"),
        )),
        "LSTM" => Box::new(
            LSTM::new(size(a, "in"), size(a, "hidden"))
                .with_num_layers(a["layers"].as_u64().unwrap_or(1) as usize)
                .with_bias(bias)
                .with_bidirectional(opt_bool(a, "bidirectional", false)),
        ),
        "GRU" => Box::new(
            GRU::new(size(a, "in"), size(a, "hidden"))
                .with_num_layers(a["layers"].as_u64().unwrap_or(1) as usize)
                .with_bias(bias)
                .with_bidirectional(opt_bool(a, "bidirectional", false)),
        ),
        "RNN" => Box::new(
            RNN::new(size(a, "in"), size(a, "hidden"))
                .with_num_layers(a["layers"].as_u64().unwrap_or(1) as usize)
                .with_bias(bias)
                .with_bidirectional(opt_bool(a, "bidirectional", false)),
        ),
        "TinyGPT" => {
            let (vocab, embd) = (size(a, "vocab"), size(a, "embd"));
            // PyTorch's order: tok, pos, the layer (copied, no draws), ln_f, head.
            let tok = Embedding::new(vocab, embd);
            let pos = Embedding::new(size(a, "block"), embd);
            let layer = TransformerEncoderLayer::new(embd, size(a, "heads"))
                .with_dim_feedforward(4 * embd)
                .with_dropout(0.0)
                .with_activation(Activation::Gelu)
                .with_batch_first(true)
                .with_norm_first(true);
            Box::new(TinyGpt {
                tok,
                pos,
                blocks: TransformerEncoder::new(layer, size(a, "layers")),
                ln_f: LayerNorm::new(&[embd]),
                head: Linear::new(embd, vocab),
            })
        }
        other => panic!("no torchlet arm for module {other}"),
    }
}

fn module_step(step: &Value) -> Result<(), String> {
    let m = build(&step["module"]);
    let what = step["module"].to_string();
    let expected = step["output"].as_object().expect("state dict");
    let sd = m.state_dict();
    let ours: Vec<&str> = sd
        .iter()
        .filter(|(_, t)| t.dtype() != DType::I64)
        .map(|(k, _)| k.as_str())
        .collect();
    let theirs: Vec<&str> = step["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key"))
        .collect();
    if ours != theirs {
        return Err(format!("{what}: keys {ours:?}, PyTorch {theirs:?}"));
    }
    for (key, v) in expected {
        let t = sd.get(key).expect("key checked above");
        check(&format!("{what} {key}"), t, v)?;
    }
    Ok(())
}

fn run(case: &Value) -> Result<(), String> {
    manual_seed(case["seed"].as_u64().expect("seed"));
    for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        let what = format!("{} step {i}", case["name"]);
        if step.get("op").is_some() {
            check(&what, &op_step(step), &step["output"])?;
        } else if step.get("init").is_some() {
            check(&what, &init_step(step), &step["output"])?;
        } else {
            module_step(step).map_err(|e| format!("{what}: {e}"))?;
        }
    }
    Ok(())
}

#[test]
fn every_case_draws_what_pytorch_draws() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let failures: Vec<String> = reference()
        .iter()
        .filter_map(|case| match catch_unwind(AssertUnwindSafe(|| run(case))) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => Some(format!(
                "{}: panicked: {}",
                case["name"],
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_builder_redraws_in_place_only_right_after_construction() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let weight = |c: &Conv2d| c.weight.to_vec::<f32>();
    // `[6, 4 / 2, 3, 3]` drawn directly: what `with_groups(2)` must give right after `new`.
    manual_seed(5);
    let direct = weight(&Conv2d::new(2, 6, 3));
    let next = Tensor::rand(&[3]).to_vec::<f32>();
    manual_seed(5);
    let built = Conv2d::new(4, 6, 3).with_groups(2);
    assert_eq!(weight(&built), direct);
    assert_eq!(Tensor::rand(&[3]).to_vec::<f32>(), next);
    // Once something else has drawn, the redraw continues the stream instead of handing
    // out the same numbers twice.
    manual_seed(5);
    let _ = Conv2d::new(4, 6, 3);
    let _ = Tensor::rand(&[3]);
    let expected = weight(&Conv2d::new(2, 6, 3));
    manual_seed(5);
    let late = Conv2d::new(4, 6, 3);
    let _ = Tensor::rand(&[3]);
    assert_eq!(weight(&late.with_groups(2)), expected);
    // Dropping a bias later keeps the weight; so does dropping one given by the user.
    manual_seed(6);
    let c = Conv2d::new(3, 2, 1);
    let w = weight(&c);
    let _ = Tensor::rand(&[1]);
    assert_eq!(weight(&c.with_bias(false)), w);
    let d = Conv2d::from_parts(Tensor::ones(&[2, 1, 1, 1]), Some(Tensor::zeros(&[2])));
    assert_eq!(weight(&d.with_bias(false)), [1.0, 1.0]);
}
