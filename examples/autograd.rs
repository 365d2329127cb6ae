//! A tour of tensors and gradients: `cargo run --release --example autograd`.
//!
//! Fits y = 3x - 1 with a hand-written linear model, then shows broadcasting, a gradient
//! that accumulates through a reused tensor, no_grad, and the error PyTorch users know
//! from modifying a value needed for backward.

use torchlet::prelude::*;

fn main() {
    manual_seed(0);

    // Tensors: constructors, shapes, printing.
    let x = Tensor::arange_step(-1.0, 1.0, 0.25).reshape(&[-1, 1]);
    let y = &(&x * 3.0) - 1.0;
    println!("x = {}", x.t());
    println!("y = 3x - 1 = {}\n", y.t());

    // Parameters are leaves that require grad.
    let w = Tensor::randn(&[1, 1]).requires_grad_(true);
    let b = Tensor::zeros(&[1]).requires_grad_(true);
    for step in 0..=200 {
        let pred = &x.matmul(&w) + &b; // [8, 1] + [1] broadcasts
        let loss = (&pred - &y).pow(2.0).mean();
        loss.backward();
        no_grad(|| {
            for p in [&w, &b] {
                let g = p.grad().expect("backward filled the gradient");
                p.sub_(&(&g * 0.1));
                p.zero_grad();
            }
        });
        if step % 50 == 0 {
            println!("step {step:3}: loss {:.6}", loss.item());
        }
    }
    println!("learned w = {:.4}, b = {:.4}\n", w.item(), b.item());

    // A tensor used twice gets the sum of both gradients: d/dv (v² + eᵛ) = 2v + eᵛ.
    let v = Tensor::from_vec(vec![0.0f64, 1.0, 2.0], &[3]).requires_grad_(true);
    (&(&v * &v) + &v.exp()).sum().backward();
    println!(
        "d/dv (v*v + exp(v)) at {} = {}",
        v.detach(),
        v.grad().expect("grad")
    );

    // Softmax along a dimension, stable for large logits.
    let logits = Tensor::from_vec(vec![1000.0f32, 1001.0, 1002.0], &[1, 3]);
    println!("softmax of large logits = {}", logits.softmax(-1));

    // Changing a value that backward needs is reported, not silently wrong.
    let u = Tensor::ones(&[2]).requires_grad_(true);
    let out = (&u * &u).sum();
    no_grad(|| u.add_(&Tensor::ones(&[2])));
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| out.backward()));
    let _ = std::panic::take_hook();
    if let Err(e) = caught {
        let msg = e.downcast_ref::<String>().map(String::as_str).unwrap_or("");
        println!("\nbackward after an in-place change panics:\n  {msg}");
    }
}
