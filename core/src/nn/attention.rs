//! Attention: [`scaled_dot_product_attention`] (PyTorch's
//! `torch.nn.functional.scaled_dot_product_attention`) and [`MultiheadAttention`].
//!
//! Both are composites of differentiable ops (matmul, softmax, reshape, …), so autograd
//! gives their gradients.

use crate::dtype::DType;
use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::linear::Linear;
use crate::nn::module::{Member, MemberMut};
use crate::nn::parameter::Parameter;
use crate::ops::attention::{Mask, packed_self_attention};
use crate::random::InitDraws;
use crate::tensor::Tensor;
use std::ops::{Deref, DerefMut};

/// `softmax(query @ keyᵀ · scale + bias) @ value` over any number of leading batch
/// dimensions (`torch.nn.functional.scaled_dot_product_attention`).
///
/// - `attn_mask`, broadcastable to `[..., L, S]`: a float mask is added to the scores; an
///   i64 mask is PyTorch's bool mask, 1 = may attend (see NOTE [ Attention masks ] in
///   [`MultiheadAttention`](MultiheadAttention#note--attention-masks-)).
/// - `dropout_p`: dropout on the attention weights (always applied when > 0, as in PyTorch's
///   functional form: pass 0.0 in evaluation).
/// - `is_causal`: query i attends to keys `j <= i`, aligned top-left (`tril(ones(L, S))`).
/// - `scale`: `1 / sqrt(E)` when `None`.
///
/// # Shapes
/// query `[..., L, E]`, key `[..., S, E]`, value `[..., S, Ev]` → `[..., L, Ev]`.
///
/// # Panics
/// If the shapes do not fit together, or both `attn_mask` and `is_causal` are given.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::functional::scaled_dot_product_attention;
/// use torchlet::Tensor;
/// let q = Tensor::randn(&[2, 4, 5, 8]);
/// let y = scaled_dot_product_attention(&q, &q, &q, None, 0.0, true, None);
/// assert_eq!(y.shape(), [2, 4, 5, 8]);
/// ```
#[track_caller]
pub fn scaled_dot_product_attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    attn_mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Tensor {
    let (q, k, v) = (query.shape(), key.shape(), value.shape());
    let fits = q.len() >= 2
        && k.len() >= 2
        && v.len() >= 2
        && q[q.len() - 1] == k[k.len() - 1]
        && k[k.len() - 2] == v[v.len() - 2];
    if !fits {
        sdpa_shape_error(&q, &k, &v);
    }
    if is_causal && attn_mask.is_some() {
        panic!(
            "scaled_dot_product_attention: pass either attn_mask or is_causal, not both (as in \
             PyTorch)"
        );
    }
    let (l, s) = (q[q.len() - 2], k[k.len() - 2]);
    let scale = scale.unwrap_or(1.0 / (q[q.len() - 1] as f64).sqrt());
    // Scaling the query costs L·E multiplications instead of L·S on the scores.
    let mut scores = query.mul_scalar(scale).matmul(&key.transpose(-2, -1));
    if let Some(mask) = attn_mask {
        scores = &scores + &mask_bias(mask, false, query.dtype());
    }
    if is_causal {
        scores = &scores + &causal_bias(l, s, query.dtype());
    }
    let mut weights = scores.softmax(-1);
    if dropout_p > 0.0 {
        let keep = crate::random::dropout_mask(&weights.shape(), dropout_p, weights.dtype());
        weights = &(&weights * &keep) * (1.0 / (1.0 - dropout_p));
    }
    weights.matmul(value)
}

#[cold]
#[inline(never)]
#[track_caller]
fn sdpa_shape_error(q: &[usize], k: &[usize], v: &[usize]) -> ! {
    panic!(
        "scaled_dot_product_attention: query {q:?}, key {k:?}, value {v:?} do not fit; expected \
         [..., L, E], [..., S, E], [..., S, Ev]"
    )
}

/// A mask as an additive bias in `dtype` (see NOTE [ Attention masks ]): float masks are
/// converted as they are; in an i64 mask, non-zero means masked out when
/// `nonzero_masks`, else allowed.
pub(crate) fn mask_bias(mask: &Tensor, nonzero_masks: bool, dtype: DType) -> Tensor {
    if mask.dtype().is_float() {
        return mask.to_dtype(dtype);
    }
    let values: Vec<f64> = mask
        .to_vec::<i64>()
        .into_iter()
        .map(|m| {
            if (m != 0) == nonzero_masks {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(values, &mask.shape()).to_dtype(dtype)
}

/// `[L, S]`: 0 where key `j <= i`, -inf above the diagonal.
pub(crate) fn causal_bias(l: usize, s: usize, dtype: DType) -> Tensor {
    let values: Vec<f64> = (0..l * s)
        .map(|n| {
            if n % s > n / s {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(values, &[l, s]).to_dtype(dtype)
}

/// The float mask PyTorch's `nn.Transformer.generate_square_subsequent_mask(sz)` gives:
/// `[sz, sz]`, -inf above the diagonal and 0 elsewhere (f32).
pub fn generate_square_subsequent_mask(sz: usize) -> Tensor {
    causal_bias(sz, sz, DType::F32)
}

/// PyTorch's `out_proj` of [`MultiheadAttention`]: a [`Linear`] under the class name
/// PyTorch prints (`NonDynamicallyQuantizableLinear`), so the printed tree matches.
pub struct NonDynamicallyQuantizableLinear(pub Linear);

impl Deref for NonDynamicallyQuantizableLinear {
    type Target = Linear;
    fn deref(&self) -> &Linear {
        &self.0
    }
}

impl DerefMut for NonDynamicallyQuantizableLinear {
    fn deref_mut(&mut self) -> &mut Linear {
        &mut self.0
    }
}

impl Module for NonDynamicallyQuantizableLinear {
    fn class_name(&self) -> &'static str {
        "NonDynamicallyQuantizableLinear"
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        self.0.visit(f)
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        self.0.visit_mut(f)
    }
    fn as_dyn(&self) -> &dyn Module {
        self
    }
    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }
    fn extra_repr(&self) -> String {
        self.0.extra_repr()
    }
    fn training_flag(&self) -> Option<bool> {
        self.0.training_flag()
    }
    fn set_training_flag(&mut self, training: bool) {
        self.0.set_training_flag(training)
    }
}

impl<'a> Forward<&'a Tensor> for NonDynamicallyQuantizableLinear {
    type Output = Tensor;
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        self.0.forward(x)
    }
}

impl std::fmt::Display for NonDynamicallyQuantizableLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::nn::fmt_module(self, f)
    }
}

/// Multi-head attention (PyTorch's `nn.MultiheadAttention`): the query, key and value are
/// projected (`in_proj_weight` rows `0..E` for q, `E..2E` for k, `2E..3E` for v), split into
/// `num_heads` heads of `E / num_heads` columns, attended with
/// [`scaled_dot_product_attention`], concatenated and projected by `out_proj`.
///
/// PyTorch's defaults: `batch_first = false` (inputs `[L, N, E]`), dropout 0, biases on,
/// `kdim = vdim = embed_dim`. With other `kdim`/`vdim` the projections are the separate
/// `q_proj_weight`, `k_proj_weight`, `v_proj_weight` and `in_proj_weight` is absent, as in
/// PyTorch. Initialisation as PyTorch: xavier-uniform projections, zero biases.
///
/// Unlike PyTorch, the call returns only the attention output (PyTorch's
/// `need_weights=False`); `add_bias_kv` and `add_zero_attn` are not offered.
///
/// # Shapes
/// query `[N, L, E]` (batch_first) or `[L, N, E]`; key `[N, S, kdim]`, value
/// `[N, S, vdim]` → `[N, L, E]` (or `[L, N, E]`). Masks: see [`forward_with`].
///
/// [`forward_with`]: MultiheadAttention::forward_with
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, Module, MultiheadAttention};
/// use torchlet::Tensor;
/// let mha = MultiheadAttention::new(8, 2).with_batch_first(true);
/// let x = Tensor::randn(&[3, 5, 8]);
/// assert_eq!(mha.forward((&x, &x, &x)).shape(), [3, 5, 8]);
/// let keys: Vec<String> = mha.state_dict().keys().cloned().collect();
/// assert_eq!(keys, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);
/// ```
///
/// # NOTE [ Attention masks ]
/// Every mask becomes an additive bias on the scores, as PyTorch does internally: a float
/// mask is added as it is; an i64 mask is a bool mask turned into 0 (attend) and -inf
/// (do not). What 1 means differs between PyTorch's APIs and torchlet keeps each meaning:
/// in `scaled_dot_product_attention` 1 = MAY attend; in `MultiheadAttention` and the
/// Transformer layers (`attn_mask`, `key_padding_mask`, `src_mask`, …) 1 = masked out.
/// A row whose keys are all masked gives NaN, as in PyTorch.
#[derive(Module)]
pub struct MultiheadAttention {
    /// The packed `[3 embed_dim, embed_dim]` projection of query, key and value; `None`
    /// when `kdim`/`vdim` differ from `embed_dim`.
    pub in_proj_weight: Option<Parameter>,
    /// The query projection `[embed_dim, embed_dim]` when the projections are separate, else `None`.
    pub q_proj_weight: Option<Parameter>,
    /// The key projection `[embed_dim, kdim]` when the projections are separate, else `None`.
    pub k_proj_weight: Option<Parameter>,
    /// The value projection `[embed_dim, vdim]` when the projections are separate, else `None`.
    pub v_proj_weight: Option<Parameter>,
    /// The packed `[3 embed_dim]` bias of the three projections, or `None` without bias.
    pub in_proj_bias: Option<Parameter>,
    /// The output projection (PyTorch's `out_proj`).
    pub out_proj: NonDynamicallyQuantizableLinear,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    dropout: f64,
    #[module(skip)]
    batch_first: bool,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

/// The parameters of a [`MultiheadAttention`], drawn as PyTorch's constructor draws them.
struct Projections {
    in_proj_weight: Option<Parameter>,
    qkv_proj_weights: Option<[Parameter; 3]>,
    in_proj_bias: Option<Parameter>,
    out_proj: Linear,
}

impl Projections {
    /// `out_proj` first (a Linear: Kaiming weight, uniform bias), then Xavier-uniform
    /// projections (`in_proj_weight`, or q, k, v when `kdim`/`vdim` differ from
    /// `embed_dim`); the biases are then set to zero (`out_proj.bias` after its draws).
    fn draw(embed_dim: usize, kdim: usize, vdim: usize, bias: bool) -> Projections {
        let out_proj = Linear::with_bias(embed_dim, embed_dim, bias);
        let xavier = |shape: &[usize]| {
            let w = Tensor::zeros(shape);
            init::xavier_uniform_(&w, 1.0);
            Parameter::new(w)
        };
        let (in_proj_weight, qkv_proj_weights) = if kdim == embed_dim && vdim == embed_dim {
            (Some(xavier(&[3 * embed_dim, embed_dim])), None)
        } else {
            let q = xavier(&[embed_dim, embed_dim]);
            let k = xavier(&[embed_dim, kdim]);
            let v = xavier(&[embed_dim, vdim]);
            (None, Some([q, k, v]))
        };
        if let Some(b) = &out_proj.bias {
            init::constant_(b, 0.0);
        }
        Projections {
            in_proj_weight,
            qkv_proj_weights,
            in_proj_bias: bias.then(|| Parameter::new(Tensor::zeros(&[3 * embed_dim]))),
            out_proj,
        }
    }
}

impl MultiheadAttention {
    /// Attention over `embed_dim` features split into `num_heads` heads.
    ///
    /// # Panics
    /// If `embed_dim` is not divisible by `num_heads`.
    #[track_caller]
    pub fn new(embed_dim: usize, num_heads: usize) -> MultiheadAttention {
        if num_heads == 0 || !embed_dim.is_multiple_of(num_heads) {
            panic!(
                "MultiheadAttention: embed_dim must be divisible by num_heads, got embed_dim = \
                 {embed_dim} and num_heads = {num_heads}"
            );
        }
        let (p, draws) =
            InitDraws::record(|| Projections::draw(embed_dim, embed_dim, embed_dim, true));
        let mut mha = MultiheadAttention {
            in_proj_weight: None,
            q_proj_weight: None,
            k_proj_weight: None,
            v_proj_weight: None,
            in_proj_bias: None,
            // Replaced by `set_projections` (a placeholder that draws nothing).
            out_proj: NonDynamicallyQuantizableLinear(Linear::from_parts(
                Tensor::zeros(&[0, 0]),
                None,
            )),
            num_heads,
            dropout: 0.0,
            batch_first: false,
            training: true,
            draws,
        };
        mha.set_projections(p);
        mha
    }

    fn set_projections(&mut self, p: Projections) {
        self.in_proj_weight = p.in_proj_weight;
        [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight] = match p.qkv_proj_weights {
            Some([q, k, v]) => [Some(q), Some(k), Some(v)],
            None => [None, None, None],
        };
        self.in_proj_bias = p.in_proj_bias;
        self.out_proj = NonDynamicallyQuantizableLinear(p.out_proj);
    }

    /// The feature sizes of key and value.
    fn kdim_vdim(&self) -> (usize, usize) {
        match (&self.k_proj_weight, &self.v_proj_weight) {
            (Some(k), Some(v)) => (k.size(1), v.size(1)),
            _ => (self.embed_dim(), self.embed_dim()),
        }
    }

    /// Whether the projections have biases (`in_proj_bias`, `out_proj.bias`). Right after
    /// construction the projections are drawn again, so that the draws are PyTorch's for
    /// `bias=False` (no draws for `out_proj.bias`).
    pub fn with_bias(mut self, bias: bool) -> MultiheadAttention {
        if bias == self.in_proj_bias.is_some() {
            return self;
        }
        let (e, (kdim, vdim)) = (self.embed_dim(), self.kdim_vdim());
        match self
            .draws
            .redo_if_last(|| Projections::draw(e, kdim, vdim, bias))
        {
            Some(p) => self.set_projections(p),
            None if !bias => {
                self.in_proj_bias = None;
                self.out_proj.bias = None;
            }
            None => {
                self.in_proj_bias = Some(Parameter::new(Tensor::zeros(&[3 * e])));
                self.out_proj.bias = Some(Parameter::new(Tensor::zeros(&[e])));
            }
        }
        self
    }

    /// Dropout on the attention weights in training mode.
    ///
    /// # Panics
    /// If `p` is outside `[0, 1)`.
    #[track_caller]
    pub fn with_dropout(mut self, p: f64) -> MultiheadAttention {
        if !(0.0..1.0).contains(&p) {
            panic!("MultiheadAttention: dropout must be in [0, 1), got {p}");
        }
        self.dropout = p;
        self
    }

    /// `true`: inputs and output are `[N, L, E]`; `false` (PyTorch's default): `[L, N, E]`.
    pub fn with_batch_first(mut self, batch_first: bool) -> MultiheadAttention {
        self.batch_first = batch_first;
        self
    }

    /// The feature sizes of key and value; when either differs from `embed_dim`, the
    /// projections are separate `q_proj_weight`, `k_proj_weight`, `v_proj_weight`.
    pub fn with_kdim_vdim(mut self, kdim: usize, vdim: usize) -> MultiheadAttention {
        if (kdim, vdim) == self.kdim_vdim() {
            return self;
        }
        let (e, bias) = (self.embed_dim(), self.in_proj_bias.is_some());
        let p = self.draws.redo(|| Projections::draw(e, kdim, vdim, bias));
        self.set_projections(p);
        self
    }

    /// The model width `E`.
    pub fn embed_dim(&self) -> usize {
        self.out_proj.in_features()
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// The dropout probability on the attention weights.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// Whether inputs are `[N, L, E]`.
    pub fn batch_first(&self) -> bool {
        self.batch_first
    }

    /// Attention with masks (`nn.MultiheadAttention.forward` with `need_weights=False`).
    ///
    /// - `key_padding_mask` `[N, S]`: i64 with 1 = that key is padding (ignored), or a
    ///   float mask added to the scores.
    /// - `attn_mask` `[L, S]` or `[N * num_heads, L, S]`: i64 with 1 = NOT allowed to
    ///   attend, or a float mask added to the scores (see NOTE [ Attention masks ]
    ///   [above](MultiheadAttention#note--attention-masks-)).
    ///
    /// # Panics
    /// If the shapes do not fit.
    #[track_caller]
    pub fn forward_with(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        attn_mask: Option<&Tensor>,
    ) -> Tensor {
        let (q, k, v) = if self.batch_first {
            (query.clone(), key.clone(), value.clone())
        } else {
            (
                query.transpose(0, 1),
                key.transpose(0, 1),
                value.transpose(0, 1),
            )
        };
        let same = query.identity() == key.identity() && key.identity() == value.identity();
        let out = match self.packed_mask(same, &q, key_padding_mask, attn_mask) {
            Some(mask) => self.attend_packed(&q, &mask),
            None => self.attend(&q, &k, &v, key_padding_mask, attn_mask),
        };
        if self.batch_first {
            out
        } else {
            out.transpose(0, 1)
        }
    }

    /// The mask of the fused self-attention path, when it applies: query, key and value one
    /// tensor, one packed `in_proj_weight`, no dropout, no key padding mask, and no mask or
    /// one `[L, L]` mask (recognised as causal when it is exactly the causal bias).
    fn packed_mask(
        &self,
        same: bool,
        x: &Tensor,
        key_padding_mask: Option<&Tensor>,
        attn_mask: Option<&Tensor>,
    ) -> Option<Mask<f64>> {
        let dropout = self.training && self.dropout > 0.0;
        let shape = x.shape();
        if !same
            || dropout
            || key_padding_mask.is_some()
            || self.in_proj_weight.is_none()
            || shape.len() != 3
            || shape[2] != self.embed_dim()
            || !x.dtype().is_float()
        {
            return None;
        }
        let l = shape[1];
        let Some(m) = attn_mask else {
            return Some(Mask::None);
        };
        if m.shape() != [l, l] {
            return None;
        }
        let bias = mask_bias(m, true, DType::F64).to_vec::<f64>();
        let causal = bias.iter().enumerate().all(|(n, &b)| {
            let (i, j) = (n / l, n % l);
            if j > i {
                b == f64::NEG_INFINITY
            } else {
                b == 0.0
            }
        });
        Some(if causal {
            Mask::Causal
        } else {
            Mask::Bias(bias)
        })
    }

    /// The fused self-attention (NOTE [ Fused attention ] in `ops/attention.rs`): one
    /// projection into `[N, L, 3E]`, the heads attended in place, out_proj.
    fn attend_packed(&self, x: &Tensor, mask: &Mask<f64>) -> Tensor {
        let w = self
            .in_proj_weight
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked by packed_mask"));
        let qkv = x.linear(w, self.in_proj_bias.as_deref());
        let out = packed_self_attention(&qkv, self.num_heads, mask);
        self.out_proj.forward(&out)
    }

    /// The batch-first attention: projections, heads, SDPA, out_proj.
    #[track_caller]
    fn attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        attn_mask: Option<&Tensor>,
    ) -> Tensor {
        let e = self.embed_dim();
        let (qs, ks) = (query.shape(), key.shape());
        if qs.len() != 3 || ks.len() != 3 || qs[2] != e || ks[0] != qs[0] {
            self.shape_error(&qs, &ks, &value.shape());
        }
        let (n, l, s, h) = (qs[0], qs[1], ks[1], self.num_heads);
        let (q, k, v) = self.project(query, key, value);
        let heads =
            |t: &Tensor, len: usize| t.reshape_usize(&[n, len, h, e / h]).permute(&[0, 2, 1, 3]);
        let mut bias: Option<Tensor> = None;
        if let Some(m) = attn_mask {
            let b = mask_bias(m, true, query.dtype());
            let b = match m.dim() {
                3 => b.reshape_usize(&[n, h, l, s]),
                _ => b,
            };
            bias = Some(b);
        }
        if let Some(m) = key_padding_mask {
            if m.shape() != [n, s] {
                panic!(
                    "MultiheadAttention: key_padding_mask must be [N, S] = [{n}, {s}], got {:?}",
                    m.shape()
                );
            }
            let b = mask_bias(m, true, query.dtype()).reshape_usize(&[n, 1, 1, s]);
            bias = Some(match bias {
                Some(a) => &a + &b,
                None => b,
            });
        }
        let dropout = if self.training { self.dropout } else { 0.0 };
        let out = scaled_dot_product_attention(
            &heads(&q, l),
            &heads(&k, s),
            &heads(&v, s),
            bias.as_ref(),
            dropout,
            false,
            None,
        );
        let out = out.permute(&[0, 2, 1, 3]).reshape_usize(&[n, l, e]);
        self.out_proj.forward(&out)
    }

    /// q, k, v after the input projections.
    ///
    /// Three products with row blocks of `in_proj_weight` rather than one with all of it and
    /// a split of the result: each output is contiguous (the heads are then a free reshape),
    /// and backward routes each gradient straight into its block instead of assembling
    /// zero-padded `[N, L, 3E]` gradients.
    fn project(&self, query: &Tensor, key: &Tensor, value: &Tensor) -> (Tensor, Tensor, Tensor) {
        let e = self.embed_dim();
        let bias = |i: usize| self.in_proj_bias.as_ref().map(|b| b.narrow(0, i * e, e));
        let weight = |i: usize, separate: &Option<Parameter>| match &self.in_proj_weight {
            Some(w) => w.narrow(0, i * e, e),
            None => separate
                .as_ref()
                .expect("MultiheadAttention has in_proj_weight or q/k/v_proj_weight")
                .tensor()
                .clone(),
        };
        (
            query.linear(&weight(0, &self.q_proj_weight), bias(0).as_ref()),
            key.linear(&weight(1, &self.k_proj_weight), bias(1).as_ref()),
            value.linear(&weight(2, &self.v_proj_weight), bias(2).as_ref()),
        )
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn shape_error(&self, q: &[usize], k: &[usize], v: &[usize]) -> ! {
        panic!(
            "MultiheadAttention(embed_dim={}, num_heads={}): query {q:?}, key {k:?}, value \
             {v:?} do not fit; expected [N, L, {}], [N, S, kdim], [N, S, vdim] (batch first)",
            self.embed_dim(),
            self.num_heads,
            self.embed_dim()
        )
    }
}

impl<'a> Forward<(&'a Tensor, &'a Tensor, &'a Tensor)> for MultiheadAttention {
    type Output = Tensor;

    /// `forward((query, key, value))`: attention without masks.
    #[track_caller]
    fn forward(&self, (query, key, value): (&'a Tensor, &'a Tensor, &'a Tensor)) -> Tensor {
        self.forward_with(query, key, value, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn f64_leaf(shape: &[usize]) -> Tensor {
        Tensor::randn(shape).double().requires_grad_(true)
    }

    #[test]
    fn attention_gradients_match_finite_differences() {
        // Composite of matmul, softmax and a mask bias: the check covers the chain, with a
        // bool mask, a causal mask and key reused as value (gradients accumulate).
        crate::manual_seed(3);
        let (q, k) = (f64_leaf(&[2, 3, 4]), f64_leaf(&[2, 5, 4]));
        let mask = Tensor::from_vec(vec![1i64, 1, 0, 1, 1], &[1, 1, 5]);
        gradcheck(
            |v| scaled_dot_product_attention(&v[0], &v[1], &v[1], Some(&mask), 0.0, false, None),
            &[q.clone(), k.clone()],
        )
        .unwrap();
        gradcheck(
            |v| scaled_dot_product_attention(&v[0], &v[1], &v[1], None, 0.0, true, Some(0.7)),
            &[q, k],
        )
        .unwrap();
    }

    #[test]
    fn multihead_attention_gradients_match_finite_differences() {
        crate::manual_seed(4);
        let mut mha = MultiheadAttention::new(4, 2).with_batch_first(true);
        mha.to_dtype(DType::F64);
        let x = f64_leaf(&[2, 3, 4]);
        let padding = Tensor::from_vec(vec![0i64, 0, 1, 0, 0, 0], &[2, 3]);
        // The input's gradient (the parameters' are checked against PyTorch in
        // tests/seq_layers.rs); x is query, key and value at once.
        gradcheck(
            |v| mha.forward_with(&v[0], &v[0], &v[0], Some(&padding), None),
            &[x],
        )
        .unwrap();
    }

    /// Output, input gradient and parameter gradients of `mha` on `x` as self-attention
    /// (the fused path) and with key and value distinct tensors (the composite path).
    fn fused_and_composite(
        mha: &MultiheadAttention,
        x: &Tensor,
        mask: Option<&Tensor>,
    ) -> [(Vec<f64>, Vec<f64>, Vec<f64>); 2] {
        [true, false].map(|fused| {
            mha.parameters().iter().for_each(|p| p.zero_grad());
            let x = x.detach().requires_grad_(true);
            let kv = if fused { x.clone() } else { x.mul_scalar(1.0) };
            let y = mha.forward_with(&x, &kv, &kv, None, mask);
            crate::manual_seed(11);
            let probe = Tensor::randn(&y.shape()).to_dtype(y.dtype());
            (&y * &probe).sum().backward();
            let w = mha.in_proj_weight.as_ref().unwrap().grad().unwrap();
            (
                y.to_vec::<f64>(),
                x.grad().unwrap().to_vec::<f64>(),
                w.to_vec::<f64>(),
            )
        })
    }

    #[test]
    fn fused_self_attention_matches_the_composite() {
        // 37 positions: the causal products run in blocks of queries and keys (the last
        // one partial).
        for l in [6, 37] {
            fused_self_attention_matches_the_composite_at(l);
        }
    }

    fn fused_self_attention_matches_the_composite_at(l: usize) {
        crate::manual_seed(5);
        let (n, e) = (3, 8);
        let causal = generate_square_subsequent_mask(l);
        let mut float_mask = Tensor::randn(&[l, l]).to_vec::<f32>();
        float_mask[3] = f32::NEG_INFINITY;
        let float_mask = Tensor::from_vec(float_mask, &[l, l]);
        let bool_mask = Tensor::from_vec(
            (0..l * l)
                .map(|i| i64::from(i % 5 == 1))
                .collect::<Vec<_>>(),
            &[l, l],
        );
        for dtype in [DType::F32, DType::F64] {
            for batch_first in [true, false] {
                let mut mha = MultiheadAttention::new(e, 2).with_batch_first(batch_first);
                mha.to_dtype(dtype);
                let shape = if batch_first { [n, l, e] } else { [l, n, e] };
                let x = Tensor::randn(&shape).to_dtype(dtype);
                let xb = Tensor::randn(&[n, l, e]).to_dtype(dtype);
                let kind = |m| mha.packed_mask(true, &xb, None, m);
                assert!(matches!(kind(Some(&causal)), Some(Mask::Causal)));
                assert!(matches!(kind(Some(&float_mask)), Some(Mask::Bias(_))));
                assert!(matches!(kind(Some(&bool_mask)), Some(Mask::Bias(_))));
                assert!(matches!(kind(None), Some(Mask::None)));
                for mask in [None, Some(&causal), Some(&float_mask), Some(&bool_mask)] {
                    let [a, b] = fused_and_composite(&mha, &x, mask);
                    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                    for (u, v) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                        assert_eq!(u.len(), v.len());
                        for (p, q) in u.iter().zip(v) {
                            assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{p} vs {q}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_self_attention_gradients_match_finite_differences() {
        crate::manual_seed(6);
        let l = 5;
        let qkv = f64_leaf(&[2, l, 12]);
        let bias = Tensor::randn(&[l, l]).double().to_vec::<f64>();
        for mask in [Mask::None, Mask::Causal, Mask::Bias(bias.clone())] {
            gradcheck(
                |v| crate::ops::attention::packed_self_attention(&v[0], 2, &mask),
                std::slice::from_ref(&qkv),
            )
            .unwrap();
        }
        // Causal over several blocks of queries and keys (the last one partial).
        let qkv = f64_leaf(&[1, 35, 6]);
        gradcheck(
            |v| crate::ops::attention::packed_self_attention(&v[0], 1, &Mask::Causal),
            std::slice::from_ref(&qkv),
        )
        .unwrap();
    }

    #[test]
    fn causal_attention_of_the_first_query_is_the_first_value() {
        // Query 0 sees key 0 only, so its output is value 0 whatever the scores.
        let q = Tensor::randn(&[1, 3, 2]);
        let k = Tensor::randn(&[1, 4, 2]);
        let v = Tensor::randn(&[1, 4, 2]);
        let y = scaled_dot_product_attention(&q, &k, &v, None, 0.0, true, None);
        let (got, want) = (y.to_vec::<f32>(), v.to_vec::<f32>());
        assert!((got[0] - want[0]).abs() < 1e-6 && (got[1] - want[1]).abs() < 1e-6);
    }

    #[test]
    fn separate_projections_with_kdim_vdim() {
        let mha = MultiheadAttention::new(8, 2)
            .with_kdim_vdim(5, 3)
            .with_batch_first(true);
        let keys: Vec<String> = mha.state_dict().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
                "out_proj.weight",
                "out_proj.bias"
            ]
        );
        let y = mha.forward((
            &Tensor::randn(&[2, 4, 8]),
            &Tensor::randn(&[2, 6, 5]),
            &Tensor::randn(&[2, 6, 3]),
        ));
        assert_eq!(y.shape(), [2, 4, 8]);
    }
}
