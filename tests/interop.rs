//! Checkpoints written by PyTorch (tests/reference/interop, see its README.md): each loads
//! into its torchlet equivalent with no renaming or transposing and reproduces PyTorch's
//! output; the keys, shapes, dtypes and printed tree equal manifest.json; and
//! torchlet → file → torchlet is bit-exact.

use serde_json::Value;
use std::path::PathBuf;
use torchlet::nn::{
    BatchNorm2d, Conv2d, Forward, Linear, MaxPool2d, Module, ReLU, Sequential, sequential,
};
use torchlet::{Tensor, serialize};

#[derive(Module)]
struct OurModule {
    l1: Linear,
    l2: Linear,
}

impl Forward<&Tensor> for OurModule {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }
}

#[derive(Module)]
struct Cnn {
    features: Sequential<(Conv2d, BatchNorm2d, ReLU, MaxPool2d)>,
    classifier: Linear,
}

impl Forward<&Tensor> for Cnn {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.classifier
            .forward(&self.features.forward(x).flatten(1, -1))
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/interop")
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("manifest has no {name}"))
        .clone()
}

/// Loads `name`.safetensors into `model` (strict), checks it against the manifest, runs it
/// on the recorded input in eval mode and compares with PyTorch's output.
fn check<M: Module + for<'a> Forward<&'a Tensor, Output = Tensor>>(name: &str, mut model: M) -> M {
    let m = manifest(name);
    let keys: Vec<(String, Vec<usize>, String)> = model
        .state_dict()
        .iter()
        .map(|(k, t)| (k.clone(), t.shape(), t.dtype().to_string()))
        .collect();
    let want: Vec<(String, Vec<usize>, String)> =
        serde_json::from_value(m["keys"].clone()).unwrap();
    assert_eq!(keys, want, "{name}: ordered keys, shapes and dtypes");
    assert_eq!(
        model.as_dyn().to_string(),
        m["module_repr"].as_str().unwrap(),
        "{name}: printed tree"
    );

    let report =
        serialize::load_into(&mut model, dir().join(format!("{name}.safetensors")), true).unwrap();
    assert!(report.missing_keys.is_empty() && report.unexpected_keys.is_empty());
    let io = serialize::load_file(dir().join(format!("{name}.io.safetensors"))).unwrap();
    let (input, output) = (io.get("input").unwrap(), io.get("output").unwrap());
    model.eval();
    let y = model.forward(input);
    assert_eq!(y.shape(), output.shape());
    for (i, (a, b)) in y
        .to_vec::<f32>()
        .iter()
        .zip(output.to_vec::<f32>())
        .enumerate()
    {
        assert!(
            (a - b).abs() <= 1e-5,
            "{name}: output element {i} is {a}, PyTorch gives {b}"
        );
    }
    model
}

/// Saves `model`, loads the file into `fresh` and checks that every tensor is bit-exact.
fn round_trip(name: &str, model: &dyn Module, fresh: &mut dyn Module) {
    let path = std::env::temp_dir().join(format!(
        "torchlet-interop-{}-{name}.safetensors",
        std::process::id()
    ));
    serialize::save(model, &path).unwrap();
    serialize::load_into(fresh, &path, true).unwrap();
    std::fs::remove_file(&path).unwrap();
    for ((k, a), (_, b)) in model.state_dict().iter().zip(fresh.state_dict().iter()) {
        assert_eq!(a.dtype(), b.dtype(), "{name}: {k}");
        let (a, b) = (a.to_vec::<f64>(), b.to_vec::<f64>());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}: {k}"
        );
    }
}

#[test]
fn mlp_sequential_loads_and_reproduces_pytorch() {
    let model = check(
        "mlp_sequential",
        sequential![Linear::new(784, 32), ReLU, Linear::new(32, 10)],
    );
    round_trip(
        "mlp_sequential",
        &model,
        &mut sequential![Linear::new(784, 32), ReLU, Linear::new(32, 10)],
    );
}

#[test]
fn our_module_loads_and_reproduces_pytorch() {
    let model = check(
        "our_module",
        OurModule {
            l1: Linear::new(784, 32),
            l2: Linear::new(32, 10),
        },
    );
    round_trip(
        "our_module",
        &model,
        &mut OurModule {
            l1: Linear::new(784, 32),
            l2: Linear::new(32, 10),
        },
    );
}

fn cnn() -> Cnn {
    Cnn {
        features: sequential![
            Conv2d::new(1, 4, 3).with_padding(1),
            BatchNorm2d::new(4),
            ReLU,
            MaxPool2d::new(2)
        ],
        classifier: Linear::new(4 * 14 * 14, 10),
    }
}

#[test]
fn cnn_with_batch_norm_loads_and_reproduces_pytorch() {
    let model = check("cnn", cnn());
    assert_eq!(
        model
            .features
            .layers
            .1
            .num_batches_tracked
            .as_ref()
            .unwrap()
            .dtype(),
        torchlet::DType::I64
    );
    round_trip("cnn", &model, &mut cnn());
}

#[test]
fn a_checkpoint_for_another_model_names_the_file_and_keys() {
    let path = dir().join("our_module.safetensors");
    let err = serialize::load_into(&mut cnn(), &path, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("our_module.safetensors"), "{err}");
    assert!(
        err.contains("Missing key(s) in state_dict: \"features.0.weight\""),
        "{err}"
    );
    assert!(
        err.contains("Unexpected key(s) in state_dict: ") && err.contains("\"l1.weight\""),
        "{err}"
    );
    let mut small = OurModule {
        l1: Linear::new(784, 16),
        l2: Linear::new(16, 10),
    };
    let err = serialize::load_into(&mut small, &path, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key `l1.weight`: shape [32, 784] in the file, [16, 784] in the model"),
        "{err}"
    );
}
