//! PyTorch's CPU random numbers, reproduced: the mt19937 engine of `torch.manual_seed`, the
//! conversions its distributions apply to the engine's words, and the exact sequence of
//! draws each operation makes (ATen's `CPUGeneratorImpl`, `DistributionsHelper.h`,
//! `TransformationHelper.h` and `cpu/DistributionTemplates.h`).
//!
//! Everything here is plain Rust arithmetic in a fixed order, so it gives the same bits on
//! every platform; the float `normal_` reproduces the AVX2 kernel PyTorch runs on x86-64
//! (also on AVX-512 machines, where `normal_` is not dispatched to AVX-512).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister (Matsumoto and Nishimura, 1998) with PyTorch's seeding:
/// the low 32 bits of the seed through the 2002 `init_genrand` recurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mt19937 {
    state: [u32; N],
    /// Words left before the next twist, counting the one about to be read (1 after seeding).
    left: usize,
    next: usize,
    seed: u64,
}

impl Mt19937 {
    /// The engine `torch.manual_seed(seed)` sets up.
    pub fn new(seed: u64) -> Mt19937 {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 {
            state,
            left: 1,
            next: 0,
            seed,
        }
    }

    /// The seed it was built from (PyTorch's `initial_seed()`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn twist(&mut self) {
        let s = &mut self.state;
        for i in 0..N {
            let y = (s[i] & UPPER_MASK) | (s[(i + 1) % N] & LOWER_MASK);
            let mag = if s[(i + 1) % N] & 1 == 1 { MATRIX_A } else { 0 };
            s[i] = s[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.left = N;
        self.next = 0;
    }

    /// The next 32-bit word (PyTorch's `generator->random()`).
    pub fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Two words, the first in the high half (PyTorch's `generator->random64()`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32();
        let lo = self.next_u32();
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

/// PyTorch's CPU generator: the engine and the second normal of the last Box–Muller pair of
/// the scalar `normal_` path, kept for the next scalar draw.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuGenerator {
    pub engine: Mt19937,
    pub next_double_normal: Option<f64>,
}

impl CpuGenerator {
    pub fn new(seed: u64) -> CpuGenerator {
        CpuGenerator {
            engine: Mt19937::new(seed),
            next_double_normal: None,
        }
    }

    /// `uniform_real_distribution<float>(from, to)`: the low 24 bits of a word over 2^24,
    /// scaled in f32 (`x · (to − from) + from`, fused as GCC compiles it for x86-64).
    pub fn uniform_f32(&mut self, from: f32, to: f32) -> f32 {
        let x = (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0);
        x.mul_add(to - from, from)
    }

    /// `uniform_real_distribution<double>(from, to)`: the low 53 bits of two words over 2^53.
    pub fn uniform_f64(&mut self, from: f64, to: f64) -> f64 {
        let bits = self.engine.next_u64() & ((1u64 << 53) - 1);
        let x = bits as f64 * (1.0 / 9_007_199_254_740_992.0);
        x.mul_add(to - from, from)
    }

    /// `normal_distribution<double>`: Box–Muller on two doubles, the sine half kept for the
    /// next call (the path of tensors with fewer than 16 elements or not contiguous).
    pub fn normal_scalar(&mut self, mean: f64, std: f64) -> f64 {
        if let Some(z) = self.next_double_normal.take() {
            return z.mul_add(std, mean);
        }
        let u1 = self.uniform_f64(0.0, 1.0);
        let u2 = self.uniform_f64(0.0, 1.0);
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        (r * theta.cos()).mul_add(std, mean)
    }

    /// `random_from_to`: `base + word % range`, one word per value below 2^28, two above.
    pub fn random_from_to(&mut self, range: u64, base: i64) -> i64 {
        let v = if range >= 1 << 28 {
            self.engine.next_u64()
        } else {
            u64::from(self.engine.next_u32())
        };
        (v % range) as i64 + base
    }

    /// `normal_` of a contiguous f32 tensor of 16 or more elements: every element gets a
    /// uniform, then each block of 16 becomes 8 Box–Muller pairs (cosines in the first 8,
    /// sines in the last 8); a ragged tail is redrawn as the last 16 elements.
    pub fn normal_fill_f32(&mut self, out: &mut [f32], mean: f32, std: f32) {
        debug_assert!(out.len() >= 16);
        for v in out.iter_mut() {
            *v = self.uniform_f32(0.0, 1.0);
        }
        for block in out.chunks_exact_mut(16) {
            box_muller16_f32(block, mean, std);
        }
        if !out.len().is_multiple_of(16) {
            let n = out.len();
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32(0.0, 1.0);
            }
            box_muller16_f32(tail, mean, std);
        }
    }

    /// As [`normal_fill_f32`](Self::normal_fill_f32) for f64 (scalar `log`, `sin`, `cos`).
    pub fn normal_fill_f64(&mut self, out: &mut [f64], mean: f64, std: f64) {
        debug_assert!(out.len() >= 16);
        for v in out.iter_mut() {
            *v = self.uniform_f64(0.0, 1.0);
        }
        for block in out.chunks_exact_mut(16) {
            box_muller16_f64(block, mean, std);
        }
        if !out.len().is_multiple_of(16) {
            let n = out.len();
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f64(0.0, 1.0);
            }
            box_muller16_f64(tail, mean, std);
        }
    }
}

fn box_muller16_f64(d: &mut [f64], mean: f64, std: f64) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        d[j] = (radius * theta.cos()).mul_add(std, mean);
        d[j + 8] = (radius * theta.sin()).mul_add(std, mean);
    }
}

fn box_muller16_f32(d: &mut [f32], mean: f32, std: f32) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * cephes_logf(u1)).sqrt();
        let (sin, cos) = cephes_sincosf(two_pi * u2);
        d[j] = (radius * cos).mul_add(std, mean);
        d[j + 8] = (radius * sin).mul_add(std, mean);
    }
}

/// A float constant of avx_mathfun.h: written there as a double literal, rounded to f32.
macro_rules! c {
    ($v:expr) => {
        ($v as f64) as f32
    };
}

/// One lane of `log256_ps` (avx_mathfun.h, after Cephes `logf`) for `x` in `(0, 1]`, with
/// the multiply-adds GCC fuses when it builds PyTorch's AVX2 kernels.
fn cephes_logf(x: f32) -> f32 {
    const P: [f32; 9] = [
        c!(7.0376836292E-2),
        c!(-1.1514610310E-1),
        c!(1.1676998740E-1),
        c!(-1.2420140846E-1),
        c!(1.4249322787E-1),
        c!(-1.6668057665E-1),
        c!(2.0000714765E-1),
        c!(-2.4999993993E-1),
        c!(3.3333331174E-1),
    ];
    let x = x.max(f32::from_bits(0x0080_0000));
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let small = x < c!(std::f64::consts::FRAC_1_SQRT_2);
    let tmp = if small { x } else { 0.0 };
    x -= 1.0;
    if small {
        e -= 1.0;
    }
    x += tmp;
    let z = x * x;
    let mut y = P[0];
    for p in &P[1..] {
        y = y.mul_add(x, *p);
    }
    y = (y * x).mul_add(z, e * c!(-2.12194440e-4));
    y = z.mul_add(-0.5, y);
    x += y;
    e.mul_add(c!(0.693359375), x)
}

/// One lane of `sincos256_ps` (avx_mathfun.h, after Cephes `sinf`/`cosf`): `(sin, cos)`,
/// fused as [`cephes_logf`] is.
fn cephes_sincosf(x: f32) -> (f32, f32) {
    let sign_sin = x.is_sign_negative();
    let x = x.abs();
    let j = ((x * c!(1.27323954473516)) as i32 + 1) & !1;
    let y = j as f32;
    let swap_sin = j & 4 != 0;
    let cos_poly_first = j & 2 == 0;
    let sign_cos = (j - 2) & 4 == 0;
    let x = y.mul_add(c!(-0.78515625), x);
    let x = y.mul_add(c!(-2.418_756_484_985_351_6e-4), x);
    let x = y.mul_add(c!(-3.774_894_977_445_941e-8), x);
    let z = x * x;
    let mut c = c!(2.443315711809948E-005);
    c = c.mul_add(z, c!(-1.388731625493765E-003));
    c = c.mul_add(z, c!(4.166664568298827E-002));
    c = (c * z).mul_add(z, -(z * 0.5));
    c += 1.0;
    let mut s = c!(-1.9515295891E-4);
    s = s.mul_add(z, c!(8.3321608736E-3));
    s = s.mul_add(z, c!(-1.6666654611E-1));
    s = (s * z).mul_add(x, x);
    let (sin, cos) = if cos_poly_first { (s, c) } else { (c, s) };
    let sin = if sign_sin != swap_sin { -sin } else { sin };
    let cos = if sign_cos { -cos } else { cos };
    (sin, cos)
}
