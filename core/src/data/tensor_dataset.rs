//! [`TensorDataset`]: samples are the rows (first-dimension slices) of one or more tensors.

use crate::data::dataset::Dataset;
use crate::data::stack::Stack;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One tensor or a tuple of tensors that share their first dimension, as the fields of a
/// [`TensorDataset`]. Implemented for `Tensor`, `(Tensor, Tensor)`,
/// `(Tensor, Tensor, Tensor)` and `Vec<Tensor>`.
pub trait TensorTuple: Stack<Batch = Self> + Clone + Sync {
    /// The shapes of the fields, in order.
    fn shapes(&self) -> Vec<Vec<usize>>;
    /// Row `index` of every field.
    fn select_row(&self, index: usize) -> Self;
    /// The rows at `index` (an i64 tensor) of every field.
    fn select_rows(&self, index: &Tensor) -> Self;
}

impl TensorTuple for Tensor {
    fn shapes(&self) -> Vec<Vec<usize>> {
        vec![self.shape()]
    }

    fn select_row(&self, index: usize) -> Self {
        self.select(0, index)
    }

    fn select_rows(&self, index: &Tensor) -> Self {
        self.index_select(0, index)
    }
}

impl TensorTuple for Vec<Tensor> {
    fn shapes(&self) -> Vec<Vec<usize>> {
        self.iter().map(Tensor::shape).collect()
    }

    fn select_row(&self, index: usize) -> Self {
        self.iter().map(|t| t.select(0, index)).collect()
    }

    fn select_rows(&self, index: &Tensor) -> Self {
        self.iter().map(|t| t.index_select(0, index)).collect()
    }
}

macro_rules! tensor_tuples {
    ($(($($n:tt),+)),*) => {$(
        impl TensorTuple for ($(tensor_tuples!(@ty $n),)+) {
            fn shapes(&self) -> Vec<Vec<usize>> {
                vec![$(self.$n.shape()),+]
            }

            fn select_row(&self, index: usize) -> Self {
                ($(self.$n.select(0, index),)+)
            }

            fn select_rows(&self, index: &Tensor) -> Self {
                ($(self.$n.index_select(0, index),)+)
            }
        }
    )*};
    (@ty $n:tt) => { Tensor };
}

tensor_tuples!((0, 1), (0, 1, 2));

/// Samples that are the rows of tensors sharing their first dimension (PyTorch's
/// `TensorDataset(x, y)`): sample `i` is `(x[i], y[i])`.
///
/// A batch is read with one `index_select` per tensor rather than by stacking single rows, so
/// an in-memory data set costs the loader one copy of the batch.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{DataLoader, TensorDataset};
/// use torchlet::Tensor;
///
/// let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[6, 2]);
/// let y = Tensor::from_vec(vec![0i64, 1, 0, 1, 0, 1], &[6]);
/// let loader = DataLoader::builder(TensorDataset::new((x, y))?).batch_size(4).build()?;
/// let shapes: Vec<_> = loader.iter().map(|(xb, yb)| (xb.shape(), yb.shape())).collect();
/// assert_eq!(shapes, vec![(vec![4, 2], vec![4]), (vec![2, 2], vec![2])]);
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone)]
pub struct TensorDataset<T> {
    tensors: T,
    len: usize,
}

impl<T: TensorTuple> TensorDataset<T> {
    /// A data set over the rows of `tensors`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a tensor is 0-dimensional or the first dimensions differ,
    /// naming the shapes.
    pub fn new(tensors: T) -> Result<Self> {
        let shapes = tensors.shapes();
        let Some(first) = shapes.first() else {
            return Err(Error::Config(
                "TensorDataset: got no tensors; pass at least one".to_string(),
            ));
        };
        if shapes.iter().any(|s| s.is_empty() || s[0] != first[0]) {
            return Err(Error::Config(format!(
                "TensorDataset: tensors of shapes {shapes:?} do not share their first \
                 (sample) dimension; every tensor needs one row per sample"
            )));
        }
        Ok(TensorDataset {
            len: first[0],
            tensors,
        })
    }

    /// The tensors, as given.
    pub fn tensors(&self) -> &T {
        &self.tensors
    }
}

impl<T: TensorTuple> Dataset for TensorDataset<T> {
    type Item = T;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<T> {
        crate::data::dataset::check_index(self.len, index)?;
        Ok(self.tensors.select_row(index))
    }

    fn get_batch(&self, indices: &[usize]) -> Option<Result<T>> {
        let index: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let index = Tensor::from_vec(index, &[indices.len()]);
        Some(Ok(self.tensors.select_rows(&index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::collate::{Collate, DefaultCollate};

    fn xy() -> (Tensor, Tensor) {
        let x = Tensor::from_vec((0..10).map(|v| v as f32).collect(), &[5, 2]);
        let y = Tensor::from_vec(vec![10i64, 11, 12, 13, 14], &[5]);
        (x, y)
    }

    #[test]
    fn get_returns_the_rows() {
        let d = TensorDataset::new(xy()).unwrap();
        assert_eq!(d.len(), 5);
        let (x, y) = d.get(3).unwrap();
        assert_eq!(x.to_vec::<f32>(), vec![6.0, 7.0]);
        assert_eq!(y.item(), 13.0);
        assert!(d.get(5).is_err());
    }

    #[test]
    fn batched_read_equals_stacking_rows() {
        let d = TensorDataset::new(xy()).unwrap();
        let (fx, fy) = DefaultCollate.fetch(&d, &[4, 0, 2]).unwrap();
        let rows: Vec<(Tensor, Tensor)> = [4, 0, 2].iter().map(|&i| d.get(i).unwrap()).collect();
        let (sx, sy) = DefaultCollate.collate(rows).unwrap();
        assert_eq!(fx.shape(), vec![3, 2]);
        assert_eq!(fx.to_vec::<f32>(), sx.to_vec::<f32>());
        assert_eq!(fy.to_vec::<i64>(), sy.to_vec::<i64>());
        assert_eq!(fy.to_vec::<i64>(), vec![14, 10, 12]);
    }

    #[test]
    fn mismatched_first_dimensions_are_an_error_naming_the_shapes() {
        let x = Tensor::zeros(&[5, 2]);
        let y = Tensor::zeros(&[4]);
        let err = TensorDataset::new((x, y)).err().unwrap().to_string();
        assert!(err.contains("[[5, 2], [4]]"), "{err}");
        assert!(TensorDataset::new(Tensor::scalar(1.0)).is_err());
    }
}
