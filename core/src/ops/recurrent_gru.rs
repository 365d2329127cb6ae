//! One direction of a GRU or Elman RNN layer over a whole sequence as a single op, with its
//! closed-form backward, for the reasons of NOTE [ Fused LSTM sequence ] in `recurrent.rs`.

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage};
use crate::ops::gemm::{Epilogue, gemm};
use crate::ops::kernel::from_vec;
use crate::ops::recurrent::{Dims, contiguous, sigmoid, tanh, view2, view2_mut};
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};

/// The recurrence of the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recurrence {
    /// `r, z, n` gates; `b_hh` stays inside (r multiplies `W_hn h + b_hn`).
    Gru,
    /// `h' = tanh(gx + W_hh h)` (both biases already in `gx`).
    Tanh,
    /// `h' = relu(gx + W_hh h)`.
    Relu,
}

impl Recurrence {
    fn gates(self) -> usize {
        if self == Recurrence::Gru { 3 } else { 1 }
    }
}

/// What the forward keeps for backward.
struct Saved<T> {
    kind: Recurrence,
    /// GRU: the activated `r, z, n` of every step `[L, N, 3H]`; empty otherwise.
    acts: Vec<T>,
    /// GRU: `W_hn h + b_hn` of every step `[L, N, H]`; empty otherwise.
    ghn: Vec<T>,
    /// The hidden state of every step `[L, N, H]`, at its time position.
    out: Vec<T>,
    h0: Vec<T>,
    w_hh: Vec<T>,
}

impl<T: Float> Saved<T> {
    /// The state step number `k` of the visiting order started from.
    fn h_prev<'a>(&'a self, order: &[usize], k: usize, nh: usize) -> &'a [T] {
        match k.checked_sub(1).map(|p| order[p]) {
            Some(p) => &self.out[p * nh..][..nh],
            None => &self.h0,
        }
    }
}

fn forward<T: Float>(
    kind: Recurrence,
    gx: &[T],
    h0: Vec<T>,
    w_hh: Vec<T>,
    b_hh: Option<&[T]>,
    d: Dims,
) -> Saved<T> {
    let (n, h, nh, g) = (d.batch, d.hidden, d.nh(), kind.gates());
    let w_t = view2(&w_hh, g * h, h).reversed_axes();
    let gru = kind == Recurrence::Gru;
    let mut acts = vec![T::zero(); if gru { d.steps * 3 * nh } else { 0 }];
    let mut ghn = vec![T::zero(); if gru { d.steps * nh } else { 0 }];
    let mut out = vec![T::zero(); d.steps * nh];
    let mut gh = vec![T::zero(); g * nh];
    let mut h_prev = h0.clone();
    for t in d.order() {
        gemm(
            &view2(&h_prev, n, h),
            &w_t,
            &mut view2_mut(&mut gh, n, g * h),
            Epilogue::write(),
        );
        if let Some(b) = b_hh {
            gh.chunks_exact_mut(g * h)
                .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &b)| *v += b));
        }
        let x = &gx[t * g * nh..][..g * nh];
        let o = &mut out[t * nh..][..nh];
        match kind {
            Recurrence::Gru => {
                let a = &mut acts[t * 3 * nh..][..3 * nh];
                let hn = &mut ghn[t * nh..][..nh];
                for r in 0..n {
                    let (xr, gr) = (&x[r * 3 * h..][..3 * h], &gh[r * 3 * h..][..3 * h]);
                    for j in 0..h {
                        let e = r * h + j;
                        let rg = sigmoid(xr[j] + gr[j]);
                        let z = sigmoid(xr[h + j] + gr[h + j]);
                        let nn = tanh(xr[2 * h + j] + rg * gr[2 * h + j]);
                        a[r * 3 * h + j] = rg;
                        a[r * 3 * h + h + j] = z;
                        a[r * 3 * h + 2 * h + j] = nn;
                        hn[e] = gr[2 * h + j];
                        o[e] = nn + z * (h_prev[e] - nn);
                    }
                }
            }
            Recurrence::Tanh => o
                .iter_mut()
                .zip(x.iter().zip(&gh))
                .for_each(|(o, (&x, &g))| *o = tanh(x + g)),
            Recurrence::Relu => o
                .iter_mut()
                .zip(x.iter().zip(&gh))
                .for_each(|(o, (&x, &g))| *o = (x + g).max(T::zero())),
        }
        h_prev.copy_from_slice(o);
    }
    Saved {
        kind,
        acts,
        ghn,
        out,
        h0,
        w_hh,
    }
}

/// Gradients of `(gx, h0, w_hh, b_hh)` from the gradient `go` of the outputs `[L, N, H]`.
fn backward<T: Float>(s: &Saved<T>, go: &[T], d: Dims, bias: bool) -> [Option<Vec<T>>; 4] {
    let (n, h, nh, g) = (d.batch, d.hidden, d.nh(), s.kind.gates());
    let w = view2(&s.w_hh, g * h, h);
    let order: Vec<usize> = d.order().collect();
    let mut g_gx = vec![T::zero(); d.steps * g * nh];
    // The gradient of `W_hh h (+ b_hh)` per step: for the GRU its `n` block is `r ⊙` that
    // of `gx`; for the RNN it is `gx`'s own (kept in `g_gx`).
    let mut g_gh = vec![
        T::zero();
        if s.kind == Recurrence::Gru {
            g_gx.len()
        } else {
            0
        }
    ];
    let mut h_prev_all = vec![T::zero(); d.steps * nh];
    let mut dh = vec![T::zero(); nh];
    let mut direct = vec![T::zero(); nh];
    for (k, &t) in order.iter().enumerate().rev() {
        let h_prev = s.h_prev(&order, k, nh);
        h_prev_all[t * nh..][..nh].copy_from_slice(h_prev);
        let g_out = &go[t * nh..][..nh];
        let dx = &mut g_gx[t * g * nh..][..g * nh];
        match s.kind {
            Recurrence::Gru => {
                let a = &s.acts[t * 3 * nh..][..3 * nh];
                let hn = &s.ghn[t * nh..][..nh];
                let dgh = &mut g_gh[t * 3 * nh..][..3 * nh];
                for r in 0..n {
                    for j in 0..h {
                        let e = r * h + j;
                        let (b0, b1, b2) =
                            (r * 3 * h + j, r * 3 * h + h + j, r * 3 * h + 2 * h + j);
                        let (rg, z, nn) = (a[b0], a[b1], a[b2]);
                        let dh_e = g_out[e] + dh[e];
                        let dan = dh_e * (T::one() - z) * (T::one() - nn * nn);
                        let dar = dan * hn[e] * rg * (T::one() - rg);
                        let daz = dh_e * (h_prev[e] - nn) * z * (T::one() - z);
                        (dx[b0], dx[b1], dx[b2]) = (dar, daz, dan);
                        (dgh[b0], dgh[b1], dgh[b2]) = (dar, daz, dan * rg);
                        direct[e] = dh_e * z;
                    }
                }
                gemm(
                    &view2(dgh, n, 3 * h),
                    &w,
                    &mut view2_mut(&mut dh, n, h),
                    Epilogue::write(),
                );
                dh.iter_mut().zip(&direct).for_each(|(v, &d)| *v += d);
            }
            Recurrence::Tanh | Recurrence::Relu => {
                let out = &s.out[t * nh..][..nh];
                for e in 0..nh {
                    let dh_e = g_out[e] + dh[e];
                    dx[e] = match s.kind {
                        Recurrence::Tanh => dh_e * (T::one() - out[e] * out[e]),
                        _ if out[e] > T::zero() => dh_e,
                        _ => T::zero(),
                    };
                }
                gemm(
                    &view2(dx, n, h),
                    &w,
                    &mut view2_mut(&mut dh, n, h),
                    Epilogue::write(),
                );
            }
        }
    }
    let g_gh = if s.kind == Recurrence::Gru {
        &g_gh
    } else {
        &g_gx
    };
    let rows = d.steps * n;
    let mut g_w = vec![T::zero(); g * h * h];
    gemm(
        &view2(g_gh, rows, g * h).t(),
        &view2(&h_prev_all, rows, h),
        &mut view2_mut(&mut g_w, g * h, h),
        Epilogue::write(),
    );
    let g_b = bias.then(|| {
        let mut sum = vec![T::zero(); g * h];
        for row in g_gh.chunks_exact(g * h) {
            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        sum
    });
    [Some(g_gx), Some(dh), Some(g_w), g_b]
}

/// The forward on arrays of one dtype: the outputs `[L, N, H]` and what backward needs.
fn run<T: Float>(
    kind: Recurrence,
    arrays: &[ArcArray<T, IxDyn>],
    d: Dims,
) -> (ArcArray<T, IxDyn>, Saved<T>) {
    let b = arrays.get(3).map(|b| contiguous(b));
    let h0 = contiguous(&arrays[1]).into_owned();
    let w = contiguous(&arrays[2]).into_owned();
    let s = forward(kind, &contiguous(&arrays[0]), h0, w, b.as_deref(), d);
    (from_vec(&[d.steps, d.batch, d.hidden], s.out.clone()), s)
}

/// The saved values in the run's dtype.
enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

#[cold]
#[inline(never)]
#[track_caller]
fn shape_error(kind: Recurrence, shapes: &[Vec<usize>]) -> ! {
    let g = kind.gates();
    panic!(
        "{kind:?} sequence: expected gates [L, N, {g}H], h0 [N, H], weight_hh [{g}H, H] (and \
         bias_hh [{g}H]) of one float dtype, got {shapes:?}"
    )
}

/// The arrays of `tensors` if they all have dtype `T`'s storage.
fn arrays<T: Float>(tensors: &[&Tensor]) -> Option<Vec<ArcArray<T, IxDyn>>> {
    tensors
        .iter()
        .map(|t| {
            let s = t.storage();
            (s.dtype() == T::DTYPE).then(|| T::from_storage(&s))
        })
        .collect()
}

impl Tensor {
    /// One direction of a GRU or RNN layer over a sequence: `self` is the input projection
    /// of every step `[L, N, G·H]` (with `b_ih`, and for the RNN `b_hh` too), `h0` `[N, H]`,
    /// `weight_hh` `[G·H, H]`, `bias_hh` `[G·H]` (GRU only). `reverse` runs from the last step
    /// to the first. Returns the hidden state of every step at its time position `[L, N, H]`.
    #[track_caller]
    pub(crate) fn recurrent_sequence(
        &self,
        kind: Recurrence,
        h0: &Tensor,
        weight_hh: &Tensor,
        bias_hh: Option<&Tensor>,
        reverse: bool,
    ) -> Tensor {
        let mut inputs = vec![self, h0, weight_hh];
        inputs.extend(bias_hh);
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape()).collect();
        let (gs, hs, ws) = (&shapes[0], &shapes[1], &shapes[2]);
        let gh = kind.gates() * hs.get(1).copied().unwrap_or(0);
        let fits = gs.len() == 3
            && hs.len() == 2
            && hs[0] == gs[1]
            && gs[2] == gh
            && ws[..] == [gh, hs[1]]
            && shapes.get(3).is_none_or(|b| b[..] == [gh])
            && (bias_hh.is_none() || kind == Recurrence::Gru);
        if !fits {
            shape_error(kind, &shapes)
        }
        let d = Dims {
            steps: gs[0],
            batch: gs[1],
            hidden: hs[1],
            reverse,
        };
        let (out, saved) = if let Some(a) = arrays::<f32>(&inputs) {
            let (o, s) = run(kind, &a, d);
            (Storage::F32(o), SavedAny::F32(s))
        } else if let Some(a) = arrays::<f64>(&inputs) {
            let (o, s) = run(kind, &a, d);
            (Storage::F64(o), SavedAny::F64(s))
        } else {
            shape_error(kind, &shapes)
        };
        let bias = bias_hh.is_some();
        let g = kind.gates();
        let grad_shapes = [
            vec![d.steps, d.batch, g * d.hidden],
            vec![d.batch, d.hidden],
            vec![g * d.hidden, d.hidden],
            vec![g * d.hidden],
        ];
        // The backward reads copies of `h0` and `weight_hh` taken in forward.
        record("recurrent_sequence", out, &inputs, move || {
            move |go: &Tensor, _: &[bool]| {
                let grads: Vec<Option<Storage>> = match (&saved, go.storage()) {
                    (SavedAny::F32(s), Storage::F32(go)) => backward(s, &contiguous(&go), d, bias)
                        .into_iter()
                        .zip(&grad_shapes)
                        .map(|(v, sh)| v.map(|v| Storage::F32(from_vec(sh, v))))
                        .collect(),
                    (SavedAny::F64(s), Storage::F64(go)) => backward(s, &contiguous(&go), d, bias)
                        .into_iter()
                        .zip(&grad_shapes)
                        .map(|(v, sh)| v.map(|v| Storage::F64(from_vec(sh, v))))
                        .collect(),
                    _ => unreachable!("recurrent_sequence backward: dtypes checked in forward"),
                };
                let n = if bias { 4 } else { 3 };
                grads
                    .into_iter()
                    .take(n)
                    .map(|g| g.map(Tensor::from_storage))
                    .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(shape).double().requires_grad_(true)
    }

    #[test]
    fn gru_and_rnn_sequences_backward_match_finite_differences() {
        crate::random::manual_seed(41);
        let weights = Tensor::randn(&[4, 2, 3]).double();
        for kind in [Recurrence::Gru, Recurrence::Tanh, Recurrence::Relu] {
            for reverse in [false, true] {
                let g = kind.gates();
                let mut inputs = vec![randn(&[4, 2, 3 * g]), randn(&[2, 3]), randn(&[3 * g, 3])];
                if kind == Recurrence::Gru {
                    inputs.push(randn(&[3 * g]));
                }
                gradcheck(
                    |v| {
                        let y = v[0].recurrent_sequence(kind, &v[1], &v[2], v.get(3), reverse);
                        (&y * &weights).sum()
                    },
                    &inputs,
                )
                .unwrap_or_else(|e| panic!("{kind:?} reverse {reverse}: {e}"));
            }
        }
    }
}
