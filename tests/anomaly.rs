//! Anomaly detection: the first NaN or infinity in a forward output or a backward gradient
//! is reported with the op, the shapes, the module path and the line that created the op.
//!
//! Anomaly mode is process-wide (as PyTorch's is), so these tests live in a test binary of
//! their own and take one lock, so that none sees another's setting.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use torchlet::Tensor;
use torchlet::autograd::{
    detect_anomaly, detect_anomaly_in, is_anomaly_enabled, no_grad, set_detect_anomaly,
};
use torchlet::nn::{BatchNorm1d, Forward, Linear, Module, ModuleScope, ReLU, sequential};

static LOCK: Mutex<()> = Mutex::new(());

/// Runs `f`, which must panic, and returns the message and the `file:line` it points at.
fn anomaly(f: impl FnOnce()) -> (String, String) {
    let location = Arc::new(Mutex::new(String::new()));
    let seen = location.clone();
    panic::set_hook(Box::new(move |info| {
        *seen.lock().unwrap() = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
    }));
    let err = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected an anomaly");
    let _ = panic::take_hook();
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "<not a String>".to_string());
    let at = location.lock().unwrap().clone();
    (msg, at)
}

#[derive(Module)]
struct Block {
    norm: BatchNorm1d,
    fc: Linear,
}

const FC_LINE: u32 = line!() + 5;

impl Forward<&Tensor> for Block {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc.forward(&self.norm.forward(x))
    }
}

#[derive(Module)]
struct Encoder {
    block: Block,
    act: ReLU,
}

impl Forward<&Tensor> for Encoder {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.act.forward(&self.block.forward(x))
    }
}

/// Three derived structs deep: only the outermost enters its scope.
#[derive(Module)]
struct Net {
    encoder: Encoder,
    head: Linear,
}

impl Forward<&Tensor> for Net {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        let _scope = ModuleScope::enter(self);
        self.head.forward(&self.encoder.forward(x))
    }
}

fn net() -> Net {
    Net {
        encoder: Encoder {
            block: Block {
                norm: BatchNorm1d::new(4),
                fc: Linear::new(4, 3),
            },
            act: ReLU,
        },
        head: Linear::new(3, 2),
    }
}

#[test]
fn a_nan_inside_a_nested_derived_model_names_the_op_module_and_line() {
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let model = net();
    let w = &model.encoder.block.fc.weight;
    no_grad(|| w.copy_(&w.index_fill_nan()));
    let x = Tensor::ones(&[2, 4]);
    let (msg, at) = anomaly(|| {
        detect_anomaly(|| model.forward(&x));
    });
    assert_eq!(
        msg,
        format!(
            "anomaly detected: `linear` gave NaN in its output [2, 3] from inputs [2, 4], \
             [3, 4], [3]; input 1 already held non-finite values; in module encoder.block.fc \
             (Linear), created at tests/anomaly.rs:{FC_LINE}:17"
        )
    );
    assert_eq!(at, format!("tests/anomaly.rs:{FC_LINE}"));
    assert!(!is_anomaly_enabled(), "detect_anomaly restores the setting");
    // Off, the NaN flows on silently, as in PyTorch.
    let block = model.encoder.block.forward(&x);
    assert!(block.to_vec::<f32>().iter().any(|v| v.is_nan()));
}

#[test]
fn a_derived_model_without_a_scope_of_its_own_is_named_from_the_root_given() {
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // `Encoder`'s forward enters no scope: the root comes from `detect_anomaly_in`.
    let model = net().encoder;
    let w = &model.block.fc.weight;
    no_grad(|| w.copy_(&w.index_fill_nan()));
    let x = Tensor::ones(&[2, 4]);
    let (msg, _) = anomaly(|| {
        detect_anomaly_in(&model, || model.forward(&x));
    });
    assert_eq!(
        msg,
        format!(
            "anomaly detected: `linear` gave NaN in its output [2, 3] from inputs [2, 4], \
             [3, 4], [3]; input 1 already held non-finite values; in module block.fc \
             (Linear), created at tests/anomaly.rs:{FC_LINE}:17"
        )
    );
    assert!(!is_anomaly_enabled());
}

trait NanFill {
    fn index_fill_nan(&self) -> Tensor;
}

impl NanFill for Tensor {
    /// A copy with its first element NaN.
    fn index_fill_nan(&self) -> Tensor {
        let mut v = self.to_vec::<f32>();
        v[0] = f32::NAN;
        Tensor::from_vec(v, &self.shape())
    }
}

#[test]
fn a_chain_names_its_layers_as_pytorch_keys_them() {
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let model = sequential![
        features = sequential![Linear::new(4, 4), BatchNorm1d::new(4), ReLU],
        classifier = Linear::new(4, 2)
    ];
    let x = Tensor::full(&[3, 4], f64::INFINITY);
    // The switch, as the main job's --detect-anomaly uses it.
    assert!(!set_detect_anomaly(true));
    let line = line!() + 2;
    let (msg, at) = anomaly(|| {
        model.forward(&x);
    });
    assert!(set_detect_anomaly(false));
    assert!(msg.starts_with("anomaly detected: `linear` gave "), "{msg}");
    assert!(
        msg.contains(&format!(
            "input 0 already held non-finite values; in module features.0 (Linear), created at \
             tests/anomaly.rs:{line}:"
        )),
        "{msg}"
    );
    assert_eq!(at, format!("tests/anomaly.rs:{line}"));
}

#[test]
fn a_non_finite_gradient_is_reported_at_the_backward_call() {
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).requires_grad_(true);
    let line = line!() + 3;
    let (msg, at) = anomaly(|| {
        detect_anomaly(|| {
            let y = x.sqrt().sum();
            y.backward();
        })
    });
    assert!(
        msg.starts_with(&format!(
            "anomaly detected: the backward of `sqrt` gave inf in the gradient of its input 0 \
             [2]; `sqrt` was created at tests/anomaly.rs:{line}:"
        )),
        "{msg}"
    );
    assert_eq!(at, format!("tests/anomaly.rs:{}", line + 1));
}
