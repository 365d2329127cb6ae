//! The global random generator behind `Tensor::rand`, `randn`, `randint`, weight
//! initialisation and dropout, seeded with [`manual_seed`] as in PyTorch.
//!
//! Unlike PyTorch, the stream of numbers for a seed is torchlet's own ([`Generator`],
//! xoshiro256++), so the same seed gives the same values in every torchlet run, on every
//! platform, not the values PyTorch would draw.

use crate::dtype::Element;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::{Mutex, PoisonError};

/// torchlet's random generator: xoshiro256++ (Blackman and Vigna), seeded through
/// SplitMix64. It implements `rand`'s `RngCore` and `SeedableRng`, so `rand::Rng`'s
/// methods (`random`, `random_range`, …) and `SliceRandom::shuffle` work on it.
///
/// torchlet carries its own rather than `rand`'s `StdRng` (ChaCha12) because a training
/// stack needs speed and a stream fixed for good more than cryptographic strength, and
/// because `StdRng` (ChaCha, ppv-lite86, zerocopy) was about a sixth of the dependencies'
/// build time.
#[derive(Clone, Debug)]
pub struct Generator {
    s: [u64; 4],
}

/// One step of SplitMix64, which spreads a 64-bit seed over the generator's state.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RngCore for Generator {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl SeedableRng for Generator {
    type Seed = [u8; 32];

    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (w, bytes) in s.iter_mut().zip(seed.chunks_exact(8)) {
            *w = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        if s == [0; 4] {
            // The all-zero state is a fixed point; any other state will do.
            return Self::seed_from_u64(0);
        }
        Generator { s }
    }

    fn seed_from_u64(seed: u64) -> Self {
        let mut state = seed;
        Generator {
            s: std::array::from_fn(|_| splitmix64(&mut state)),
        }
    }
}

/// A seed that differs from run to run, for loaders built without `.seed(…)` (std's
/// per-process random hash keys, so no OS random source is linked in).
pub(crate) fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// PyTorch's default seed, so that a program that never seeds is still repeatable.
const DEFAULT_SEED: u64 = 67_280_421_310_721;

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

/// Seeds the global generator: every later draw is a function of `seed`.
pub fn manual_seed(seed: u64) {
    *GENERATOR.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Generator::seed_from_u64(seed));
}

/// A new generator seeded from the global one: for components (a sampler, a dropout layer)
/// that need a stream of their own.
pub fn fork_rng() -> Generator {
    with_rng(|r| Generator::seed_from_u64(r.random()))
}

/// Runs `f` with the global generator.
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    let mut guard = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    let rng = guard.get_or_insert_with(|| Generator::seed_from_u64(DEFAULT_SEED));
    f(rng)
}

/// `n` values uniform in `[0, 1)`.
pub(crate) fn uniform_vec<T: Element>(rng: &mut Generator, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.random::<f64>())).collect()
}

/// `n` standard normal values (Box–Muller: two uniforms give two normals).
pub(crate) fn normal_vec<T: Element>(rng: &mut Generator, n: usize) -> Vec<T> {
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
pub(crate) fn int_vec(rng: &mut Generator, low: i64, high: i64, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(low..high)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn generator_is_xoshiro256_plus_plus_seeded_by_splitmix64() {
        // The first outputs for seed 0, from an independent implementation of the two
        // published algorithms: the stream for a seed must never change.
        let mut g = Generator::seed_from_u64(0);
        let first: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x5317_5d61_490b_23df,
                0x61da_6f3d_c380_d507,
                0x5c0f_df91_ec9a_7bfc
            ]
        );
        // The all-zero seed would be a fixed point; it is replaced.
        let mut z = Generator::from_seed([0; 32]);
        assert_ne!(z.next_u64(), z.next_u64());
    }

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
        let mut rng = Generator::seed_from_u64(1);
        let z: Vec<f64> = normal_vec(&mut rng, 100_000);
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let u: Vec<f32> = uniform_vec(&mut rng, 10_000);
        assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
    }
}
