//! Splitting a tensor into parts along a dimension (`chunk`, `split`, `split_with_sizes`)
//! and tiling it (`repeat`). The parts are views ([`narrow`](Tensor::narrow)); `repeat` is
//! a broadcast, so both get their gradients from the ops they are made of.

use crate::shape::normalize_dim;
use crate::tensor::Tensor;

impl Tensor {
    /// Splits into `chunks` parts of `ceil(n / chunks)` elements along `dim` (the last part
    /// may be smaller), as `torch.chunk`: like PyTorch, this can give FEWER than `chunks`
    /// parts (n = 4, chunks = 3 gives sizes 2 and 2). The parts are views.
    ///
    /// # Panics
    /// If `chunks` is 0.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let qkv = Tensor::zeros(&[2, 5, 12]);
    /// let parts = qkv.chunk(3, -1);
    /// assert_eq!(parts.len(), 3);
    /// assert_eq!(parts[2].shape(), [2, 5, 4]);
    /// ```
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        if chunks == 0 {
            panic!(
                "chunk: chunks must be at least 1, got 0 (shape {:?})",
                self.shape()
            );
        }
        let d = normalize_dim("chunk", dim, self.dim());
        let n = self.shape().get(d).copied().unwrap_or(1);
        self.split(n.div_ceil(chunks), d as isize)
    }

    /// Splits into parts of `split_size` elements along `dim`, the last one smaller when
    /// `split_size` does not divide the dimension (`torch.split` with an int). The parts are
    /// views.
    ///
    /// # Panics
    /// If `split_size` is 0 for a non-empty dimension.
    #[track_caller]
    pub fn split(&self, split_size: usize, dim: isize) -> Vec<Tensor> {
        let d = normalize_dim("split", dim, self.dim());
        let n = self.shape().get(d).copied().unwrap_or(1);
        if n == 0 {
            return vec![self.clone()];
        }
        if split_size == 0 {
            panic!(
                "split: split_size must be at least 1 for dimension {dim} of size {n} (shape {:?})",
                self.shape()
            );
        }
        let sizes: Vec<usize> = (0..n)
            .step_by(split_size)
            .map(|start| split_size.min(n - start))
            .collect();
        self.split_with_sizes(&sizes, d as isize)
    }

    /// Splits into parts of the given sizes along `dim` (`torch.split` with a list, or
    /// `split_with_sizes`). The parts are views.
    ///
    /// # Panics
    /// If the sizes do not add up to the size of the dimension.
    #[track_caller]
    pub fn split_with_sizes(&self, split_sizes: &[usize], dim: isize) -> Vec<Tensor> {
        let shape = self.shape();
        let d = normalize_dim("split_with_sizes", dim, shape.len());
        let n = shape.get(d).copied().unwrap_or(1);
        if split_sizes.iter().sum::<usize>() != n {
            panic!(
                "split_with_sizes: sizes {split_sizes:?} add up to {} but dimension {dim} has \
                 size {n} (shape {shape:?})",
                split_sizes.iter().sum::<usize>()
            );
        }
        let mut start = 0;
        split_sizes
            .iter()
            .map(|&len| {
                let part = self.narrow(d as isize, start, len);
                start += len;
                part
            })
            .collect()
    }

    /// Tiles the tensor `repeats[i]` times along dimension `i` (`Tensor.repeat`); `repeats`
    /// may be longer than the number of dimensions, and size-1 dimensions are added in front
    /// first. The gradient sums over the tiles.
    ///
    /// # Panics
    /// If `repeats` has fewer entries than the tensor has dimensions.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// assert_eq!(x.repeat(&[2, 2]).to_vec::<f32>(), [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn repeat(&self, repeats: &[usize]) -> Tensor {
        let shape = self.shape();
        if repeats.len() < shape.len() {
            panic!(
                "repeat: {} repeats given for a tensor of {} dimensions {shape:?}; give at \
                 least one per dimension",
                repeats.len(),
                shape.len()
            );
        }
        let mut padded = vec![1; repeats.len() - shape.len()];
        padded.extend_from_slice(&shape);
        // [s0, s1, ...] viewed as [1, s0, 1, s1, ...], broadcast to [r0, s0, r1, s1, ...]:
        // tile i along dim k sits at index i of the inserted dim, as in the flattened result.
        let interleaved: Vec<usize> = padded.iter().flat_map(|&s| [1, s]).collect();
        let expanded: Vec<usize> = padded
            .iter()
            .zip(repeats)
            .flat_map(|(&s, &r)| [r, s])
            .collect();
        let out: Vec<usize> = padded.iter().zip(repeats).map(|(&s, &r)| s * r).collect();
        self.reshape_usize(&interleaved)
            .expand(&expanded)
            .reshape_usize(&out)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    #[test]
    fn chunk_can_give_fewer_parts_than_asked() {
        let x = Tensor::zeros(&[4, 2]);
        let sizes: Vec<usize> = x.chunk(3, 0).iter().map(|p| p.size(0)).collect();
        assert_eq!(sizes, [2, 2]);
        let sizes: Vec<usize> = Tensor::zeros(&[2, 5])
            .chunk(3, 1)
            .iter()
            .map(|p| p.size(1))
            .collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn split_parts_get_their_own_gradients() {
        let x = Tensor::from_vec((0..12).map(|v| v as f64 * 0.1).collect(), &[2, 6])
            .requires_grad_(true);
        gradcheck(
            |v| {
                let p = v[0].split_with_sizes(&[1, 3, 2], 1);
                let q = v[0].split(4, 1);
                &(&p[1] * &q[0].narrow(1, 1, 3)).sum() + &(&p[2] * &p[2]).sum()
            },
            &[x],
        )
        .unwrap();
    }

    #[test]
    fn repeat_tiles_and_sums_gradients_over_tiles() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 1, 2]);
        let y = x.repeat(&[2, 1, 3, 1]);
        assert_eq!(y.shape(), [2, 2, 3, 2]);
        assert_eq!(
            &y.to_vec::<f64>()[..8],
            [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0]
        );
        let x = x.requires_grad_(true);
        gradcheck(
            |v| &v[0].repeat(&[2, 1, 3]) * &v[0].repeat(&[2, 1, 3]),
            &[x],
        )
        .unwrap();
    }
}
