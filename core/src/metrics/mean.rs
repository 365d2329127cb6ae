//! [`Mean`]: a running (weighted) mean, such as the loss of an epoch (torcheval's `Mean`).

/// A weighted mean accumulated one value at a time.
///
/// For the mean loss over batches of different sizes, weight each batch's mean loss by its
/// size: `loss.update_weighted(batch_loss, batch_size as f64)`.
#[derive(Clone, Debug, Default)]
pub struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    /// No values yet.
    pub fn new() -> Mean {
        Mean::default()
    }

    /// Adds `value` with weight 1.
    pub fn update(&mut self, value: f64) -> &mut Mean {
        self.update_weighted(value, 1.0)
    }

    /// Adds `value` with weight `weight` (torcheval's `update(input, weight=…)`).
    ///
    /// # Panics
    /// If `weight` is negative or not finite.
    #[track_caller]
    pub fn update_weighted(&mut self, value: f64, weight: f64) -> &mut Mean {
        if !(weight >= 0.0 && weight.is_finite()) {
            panic!("Mean::update_weighted: weight must be finite and non-negative, got {weight}");
        }
        self.sum += value * weight;
        self.weight += weight;
        self
    }

    /// The weighted mean so far; 0 before any weight, as torcheval returns.
    pub fn compute(&self) -> f64 {
        if self.weight == 0.0 {
            0.0
        } else {
            self.sum / self.weight
        }
    }

    /// Forgets every value.
    pub fn reset(&mut self) {
        *self = Mean::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_values_average_by_weight() {
        let mut m = Mean::new();
        assert_eq!(m.compute(), 0.0);
        // Batches of 2 and 6 samples with mean losses 1 and 3: (2·1 + 6·3) / 8 = 2.5.
        m.update_weighted(1.0, 2.0).update_weighted(3.0, 6.0);
        assert_eq!(m.compute(), 2.5);
        m.reset();
        m.update(1.0).update(2.0);
        assert_eq!(m.compute(), 1.5);
    }

    #[test]
    #[should_panic(expected = "weight must be finite and non-negative, got -1")]
    fn negative_weights_are_refused() {
        Mean::new().update_weighted(1.0, -1.0);
    }
}
