//! Random numbers: the global generator behind `Tensor::rand`, `randn`, `randint`,
//! `uniform_`, `normal_`, weight initialisation and dropout, and the [`Generator`] that
//! data loaders shuffle with.
//!
//! The global generator is PyTorch's CPU generator, reproduced: [`manual_seed`] sets up the
//! same mt19937 state as `torch.manual_seed`, and each operation makes the same draws and
//! the same conversions as PyTorch's CPU kernels, so a program that seeds, then builds its
//! layers in PyTorch's order, starts from PyTorch's weights, bit for bit in f32 and f64
//! (`tests/rng_parity.rs` checks it against values PyTorch computed). What is reproduced:
//!
//! - `rand`/`uniform_(a, b)`: f32 takes the low 24 bits of one 32-bit word, f64 the low 53
//!   bits of two; `u · (b − a) + a`, fused, in the tensor's precision.
//! - `randn`/`normal_`: a contiguous tensor of 16 or more elements draws one uniform per
//!   element, then turns each block of 16 into 8 Box–Muller pairs (a ragged tail redraws
//!   the last 16); smaller tensors take f64 Box–Muller pairs one value at a time, and the
//!   unused half of the last pair waits in the generator for the next such draw. f32 uses
//!   the Cephes polynomials of PyTorch's AVX2 kernel, so the values are x86-64 PyTorch's.
//! - `randint(low, high)`: `low + word % (high − low)`, with one 32-bit word per value
//!   below a range of 2^28 and two above.
//! - dropout: one f64 uniform per element, kept when below `1 − p` (PyTorch's
//!   `bernoulli_(1 − p)` as it runs without MKL or on AMD processors; with MKL on Intel
//!   processors PyTorch takes its mask from MKL's own generator instead).
//!
//! Data loaders do not draw from it: they shuffle with a [`Generator`] of their own, seeded
//! per epoch (see `data::epoch_generator`); their orders are torchlet's, not PyTorch's
//! `randperm`.

mod engine;

use crate::dtype::DType;
use engine::CpuGenerator;
pub use engine::Mt19937;
use rand::{RngCore, SeedableRng};
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

/// The seed of a program that never seeds. PyTorch picks a random one; torchlet a fixed
/// one, so that such a program is still repeatable.
const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// The global generator, with an identity for its current state (see [`InitDraws`]).
struct Global {
    generator: CpuGenerator,
    /// Changes at every draw to a value never used before; a restored state gets back the
    /// identity it was saved with.
    id: u64,
    next_id: u64,
}

impl Global {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

fn with_global<R>(f: impl FnOnce(&mut Global) -> R) -> R {
    let mut guard = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
    let g = guard.get_or_insert_with(|| Global {
        generator: CpuGenerator::new(DEFAULT_SEED),
        id: 1,
        next_id: 1,
    });
    f(g)
}

/// Runs `f` with the global generator, as one draw.
fn draw<R>(f: impl FnOnce(&mut CpuGenerator) -> R) -> R {
    with_global(|g| {
        g.id = g.fresh_id();
        f(&mut g.generator)
    })
}

/// Seeds the global generator as `torch.manual_seed(seed)` seeds PyTorch's CPU generator:
/// every later draw is a function of `seed`, and the same as PyTorch's.
pub fn manual_seed(seed: u64) {
    with_global(|g| {
        g.generator = CpuGenerator::new(seed);
        g.id = g.fresh_id();
    });
}

/// The seed the global generator was last seeded with (`torch.initial_seed()`).
pub fn initial_seed() -> u64 {
    with_global(|g| g.generator.engine.seed())
}

/// A saved state of the global generator (`torch.get_rng_state()`), for
/// [`set_rng_state`].
#[derive(Clone, Debug)]
pub struct RngState {
    generator: CpuGenerator,
    id: u64,
}

/// The global generator's state, to restore later with [`set_rng_state`].
pub fn get_rng_state() -> RngState {
    with_global(|g| RngState {
        generator: g.generator.clone(),
        id: g.id,
    })
}

/// Puts the global generator back in a state saved by [`get_rng_state`]: the draws that
/// follow repeat those that followed the save.
pub fn set_rng_state(state: &RngState) {
    with_global(|g| {
        g.generator = state.generator.clone();
        g.id = state.id;
    });
}

/// A new [`Generator`] seeded from the global one (one 64-bit draw): for components (a
/// sampler, a worker) that need a stream of their own.
pub fn fork_rng() -> Generator {
    draw(|g| Generator::seed_from_u64(g.engine.next_u64()))
}

/// Where a layer's initial draws began and where they ended, so that a builder method that
/// changes the layer's parameters (`with_bias(false)`, `with_dim_feedforward(…)`, …) can
/// draw them as PyTorch's constructor, which gets every argument at once, draws them.
#[derive(Clone, Debug, Default)]
pub(crate) struct InitDraws {
    start: Option<Box<RngState>>,
    end: u64,
}

impl InitDraws {
    /// Runs `init` (a layer's draws, in PyTorch's order) and records where it began and
    /// ended.
    pub(crate) fn record<R>(init: impl FnOnce() -> R) -> (R, InitDraws) {
        let start = Box::new(get_rng_state());
        let out = init();
        let end = with_global(|g| g.id);
        (
            out,
            InitDraws {
                start: Some(start),
                end,
            },
        )
    }

    /// Runs `init` again in place of the recorded draws. When nothing has drawn from the
    /// global generator since they ended, the generator first goes back to where they began,
    /// so that the layer gets the values its constructor draws given the final arguments,
    /// and later layers the values that follow them, as in PyTorch. Otherwise (something
    /// drew in between) it draws from where the generator stands.
    pub(crate) fn redo<R>(&mut self, init: impl FnOnce() -> R) -> R {
        self.rewind();
        let (out, draws) = InitDraws::record(init);
        *self = draws;
        out
    }

    /// As [`redo`](Self::redo) when nothing has drawn since the recorded draws; otherwise
    /// `None`, drawing nothing (for a change that needs no new values, such as dropping a
    /// bias, and that only redraws to follow PyTorch's order).
    pub(crate) fn redo_if_last<R>(&mut self, init: impl FnOnce() -> R) -> Option<R> {
        if !self.rewind() {
            return None;
        }
        let (out, draws) = InitDraws::record(init);
        *self = draws;
        Some(out)
    }

    /// Puts the generator back where the recorded draws began if nothing has drawn since
    /// they ended; whether it did.
    fn rewind(&self) -> bool {
        let Some(start) = &self.start else {
            return false;
        };
        with_global(|g| {
            let last = g.id == self.end;
            if last {
                g.generator = start.generator.clone();
                g.id = start.id;
            }
            last
        })
    }
}

/// `n` f32 values from `U(from, to)` as PyTorch's `uniform_` draws them for a float tensor.
pub(crate) fn uniform_f32(n: usize, from: f64, to: f64) -> Vec<f32> {
    let (from, to) = (from as f32, to as f32);
    draw(|g| {
        (0..n)
            .map(|_| {
                let v = g.uniform_f32(from, to);
                // PyTorch's guard against a value rounded up to the excluded bound.
                if v == to { from } else { v }
            })
            .collect()
    })
}

/// `n` f64 values from `U(from, to)` as PyTorch's `uniform_` draws them for a double tensor.
pub(crate) fn uniform_f64(n: usize, from: f64, to: f64) -> Vec<f64> {
    draw(|g| {
        (0..n)
            .map(|_| {
                let v = g.uniform_f64(from, to);
                if v == to { from } else { v }
            })
            .collect()
    })
}

/// `n` values from `N(mean, std²)` as PyTorch's `normal_` draws them for a tensor of
/// `dtype` (F32 or F64, values returned as f64), contiguous or not.
pub(crate) fn normal_values(
    n: usize,
    mean: f64,
    std: f64,
    dtype: DType,
    contiguous: bool,
) -> Vec<f64> {
    draw(|g| {
        if n < 16 || !contiguous {
            let values = (0..n).map(|_| g.normal_scalar(mean, std));
            return match dtype {
                DType::F32 => values.map(|v| f64::from(v as f32)).collect(),
                _ => values.collect(),
            };
        }
        match dtype {
            DType::F32 => {
                let mut out = vec![0f32; n];
                g.normal_fill_f32(&mut out, mean as f32, std as f32);
                out.into_iter().map(f64::from).collect()
            }
            _ => {
                let mut out = vec![0f64; n];
                g.normal_fill_f64(&mut out, mean, std);
                out
            }
        }
    })
}

/// `n` f32 values from `N(mean, std²)` as `torch.randn` draws them (a new tensor is
/// contiguous).
pub(crate) fn normal_f32(n: usize, mean: f64, std: f64) -> Vec<f32> {
    normal_values(n, mean, std, DType::F32, true)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// `n` integers uniform in `low..high`, as `torch.randint` draws them.
pub(crate) fn randint(low: i64, high: i64, n: usize) -> Vec<i64> {
    let range = (high as u64).wrapping_sub(low as u64);
    draw(|g| (0..n).map(|_| g.random_from_to(range, low)).collect())
}

/// `n` Bernoulli draws of probability `p`, as PyTorch's `bernoulli_(p)` makes them (one f64
/// uniform each, true below `p`).
pub(crate) fn bernoulli(n: usize, p: f64) -> Vec<bool> {
    draw(|g| (0..n).map(|_| g.uniform_f64(0.0, 1.0) < p).collect())
}

/// The keep-mask of dropout with probability `p` over `shape`, ones and zeros of `dtype`:
/// PyTorch's `bernoulli_(1 − p)`.
pub(crate) fn dropout_mask(shape: &[usize], p: f64, dtype: DType) -> crate::tensor::Tensor {
    let n = shape.iter().product();
    let keep: Vec<f32> = bernoulli(n, 1.0 - p)
        .into_iter()
        .map(|k| if k { 1.0 } else { 0.0 })
        .collect();
    crate::tensor::Tensor::from_vec(keep, shape).to_dtype(dtype)
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
    fn mt19937_gives_the_published_ten_thousandth_word() {
        // C++'s [rand.predef]: the 10000th output of a default-constructed std::mt19937
        // (seed 5489) is 4123659995.
        let mut mt = Mt19937::new(5489);
        let word = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(word, Some(4_123_659_995));
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
        for z in [
            normal_values(100_000, 0.0, 1.0, DType::F32, true),
            normal_values(100_000, 0.0, 1.0, DType::F64, true),
            normal_values(20_000, 0.0, 1.0, DType::F64, false),
        ] {
            let mean = z.iter().sum::<f64>() / z.len() as f64;
            let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
            assert!(mean.abs() < 0.03, "mean {mean}");
            assert!((var - 1.0).abs() < 0.03, "variance {var}");
        }
        let u = uniform_f32(10_000, -0.5, 0.25);
        assert!(u.iter().all(|v| (-0.5..0.25).contains(v)));
    }
}
