//! Matrix-multiply throughput through the Tensor API (f32):
//! a 1024³ product, and forward + backward of a 512×784 @ 784×1024 layer.
//!
//!     cargo bench --bench matmul
//!
//! Prints one JSON line per measurement (median of the timed repetitions).

use std::time::Instant;
use torchlet::{Tensor, manual_seed};

/// Median seconds of `reps` runs of `f` after `warmup` untimed runs.
fn median_secs(warmup: usize, reps: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[reps / 2], times[0], times[reps - 1])
}

fn report(name: &str, flops: f64, (median, best, worst): (f64, f64, f64)) {
    println!(
        "{{\"peer\":\"torchlet\",\"bench\":\"{name}\",\"gflops\":{:.1},\"gflops_best\":{:.1},\"gflops_worst\":{:.1},\"median_ms\":{:.3},\"threads\":\"{}\"}}",
        flops / median / 1e9,
        flops / best / 1e9,
        flops / worst / 1e9,
        median * 1e3,
        std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "default".into()),
    );
}

fn main() {
    manual_seed(0);
    let n = 1024;
    let a = Tensor::randn(&[n, n]);
    let b = Tensor::randn(&[n, n]);
    let flops = 2.0 * (n * n * n) as f64;
    report(
        "matmul_1024",
        flops,
        median_secs(3, 21, || {
            std::hint::black_box(a.matmul(&b));
        }),
    );

    // The same product through ndarray's general_mat_mul (matrixmultiply, one thread), which
    // torchlet used before its own kernel (NOTE [ GEMM ] in core/src/ops/gemm.rs).
    let (a2, b2) = (
        a.to_array::<f32>()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap(),
        b.to_array::<f32>()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap(),
    );
    let mut c2 = ndarray::Array2::<f32>::zeros((n, n));
    report(
        "ndarray_general_mat_mul_1024",
        flops,
        median_secs(3, 21, || {
            ndarray::linalg::general_mat_mul(1.0, &a2, &b2, 0.0, &mut c2);
        }),
    );

    // A Linear layer's three products: y = x @ wᵀ, dx = dy @ w, dw = dyᵀ @ x.
    let (batch, inp, out) = (512, 784, 1024);
    let x = Tensor::randn(&[batch, inp]).requires_grad_(true);
    let w = Tensor::randn(&[out, inp]).requires_grad_(true);
    let flops = 3.0 * 2.0 * (batch * inp * out) as f64;
    report(
        "linear_512x784x1024_fwd_bwd",
        flops,
        median_secs(3, 21, || {
            let y = x.matmul(&w.t());
            y.backward_with(&Tensor::ones(&[batch, out]));
            x.zero_grad();
            w.zero_grad();
        }),
    );
}
