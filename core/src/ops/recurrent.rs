//! One direction of an LSTM layer over a whole sequence as a single op, with its
//! closed-form backward (backpropagation through time).
//!
//! NOTE [ Fused LSTM sequence ]
//! Built from primitives, a step costs about twenty recorded ops, and each step's slice of
//! the input projection (`select`) sends back a gradient the size of the whole sequence,
//! so the backward pass grows with the square of the length. Here the recurrence is one
//! node: the forward keeps the gate activations and cell states of every step, and the
//! backward walks the steps in reverse with one `[N, 4H] × [4H, H]` product per step for the
//! state, then one `[4H, L·N] × [L·N, H]` product for `W_hh`. The input projection stays
//! outside (one product over all steps, differentiated by `linear`).

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage};
use crate::ops::gemm::{Epilogue, gemm};
use crate::ops::kernel::from_vec;
use crate::tensor::Tensor;
use ndarray::{ArcArray, ArrayView2, ArrayViewMut2, IxDyn};
use std::borrow::Cow;

/// The sizes of one run: `steps` time steps of `batch` rows of `hidden` features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    pub(crate) hidden: usize,
    pub(crate) reverse: bool,
}

impl Dims {
    /// Time steps in the order the recurrence visits them.
    pub(crate) fn order(&self) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new((0..self.steps).rev())
        } else {
            Box::new(0..self.steps)
        }
    }

    /// `[N, H]` elements.
    pub(crate) fn nh(&self) -> usize {
        self.batch * self.hidden
    }
}

pub(crate) fn contiguous<T: Float>(a: &ArcArray<T, IxDyn>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

pub(crate) fn view2<T>(data: &[T], rows: usize, cols: usize) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("lstm: {rows}x{cols} block: {e}"))
}

pub(crate) fn view2_mut<T>(data: &mut [T], rows: usize, cols: usize) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("lstm: {rows}x{cols} block: {e}"))
}

pub(crate) fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// `tanh(x)` through `exp` rather than libm's `tanh` (which goes through `expm1` and took a
/// third of the LSTM's time, measured with `perf record` on `benches/lstm.rs`): an odd
/// Taylor polynomial below 1/16, where `1 − e^{−2|x|}` would cancel, and
/// `(1 − e^{−2|x|}) / (1 + e^{−2|x|})` above, which cannot overflow. Both stay within 8 ulps
/// of libm's value (tested).
pub(crate) fn tanh<T: Float>(x: T) -> T {
    let a = x.abs();
    if a < T::lit(0.0625) {
        let x2 = x * x;
        // x − x³/3 + 2x⁵/15 − 17x⁷/315 + 62x⁹/2835 − 1382x¹¹/155925 + 21844x¹³/6081075:
        // the next term is below 1e-19·|x|.
        let p = T::lit(21844.0 / 6081075.0);
        let p = p * x2 - T::lit(1382.0 / 155925.0);
        let p = p * x2 + T::lit(62.0 / 2835.0);
        let p = p * x2 - T::lit(17.0 / 315.0);
        let p = p * x2 + T::lit(2.0 / 15.0);
        let p = p * x2 - T::lit(1.0 / 3.0);
        return x + x * x2 * p;
    }
    let e = (T::lit(-2.0) * a).exp();
    let t = (T::one() - e) / (T::one() + e);
    if x < T::zero() { -t } else { t }
}

/// What the forward keeps: per step the activated gates `[N, 4H]` (`i, f, g, o` blocks per
/// row), the new cell state and its tanh `[N, H]`, and the packed output.
struct Forward<T> {
    gates: Vec<T>,
    cells: Vec<T>,
    tanh_cells: Vec<T>,
    packed: Vec<T>,
}

/// The recurrence: `gx` `[L, N, 4H]` (input projection with both biases), `h0`, `c0`
/// `[N, H]`, `w_hh` `[4H, H]`. The packed output is `[L + 1, N, H]`: the hidden state of
/// every step at its time position, then the final cell state.
fn forward<T: Float>(gx: &[T], h0: &[T], c0: &[T], w_hh: &[T], d: Dims) -> Forward<T> {
    let (n, h, nh) = (d.batch, d.hidden, d.nh());
    let w_t = view2(w_hh, 4 * h, h).reversed_axes();
    let mut gates = vec![T::zero(); d.steps * 4 * nh];
    let mut cells = vec![T::zero(); d.steps * nh];
    let mut tanh_cells = vec![T::zero(); d.steps * nh];
    let mut packed = vec![T::zero(); (d.steps + 1) * nh];
    let (mut h_prev, mut c_prev) = (h0.to_vec(), c0.to_vec());
    for t in d.order() {
        let a = &mut gates[t * 4 * nh..][..4 * nh];
        gemm(
            &view2(&h_prev, n, h),
            &w_t,
            &mut view2_mut(a, n, 4 * h),
            Epilogue::write(),
        );
        let x = &gx[t * 4 * nh..][..4 * nh];
        let c = &mut cells[t * nh..][..nh];
        let tc = &mut tanh_cells[t * nh..][..nh];
        let out = &mut packed[t * nh..][..nh];
        for r in 0..n {
            let (row, xr) = (&mut a[r * 4 * h..][..4 * h], &x[r * 4 * h..][..4 * h]);
            row.iter_mut().zip(xr).for_each(|(v, &x)| *v += x);
            for j in 0..h {
                let i = sigmoid(row[j]);
                let f = sigmoid(row[h + j]);
                let g = tanh(row[2 * h + j]);
                let o = sigmoid(row[3 * h + j]);
                let cell = f * c_prev[r * h + j] + i * g;
                (row[j], row[h + j], row[2 * h + j], row[3 * h + j]) = (i, f, g, o);
                c[r * h + j] = cell;
                tc[r * h + j] = tanh(cell);
                out[r * h + j] = o * tc[r * h + j];
            }
        }
        h_prev.copy_from_slice(out);
        c_prev.copy_from_slice(c);
    }
    packed[d.steps * nh..].copy_from_slice(&c_prev);
    Forward {
        gates,
        cells,
        tanh_cells,
        packed,
    }
}

/// The saved values of one run, for backward.
struct Saved4<T> {
    gates: Vec<T>,
    cells: Vec<T>,
    tanh_cells: Vec<T>,
    packed: Vec<T>,
    h0: Vec<T>,
    c0: Vec<T>,
    w_hh: Vec<T>,
}

/// Gradients of `(gx, h0, c0, w_hh)` from the gradient `gp` of the packed output.
fn backward<T: Float>(s: &Saved4<T>, gp: &[T], d: Dims) -> [Vec<T>; 4] {
    let (n, h, nh) = (d.batch, d.hidden, d.nh());
    let w = view2(&s.w_hh, 4 * h, h);
    let mut g_gx = vec![T::zero(); d.steps * 4 * nh];
    // The state each step started from, at that step's time position, for one product
    // `dW_hh = Σ_t da_tᵀ · h_prev_t` over all steps at the end.
    let mut h_prev_all = vec![T::zero(); d.steps * nh];
    let mut dh = vec![T::zero(); nh];
    let mut dc = gp[d.steps * nh..].to_vec();
    let order: Vec<usize> = d.order().collect();
    for (k, &t) in order.iter().enumerate().rev() {
        // The state this step started from: the previous visited step's, or h0 / c0.
        let (h_prev, c_prev) = match k.checked_sub(1).map(|p| order[p]) {
            Some(p) => (&s.packed[p * nh..][..nh], &s.cells[p * nh..][..nh]),
            None => (&s.h0[..], &s.c0[..]),
        };
        h_prev_all[t * nh..][..nh].copy_from_slice(h_prev);
        let gates = &s.gates[t * 4 * nh..][..4 * nh];
        let tanh_cell = &s.tanh_cells[t * nh..][..nh];
        let da = &mut g_gx[t * 4 * nh..][..4 * nh];
        let g_out = &gp[t * nh..][..nh];
        for r in 0..n {
            let (row, out) = (&gates[r * 4 * h..][..4 * h], &mut da[r * 4 * h..][..4 * h]);
            for j in 0..h {
                let e = r * h + j;
                let (i, f, g, o) = (row[j], row[h + j], row[2 * h + j], row[3 * h + j]);
                let tc = tanh_cell[e];
                let dh_e = g_out[e] + dh[e];
                let dc_e = dc[e] + dh_e * o * (T::one() - tc * tc);
                out[j] = dc_e * g * i * (T::one() - i);
                out[h + j] = dc_e * c_prev[e] * f * (T::one() - f);
                out[2 * h + j] = dc_e * i * (T::one() - g * g);
                out[3 * h + j] = dh_e * tc * o * (T::one() - o);
                dc[e] = dc_e * f;
            }
        }
        gemm(
            &view2(da, n, 4 * h),
            &w,
            &mut view2_mut(&mut dh, n, h),
            Epilogue::write(),
        );
    }
    let mut g_w = vec![T::zero(); 4 * h * h];
    let rows = d.steps * n;
    gemm(
        &view2(&g_gx, rows, 4 * h).t(),
        &view2(&h_prev_all, rows, h),
        &mut view2_mut(&mut g_w, 4 * h, h),
        Epilogue::write(),
    );
    [g_gx, dh, dc, g_w]
}

/// Runs the forward on arrays of one dtype, returning the packed output and the saved values.
fn run<T: Float>(
    gx: &ArcArray<T, IxDyn>,
    h0: &ArcArray<T, IxDyn>,
    c0: &ArcArray<T, IxDyn>,
    w_hh: &ArcArray<T, IxDyn>,
    d: Dims,
) -> (ArcArray<T, IxDyn>, Saved4<T>) {
    let (h0, c0, w_hh) = (
        contiguous(h0).into_owned(),
        contiguous(c0).into_owned(),
        contiguous(w_hh).into_owned(),
    );
    let f = forward(&contiguous(gx), &h0, &c0, &w_hh, d);
    let out = from_vec(&[d.steps + 1, d.batch, d.hidden], f.packed.clone());
    let saved = Saved4 {
        gates: f.gates,
        cells: f.cells,
        tanh_cells: f.tanh_cells,
        packed: f.packed,
        h0,
        c0,
        w_hh,
    };
    (out, saved)
}

/// The saved values in the run's dtype.
enum SavedAny {
    F32(Saved4<f32>),
    F64(Saved4<f64>),
}

#[cold]
#[inline(never)]
#[track_caller]
fn lstm_shape_error(gx: &[usize], h0: &[usize], c0: &[usize], w: &[usize]) -> ! {
    panic!(
        "lstm_sequence: expected gates [L, N, 4H], h0 and c0 [N, H], weight_hh [4H, H] of one \
         float dtype, got {gx:?}, {h0:?}, {c0:?}, {w:?}"
    )
}

impl Tensor {
    /// One direction of an LSTM layer over a sequence (see NOTE [ Fused LSTM sequence ]):
    /// `self` is the input projection of every step with both biases, `[L, N, 4H]` (gate
    /// blocks `i, f, g, o`), `h0`, `c0` `[N, H]`, `weight_hh` `[4H, H]`. `reverse` runs from
    /// the last step to the first. Returns `[L + 1, N, H]`: the hidden state of each step at
    /// its own time position, then the final cell state.
    #[track_caller]
    pub(crate) fn lstm_sequence(
        &self,
        h0: &Tensor,
        c0: &Tensor,
        weight_hh: &Tensor,
        reverse: bool,
    ) -> Tensor {
        let (gs, hs, cs, ws) = (self.shape(), h0.shape(), c0.shape(), weight_hh.shape());
        let fits = gs.len() == 3
            && hs.len() == 2
            && hs == cs
            && hs[0] == gs[1]
            && gs[2] == 4 * hs[1]
            && ws == [gs[2], hs[1]];
        if !fits {
            lstm_shape_error(&gs, &hs, &cs, &ws)
        }
        let d = Dims {
            steps: gs[0],
            batch: gs[1],
            hidden: hs[1],
            reverse,
        };
        let storages = (
            self.storage(),
            h0.storage(),
            c0.storage(),
            weight_hh.storage(),
        );
        let (out, saved) = match storages {
            (Storage::F32(g), Storage::F32(h), Storage::F32(c), Storage::F32(w)) => {
                let (o, s) = run(&g, &h, &c, &w, d);
                (Storage::F32(o), SavedAny::F32(s))
            }
            (Storage::F64(g), Storage::F64(h), Storage::F64(c), Storage::F64(w)) => {
                let (o, s) = run(&g, &h, &c, &w, d);
                (Storage::F64(o), SavedAny::F64(s))
            }
            _ => lstm_shape_error(&gs, &hs, &cs, &ws),
        };
        // The backward reads its own copies of the states and `weight_hh` (taken in
        // forward), so later in-place changes to the inputs cannot reach it.
        record(
            "lstm_sequence",
            out,
            &[self, h0, c0, weight_hh],
            move || {
                move |gp: &Tensor, _: &[bool]| {
                    let shapes = [
                        vec![d.steps, d.batch, 4 * d.hidden],
                        vec![d.batch, d.hidden],
                        vec![d.batch, d.hidden],
                        vec![4 * d.hidden, d.hidden],
                    ];
                    let grads: Vec<Storage> = match (&saved, gp.storage()) {
                        (SavedAny::F32(s), Storage::F32(g)) => backward(s, &contiguous(&g), d)
                            .into_iter()
                            .zip(&shapes)
                            .map(|(v, sh)| Storage::F32(from_vec(sh, v)))
                            .collect(),
                        (SavedAny::F64(s), Storage::F64(g)) => backward(s, &contiguous(&g), d)
                            .into_iter()
                            .zip(&shapes)
                            .map(|(v, sh)| Storage::F64(from_vec(sh, v)))
                            .collect(),
                        _ => unreachable!("lstm_sequence backward: dtypes checked in forward"),
                    };
                    grads
                        .into_iter()
                        .map(|g| Some(Tensor::from_storage(g)))
                        .collect()
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn tanh_stays_within_8_ulps_of_libm() {
        for i in -4000..=4000 {
            let x = i as f64 * 0.0025 + 1e-7;
            let (got, want) = (tanh(x), x.tanh());
            assert!(
                (got - want).abs() <= 8.0 * f64::EPSILON * want.abs().max(1e-300),
                "{x}: {got} vs {want}"
            );
            let (got, want) = (tanh(x as f32), (x as f32).tanh());
            assert!(
                (got - want).abs() <= 8.0 * f32::EPSILON * want.abs(),
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(tanh(1e5f32), 1.0);
        assert_eq!(tanh(-1e5f64), -1.0);
    }

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(shape).double().requires_grad_(true)
    }

    #[test]
    fn lstm_sequence_backward_matches_finite_differences() {
        crate::random::manual_seed(31);
        for reverse in [false, true] {
            let inputs = [
                randn(&[4, 2, 12]),
                randn(&[2, 3]),
                randn(&[2, 3]),
                randn(&[12, 3]),
            ];
            // Weight every output differently, the final cell state included.
            let weights = Tensor::randn(&[5, 2, 3]).double();
            gradcheck(
                |v| (&v[0].lstm_sequence(&v[1], &v[2], &v[3], reverse) * &weights).sum(),
                &inputs,
            )
            .unwrap_or_else(|e| panic!("reverse {reverse}: {e}"));
        }
    }
}
