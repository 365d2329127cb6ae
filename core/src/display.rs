//! PyTorch-style printing: `tensor([[1.0000, 2.0000], …], requires_grad=True)`.

use crate::dtype::{DType, Storage};
use crate::tensor::Tensor;
use std::fmt;

/// Above this many elements only the first and last `EDGE_ITEMS` of each dimension are
/// printed, as PyTorch does (`threshold=1000`, `edgeitems=3`).
const THRESHOLD: usize = 1000;
const EDGE_ITEMS: usize = 3;

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let storage = self.storage();
        let shape = storage.shape().to_vec();
        let values: Vec<f64> = match storage.to_dtype(DType::F64) {
            Storage::F64(a) => a.iter().copied().collect(),
            _ => unreachable!("converted to f64"),
        };
        let summarize = values.len() > THRESHOLD;
        let is_int = storage.dtype() == DType::I64;
        let cell = |v: f64| -> String {
            if is_int {
                format!("{v}")
            } else if v.is_finite() {
                format!("{v:.4}")
            } else {
                format!("{v}")
            }
        };
        let width = values.iter().map(|&v| cell(v).len()).max().unwrap_or(1);
        let mut out = String::from("tensor(");
        write_dim(&mut out, &values, &shape, 0, width, summarize, &cell);
        if shape.iter().product::<usize>() == 0 && shape.len() > 1 {
            out.push_str(&format!(", size={shape:?}"));
        }
        if storage.dtype() != DType::F32 {
            out.push_str(&format!(", dtype={}", storage.dtype()));
        }
        if let Some(node) = self.grad_fn() {
            out.push_str(&format!(", grad_fn=<{}>", node.name()));
        } else if self.requires_grad() {
            out.push_str(", requires_grad=True");
        }
        out.push(')');
        f.write_str(&out)
    }
}

/// Appends the sub-tensor `values` of `shape[depth..]`, indented to line up under `tensor([`.
fn write_dim(
    out: &mut String,
    values: &[f64],
    shape: &[usize],
    depth: usize,
    width: usize,
    summarize: bool,
    cell: &dyn Fn(f64) -> String,
) {
    if depth == shape.len() {
        out.push_str(&format!(
            "{:>width$}",
            cell(values.first().copied().unwrap_or(0.0))
        ));
        return;
    }
    let n = shape[depth];
    let stride: usize = shape[depth + 1..].iter().product();
    let shown: Vec<Option<usize>> = if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE_ITEMS..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    out.push('[');
    let last = depth + 1 == shape.len();
    let separator = if last {
        ", ".to_string()
    } else {
        let blank_lines = "\n".repeat(shape.len() - depth - 1);
        format!(",{blank_lines}{}", " ".repeat("tensor([".len() + depth))
    };
    for (i, item) in shown.iter().enumerate() {
        if i > 0 {
            out.push_str(&separator);
        }
        match item {
            Some(j) => write_dim(
                out,
                &values[j * stride..(j + 1) * stride],
                shape,
                depth + 1,
                width,
                summarize,
                cell,
            ),
            None => out.push_str("..."),
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use crate::tensor::Tensor;

    #[test]
    fn prints_like_pytorch() {
        let t = Tensor::from_vec(vec![1.0f32, -2.5, 3.0, 4.0], &[2, 2]);
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000, -2.5000],\n        [ 3.0000,  4.0000]])"
        );
        let t = Tensor::from_vec(vec![1i64, 2], &[2]);
        assert_eq!(t.to_string(), "tensor([1, 2], dtype=int64)");
        let w = Tensor::ones(&[2]).requires_grad_(true);
        assert_eq!(
            w.to_string(),
            "tensor([1.0000, 1.0000], requires_grad=True)"
        );
        assert_eq!(
            (&w * 2.0).to_string(),
            "tensor([2.0000, 2.0000], grad_fn=<mul>)"
        );
        assert_eq!(Tensor::scalar(0.5).to_string(), "tensor(0.5000)");
    }

    #[test]
    fn summarizes_large_tensors() {
        let s = Tensor::zeros(&[2000]).to_string();
        assert!(
            s.starts_with("tensor([0.0000, 0.0000, 0.0000, ..., 0.0000"),
            "{s}"
        );
    }
}
