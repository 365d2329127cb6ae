//! `exp` for f32 written as straight-line arithmetic, so that the loops of GELU's backward
//! and of softmax vectorise; the standard library calls a scalar libm routine per element.
//!
//! NOTE [ Fast f32 exp ]
//! In W5 (a tiny GPT) the exact GELU's `erf` and `exp` and the softmax's `exp` took a fifth
//! of the time outside the matrix products, one libm call per element (the f32 `erf` is
//! `erf_f32` in `dtype.rs`, a rational fit). `exp` is rebuilt here from the textbook
//! formula, branch-free:
//!
//! - `exp(x) = 2^n · e^r` with `n = round(x / ln 2)` and `r = x - n ln 2` (ln 2 split in a
//!   short high part and a low correction, Cody and Waite, so `r` is exact), `|r| ≤ ln 2 / 2`;
//!   `e^r` is its Taylor polynomial to degree 7 (truncation error below 2^-27 relative) and
//!   `2^n` is built in the exponent bits. About 1 ulp; the result is clamped to the f32
//!   range (underflow gives the smallest normal, about 1e-38, instead of a subnormal).
//!
//! f64 keeps libm: gradient checks and the f64 parity tests want full precision.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, with LN2_HI exact in 11 bits so that `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2^23: adding it rounds a small float to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for f32, about 1 ulp (see NOTE [ Fast f32 exp ]).
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
}
