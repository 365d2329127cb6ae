//! Map-style data sets: [`Dataset`] (`len` + `get`), [`Subset`], [`ConcatDataset`] and
//! [`random_split`]. `TensorDataset` lives in `tensor_dataset.rs`.

use crate::data::engine::{Activity, doing};
use crate::data::stack::Stack;
use crate::error::{Error, Result};
use crate::random::Generator;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::sync::Arc;

/// A data set that can return the item at any index in `0..len()`, as PyTorch's
/// `torch.utils.data.Dataset` (`__len__` + `__getitem__`).
///
/// `Send + Sync` because a [`DataLoader`](crate::data::DataLoader) with `num_workers > 0` reads
/// it from several threads at once.
///
/// # Errors
///
/// `get` returns an error when the item cannot be produced (a missing file, a bad record).
/// The loader checks `index < len()` before calling `get`, so implementations may index
/// directly; a panic inside `get` is caught by the loader and reported as an error naming
/// the index and the worker (see NOTE [ Errors from worker threads ] in
/// [`data`](crate::data#note--errors-from-worker-threads-)).
///
/// # Example
///
/// A data set of your own: samples computed on demand (they could as well be read from
/// files), batched by a [`DataLoader`](crate::data::DataLoader) with worker threads.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::data::{DataLoader, Dataset};
///
/// /// `n` points on the line `y = 2x + 1`, at `x = 0, 1, 2, …`.
/// struct Line {
///     n: usize,
/// }
///
/// impl Dataset for Line {
///     type Item = (Tensor, Tensor);
///
///     fn len(&self) -> usize {
///         self.n
///     }
///
///     fn get(&self, index: usize) -> torchlet::Result<(Tensor, Tensor)> {
///         let x = index as f32;
///         Ok((Tensor::from_vec(vec![x], &[1]), Tensor::from_vec(vec![2.0 * x + 1.0], &[1])))
///     }
/// }
///
/// let loader = DataLoader::builder(Line { n: 10 }).batch_size(4).num_workers(2).build()?;
/// let batches: Vec<(Tensor, Tensor)> = loader.iter().collect();
/// assert_eq!(batches.len(), 3); // 4 + 4 + 2 samples
/// assert_eq!(batches[0].0.shape(), [4, 1]); // items stacked along a new first dimension
/// assert_eq!(batches[2].1.to_vec::<f32>(), [17.0, 19.0]);
/// # Ok::<(), torchlet::Error>(())
/// ```
pub trait Dataset: Send + Sync {
    /// One sample, e.g. `(Tensor, i64)` or `(Tensor, Tensor)`.
    type Item: Send + 'static;

    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether the data set has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample at `index` (`index < len()`).
    fn get(&self, index: usize) -> Result<Self::Item>;

    /// The samples at `indices`, already collated the way the default collation would
    /// (see [`Stack`]), or `None` when the data set has no faster way than `get` on each index
    /// followed by stacking. Indices are already checked against `len()`.
    ///
    /// `TensorDataset` overrides this with one `index_select` per tensor, which is what keeps
    /// the loader cheap for in-memory data (PyTorch's `__getitems__` plays the same role).
    fn get_batch(&self, indices: &[usize]) -> Option<Result<<Self::Item as Stack>::Batch>>
    where
        Self::Item: Stack,
    {
        let _ = indices;
        None
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Item = D::Item;

    fn len(&self) -> usize {
        (**self).len()
    }

    fn get(&self, index: usize) -> Result<Self::Item> {
        (**self).get(index)
    }

    fn get_batch(&self, indices: &[usize]) -> Option<Result<<Self::Item as Stack>::Batch>>
    where
        Self::Item: Stack,
    {
        (**self).get_batch(indices)
    }
}

/// Checks `index` against the data set's length and calls `get`, naming the index in an error.
/// A panic inside `get` is caught by the loader's engine, which names the index too: `get_item`
/// records what it is doing (see NOTE [ Errors from worker threads ] in `data/mod.rs`).
pub(crate) fn get_item<D: Dataset + ?Sized>(dataset: &D, index: usize) -> Result<D::Item> {
    check_index(dataset.len(), index)?;
    doing(Activity::Get(index));
    dataset
        .get(index)
        .map_err(|err| Error::Data(format!("dataset.get({index}) failed: {err}")))
}

pub(crate) fn check_index(len: usize, index: usize) -> Result<()> {
    if index < len {
        Ok(())
    } else {
        Err(Error::Data(format!(
            "index {index} is out of range for a data set of length {len}; \
             check the sampler's indices"
        )))
    }
}

/// The samples of `dataset` at `indices`, in that order (PyTorch's `Subset`).
///
/// The parent is held through an `Arc`, so the subsets made by [`random_split`] share one copy.
pub struct Subset<D> {
    dataset: Arc<D>,
    indices: Vec<usize>,
}

// Manual impl: `Arc<D>` is Clone for every D, a derive would demand `D: Clone`.
impl<D> Clone for Subset<D> {
    fn clone(&self) -> Self {
        Subset {
            dataset: Arc::clone(&self.dataset),
            indices: self.indices.clone(),
        }
    }
}

impl<D> std::fmt::Debug for Subset<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("indices", &self.indices)
            .finish_non_exhaustive()
    }
}

impl<D: Dataset> Subset<D> {
    /// The samples of `dataset` at `indices`. Pass an `Arc` of a data set to share it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when an index is not below `dataset.len()`.
    pub fn new(dataset: D, indices: Vec<usize>) -> Result<Self> {
        let dataset = Arc::new(dataset);
        let len = dataset.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            return Err(Error::Config(format!(
                "Subset: index {bad} is out of range for a data set of length {len}"
            )));
        }
        Ok(Subset { dataset, indices })
    }

    /// The parent data set.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// The parent's indices that this subset exposes, in order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    type Item = D::Item;

    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get(&self, index: usize) -> Result<Self::Item> {
        check_index(self.indices.len(), index)?;
        self.dataset.get(self.indices[index])
    }

    fn get_batch(&self, indices: &[usize]) -> Option<Result<<Self::Item as Stack>::Batch>>
    where
        Self::Item: Stack,
    {
        let parent: Vec<usize> = indices.iter().map(|&i| self.indices[i]).collect();
        self.dataset.get_batch(&parent)
    }
}

/// Several data sets of the same type, one after the other (PyTorch's `ConcatDataset`).
#[derive(Clone, Debug)]
pub struct ConcatDataset<D> {
    datasets: Vec<D>,
    /// `ends[k]` = total length of `datasets[..=k]`.
    ends: Vec<usize>,
}

impl<D: Dataset> ConcatDataset<D> {
    /// The concatenation of `datasets`, in order.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `datasets` is empty.
    pub fn new(datasets: Vec<D>) -> Result<Self> {
        if datasets.is_empty() {
            return Err(Error::Config(
                "ConcatDataset: got no data sets; pass at least one".to_string(),
            ));
        }
        let ends = datasets
            .iter()
            .scan(0usize, |total, d| {
                *total += d.len();
                Some(*total)
            })
            .collect();
        Ok(ConcatDataset { datasets, ends })
    }

    /// The parts, in order.
    pub fn datasets(&self) -> &[D] {
        &self.datasets
    }

    /// (part, index inside the part) of a global index below `len()`.
    fn locate(&self, index: usize) -> (usize, usize) {
        let part = self.ends.partition_point(|&end| end <= index);
        let start = if part == 0 { 0 } else { self.ends[part - 1] };
        (part, index - start)
    }
}

impl<D: Dataset> Dataset for ConcatDataset<D> {
    type Item = D::Item;

    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn get(&self, index: usize) -> Result<Self::Item> {
        check_index(self.len(), index)?;
        let (part, local) = self.locate(index);
        self.datasets[part].get(local)
    }

    /// Batched read when every index falls in the same part; otherwise `None`.
    fn get_batch(&self, indices: &[usize]) -> Option<Result<<Self::Item as Stack>::Batch>>
    where
        Self::Item: Stack,
    {
        let first = indices.first()?;
        let (part, _) = self.locate(*first);
        let mut local = Vec::with_capacity(indices.len());
        for &i in indices {
            let (p, l) = self.locate(i);
            if p != part {
                return None;
            }
            local.push(l);
        }
        self.datasets[part].get_batch(&local)
    }
}

/// The sizes of the parts that [`random_split`] makes: counts that add up to the data set's
/// length, or fractions that add up to 1 (as PyTorch accepts both).
#[derive(Clone, Debug, PartialEq)]
pub enum Lengths {
    /// Counts that add up to the data set's length.
    Counts(Vec<usize>),
    /// Fractions that add up to 1: `floor(fraction · len)` each, then what is left one by
    /// one to the first parts (PyTorch's rule).
    Fractions(Vec<f64>),
}

impl From<Vec<usize>> for Lengths {
    fn from(v: Vec<usize>) -> Self {
        Lengths::Counts(v)
    }
}

impl From<&[usize]> for Lengths {
    fn from(v: &[usize]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Lengths {
    fn from(v: [usize; N]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}

impl From<Vec<f64>> for Lengths {
    fn from(v: Vec<f64>) -> Self {
        Lengths::Fractions(v)
    }
}

impl From<&[f64]> for Lengths {
    fn from(v: &[f64]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}

impl<const N: usize> From<[f64; N]> for Lengths {
    fn from(v: [f64; N]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}

impl Lengths {
    /// The part sizes for a data set of `len` samples.
    fn counts(&self, len: usize) -> Result<Vec<usize>> {
        match self {
            Lengths::Counts(counts) => {
                let total: usize = counts.iter().sum();
                if total != len {
                    return Err(Error::Config(format!(
                        "random_split: lengths {counts:?} add up to {total}, but the data set \
                         has {len} samples; pass counts that add up to {len} or fractions"
                    )));
                }
                Ok(counts.clone())
            }
            Lengths::Fractions(fractions) => fraction_counts(fractions, len),
        }
    }
}

/// PyTorch's rule: floor(fraction * len) each, then the remainder one by one to the first parts.
fn fraction_counts(fractions: &[f64], len: usize) -> Result<Vec<usize>> {
    let sum: f64 = fractions.iter().sum();
    if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || (sum - 1.0).abs() > 1e-6 {
        return Err(Error::Config(format!(
            "random_split: fractions {fractions:?} must each be in [0, 1] and add up to 1 \
             (they add up to {sum})"
        )));
    }
    let mut counts: Vec<usize> = fractions
        .iter()
        .map(|f| (f * len as f64).floor() as usize)
        .collect();
    let assigned: usize = counts.iter().sum();
    let parts = counts.len();
    for k in 0..len.saturating_sub(assigned) {
        counts[k % parts] += 1;
    }
    Ok(counts)
}

/// Splits `dataset` into non-overlapping random [`Subset`]s of the given sizes, from a
/// permutation seeded by `seed` (PyTorch's `random_split(dataset, lengths, generator)`).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{Dataset, random_split};
///
/// /// The numbers `0..n`.
/// struct Range(usize);
///
/// impl Dataset for Range {
///     type Item = usize;
///     fn len(&self) -> usize {
///         self.0
///     }
///     fn get(&self, i: usize) -> torchlet::Result<usize> {
///         Ok(i)
///     }
/// }
///
/// let parts = random_split(Range(10), [0.8, 0.2], 42)?;
/// assert_eq!((parts[0].len(), parts[1].len()), (8, 2));
/// let again = random_split(Range(10), [8, 2], 42)?;
/// assert_eq!(parts[1].indices(), again[1].indices());
/// # Ok::<(), torchlet::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Config`] when counts do not add up to `dataset.len()`, or fractions are outside
/// [0, 1] or do not add up to 1.
pub fn random_split<D: Dataset>(
    dataset: D,
    lengths: impl Into<Lengths>,
    seed: u64,
) -> Result<Vec<Subset<D>>> {
    let dataset = Arc::new(dataset);
    let counts = lengths.into().counts(dataset.len())?;
    let mut order: Vec<usize> = (0..dataset.len()).collect();
    order.shuffle(&mut Generator::seed_from_u64(seed));
    let mut start = 0;
    let mut parts = Vec::with_capacity(counts.len());
    for count in counts {
        parts.push(Subset {
            dataset: Arc::clone(&dataset),
            indices: order[start..start + count].to_vec(),
        });
        start += count;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item i is i; `get` fails at `bad`.
    struct Range {
        len: usize,
        bad: Option<usize>,
    }

    fn range(len: usize) -> Range {
        Range { len, bad: None }
    }

    impl Dataset for Range {
        type Item = usize;
        fn len(&self) -> usize {
            self.len
        }
        fn get(&self, index: usize) -> Result<usize> {
            if Some(index) == self.bad {
                return Err(Error::Data("bad record".into()));
            }
            Ok(index)
        }
    }

    #[test]
    fn subset_maps_indices_and_rejects_out_of_range() {
        let s = Subset::new(range(5), vec![4, 0, 2]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(0).unwrap(), 4);
        assert_eq!(s.get(2).unwrap(), 2);
        assert!(s.get(3).is_err());
        let err = Subset::new(range(5), vec![5]).unwrap_err().to_string();
        assert!(err.contains("index 5") && err.contains("length 5"), "{err}");
    }

    #[test]
    fn concat_dataset_walks_parts_in_order() {
        let c = ConcatDataset::new(vec![range(2), range(0), range(3)]).unwrap();
        assert_eq!(c.len(), 5);
        let all: Vec<usize> = (0..5).map(|i| c.get(i).unwrap()).collect();
        assert_eq!(all, vec![0, 1, 0, 1, 2]);
        assert!(c.get(5).is_err());
        assert!(ConcatDataset::<Range>::new(vec![]).is_err());
    }

    #[test]
    fn random_split_is_a_seeded_partition() {
        let parts = random_split(range(10), [3, 7], 1).unwrap();
        let mut seen: Vec<usize> = parts.iter().flat_map(|p| p.indices().to_vec()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let again = random_split(range(10), [3, 7], 1).unwrap();
        assert_eq!(parts[0].indices(), again[0].indices());
        let other = random_split(range(10), [3, 7], 2).unwrap();
        assert_ne!(parts[0].indices(), other[0].indices());
    }

    #[test]
    fn random_split_fractions_follow_pytorch_rounding() {
        // floor(0.5*11)=5, floor(0.3*11)=3, floor(0.2*11)=2; the 1 left over goes to part 0.
        let parts = random_split(range(11), [0.5, 0.3, 0.2], 0).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![6, 3, 2]);
    }

    #[test]
    fn random_split_errors_name_the_lengths() {
        let err = random_split(range(10), [3, 3], 0).unwrap_err().to_string();
        assert!(
            err.contains("[3, 3]") && err.contains("10 samples"),
            "{err}"
        );
        let err = random_split(range(10), [0.5, 0.6], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add up to 1"), "{err}");
    }

    #[test]
    fn get_item_names_the_index_of_an_error() {
        let d = Range {
            len: 4,
            bad: Some(2),
        };
        let err = get_item(&d, 2).unwrap_err().to_string();
        assert!(
            err.contains("get(2)") && err.contains("bad record"),
            "{err}"
        );
        let err = get_item(&d, 9).unwrap_err().to_string();
        assert!(err.contains("index 9"), "{err}");
    }
}
