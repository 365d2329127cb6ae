//! Misuse of tensor math panics with the op and the shapes, pointing at the caller's line.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use torchlet::Tensor;
use torchlet::nn::{Forward, Layer, Linear, ReLU, Sequential, sequential};

/// Runs `f`, which must panic, and returns the message and the file the panic points at.
fn misuse(f: impl FnOnce()) -> (String, String) {
    let location = Arc::new(Mutex::new(String::new()));
    let seen = location.clone();
    panic::set_hook(Box::new(move |info| {
        *seen.lock().unwrap() = info
            .location()
            .map(|l| l.file().to_string())
            .unwrap_or_default();
    }));
    let err = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    let _ = panic::take_hook();
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let file = location.lock().unwrap().clone();
    (msg, file)
}

// One test, so that the panic hook is not shared with another test thread.
#[test]
fn misuse_panics_with_op_and_shapes_at_the_callers_line() {
    let a = Tensor::zeros(&[64, 784]);
    let b = Tensor::zeros(&[128, 10]);
    let x = Tensor::zeros(&[2, 3]);
    type Misuse<'a> = Box<dyn FnOnce() + 'a>;
    let cases: Vec<(&str, Misuse)> = vec![
        (
            "matmul: [64, 784] @ [128, 10]: inner dimensions 784 and 128 differ",
            Box::new(|| {
                a.matmul(&b);
            }),
        ),
        (
            "matmul: [2, 3, 4] @ [5, 4, 2]: batch dimensions cannot be broadcast together",
            Box::new(|| {
                Tensor::zeros(&[2, 3, 4]).matmul(&Tensor::zeros(&[5, 4, 2]));
            }),
        ),
        (
            "add: shapes [2, 3] and [4] cannot be broadcast together",
            Box::new(|| {
                let _ = &x + &Tensor::zeros(&[4]);
            }),
        ),
        (
            "mul: shapes [2, 3] and [3, 2] cannot be broadcast together",
            Box::new(|| {
                let _ = x.clone() * Tensor::zeros(&[3, 2]);
            }),
        ),
        (
            "reshape: shape [4, -1] is invalid for input of shape [2, 3] (6 elements)",
            Box::new(|| {
                x.reshape(&[4, -1]);
            }),
        ),
        (
            "sum: dimension 2 out of range for a 2-dimensional tensor",
            Box::new(|| {
                x.sum_dim(2, false);
            }),
        ),
        (
            "narrow: range 2..4 is out of bounds for dimension 1 of size 3",
            Box::new(|| {
                x.narrow(1, 2, 2);
            }),
        ),
        (
            "index_select: index 7 is out of bounds for dimension 0 of size 2",
            Box::new(|| {
                x.index_select(0, &Tensor::from_vec(vec![0i64, 7], &[2]));
            }),
        ),
        (
            "cat: tensor 1 is float32 [2, 4] but tensor 0 is float32 [2, 3]",
            Box::new(|| {
                Tensor::cat(&[x.clone(), Tensor::zeros(&[2, 4])], 0);
            }),
        ),
        (
            "stack: expects a non-empty list of tensors",
            Box::new(|| {
                Tensor::stack(&[], 0);
            }),
        ),
        (
            "from_vec: 5 values do not fill shape [2, 3] (6 elements)",
            Box::new(|| {
                Tensor::from_vec(vec![0.0f32; 5], &[2, 3]);
            }),
        ),
        (
            "item: only one-element tensors can be converted to a number, got shape [2, 3]",
            Box::new(|| {
                x.item();
            }),
        ),
        (
            "exp: needs a floating-point tensor, got int64 [2]",
            Box::new(|| {
                Tensor::from_vec(vec![1i64, 2], &[2]).exp();
            }),
        ),
        (
            "permute: [0, 0] is not a permutation",
            Box::new(|| {
                x.permute(&[0, 0]);
            }),
        ),
        (
            "permute: dimension 5 out of range for a 2-dimensional tensor",
            Box::new(|| {
                x.permute(&[0, 5]);
            }),
        ),
        (
            "expand: shape [2, 3] cannot be expanded to [3, 3]",
            Box::new(|| {
                x.expand(&[3, 3]);
            }),
        ),
        (
            "Linear(in_features=2, out_features=1, bias=True): got input [5, 3]",
            Box::new(|| {
                // Sizes the macro cannot see, so the mismatch is found at run time.
                let n = 2;
                let typed = sequential![Linear::new(4, 3), ReLU, Linear::new(n, 1)];
                typed.forward(&Tensor::zeros(&[5, 4]));
            }),
        ),
        (
            "Linear(in_features=2, out_features=1, bias=True): got input [5, 3]",
            Box::new(|| {
                let mut chain = Sequential::new();
                chain.push(Linear::new(4, 3)).push(Linear::new(2, 1));
                chain.forward(&Tensor::zeros(&[5, 4]));
            }),
        ),
        (
            "Linear(in_features=2, out_features=1, bias=True): got input [5, 3]",
            Box::new(|| {
                let n = 2;
                let boxed: Box<dyn Layer> =
                    Box::new(sequential![Linear::new(4, 3), Linear::new(n, 1)]);
                boxed.forward(&Tensor::zeros(&[5, 4]));
            }),
        ),
        (
            "backward: one of the tensors needed for gradient computation has been modified by \
             an in-place operation: the [2] tensor saved by `mul` is at version 1; expected \
             version 0",
            Box::new(|| {
                let w = Tensor::ones(&[2]).requires_grad_(true);
                let x = Tensor::ones(&[2]);
                let y = (&w * &x).sum();
                x.add_(&Tensor::ones(&[2]));
                y.backward();
            }),
        ),
    ];
    for (expected, f) in cases {
        let (msg, file) = misuse(f);
        assert!(msg.contains(expected), "expected {expected:?}, got {msg:?}");
        assert!(
            file.ends_with("tests/errors.rs"),
            "{expected:?}: the panic points at {file}, not at the caller"
        );
    }
}
