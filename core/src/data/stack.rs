//! [`Stack`]: how the default collation batches each sample type (PyTorch's `default_collate`
//! rules): tensors along a new first dimension, tuples position by position, floats into a float
//! tensor and integers (class labels) into an i64 tensor.
//!
//! Its own file so that `dataset.rs` (whose `get_batch` returns a stacked batch) and
//! `collate.rs` (whose `fetch` reads a data set) both depend on it and not on each other.

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
