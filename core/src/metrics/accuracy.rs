//! [`accuracy`] of one batch and [`Accuracy`] over many (torcheval's `multiclass_accuracy`
//! and `MulticlassAccuracy`, micro-averaged: the fraction of samples predicted right).

use crate::metrics::classes;
use crate::tensor::Tensor;

/// The fraction of samples whose predicted class is the target's.
///
/// # Shapes
/// `input`: `[N, C]` scores (the prediction is the arg-max) or `[N]` classes; `target`: `[N]`
/// integer classes. An empty batch gives NaN.
///
/// # Panics
/// If the shapes do not fit or `target` is not an integer tensor.
#[track_caller]
pub fn accuracy(input: &Tensor, target: &Tensor) -> f64 {
    let mut acc = Accuracy::new();
    acc.update(input, target);
    acc.compute()
}

/// Accuracy accumulated over batches: samples predicted right over samples seen.
#[derive(Clone, Debug, Default)]
pub struct Accuracy {
    correct: u64,
    total: u64,
}

impl Accuracy {
    /// No samples yet.
    pub fn new() -> Accuracy {
        Accuracy::default()
    }

    /// Adds a batch; shapes as in [`accuracy`].
    ///
    /// # Panics
    /// If the shapes do not fit or `target` is not an integer tensor.
    #[track_caller]
    pub fn update(&mut self, input: &Tensor, target: &Tensor) -> &mut Accuracy {
        let (predicted, target) = classes("Accuracy", input, target);
        self.correct += predicted
            .iter()
            .zip(&target)
            .filter(|(p, t)| p == t)
            .count() as u64;
        self.total += target.len() as u64;
        self
    }

    /// The fraction right so far (NaN before any sample).
    pub fn compute(&self) -> f64 {
        self.correct as f64 / self.total as f64
    }

    /// The number of samples predicted right, and of samples seen.
    pub fn counts(&self) -> (u64, u64) {
        (self.correct, self.total)
    }

    /// Forgets every batch.
    pub fn reset(&mut self) {
        *self = Accuracy::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[i64]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len()])
    }

    #[test]
    fn scores_and_classes_give_the_fraction_right() {
        // Arg-max of each row: 1, 0, 2; targets 1, 2, 2: two of three right.
        let scores = Tensor::from_vec(
            vec![0.1f32, 0.8, 0.1, 0.5, 0.2, 0.3, 0.0, 0.1, 0.9],
            &[3, 3],
        );
        assert_eq!(accuracy(&scores, &labels(&[1, 2, 2])), 2.0 / 3.0);
        assert_eq!(
            accuracy(&labels(&[1, 0, 2]), &labels(&[1, 2, 2])),
            2.0 / 3.0
        );
        let mut acc = Accuracy::new();
        acc.update(&scores, &labels(&[1, 2, 2]));
        acc.update(&labels(&[0]), &labels(&[0]));
        assert_eq!((acc.counts(), acc.compute()), ((3, 4), 0.75));
        acc.reset();
        assert!(acc.compute().is_nan());
    }

    #[test]
    #[should_panic(expected = "Accuracy: input [3, 3] and target [2] (I64) do not fit")]
    fn mismatched_batches_panic_with_both_shapes() {
        accuracy(&Tensor::zeros(&[3, 3]), &labels(&[0, 1]));
    }

    #[test]
    #[should_panic(expected = "integer class indices")]
    fn float_targets_are_refused() {
        accuracy(&Tensor::zeros(&[2, 3]), &Tensor::zeros(&[2]));
    }
}
