//! [`Embedding`]: a lookup table of vectors indexed by integers.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::tensor::Tensor;

/// Rows of `weight` `[num_embeddings, embedding_dim]` picked by i64 indices, initialised
/// from `N(0, 1)` as in PyTorch (`nn.Embedding`). Repeated indices accumulate gradient.
///
/// # Shapes
/// indices `[*] → [*, embedding_dim]`.
#[derive(Module)]
#[module(extra_repr = "Embedding::describe")]
pub struct Embedding {
    pub weight: Parameter,
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
            training: true,
        }
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        format!("{}, {}", s[0], s[1])
    }
}

impl<'a> Forward<&'a Tensor> for Embedding {
    type Output = Tensor;

    /// # Panics
    /// If an index is out of range or the indices are not i64.
    #[track_caller]
    fn forward(&self, indices: &'a Tensor) -> Tensor {
        let y = self.weight.embedding(indices);
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
}
