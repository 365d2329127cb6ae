//! `one_hot`: class indices as indicator vectors.

use crate::dtype::DType;
use crate::tensor::Tensor;

/// Class indices (i64, any shape) as one-hot rows: the output has shape
/// `tensor.shape + [num_classes]`, i64, with a 1 at each index (`F.one_hot`). `None`
/// takes `max(tensor) + 1` classes, as PyTorch's `num_classes = -1` does.
///
/// # Panics
/// If `tensor` is not i64 or holds an index outside `0..num_classes`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::functional::one_hot};
/// let y = one_hot(&Tensor::from_vec(vec![2i64, 0], &[2]), Some(3));
/// assert_eq!(y.to_vec::<i64>(), [0, 0, 1, 1, 0, 0]);
/// ```
#[track_caller]
pub fn one_hot(tensor: &Tensor, num_classes: Option<usize>) -> Tensor {
    if tensor.dtype() != DType::I64 {
        panic!(
            "one_hot: class values must be int64, got {} {:?}; convert with .long()",
            tensor.dtype(),
            tensor.shape()
        );
    }
    let values = tensor.to_vec::<i64>();
    let classes = match num_classes {
        Some(n) => n,
        None => values.iter().max().map_or(0, |&m| (m.max(-1) + 1) as usize),
    };
    let mut out = vec![0i64; values.len() * classes];
    for (row, &v) in values.iter().enumerate() {
        if v < 0 || v as usize >= classes {
            panic!(
                "one_hot: class value {v} is out of range for {classes} classes (valid: \
                 0..{classes})"
            );
        }
        out[row * classes + v as usize] = 1;
    }
    let mut shape = tensor.shape();
    shape.push(classes);
    Tensor::from_vec(out, &shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_infers_the_number_of_classes() {
        let y = one_hot(&Tensor::from_vec(vec![1i64, 3, 0, 2], &[2, 2]), None);
        assert_eq!(y.shape(), [2, 2, 4]);
        assert_eq!(&y.to_vec::<i64>()[..8], [0, 1, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "one_hot: class value 3 is out of range for 3 classes")]
    fn one_hot_rejects_out_of_range_values() {
        one_hot(&Tensor::from_vec(vec![3i64], &[1]), Some(3));
    }
}
