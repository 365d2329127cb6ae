//! [`ConfusionMatrix`]: counts of (true class, predicted class) pairs (torcheval's
//! `MulticlassConfusionMatrix`).

use crate::metrics::classes;
use crate::tensor::Tensor;
use std::fmt;

/// Counts of each (true class, predicted class) pair over batches: row `i`, column `j` is
/// the number of samples of class `i` predicted as `j` (torcheval's and scikit-learn's
/// layout). `Display` prints it as a table.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::metrics::ConfusionMatrix;
///
/// let mut cm = ConfusionMatrix::new(2);
/// cm.update(&Tensor::from_vec(vec![0i64, 1, 1], &[3]), &Tensor::from_vec(vec![0i64, 0, 1], &[3]));
/// assert_eq!(cm.compute().to_vec::<i64>(), [1, 1, 0, 1]);
/// assert_eq!(cm.to_string(), "true\\pred  0  1\n        0  1  1\n        1  0  1");
/// ```
#[derive(Clone, Debug)]
pub struct ConfusionMatrix {
    num_classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix of `num_classes` × `num_classes`.
    ///
    /// # Panics
    /// If `num_classes` is 0.
    #[track_caller]
    pub fn new(num_classes: usize) -> ConfusionMatrix {
        if num_classes == 0 {
            panic!("ConfusionMatrix::new: num_classes must be at least 1, got 0");
        }
        ConfusionMatrix {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Adds a batch: `input` is `[N, C]` scores or `[N]` classes, `target` `[N]` classes.
    ///
    /// # Panics
    /// If the shapes do not fit, or a class is outside `0..num_classes`.
    #[track_caller]
    pub fn update(&mut self, input: &Tensor, target: &Tensor) -> &mut ConfusionMatrix {
        let (predicted, target) = classes("ConfusionMatrix", input, target);
        let n = self.num_classes;
        for (&p, &t) in predicted.iter().zip(&target) {
            let class = |c: i64| usize::try_from(c).ok().filter(|&c| c < n);
            let (Some(p), Some(t)) = (class(p), class(t)) else {
                class_error(n, p, t);
            };
            self.counts[t * n + p] += 1;
        }
        self
    }

    /// The counts as an `[C, C]` i64 tensor, rows the true class, columns the predicted.
    pub fn compute(&self) -> Tensor {
        let counts = self.counts.iter().map(|&c| c as i64).collect();
        Tensor::from_vec(counts, &[self.num_classes, self.num_classes])
    }

    /// The number of samples of class `target` predicted as `predicted`.
    pub fn count(&self, target: usize, predicted: usize) -> u64 {
        self.counts[target * self.num_classes + predicted]
    }

    /// Forgets every batch.
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn class_error(num_classes: usize, predicted: i64, target: i64) -> ! {
    panic!(
        "ConfusionMatrix: predicted class {predicted} or target class {target} is outside \
         0..{num_classes}; make num_classes the number of classes"
    )
}

impl fmt::Display for ConfusionMatrix {
    /// A table with the true class down the side and the predicted class across.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.num_classes;
        let width = self
            .counts
            .iter()
            .map(|c| c.to_string().len())
            .chain([(n - 1).to_string().len()])
            .max()
            .unwrap_or(1);
        let corner = "true\\pred";
        write!(f, "{corner}")?;
        for j in 0..n {
            write!(f, "  {j:>width$}")?;
        }
        for i in 0..n {
            write!(f, "\n{i:>w$}", w = corner.len())?;
            for j in 0..n {
                write!(f, "  {:>width$}", self.count(i, j))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_counted_by_true_and_predicted_class() {
        let mut cm = ConfusionMatrix::new(3);
        // Arg-max 2, 0, 0 against targets 2, 0, 1.
        let scores = Tensor::from_vec(
            vec![0.0f32, 0.1, 0.9, 0.7, 0.2, 0.1, 0.6, 0.3, 0.1],
            &[3, 3],
        );
        cm.update(&scores, &Tensor::from_vec(vec![2i64, 0, 1], &[3]));
        assert_eq!(cm.compute().to_vec::<i64>(), [1, 0, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(cm.count(1, 0), 1);
        cm.reset();
        assert_eq!(cm.compute().to_vec::<i64>(), [0; 9]);
    }

    #[test]
    #[should_panic(expected = "target class 3 is outside 0..3")]
    fn classes_past_num_classes_are_refused() {
        let c = Tensor::from_vec(vec![0i64, 3], &[2]);
        ConfusionMatrix::new(3).update(&Tensor::from_vec(vec![0i64, 1], &[2]), &c);
    }
}
