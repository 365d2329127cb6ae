//! Collation: turning the samples of one batch into the batch the training loop sees.
//!
//! [`DefaultCollate`] stacks what PyTorch's `default_collate` stacks: tensors along a new first
//! dimension, tuples position by position, floats into a float tensor, and integers (class
//! labels) into an i64 tensor. Any closure `Fn(Vec<Item>) -> Result<Batch>` replaces it
//! (`collate_fn`).

use crate::data::dataset::{Dataset, get_item};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A sample type that the default collation knows how to batch.
///
/// | sample | batch |
/// | --- | --- |
/// | `Tensor` of shape `S` | `Tensor` of shape `[N, ..S]` |
/// | `f32`, `f64` | `Tensor` `[N]` of that dtype |
/// | `i64`, `i32`, `u8`, `usize` (class labels) | `Tensor` `[N]` of dtype i64 |
/// | `Vec<f32>` of length L | `Tensor` `[N, L]` f32 |
/// | `(A, B)`, `(A, B, C)`, `(A, B, C, D)` | the tuple of the batches |
/// | `Vec<Tensor>` (one per field) | `Vec<Tensor>`, stacked field by field |
pub trait Stack: Sized + Send + 'static {
    /// What a batch of these looks like.
    type Batch: Send + 'static;

    /// Stacks `items` (at least one) into a batch.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] when items disagree (shapes, dtypes, lengths), naming the first one that
    /// differs from item 0.
    fn stack(items: Vec<Self>) -> Result<Self::Batch>;
}

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
            crate::data::dataset::check_index(dataset.len(), i)?;
        }
        if let Some(batch) = dataset.get_batch(indices) {
            return batch;
        }
        let items = indices
            .iter()
            .map(|&i| get_item(dataset, i))
            .collect::<Result<Vec<T>>>()?;
        T::stack(items)
    }
}

impl Stack for Tensor {
    type Batch = Tensor;

    fn stack(items: Vec<Tensor>) -> Result<Tensor> {
        let Some(first) = items.first() else {
            return Err(empty_batch());
        };
        let (shape, dtype) = (first.shape(), first.dtype());
        if let Some((k, t)) = items
            .iter()
            .enumerate()
            .find(|(_, t)| t.shape() != shape || t.dtype() != dtype)
        {
            return Err(Error::Data(format!(
                "collate: sample {k} of the batch is a {:?} tensor of shape {:?}, but sample 0 is \
                 a {dtype:?} tensor of shape {shape:?}; the default collation stacks samples of \
                 one shape (pad them, or pass a collate_fn)",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(Tensor::stack(&items, 0))
    }
}

fn empty_batch() -> Error {
    Error::Data("collate: a batch needs at least one sample".to_string())
}

macro_rules! stack_scalars {
    ($($t:ty => $elem:ty),*) => {$(
        impl Stack for $t {
            type Batch = Tensor;

            fn stack(items: Vec<$t>) -> Result<Tensor> {
                let n = items.len();
                let data: Vec<$elem> = items.into_iter().map(|v| v as $elem).collect();
                Ok(Tensor::from_vec(data, &[n]))
            }
        }
    )*};
}

stack_scalars!(f32 => f32, f64 => f64, i64 => i64, i32 => i64, u8 => i64, usize => i64);

impl Stack for Vec<f32> {
    type Batch = Tensor;

    fn stack(items: Vec<Vec<f32>>) -> Result<Tensor> {
        let Some(first) = items.first() else {
            return Err(empty_batch());
        };
        let len = first.len();
        if let Some((k, v)) = items.iter().enumerate().find(|(_, v)| v.len() != len) {
            return Err(Error::Data(format!(
                "collate: sample {k} of the batch has {} values but sample 0 has {len}",
                v.len()
            )));
        }
        let n = items.len();
        Ok(Tensor::from_vec(items.concat(), &[n, len]))
    }
}

impl Stack for Vec<Tensor> {
    type Batch = Vec<Tensor>;

    fn stack(items: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> {
        let Some(first) = items.first() else {
            return Err(empty_batch());
        };
        let fields = first.len();
        if let Some((k, v)) = items.iter().enumerate().find(|(_, v)| v.len() != fields) {
            return Err(Error::Data(format!(
                "collate: sample {k} of the batch has {} tensors but sample 0 has {fields}",
                v.len()
            )));
        }
        let mut columns: Vec<Vec<Tensor>> = vec![Vec::with_capacity(items.len()); fields];
        for item in items {
            for (column, t) in columns.iter_mut().zip(item) {
                column.push(t);
            }
        }
        columns.into_iter().map(<Tensor as Stack>::stack).collect()
    }
}

macro_rules! stack_tuples {
    ($(($($name:ident $var:ident),+)),*) => {$(
        impl<$($name: Stack),+> Stack for ($($name,)+) {
            type Batch = ($($name::Batch,)+);

            fn stack(items: Vec<Self>) -> Result<Self::Batch> {
                $(let mut $var = Vec::with_capacity(items.len());)+
                for ($($name,)+) in items {
                    $($var.push($name);)+
                }
                Ok(($($name::stack($var)?,)+))
            }
        }
    )*};
}

#[allow(non_snake_case)]
mod tuples {
    use super::*;
    stack_tuples!((A a), (A a, B b), (A a, B b, C c), (A a, B b, C c, D d));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

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
