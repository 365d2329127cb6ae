//! Shape arithmetic: broadcasting (NumPy's rules, as in PyTorch) and dimension indices.

/// The shape both operands broadcast to, or `None` when they do not.
///
/// Dimensions are aligned from the right; each pair must be equal or contain a 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = (i + a.len()).checked_sub(n).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(n).map_or(1, |j| b[j]);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// `dim` (negative counts from the end) as an index into `ndim` dimensions.
///
/// # Panics
/// If `dim` is out of range, naming `op`.
#[track_caller]
pub fn normalize_dim(op: &str, dim: isize, ndim: usize) -> usize {
    let n = ndim as isize;
    let d = if dim < 0 { dim + n } else { dim };
    if d < 0 || d >= n.max(1) || (ndim == 0 && dim != 0 && dim != -1) {
        dim_out_of_range(op, dim, ndim);
    }
    d as usize
}

#[cold]
#[inline(never)]
#[track_caller]
fn dim_out_of_range(op: &str, dim: isize, ndim: usize) -> ! {
    let n = ndim as isize;
    panic!(
        "{op}: dimension {dim} out of range for a {ndim}-dimensional tensor (expected {} to {})",
        -n.max(1),
        n.max(1) - 1
    )
}

/// The dimensions (of an output of `out_ndim` dimensions) over which a gradient must be
/// summed to give an input of shape `shape` that was broadcast.
pub(crate) fn broadcast_reduction_dims(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let lead = out_shape.len() - shape.len();
    (0..out_shape.len())
        .filter(|&i| i < lead || (shape[i - lead] == 1 && out_shape[i] != 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shapes(&[2, 1, 5], &[3, 1]), Some(vec![2, 3, 5]));
        assert_eq!(broadcast_shapes(&[], &[2, 2]), Some(vec![2, 2]));
        assert_eq!(broadcast_shapes(&[3], &[4]), None);
    }

    #[test]
    fn negative_dims_count_from_the_end() {
        assert_eq!(normalize_dim("t", -1, 3), 2);
        assert_eq!(normalize_dim("t", 0, 0), 0);
        assert_eq!(broadcast_reduction_dims(&[3, 1], &[2, 3, 4]), vec![0, 2]);
    }

    #[test]
    #[should_panic(expected = "sum: dimension 3 out of range for a 3-dimensional tensor")]
    fn out_of_range_dim_names_the_op() {
        normalize_dim("sum", 3, 3);
    }
}
