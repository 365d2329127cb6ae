//! The global random generator behind `Tensor::rand`, `randn`, `randint`, weight
//! initialisation and dropout, seeded with [`manual_seed`] as in PyTorch.
//!
//! Unlike PyTorch, the stream of numbers for a seed is torchlet's own (ChaCha12 through
//! `rand`'s `StdRng`), so the same seed gives the same values in every torchlet run, not
//! the values PyTorch would draw.

use crate::dtype::Element;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Mutex, PoisonError};

/// PyTorch's default seed, so that a program that never seeds is still repeatable.
const DEFAULT_SEED: u64 = 67_280_421_310_721;

static GENERATOR: Mutex<Option<StdRng>> = Mutex::new(None);

/// Seeds the global generator: every later draw is a function of `seed`.
pub fn manual_seed(seed: u64) {
    *GENERATOR.lock().unwrap_or_else(PoisonError::into_inner) = Some(StdRng::seed_from_u64(seed));
}

/// A new generator seeded from the global one: for components (a sampler, a dropout layer)
/// that need a stream of their own.
pub fn fork_rng() -> StdRng {
    with_rng(|r| StdRng::seed_from_u64(r.random()))
}

/// Runs `f` with the global generator.
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut StdRng) -> R) -> R {
    let mut guard = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    let rng = guard.get_or_insert_with(|| StdRng::seed_from_u64(DEFAULT_SEED));
    f(rng)
}

/// `n` values uniform in `[0, 1)`.
pub(crate) fn uniform_vec<T: Element>(rng: &mut StdRng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.random::<f64>())).collect()
}

/// `n` standard normal values (Box–Muller: two uniforms give two normals).
pub(crate) fn normal_vec<T: Element>(rng: &mut StdRng, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push(T::from_f64(r * theta.cos()));
        out.push(T::from_f64(r * theta.sin()));
    }
    out.truncate(n);
    out
}

/// `n` integers uniform in `low..high`.
pub(crate) fn int_vec(rng: &mut StdRng, low: i64, high: i64, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(low..high)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn manual_seed_repeats_the_stream() {
        manual_seed(7);
        let a = Tensor::randn(&[100]).to_vec::<f32>();
        manual_seed(7);
        let b = Tensor::randn(&[100]).to_vec::<f32>();
        assert_eq!(a, b);
    }

    #[test]
    fn randn_has_unit_variance_and_rand_stays_in_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let z: Vec<f64> = normal_vec(&mut rng, 100_000);
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let u: Vec<f32> = uniform_vec(&mut rng, 10_000);
        assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
    }
}
