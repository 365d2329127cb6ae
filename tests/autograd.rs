//! Autograd semantics, as in PyTorch: accumulation, no_grad, freeing the graph, detach, and
//! the version counter that catches in-place changes to values saved for backward.

use std::panic::{AssertUnwindSafe, catch_unwind};
use torchlet::autograd::{NoGradGuard, is_grad_enabled, no_grad};
use torchlet::{DType, Tensor, autograd};

fn leaf(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, &[values.len()]).requires_grad_(true)
}

fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn gradients_accumulate_across_backward_calls_until_zeroed() {
    let x = leaf(&[1.0, 2.0]);
    (&x * 3.0).sum().backward();
    (&x * 3.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [6.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    (&x * &x).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [2.0, 4.0]);
}

#[test]
fn gradients_of_a_shared_upstream_do_not_alias() {
    // add passes the same upstream gradient to both inputs; accumulating into one leaf's
    // gradient must not change the other's.
    let a = leaf(&[1.0]);
    let b = leaf(&[1.0]);
    (&a + &b).sum().backward();
    (&a * 5.0).sum().backward();
    assert_eq!(a.grad().unwrap().to_vec::<f32>(), [6.0]);
    assert_eq!(b.grad().unwrap().to_vec::<f32>(), [1.0]);
}

#[test]
fn backward_with_takes_an_upstream_gradient() {
    let x = leaf(&[1.0, 2.0, 3.0]);
    let y = x.pow(2.0);
    y.backward_with(&Tensor::from_vec(vec![1.0f32, 0.0, -1.0], &[3]));
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [2.0, 0.0, -6.0]);
}

#[test]
fn backward_on_a_non_scalar_names_the_fix() {
    let y = leaf(&[1.0, 2.0]).exp();
    let msg = panic_message(|| y.backward());
    assert!(
        msg.contains("only for one-element outputs") && msg.contains("backward_with"),
        "{msg}"
    );
}

#[test]
fn the_graph_is_freed_after_backward_unless_retained() {
    let x = leaf(&[0.5]);
    let y = x.exp().sum();
    autograd::backward(&y, None, true);
    y.backward();
    assert!((x.grad().unwrap().item() - 2.0 * 0.5f64.exp()).abs() < 1e-6);
    let msg = panic_message(|| y.backward());
    assert!(
        msg.contains("backward through the graph a second time"),
        "{msg}"
    );
    assert!(msg.contains("retain_graph = true"), "{msg}");
}

#[test]
fn no_grad_scopes_stop_recording_and_restore_the_mode() {
    let x = leaf(&[1.0]);
    assert!(!no_grad(|| (&x * 2.0).requires_grad()));
    {
        let _guard = NoGradGuard::new();
        assert!(!is_grad_enabled());
        let _inner = NoGradGuard::new();
    }
    assert!(is_grad_enabled());
    assert!((&x * 2.0).requires_grad());
}

#[test]
fn leaves_update_in_place_under_no_grad_only() {
    let w = leaf(&[1.0, 2.0]);
    let msg = panic_message(|| {
        w.sub_(&Tensor::ones(&[2]));
    });
    assert!(msg.contains("sub_") && msg.contains("no_grad"), "{msg}");
    no_grad(|| {
        w.sub_(&Tensor::ones(&[2]));
        w.mul_(&Tensor::full(&[2], 2.0));
        w.add_(&Tensor::scalar(1.0));
    });
    assert_eq!(w.to_vec::<f32>(), [1.0, 3.0]);
    no_grad(|| w.zero_());
    assert_eq!(w.to_vec::<f32>(), [0.0, 0.0]);
    assert!(w.requires_grad() && w.is_leaf());
}

#[test]
fn modifying_a_saved_tensor_is_reported_at_backward() {
    let w = leaf(&[1.0, 2.0]);
    // w * w needs w itself for its gradient.
    let loss = (&w * &w).sum();
    no_grad(|| w.add_(&Tensor::ones(&[2])));
    let msg = panic_message(|| loss.backward());
    assert!(msg.contains("modified by an in-place operation"), "{msg}");
    assert!(
        msg.contains("`mul`") && msg.contains("version 1; expected version 0"),
        "{msg}"
    );
}

#[test]
fn modifying_through_a_view_is_reported_too() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let w = leaf(&[1.0, 1.0]);
    let xt = x.t();
    let loss = xt.matmul(&w).sum();
    x.mul_scalar_(2.0);
    let msg = panic_message(|| loss.backward());
    assert!(msg.contains("modified by an in-place operation"), "{msg}");
}

#[test]
fn detach_cuts_the_graph_and_shares_data() {
    let x = leaf(&[2.0]);
    let d = x.detach();
    assert!(!d.requires_grad() && d.is_leaf());
    let y = &(&x * &d) + &x;
    y.sum().backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [3.0]);
}

#[test]
fn requires_grad_only_on_float_leaves() {
    let y = leaf(&[1.0]).exp();
    let msg = panic_message(|| {
        y.clone().requires_grad_(false);
    });
    assert!(msg.contains("leaf") && msg.contains("exp"), "{msg}");
    let msg = panic_message(|| {
        Tensor::from_vec(vec![1i64], &[1]).requires_grad_(true);
    });
    assert!(msg.contains("int64"), "{msg}");
}

#[test]
fn gradients_flow_only_where_needed() {
    let a = leaf(&[1.0, 2.0]);
    let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2]);
    (&a * &b).sum().backward();
    assert!(b.grad().is_none());
    assert_eq!(a.grad().unwrap().to_vec::<f32>(), [3.0, 4.0]);
}

#[test]
fn branches_without_gradient_still_release_their_inputs() {
    // The max indices carry no gradient; the values path must still reach x.
    let x = leaf(&[1.0, 5.0, 3.0]);
    let (values, indices) = x.reshape(&[1, 3]).max_dim(1, false);
    assert_eq!(indices.dtype(), DType::I64);
    (&values * 2.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [0.0, 2.0, 0.0]);
}

#[test]
fn f64_and_f32_graphs_do_not_mix_silently() {
    let a = Tensor::ones(&[2]);
    let b = Tensor::ones(&[2]).double();
    let msg = panic_message(|| {
        let _ = &a + &b;
    });
    assert!(
        msg.contains("add") && msg.contains("float32") && msg.contains("float64"),
        "{msg}"
    );
}

#[test]
fn tensors_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor>();
    let x = leaf(&[1.0, 2.0]);
    let y = std::thread::spawn({
        let x = x.clone();
        move || (&x * &x).sum()
    })
    .join()
    .unwrap();
    y.backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [2.0, 4.0]);
}

#[test]
fn linear_equals_matmul_with_transposed_weight_plus_bias() {
    torchlet::manual_seed(3);
    let x = Tensor::randn(&[6, 5]);
    let w = Tensor::randn(&[4, 5]).requires_grad_(true);
    let b = Tensor::randn(&[4]).requires_grad_(true);
    let fused = x.linear(&w, Some(&b));
    let composed = &x.matmul(&w.t()) + &b;
    let diff = (&fused - &composed).abs().max().item();
    assert!(diff < 1e-5, "{diff}");
    fused.sum().backward();
    let (gw, gb) = (w.grad().unwrap(), b.grad().unwrap());
    w.zero_grad();
    b.zero_grad();
    composed.sum().backward();
    assert!((&gw - &w.grad().unwrap()).abs().max().item() < 1e-5);
    assert!((&gb - &b.grad().unwrap()).abs().max().item() < 1e-5);
}

#[test]
fn linear_adds_a_strided_bias() {
    // Every other element of [1, 9, 2, 9, 3, 9]: a bias view with stride 2.
    let table = Tensor::from_vec(vec![1.0f32, 9.0, 2.0, 9.0, 3.0, 9.0], &[3, 2]);
    let bias = table.select(1, 0);
    let x = Tensor::zeros(&[2, 4]);
    let w = Tensor::zeros(&[3, 4]);
    assert_eq!(
        x.linear(&w, Some(&bias)).to_vec::<f32>(),
        [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    );
}
