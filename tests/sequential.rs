//! `sequential!` chains beyond the basics: any length up to `MAX_LAYERS`, layers that take
//! something other than a tensor, and shape panics that point at the caller's line.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use torchlet::Tensor;
use torchlet::nn::{Forward, Linear, MAX_LAYERS, Module, ReLU, Sequential, Tanh, sequential};

#[test]
fn chains_of_13_and_max_layers_build_and_run() {
    let model = sequential![
        Linear::new(4, 8),
        ReLU,
        Linear::new(8, 8),
        ReLU,
        Linear::new(8, 8),
        ReLU,
        Linear::new(8, 8),
        ReLU,
        Linear::new(8, 8),
        ReLU,
        Linear::new(8, 8),
        ReLU,
        Linear::new(8, 2)
    ];
    assert_eq!(model.forward(&Tensor::zeros(&[3, 4])).shape(), [3, 2]);
    assert_eq!(model.names().len(), 13);
    assert!(model.state_dict().contains_key("12.weight"));

    assert_eq!(MAX_LAYERS, 64);
    let longest = sequential![
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Tanh,
        Linear::new(3, 1)
    ];
    assert_eq!(longest.names().len(), MAX_LAYERS);
    assert_eq!(longest.names()[63], "63");
    assert_eq!(longest.forward(&Tensor::zeros(&[2, 3])).shape(), [2, 1]);
}

/// Splits features into two halves: its output is a pair, not a tensor.
#[derive(Module)]
struct Halves;

impl Forward<&Tensor> for Halves {
    type Output = (Tensor, Tensor);
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let n = x.size(1) / 2;
        (x.narrow(1, 0, n), x.narrow(1, n, n))
    }
}

/// Adds a pair: a layer whose input is not `&Tensor`.
#[derive(Module)]
struct AddPair;

impl Forward<&(Tensor, Tensor)> for AddPair {
    type Output = Tensor;
    fn forward(&self, (a, b): &(Tensor, Tensor)) -> Tensor {
        a + b
    }
}

#[test]
fn layers_can_pass_other_values_than_tensors() {
    let model = sequential![Linear::new(3, 4), Halves, AddPair, ReLU];
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[1, 3]);
    let h = model.layers.0.forward(&x);
    let (a, b) = (h.narrow(1, 0, 2), h.narrow(1, 2, 2));
    assert_eq!(
        model.forward(&x).to_vec::<f32>(),
        (&a + &b).relu().to_vec::<f32>()
    );
}

thread_local! {
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, which must panic, and gives the file and line the panic reports.
fn panic_location(f: impl FnOnce()) -> (String, u32) {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    assert!(result.is_err(), "expected a panic");
    let at = PANIC_AT
        .with(|p| p.borrow_mut().take())
        .expect("the hook saw the panic");
    let (file, line) = at.rsplit_once(':').unwrap();
    (file.to_string(), line.parse().unwrap())
}

#[test]
fn a_size_mismatch_in_a_chain_panics_at_the_callers_line() {
    let h = 64;
    let typed = sequential![Linear::new(784, h), ReLU, Linear::new(128, 10)];
    let x = Tensor::zeros(&[2, 784]);
    let mut line = 0;
    let (file, at) = panic_location(|| {
        line = line!() + 1;
        typed.forward(&x);
    });
    assert_eq!((file.as_str(), at), (file!(), line));

    let mut dynamic = Sequential::new();
    dynamic
        .push(Linear::new(784, h))
        .push(ReLU)
        .push(Linear::new(128, 10));
    let (file, at) = panic_location(|| {
        line = line!() + 1;
        dynamic.forward(&x);
    });
    assert_eq!((file.as_str(), at), (file!(), line));

    let nested = sequential![typed, ReLU];
    let (file, at) = panic_location(|| {
        line = line!() + 1;
        nested.forward(&x);
    });
    assert_eq!((file.as_str(), at), (file!(), line));
}
