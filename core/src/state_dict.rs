//! [`StateDict`]: named tensors in order (PyTorch's `OrderedDict` returned by
//! `state_dict()`), the one state format of modules, optimizers, schedulers and checkpoints.
//!
//! # NOTE [ Restoring untrusted state ]
//! A state dict read from a file can hold anything: a vector where a scalar belongs, an
//! integer tensor where floats belong, a negative count, a NaN. Every restore path reads
//! through the checked accessors here ([`StateDict::scalar_f64`], [`StateDict::count`],
//! [`StateDict::tensor_like`]), which return an error naming the key, the value and what was
//! expected; none calls `item()` or takes a first element on untrusted data. Callers collect
//! every problem and change nothing unless all entries are sound.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Named tensors in insertion order, looked up by key.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{StateDict, Tensor};
/// let mut sd = StateDict::new();
/// sd.insert("lr", Tensor::from_vec(vec![0.1f64], &[]));
/// sd.insert("betas", Tensor::from_vec(vec![0.9f64, 0.999], &[2]));
/// assert_eq!(sd.scalar_f64("lr")?, Some(0.1));
/// let err = sd.scalar_f64("betas").unwrap_err().to_string();
/// assert_eq!(err, "`betas` must be a scalar (shape []), got float64 of shape [2]");
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> StateDict {
        StateDict::default()
    }

    /// Adds `tensor` under `key`, replacing (in place, keeping the order) an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, tensor: Tensor) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, tensor));
            }
        }
    }

    /// The tensor under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// `(key, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k, t))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries whose key starts with `prefix.`, under the rest of the key
    /// (`checkpoint.prefixed("optimizer")` holds `state.0.step` for `optimizer.state.0.step`).
    pub fn prefixed(&self, prefix: &str) -> StateDict {
        self.iter()
            .filter_map(|(k, t)| {
                k.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(|rest| (rest.to_string(), t.clone()))
            })
            .collect()
    }

    /// Adds every entry of `other` under `prefix.{key}`.
    pub fn insert_prefixed(&mut self, prefix: &str, other: &StateDict) {
        for (k, t) in other.iter() {
            self.insert(format!("{prefix}.{k}"), t.clone());
        }
    }

    // ---- checked reads: see NOTE [ Restoring untrusted state ] ---------------------------

    /// The number under `key`: a tensor of shape `[]` (any dtype) holding a finite value;
    /// `None` when the key is absent.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key when the tensor is not a scalar or not finite.
    pub fn scalar_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(t) = self.scalar(key)? else {
            return Ok(None);
        };
        let v = t.to_vec::<f64>()[0];
        if !v.is_finite() {
            return Err(entry_error(
                key,
                format!("is {v}; expected a finite number"),
            ));
        }
        Ok(Some(v))
    }

    /// The count under `key` (an epoch, a step, an index): a scalar holding a non-negative
    /// whole number, as i64 or as an exactly representable float; `None` when absent.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key when the tensor is not a scalar, or its value is
    /// negative, fractional or not finite.
    pub fn count(&self, key: &str) -> Result<Option<u64>> {
        let Some(t) = self.scalar(key)? else {
            return Ok(None);
        };
        let value = match t.dtype() {
            DType::I64 => {
                u64::try_from(t.to_vec::<i64>()[0]).map_err(|_| t.to_vec::<i64>()[0] as f64)
            }
            _ => {
                let v = t.to_vec::<f64>()[0];
                if v >= 0.0 && v.fract() == 0.0 && v <= MAX_EXACT {
                    Ok(v as u64)
                } else {
                    Err(v)
                }
            }
        };
        value
            .map(Some)
            .map_err(|v| entry_error(key, format!("is {v}; expected a non-negative whole number")))
    }

    /// The tensor under `key`, which must have `shape` and a dtype of the same kind as
    /// `dtype` (floating point or integer); `None` when absent.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, both shapes or both dtypes.
    pub fn tensor_like(&self, key: &str, shape: &[usize], dtype: DType) -> Result<Option<&Tensor>> {
        let Some(t) = self.get(key) else {
            return Ok(None);
        };
        if t.dtype().is_float() != dtype.is_float() {
            return Err(entry_error(
                key,
                format!("holds {} where {dtype} belongs", t.dtype()),
            ));
        }
        if t.shape() != shape {
            return Err(entry_error(
                key,
                format!("has shape {:?}; expected {shape:?}", t.shape()),
            ));
        }
        Ok(Some(t))
    }

    fn scalar(&self, key: &str) -> Result<Option<&Tensor>> {
        let Some(t) = self.get(key) else {
            return Ok(None);
        };
        if !t.shape().is_empty() {
            return Err(entry_error(
                key,
                format!(
                    "must be a scalar (shape []), got {} of shape {:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(Some(t))
    }
}

/// The largest float below which every whole number is exact (2^53).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn entry_error(key: &str, what: String) -> Error {
    Error::Config(format!("`{key}` {what}"))
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> StateDict {
        let mut sd = StateDict::new();
        for (k, t) in iter {
            sd.insert(k, t);
        }
        sd
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, t)| (k, t.shape())))
            .finish()
    }
}

/// What has its state in a [`StateDict`]: every [`Module`](crate::nn::Module), through a
/// blanket impl in `nn`. [`serialize`](crate::serialize) saves and loads through it, so
/// that the file format knows tensors and state dicts only.
pub trait Stateful {
    /// The state to save: [`Module::state_dict`](crate::nn::Module::state_dict).
    fn save_state(&self) -> StateDict;

    /// Restores saved state: [`Module::load_state_dict`](crate::nn::Module::load_state_dict).
    ///
    /// # Errors
    /// As `Module::load_state_dict`.
    fn load_state(&mut self, state: &StateDict, strict: bool) -> Result<IncompatibleKeys>;
}

/// What a non-strict [`load_state_dict`](crate::nn::Module::load_state_dict) left out
/// (PyTorch's `_IncompatibleKeys`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// Keys of the module that the state dict did not have.
    pub missing_keys: Vec<String>,
    /// Keys of the state dict that the module does not have.
    pub unexpected_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_insertion_order_and_replaces_in_place() {
        let mut sd = StateDict::new();
        sd.insert("b", Tensor::zeros(&[1]));
        sd.insert("a", Tensor::zeros(&[2]));
        sd.insert("b", Tensor::zeros(&[3]));
        let keys: Vec<_> = sd.keys().cloned().collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(sd.get("b").map(|t| t.shape()), Some(vec![3]));
    }

    #[test]
    fn checked_reads_refuse_vectors_negatives_and_wrong_kinds() {
        let mut sd = StateDict::new();
        sd.insert("v", Tensor::from_vec(vec![3.0f64, 4.0], &[2]));
        sd.insert("neg", Tensor::from_vec(vec![-1i64], &[]));
        sd.insert("half", Tensor::from_vec(vec![2.5f64], &[]));
        sd.insert("nan", Tensor::from_vec(vec![f64::NAN], &[]));
        sd.insert("ok", Tensor::from_vec(vec![7i64], &[]));
        sd.insert("ints", Tensor::from_vec(vec![1i64, 2], &[2]));
        let err = |r: Result<Option<u64>>| r.unwrap_err().to_string();
        assert_eq!(
            err(sd.count("v")),
            "`v` must be a scalar (shape []), got float64 of shape [2]"
        );
        assert_eq!(
            err(sd.count("neg")),
            "`neg` is -1; expected a non-negative whole number"
        );
        assert_eq!(
            err(sd.count("half")),
            "`half` is 2.5; expected a non-negative whole number"
        );
        assert_eq!(sd.count("ok").unwrap(), Some(7));
        assert_eq!(sd.count("absent").unwrap(), None);
        assert_eq!(
            sd.scalar_f64("nan").unwrap_err().to_string(),
            "`nan` is NaN; expected a finite number"
        );
        assert_eq!(
            sd.tensor_like("ints", &[2], DType::F32)
                .unwrap_err()
                .to_string(),
            "`ints` holds int64 where float32 belongs"
        );
        assert_eq!(
            sd.tensor_like("v", &[3], DType::F32)
                .unwrap_err()
                .to_string(),
            "`v` has shape [2]; expected [3]"
        );
    }
}
