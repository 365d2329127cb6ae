//! The cache of freed tensor buffers (`torchlet::memory`, NOTE [ Buffer cache ]) through the
//! public API: a training step's freed activations and gradients are kept, and the controls
//! do what they say. (The steady state and the sweeps are tested on a private cache in
//! `memory.rs`.)
//!
//! One test function, so that no other test in this binary allocates while it reads the
//! cache's byte count.

use torchlet::{Tensor, memory};

/// One step of a two-layer MLP on a [256, 512] batch: every activation and gradient is a
/// 128–512 KiB buffer, inside the cached range.
fn step(x: &Tensor, w1: &Tensor, w2: &Tensor) {
    let h = x.matmul(w1).relu();
    let y = h.matmul(w2).tanh();
    (&y * &y).sum().backward();
    for w in [w1, w2] {
        let g = w.grad().expect("a weight's gradient after backward");
        torchlet::autograd::no_grad(|| {
            w.sub_(&g.mul_scalar(1e-3));
        });
        w.set_grad(None);
    }
}

#[test]
fn a_step_fills_the_cache_and_the_controls_do_what_they_say() {
    torchlet::manual_seed(0);
    let x = Tensor::randn(&[256, 512]);
    let w1 = Tensor::randn(&[512, 256])
        .mul_scalar(0.05)
        .requires_grad_(true);
    let w2 = Tensor::randn(&[256, 512])
        .mul_scalar(0.05)
        .requires_grad_(true);

    memory::empty_cache();
    assert_eq!(memory::cached_bytes(), 0);
    for _ in 0..3 {
        step(&x, &w1, &w2);
    }
    let warm = memory::cached_bytes();
    assert!(
        warm >= 512 * 1024,
        "after three steps the freed activations are cached, got {warm} bytes"
    );
    memory::empty_cache();
    assert_eq!(memory::cached_bytes(), 0);

    let limit = memory::cache_limit();
    memory::set_cache_limit(0);
    step(&x, &w1, &w2);
    assert_eq!(
        memory::cached_bytes(),
        0,
        "a cache limit of 0 turns the cache off"
    );
    memory::set_cache_limit(limit);
    assert_eq!(memory::cache_limit(), limit);

    // Too small (< 64 KiB) and too big (> 4 MiB) buffers are not kept.
    drop(Tensor::zeros(&[1024]));
    drop(Tensor::zeros(&[2048, 1024]));
    assert_eq!(memory::cached_bytes(), 0);
    // A buffer still shared (a view of it lives) is not taken when one handle goes.
    let t = Tensor::zeros(&[256, 256]);
    let view = t.narrow(0, 0, 8);
    drop(t);
    assert_eq!(memory::cached_bytes(), 0);
    drop(view);
    assert_eq!(memory::cached_bytes(), 256 * 256 * 4);
}
