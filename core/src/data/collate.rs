//! Collation: turning the samples of one batch into the batch the training loop sees.
//!
//! [`DefaultCollate`] stacks what PyTorch's `default_collate` stacks (see [`Stack`], in
//! `stack.rs`). Any closure `Fn(Vec<Item>) -> Result<Batch>` replaces it (`collate_fn`).

use crate::data::dataset::{Dataset, check_index, get_item};
use crate::data::engine::{Activity, doing};
use crate::error::Result;

pub use crate::data::stack::Stack;

/// Turns the samples of one batch into a batch. Implemented by [`DefaultCollate`] and by every
/// closure `Fn(Vec<T>) -> Result<B> + Send + Sync`.
pub trait Collate<T>: Send + Sync + 'static {
    /// The batch the loader yields.
    type Batch: Send + 'static;

    /// Combines the samples of one batch, in sampler order.
    fn collate(&self, items: Vec<T>) -> Result<Self::Batch>;

    /// Reads the samples at `indices` from `dataset` and collates them. The default calls
    /// `get` on each index; [`DefaultCollate`] first tries the data set's batched read
    /// ([`Dataset::get_batch`]).
    fn fetch<D: Dataset<Item = T> + ?Sized>(
        &self,
        dataset: &D,
        indices: &[usize],
    ) -> Result<Self::Batch> {
        let items = indices
            .iter()
            .map(|&i| get_item(dataset, i))
            .collect::<Result<Vec<T>>>()?;
        doing(Activity::Collate);
        self.collate(items)
    }
}

impl<T, B, F> Collate<T> for F
where
    F: Fn(Vec<T>) -> Result<B> + Send + Sync + 'static,
    B: Send + 'static,
{
    type Batch = B;

    fn collate(&self, items: Vec<T>) -> Result<B> {
        self(items)
    }
}

/// The collation a loader uses unless given a `collate_fn`: [`Stack`] (PyTorch's
/// `default_collate`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultCollate;

impl<T: Stack> Collate<T> for DefaultCollate {
    type Batch = T::Batch;

    fn collate(&self, items: Vec<T>) -> Result<T::Batch> {
        T::stack(items)
    }

    fn fetch<D: Dataset<Item = T> + ?Sized>(
        &self,
        dataset: &D,
        indices: &[usize],
    ) -> Result<T::Batch> {
        for &i in indices {
            check_index(dataset.len(), i)?;
        }
        doing(Activity::GetBatch);
        if let Some(batch) = dataset.get_batch(indices) {
            return batch;
        }
        let items = indices
            .iter()
            .map(|&i| get_item(dataset, i))
            .collect::<Result<Vec<T>>>()?;
        doing(Activity::Collate);
        T::stack(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    #[test]
    fn tensors_stack_along_a_new_first_dimension() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
        let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2]);
        let t = DefaultCollate.collate(vec![a, b]).unwrap();
        assert_eq!(t.shape(), vec![2, 2]);
        assert_eq!(t.to_vec::<f32>(), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn tuples_with_class_labels_become_a_tensor_and_an_i64_tensor() {
        let items = vec![
            (Tensor::from_vec(vec![1.0f32], &[1]), 3usize),
            (Tensor::from_vec(vec![2.0f32], &[1]), 7usize),
        ];
        let (x, y) = DefaultCollate.collate(items).unwrap();
        assert_eq!(x.shape(), vec![2, 1]);
        assert_eq!(y.dtype(), DType::I64);
        assert_eq!(y.to_vec::<i64>(), vec![3, 7]);
        let (f, v) = DefaultCollate
            .collate(vec![(0.5f32, vec![1.0f32, 2.0]), (1.5, vec![3.0, 4.0])])
            .unwrap();
        assert_eq!((f.dtype(), f.shape()), (DType::F32, vec![2]));
        assert_eq!(v.shape(), vec![2, 2]);
    }

    #[test]
    fn mismatched_samples_are_an_error_naming_the_sample() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
        let b = Tensor::from_vec(vec![3.0f32], &[1]);
        let err = DefaultCollate.collate(vec![a, b]).unwrap_err().to_string();
        assert!(err.contains("sample 1") && err.contains("[1]"), "{err}");
        let err = DefaultCollate
            .collate(vec![vec![1.0f32], vec![]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sample 1 of the batch has 0 values"), "{err}");
    }

    #[test]
    fn a_closure_replaces_the_default() {
        let sum = |items: Vec<i64>| -> Result<i64> { Ok(items.iter().sum()) };
        assert_eq!(sum.collate(vec![1, 2, 3]).unwrap(), 6);
    }
}
