//! `exp` and `erf` for f32 written as straight-line arithmetic, so that the loops of GELU and
//! softmax vectorise; the standard library calls a scalar libm routine per element.
//!
//! NOTE [ Fast f32 exp and erf ]
//! In W5 (a tiny GPT) the exact GELU's `erf` and `exp` and the softmax's `exp` took a fifth
//! of the time outside the matrix products, one libm call per element. Both are rebuilt
//! here from textbook formulas, branch-free:
//!
//! - `exp(x) = 2^n · e^r` with `n = round(x / ln 2)` and `r = x - n ln 2` (ln 2 split in a
//!   short high part and a low correction, Cody and Waite, so `r` is exact), `|r| ≤ ln 2 / 2`;
//!   `e^r` is its Taylor polynomial to degree 7 (truncation error below 2^-27 relative) and
//!   `2^n` is built in the exponent bits. About 1 ulp; the result is clamped to the f32
//!   range (underflow gives the smallest normal, about 1e-38, instead of a subnormal).
//! - `erf(x) = 1 - t (a1 + t (a2 + … + t a5)) e^(-x²)`, `t = 1 / (1 + p |x|)`, odd in x:
//!   formula 7.1.26 of Abramowitz and Stegun's Handbook of Mathematical Functions (error
//!   below 1.5e-7), and its Maclaurin series below |x| = 0.6, where the formula's
//!   `1 - …` cancels. Absolute error below 2.5e-7 in f32 arithmetic, a few spacings of
//!   f32 values near 1; GELU adds erf to 1, so that absolute error is what matters.
//!
//! f64 keeps libm: gradient checks and the f64 parity tests want full precision.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, with LN2_HI exact in 11 bits so that `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2^23: adding it rounds a small float to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for f32, about 1 ulp (see NOTE [ Fast f32 exp and erf ]).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // e^-87.3 is the smallest normal f32, e^88.7 the largest finite one.
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 7, by Horner's rule.
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The low bits of `shifted` hold n (in two's complement around 0x4B40_0000); 2^n is
    // n + 127 in the exponent field. n ≤ 128 after the clamp: 2^128 is split in two halves
    // of 2^64 so that the largest inputs do not overflow the exponent.
    let n_bits = shifted.to_bits().wrapping_sub(0x4B40_0000);
    let half = (n_bits as i32) >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits((((n_bits as i32) - half + 127) as u32) << 23);
    p * scale_a * scale_b
}

/// `erf(x)` for f32, absolute error below 2.5e-7 (see NOTE [ Fast f32 exp and erf ]).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 1.0 - poly * exp_f32(-a * a);
    // Near 0 that difference cancels to a few ulp of 1; the Maclaurin series
    // erf x = 2/√π · x · (1 - z/3 + z²/10 - z³/42 + …), z = x², term k being
    // (-z)^k / (k! (2k+1)), is exact there: to k = 8, the next term is below 1e-11 for
    // |x| < 0.6. `s` is the series after its leading 1, divided by -z, by Horner's rule.
    let z = a * a;
    let mut s = -1.0 / 685_440.0;
    s = s * z + 1.0 / 75_600.0;
    s = s * z - 1.0 / 9_360.0;
    s = s * z + 1.0 / 1_320.0;
    s = s * z - 1.0 / 216.0;
    s = s * z + 1.0 / 42.0;
    s = s * z - 1.0 / 10.0;
    s = s * z + 1.0 / 3.0;
    let series = std::f32::consts::FRAC_2_SQRT_PI * a * (1.0 - s * z);
    let y = if a < 0.6 { series } else { tail };
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1.3e-38 && exp_f32(-1000.0) >= 0.0);
        assert!(exp_f32(88.7).is_finite() && exp_f32(1000.0).is_finite());
    }

    #[test]
    fn erf_is_within_its_bound_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.001;
        }
        assert!(worst < 2.5e-7, "absolute error {worst}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(10.0), 1.0);
        assert_eq!(erf_f32(-10.0), -1.0);
    }
}
