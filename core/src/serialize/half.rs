//! 16-bit floats in files: bfloat16 and IEEE float16 bits to f32 and back (NOTE [ Half
//! precision in files ] is on [`Precision`]).
//!
//! The conversions are a few lines of bit arithmetic each, written here rather than taken
//! from the `half` crate: torchlet needs four scalar functions, not a numeric type.

/// The element type that floating-point tensors are written in by
/// [`save_file_as`](super::save_file_as) and [`save_as`](super::save_as); integer tensors
/// keep theirs. See NOTE [ Half precision in files ] below.
///
/// # NOTE [ Half precision in files ]
/// torchlet computes in f32 and f64 only. A safetensors file may hold BF16 or F16 tensors
/// (PyTorch checkpoints saved after `model.half()` or `model.bfloat16()`): reading widens them
/// to f32, which is exact. Writing can narrow every floating-point tensor to BF16 or F16
/// ([`save_file_as`](super::save_file_as)) to halve the file, rounding to the nearest
/// representable value with ties to even, as PyTorch's `.to(torch.bfloat16)` and
/// `.to(torch.float16)` do; f64 tensors are narrowed through f32, as PyTorch does too.
/// Integer tensors are always written as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE half precision (`torch.float16`): 10 mantissa bits, largest finite 65504;
    /// larger values become infinite, values below 2^-24 become 0.
    F16,
    /// bfloat16 (`torch.bfloat16`): the range of f32 with 7 mantissa bits.
    BF16,
    /// Single precision (`torch.float32`).
    F32,
    /// Double precision (`torch.float64`).
    F64,
}

/// The f32 value of bfloat16 bits (exact: bfloat16 is the top half of an f32).
pub(super) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `x` rounded to the nearest bfloat16 (ties to even), as bits. NaN stays NaN (quiet).
pub(super) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Adding 0x7FFF, plus 1 when the kept part is odd, carries into the kept half exactly
    // when the dropped half is above one half, or exactly one half with an odd kept part.
    // A carry out of the largest finite value gives infinity, as it should.
    let odd = (bits >> 16) & 1;
    (bits.wrapping_add(0x7FFF + odd) >> 16) as u16
}

/// The f32 value of IEEE float16 bits (exact).
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from((bits >> 10) & 0x1f);
    let man = u32::from(bits & 0x3ff);
    match (exp, man) {
        (0, 0) => f32::from_bits(sign),
        // Subnormal: man · 2^-24, exact in f32.
        (0, _) => {
            let v = man as f32 * f32::from_bits(0x3380_0000);
            if sign != 0 { -v } else { v }
        }
        (0x1f, _) => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        // Rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// `x` rounded to the nearest float16 (ties to even), as bits: overflow gives infinity,
/// tiny values become subnormal or zero. NaN stays NaN (quiet).
pub(super) fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 {
            0x0200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    // The exponent rebiased from 127 to 15.
    let e = exp - 112;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Below 2^-25 (e < -10) even rounding up cannot reach the smallest subnormal.
        if e < -10 {
            return sign;
        }
        // x = m · 2^(exp - 150) with the implicit bit; in units of 2^-24 that is
        // m >> (14 - e), rounded.
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        return sign | round_shift(m, shift) as u16;
    }
    // A carry out of the mantissa moves into the exponent, which is the right result (up
    // to infinity from 65504 and above).
    let kept = ((e as u32) << 10) | (man >> 13);
    sign | round_half_even(kept, man & 0x1fff, 0x1000) as u16
}

/// `m >> shift`, rounded to nearest with ties to even.
fn round_shift(m: u32, shift: u32) -> u32 {
    let kept = m >> shift;
    let dropped = m & ((1 << shift) - 1);
    round_half_even(kept, dropped, 1 << (shift - 1))
}

/// `kept` plus one when the `dropped` part is above `half`, or equal to it and `kept` odd.
fn round_half_even(kept: u32, dropped: u32, half: u32) -> u32 {
    let up = dropped > half || (dropped == half && kept & 1 == 1);
    kept + u32::from(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bfloat16_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let x = bf16_to_f32(bits);
            if x.is_nan() {
                assert!(bf16_to_f32(f32_to_bf16(x)).is_nan());
            } else {
                assert_eq!(f32_to_bf16(x), bits, "{bits:#06x} = {x}");
            }
        }
    }

    #[test]
    fn every_float16_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let x = f16_to_f32(bits);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), bits, "{bits:#06x} = {x}");
            }
        }
    }

    #[test]
    fn float16_values_are_the_ieee_ones() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        // bfloat16 keeps 7 mantissa bits: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
        // (tie: even, 1), 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 (tie: even,
        // 1 + 2^-6), and anything above the halfway point rounds up.
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        // float16 keeps 10: the same pattern one exponent step further down.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // Past 65504 + half a step: infinity. Subnormals round too: 2^-25 is a tie
        // between 0 and the smallest subnormal (even: 0), 3·2^-25 between 1 and 2 units.
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000);
        assert_eq!(f32_to_f16(3.0 * 2f32.powi(-25)), 0x0002);
        assert_eq!(f32_to_f16(-2f32.powi(-26)), 0x8000);
        assert_eq!(f32_to_f16(1e-40), 0x0000);
    }
}
