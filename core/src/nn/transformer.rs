//! Transformer layers with PyTorch's names, keys and printed form:
//! [`TransformerEncoderLayer`], [`TransformerEncoder`] and [`TransformerDecoderLayer`].
//!
//! Composites of [`MultiheadAttention`], [`Linear`], [`LayerNorm`] and [`Dropout`]; autograd
//! differentiates them. Masks follow NOTE [ Attention masks ] on `MultiheadAttention`: an i64
//! mask has 1 = masked out, a float mask is added to the scores.

use crate::nn::Module;
use crate::nn::attention::MultiheadAttention;
use crate::nn::dropout::Dropout;
use crate::nn::forward::Forward;
use crate::nn::layernorm::LayerNorm;
use crate::nn::linear::Linear;
use crate::random::{self, InitDraws};
use crate::tensor::Tensor;

/// The feed-forward activation of the Transformer layers (PyTorch's `activation="relu"` /
/// `"gelu"`; GELU in its exact erf form). It is a function, not a submodule, so it is not
/// printed, as in PyTorch when given as a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    /// `max(x, 0)` (PyTorch's `"relu"`, the default).
    Relu,
    /// `x Φ(x)` with the exact erf form of `Φ` (PyTorch's `"gelu"`).
    Gelu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
        }
    }
}

/// The options the Transformer layers share, with PyTorch's defaults.
#[derive(Clone, Copy, Debug)]
struct Options {
    activation: Activation,
    norm_first: bool,
    batch_first: bool,
    dropout: f64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            activation: Activation::Relu,
            norm_first: false,
            batch_first: false,
            dropout: 0.1,
        }
    }
}

/// Sets dropout, LayerNorm eps, bias and batch_first across a layer's parts.
macro_rules! layer_builders {
    ($layer:ident, [$($attn:ident),*], [$($norm:ident),*], [$($drop:ident),*]) => {
        impl $layer {
            /// The hidden size of the feed-forward part (PyTorch's default 2048).
            ///
            /// The layer's parameters are drawn again; right after construction they are
            /// PyTorch's for this `dim_feedforward` (see `random::InitDraws`).
            pub fn with_dim_feedforward(mut self, dim_feedforward: usize) -> $layer {
                let bias = self.linear1.bias.is_some();
                self.redraw(dim_feedforward, bias, true);
                self
            }

            /// Draws the attention block(s) and the linears again, in PyTorch's order, for
            /// `dim_feedforward` and `bias`: always, or (`always = false`) only when
            /// nothing has drawn since the layer's draws, returning whether it did.
            fn redraw(&mut self, dim_feedforward: usize, bias: bool, always: bool) -> bool {
                let (d, h) = (self.linear1.in_features(), self.self_attn.num_heads());
                let p = self.options.dropout;
                let draw = || {
                    $(let $attn = MultiheadAttention::new(d, h)
                        .with_bias(bias)
                        .with_dropout(p)
                        .with_batch_first(true);)*
                    let linear1 = Linear::with_bias(d, dim_feedforward, bias);
                    let linear2 = Linear::with_bias(dim_feedforward, d, bias);
                    ($($attn,)* linear1, linear2)
                };
                let parts = if always {
                    Some(self.draws.redo(draw))
                } else {
                    self.draws.redo_if_last(draw)
                };
                let Some(($($attn,)* linear1, linear2)) = parts else {
                    return false;
                };
                $(self.$attn = $attn;)*
                self.linear1 = linear1;
                self.linear2 = linear2;
                true
            }

            /// The dropout probability everywhere (attention weights, feed-forward,
            /// residual branches; PyTorch's default 0.1).
            pub fn with_dropout(mut self, p: f64) -> $layer {
                $(self.$attn = self.$attn.with_dropout(p);)*
                $(self.$drop = Dropout::new(p);)*
                self.options.dropout = p;
                self
            }

            /// The feed-forward activation (PyTorch's default ReLU).
            pub fn with_activation(mut self, activation: Activation) -> $layer {
                self.options.activation = activation;
                self
            }

            /// The `eps` of every LayerNorm (PyTorch's default 1e-5).
            pub fn with_layer_norm_eps(mut self, eps: f64) -> $layer {
                $(self.$norm = std::mem::replace(&mut self.$norm, LayerNorm::new(&[1])).with_eps(eps);)*
                self
            }

            /// `true`: inputs are `[N, L, E]`; `false` (PyTorch's default): `[L, N, E]`.
            pub fn with_batch_first(mut self, batch_first: bool) -> $layer {
                $(self.$attn = self.$attn.with_batch_first(true);)*
                self.options.batch_first = batch_first;
                self
            }

            /// `true`: pre-norm (`x + f(norm(x))`); `false` (default): post-norm
            /// (`norm(x + f(x))`).
            pub fn with_norm_first(mut self, norm_first: bool) -> $layer {
                self.options.norm_first = norm_first;
                self
            }

            /// `false` removes every bias: the attention's, the linears' and the
            /// LayerNorms'. Right after construction the parameters are drawn again, so
            /// that they are PyTorch's for `bias=False`.
            pub fn with_bias(mut self, bias: bool) -> $layer {
                if !bias {
                    let ff = self.linear1.out_features();
                    if !self.redraw(ff, false, false) {
                        $(self.$attn = self.$attn.with_bias(false);)*
                        self.linear1.bias = None;
                        self.linear2.bias = None;
                    }
                    $(self.$norm.bias = None;)*
                }
                self
            }

            /// Whether inputs are `[N, L, E]`.
            pub fn batch_first(&self) -> bool {
                self.options.batch_first
            }

            /// Whether the layer is pre-norm.
            pub fn norm_first(&self) -> bool {
                self.options.norm_first
            }

            /// The feed-forward activation.
            pub fn activation(&self) -> Activation {
                self.options.activation
            }

            fn feed_forward(&self, x: &Tensor) -> Tensor {
                let h = self.options.activation.apply(&self.linear1.forward(x));
                self.ff_dropout(&self.linear2.forward(&self.dropout.forward(&h)))
            }

            /// `[L, N, E]` ↔ `[N, L, E]` when the layer is sequence-first.
            fn transpose_unless_batch_first(&self, x: &Tensor) -> Tensor {
                if self.options.batch_first { x.clone() } else { x.transpose(0, 1) }
            }
        }
    };
}

/// One encoder block (PyTorch's `nn.TransformerEncoderLayer`): self-attention and a
/// feed-forward network `linear2(dropout(act(linear1(x))))`, each in a residual branch
/// with a LayerNorm: post-norm `x = norm1(x + SA(x)); x = norm2(x + FF(x))`, or pre-norm
/// (`with_norm_first(true)`) `x = x + SA(norm1(x)); x = x + FF(norm2(x))`.
///
/// `new(d_model, nhead)` has PyTorch's defaults: `dim_feedforward = 2048`, dropout 0.1,
/// ReLU, eps 1e-5, `batch_first = false`, post-norm, biases on; the `with_*` builders
/// change them.
///
/// # Shapes
/// `[N, L, d_model]` (batch_first) or `[L, N, d_model]` → the same.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Activation, Forward, TransformerEncoderLayer};
/// use torchlet::Tensor;
/// let layer = TransformerEncoderLayer::new(8, 2)
///     .with_dim_feedforward(16)
///     .with_dropout(0.0)
///     .with_activation(Activation::Gelu)
///     .with_batch_first(true)
///     .with_norm_first(true);
/// assert_eq!(layer.forward(&Tensor::randn(&[3, 5, 8])).shape(), [3, 5, 8]);
/// ```
#[derive(Module)]
pub struct TransformerEncoderLayer {
    /// Self-attention over the input (PyTorch's `self_attn`).
    pub self_attn: MultiheadAttention,
    /// The feed-forward network's first layer, `d_model → dim_feedforward`.
    pub linear1: Linear,
    /// Dropout after the feed-forward activation.
    pub dropout: Dropout,
    /// The feed-forward network's second layer, `dim_feedforward → d_model`.
    pub linear2: Linear,
    /// The LayerNorm of the self-attention branch.
    pub norm1: LayerNorm,
    /// The LayerNorm of the feed-forward branch.
    pub norm2: LayerNorm,
    /// Dropout on the self-attention branch's output.
    pub dropout1: Dropout,
    /// Dropout on the feed-forward branch's output.
    pub dropout2: Dropout,
    #[module(skip)]
    options: Options,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

layer_builders!(
    TransformerEncoderLayer,
    [self_attn],
    [norm1, norm2],
    [dropout, dropout1, dropout2]
);

impl TransformerEncoderLayer {
    /// A block of width `d_model` with `nhead` attention heads and PyTorch's defaults.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead`.
    #[track_caller]
    pub fn new(d_model: usize, nhead: usize) -> TransformerEncoderLayer {
        let options = Options::default();
        // PyTorch's order: self_attn, linear1, linear2.
        let ((self_attn, linear1, linear2), draws) = InitDraws::record(|| {
            let attn = MultiheadAttention::new(d_model, nhead)
                .with_dropout(options.dropout)
                .with_batch_first(true);
            (attn, Linear::new(d_model, 2048), Linear::new(2048, d_model))
        });
        TransformerEncoderLayer {
            self_attn,
            linear1,
            dropout: Dropout::new(options.dropout),
            linear2,
            norm1: LayerNorm::new(&[d_model]),
            norm2: LayerNorm::new(&[d_model]),
            dropout1: Dropout::new(options.dropout),
            dropout2: Dropout::new(options.dropout),
            options,
            training: true,
            draws,
        }
    }

    /// The block with masks (`forward(src, src_mask, src_key_padding_mask)`):
    /// `src_mask` `[L, L]` (or `[N * nhead, L, L]`), `src_key_padding_mask` `[N, L]`; an
    /// i64 mask has 1 = masked out.
    #[track_caller]
    pub fn forward_with(
        &self,
        src: &Tensor,
        src_mask: Option<&Tensor>,
        src_key_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let x = self.transpose_unless_batch_first(src);
        let sa = |x: &Tensor| {
            let y = self
                .self_attn
                .forward_with(x, x, x, src_key_padding_mask, src_mask);
            self.dropout1.forward(&y)
        };
        let x = if self.options.norm_first {
            let x = &x + &sa(&self.norm1.forward(&x));
            &x + &self.feed_forward(&self.norm2.forward(&x))
        } else {
            let x = self.norm1.forward(&(&x + &sa(&x)));
            self.norm2.forward(&(&x + &self.feed_forward(&x)))
        };
        self.transpose_unless_batch_first(&x)
    }

    fn ff_dropout(&self, x: &Tensor) -> Tensor {
        self.dropout2.forward(x)
    }

    /// A copy with its own parameters holding the same values (PyTorch's `deepcopy`); the
    /// global generator ends where it was, as after a `deepcopy`.
    fn duplicate(&self) -> TransformerEncoderLayer {
        let rng = random::get_rng_state();
        let copy = self.duplicate_drawing();
        random::set_rng_state(&rng);
        copy
    }

    fn duplicate_drawing(&self) -> TransformerEncoderLayer {
        let d = self.linear1.in_features();
        let mut copy = TransformerEncoderLayer::new(d, self.self_attn.num_heads())
            .with_dim_feedforward(self.linear1.out_features())
            .with_dropout(self.options.dropout)
            .with_bias(self.linear1.bias.is_some())
            .with_layer_norm_eps(self.norm1.eps());
        copy.options = self.options;
        copy.load_state_dict(&self.state_dict(), true)
            .expect("a copy has the same keys");
        copy.training = self.training;
        copy
    }
}

impl<'a> Forward<&'a Tensor> for TransformerEncoderLayer {
    type Output = Tensor;

    /// The block without masks.
    #[track_caller]
    fn forward(&self, src: &'a Tensor) -> Tensor {
        self.forward_with(src, None, None)
    }
}

/// A stack of `num_layers` copies of an encoder layer and an optional final norm
/// (PyTorch's `nn.TransformerEncoder`; keys `layers.0.…`, `norm.…`). Like PyTorch, every
/// layer starts as a copy of the given one (same initial values).
///
/// # Shapes
/// As the layer's.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Module, TransformerEncoder, TransformerEncoderLayer};
/// let layer = TransformerEncoderLayer::new(8, 2).with_dim_feedforward(16);
/// let enc = TransformerEncoder::new(layer, 3);
/// assert_eq!(enc.layers.len(), 3);
/// assert!(enc.state_dict().keys().any(|k| k == "layers.2.norm2.bias"));
/// ```
#[derive(Module)]
pub struct TransformerEncoder {
    /// The stacked layers, named `layers.0`, `layers.1`, … in the state dict.
    pub layers: Vec<TransformerEncoderLayer>,
    /// A LayerNorm applied after the last layer (PyTorch's `norm=`), or `None`.
    pub norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// `num_layers` copies of `encoder_layer`, no final norm.
    pub fn new(encoder_layer: TransformerEncoderLayer, num_layers: usize) -> TransformerEncoder {
        let layers = (0..num_layers).map(|_| encoder_layer.duplicate()).collect();
        TransformerEncoder { layers, norm: None }
    }

    /// A LayerNorm applied after the last layer (PyTorch's `norm=`).
    pub fn with_norm(mut self, norm: LayerNorm) -> TransformerEncoder {
        self.norm = Some(norm);
        self
    }

    /// The stack with masks (`forward(src, mask, src_key_padding_mask)`), passed to every
    /// layer.
    #[track_caller]
    pub fn forward_with(
        &self,
        src: &Tensor,
        mask: Option<&Tensor>,
        src_key_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward_with(&x, mask, src_key_padding_mask);
        }
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => x,
        }
    }
}

impl<'a> Forward<&'a Tensor> for TransformerEncoder {
    type Output = Tensor;

    /// The stack without masks.
    #[track_caller]
    fn forward(&self, src: &'a Tensor) -> Tensor {
        self.forward_with(src, None, None)
    }
}

/// One decoder block (PyTorch's `nn.TransformerDecoderLayer`): self-attention over the
/// target, cross-attention from the target to `memory` (`multihead_attn`) and the
/// feed-forward network, each in a residual branch with a LayerNorm. Post-norm:
/// `x = norm1(x + SA(x)); x = norm2(x + CA(x, mem)); x = norm3(x + FF(x))`; pre-norm:
/// `x = x + SA(norm1(x)); x = x + CA(norm2(x), mem); x = x + FF(norm3(x))` (memory is not
/// normalised). Defaults and builders as [`TransformerEncoderLayer`].
///
/// # Shapes
/// tgt `[N, T, d_model]`, memory `[N, S, d_model]` (batch_first; else sequence first) →
/// `[N, T, d_model]`.
#[derive(Module)]
pub struct TransformerDecoderLayer {
    /// Self-attention over the target (PyTorch's `self_attn`).
    pub self_attn: MultiheadAttention,
    /// Cross-attention from the target to `memory` (PyTorch's `multihead_attn`).
    pub multihead_attn: MultiheadAttention,
    /// The feed-forward network's first layer, `d_model → dim_feedforward`.
    pub linear1: Linear,
    /// Dropout after the feed-forward activation.
    pub dropout: Dropout,
    /// The feed-forward network's second layer, `dim_feedforward → d_model`.
    pub linear2: Linear,
    /// The LayerNorm of the self-attention branch.
    pub norm1: LayerNorm,
    /// The LayerNorm of the cross-attention branch.
    pub norm2: LayerNorm,
    /// The LayerNorm of the feed-forward branch.
    pub norm3: LayerNorm,
    /// Dropout on the self-attention branch's output.
    pub dropout1: Dropout,
    /// Dropout on the cross-attention branch's output.
    pub dropout2: Dropout,
    /// Dropout on the feed-forward branch's output.
    pub dropout3: Dropout,
    #[module(skip)]
    options: Options,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

layer_builders!(
    TransformerDecoderLayer,
    [self_attn, multihead_attn],
    [norm1, norm2, norm3],
    [dropout, dropout1, dropout2, dropout3]
);

impl TransformerDecoderLayer {
    /// A block of width `d_model` with `nhead` attention heads and PyTorch's defaults.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead`.
    #[track_caller]
    pub fn new(d_model: usize, nhead: usize) -> TransformerDecoderLayer {
        let options = Options::default();
        let attn = || {
            MultiheadAttention::new(d_model, nhead)
                .with_dropout(options.dropout)
                .with_batch_first(true)
        };
        // PyTorch's order: self_attn, multihead_attn, linear1, linear2.
        let ((self_attn, multihead_attn, linear1, linear2), draws) = InitDraws::record(|| {
            let (sa, ca) = (attn(), attn());
            (
                sa,
                ca,
                Linear::new(d_model, 2048),
                Linear::new(2048, d_model),
            )
        });
        TransformerDecoderLayer {
            self_attn,
            multihead_attn,
            linear1,
            dropout: Dropout::new(options.dropout),
            linear2,
            norm1: LayerNorm::new(&[d_model]),
            norm2: LayerNorm::new(&[d_model]),
            norm3: LayerNorm::new(&[d_model]),
            dropout1: Dropout::new(options.dropout),
            dropout2: Dropout::new(options.dropout),
            dropout3: Dropout::new(options.dropout),
            options,
            training: true,
            draws,
        }
    }

    /// The block with masks (PyTorch's `forward(tgt, memory, tgt_mask, memory_mask,
    /// tgt_key_padding_mask, memory_key_padding_mask)`); i64 masks have 1 = masked out.
    #[track_caller]
    pub fn forward_with(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        tgt_mask: Option<&Tensor>,
        memory_mask: Option<&Tensor>,
        tgt_key_padding_mask: Option<&Tensor>,
        memory_key_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let x = self.transpose_unless_batch_first(tgt);
        let mem = self.transpose_unless_batch_first(memory);
        let sa = |x: &Tensor| {
            let y = self
                .self_attn
                .forward_with(x, x, x, tgt_key_padding_mask, tgt_mask);
            self.dropout1.forward(&y)
        };
        let ca = |x: &Tensor| {
            let y = self.multihead_attn.forward_with(
                x,
                &mem,
                &mem,
                memory_key_padding_mask,
                memory_mask,
            );
            self.dropout2.forward(&y)
        };
        let x = if self.options.norm_first {
            let x = &x + &sa(&self.norm1.forward(&x));
            let x = &x + &ca(&self.norm2.forward(&x));
            &x + &self.feed_forward(&self.norm3.forward(&x))
        } else {
            let x = self.norm1.forward(&(&x + &sa(&x)));
            let x = self.norm2.forward(&(&x + &ca(&x)));
            self.norm3.forward(&(&x + &self.feed_forward(&x)))
        };
        self.transpose_unless_batch_first(&x)
    }

    fn ff_dropout(&self, x: &Tensor) -> Tensor {
        self.dropout3.forward(x)
    }
}

impl<'a> Forward<(&'a Tensor, &'a Tensor)> for TransformerDecoderLayer {
    type Output = Tensor;

    /// `forward((tgt, memory))` without masks.
    #[track_caller]
    fn forward(&self, (tgt, memory): (&'a Tensor, &'a Tensor)) -> Tensor {
        self.forward_with(tgt, memory, None, None, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_copies_start_equal_and_are_independent() {
        let enc = TransformerEncoder::new(TransformerEncoderLayer::new(4, 2), 2);
        let w0 = enc.layers[0].linear1.weight.to_vec::<f32>();
        assert_eq!(w0, enc.layers[1].linear1.weight.to_vec::<f32>());
        crate::autograd::no_grad(|| enc.layers[0].linear1.weight.fill_(0.0));
        assert_eq!(w0, enc.layers[1].linear1.weight.to_vec::<f32>());
    }

    #[test]
    fn sequence_first_equals_batch_first() {
        let layer = TransformerEncoderLayer::new(4, 2)
            .with_dim_feedforward(8)
            .with_dropout(0.0);
        let x = Tensor::randn(&[3, 2, 4]);
        let a = layer.forward(&x);
        let layer = layer.with_batch_first(true);
        let b = layer.forward(&x.transpose(0, 1)).transpose(0, 1);
        for (p, q) in a.to_vec::<f32>().iter().zip(b.to_vec::<f32>()) {
            assert!((p - q).abs() < 1e-5);
        }
    }
}
