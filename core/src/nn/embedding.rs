//! [`Embedding`]: a lookup table of vectors indexed by integers.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::tensor::Tensor;

/// Rows of `weight` `[num_embeddings, embedding_dim]` picked by i64 indices, initialised
/// from `N(0, 1)` as in PyTorch (`nn.Embedding`). Repeated indices accumulate gradient.
///
/// With a `padding_idx`, that row gets no gradient (it stays as it is through training);
/// [`with_padding_idx`](Embedding::with_padding_idx) initialises it to zeros, as PyTorch's
/// constructor does, while the forward reads whatever the row holds.
///
/// # Shapes
/// indices `[*] → [*, embedding_dim]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Embedding, Forward}};
/// let emb = Embedding::with_padding_idx(10, 4, 0);
/// let ids = Tensor::from_vec(vec![1i64, 0, 7, 1], &[2, 2]);
/// let out = emb.forward(&ids);
/// assert_eq!(out.shape(), [2, 2, 4]);
/// assert_eq!(out.narrow(0, 0, 1).narrow(1, 1, 1).to_vec::<f32>(), [0.0; 4]); // the padding row
/// ```
#[derive(Module)]
#[module(extra_repr = "Embedding::describe")]
pub struct Embedding {
    /// The table `[num_embeddings, embedding_dim]`, one row per index.
    pub weight: Parameter,
    #[module(skip)]
    padding_idx: Option<usize>,
    #[module(training)]
    training: bool,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `embedding_dim`.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Embedding {
        let weight = Tensor::zeros(&[num_embeddings, embedding_dim]);
        init::normal_(&weight, 0.0, 1.0);
        Embedding::from_pretrained(weight)
    }

    /// A table over the given `[num_embeddings, embedding_dim]` weight (trainable).
    ///
    /// # Panics
    /// If `weight` is not 2-D.
    #[track_caller]
    pub fn from_pretrained(weight: Tensor) -> Embedding {
        if weight.dim() != 2 {
            panic!(
                "Embedding: weight must be [num_embeddings, embedding_dim], got {:?}",
                weight.shape()
            );
        }
        Embedding {
            weight: Parameter::new(weight),
            padding_idx: None,
            training: true,
        }
    }

    /// A table whose row `padding_idx` (negative counts from the end: -1 is the last row)
    /// starts at zero and gets no gradient (PyTorch's `Embedding(n, d, padding_idx=…)`).
    ///
    /// # Panics
    /// If `padding_idx` is outside `-num_embeddings..num_embeddings`.
    #[track_caller]
    pub fn with_padding_idx(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: isize,
    ) -> Embedding {
        let weight = Embedding::new(num_embeddings, embedding_dim).weight;
        let mut e =
            Embedding::from_pretrained_with_padding_idx(weight.tensor().clone(), padding_idx);
        let row = e.padding_idx.expect("just set");
        let mut values = weight.to_vec::<f32>();
        values[row * embedding_dim..(row + 1) * embedding_dim].fill(0.0);
        e.weight = Parameter::new(Tensor::from_vec(values, &[num_embeddings, embedding_dim]));
        e
    }

    /// A table over the given weight whose row `padding_idx` gets no gradient; the row
    /// keeps its values (PyTorch's `from_pretrained(…, padding_idx=…)`).
    ///
    /// # Panics
    /// If `weight` is not 2-D or `padding_idx` is out of range.
    #[track_caller]
    pub fn from_pretrained_with_padding_idx(weight: Tensor, padding_idx: isize) -> Embedding {
        let mut e = Embedding::from_pretrained(weight);
        let n = e.weight.size(0) as isize;
        if !(-n..n).contains(&padding_idx) {
            panic!("Embedding: padding_idx must be within num_embeddings = {n}, got {padding_idx}");
        }
        e.padding_idx = Some(padding_idx.rem_euclid(n) as usize);
        e
    }

    /// The row that gets no gradient, normalised to `0..num_embeddings`.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        match self.padding_idx {
            Some(p) => format!("{}, {}, padding_idx={p}", s[0], s[1]),
            None => format!("{}, {}", s[0], s[1]),
        }
    }
}

impl<'a> Forward<&'a Tensor> for Embedding {
    type Output = Tensor;

    /// # Panics
    /// If an index is out of range or the indices are not i64.
    #[track_caller]
    fn forward(&self, indices: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let Some(row) = self.padding_idx else {
            let y = self.weight.embedding(indices);
            crate::nn::summary::record(self, &y);
            return y;
        };
        // weight · keep + weight.detach() · (1 - keep), with keep 0 on the padding row only:
        // the same values, and no gradient path into that row.
        let n = self.weight.size(0);
        let keep: Vec<f64> = (0..n).map(|i| if i == row { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::from_vec(keep, &[n, 1]).to_dtype(self.weight.dtype());
        let w = &(self.weight.tensor() * &keep) + &(&self.weight.detach() * &(1.0 - &keep));
        let y = w.embedding(indices);
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_rows_and_accumulates_repeats() {
        let e = Embedding::from_pretrained(Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[2, 2]));
        let y = e.forward(&Tensor::from_vec(vec![1i64, 1, 0], &[3]));
        assert_eq!(y.to_vec::<f32>(), [2.0, 3.0, 2.0, 3.0, 0.0, 1.0]);
        y.sum().backward();
        assert_eq!(
            e.weight.grad().unwrap().to_vec::<f32>(),
            [1.0, 1.0, 2.0, 2.0]
        );
        assert_eq!(e.to_string(), "Embedding(2, 2)");
    }

    #[test]
    fn padding_row_starts_at_zero_and_gets_no_gradient() {
        let e = Embedding::with_padding_idx(3, 2, -1);
        assert_eq!(e.to_string(), "Embedding(3, 2, padding_idx=2)");
        assert_eq!(e.weight.narrow(0, 2, 1).to_vec::<f32>(), [0.0, 0.0]);
        e.forward(&Tensor::from_vec(vec![2i64, 0, 2], &[3]))
            .sum()
            .backward();
        assert_eq!(
            e.weight.grad().unwrap().to_vec::<f32>(),
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
