//! [`Mnist`]: the MNIST handwritten digits, from the 10,000 vendored in `data/mnist-10k` or
//! from the standard 60k/10k files in a directory (torchvision's `datasets.MNIST`).

use crate::data::dataset::Dataset;
use crate::data::idx::IdxArray;
use crate::data::tensor_dataset::TensorDataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// The mean of MNIST's training pixels in [0, 1], the usual `Normalize((0.1307,), …)`.
pub const MNIST_MEAN: f32 = 0.1307;
/// The standard deviation of MNIST's training pixels in [0, 1].
pub const MNIST_STD: f32 = 0.3081;

/// MNIST digits: grey-level images (28×28, u8 0..=255) and their labels (0..=9).
///
/// As a [`Dataset`], sample `i` is `(image, label)`: a f32 tensor of shape `[1, 28, 28]` with
/// values in [0, 1] (or `[784]` after [`flatten`](Self::flatten), normalised after
/// [`normalize`](Self::normalize)) and the digit as `i64`, so a loader yields
/// `(xb: [B, 1, 28, 28] f32, yb: [B] i64)`. Batches are converted straight from the bytes.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{DataLoader, Mnist, MNIST_MEAN, MNIST_STD};
///
/// let train = Mnist::vendored(true)?.normalize(MNIST_MEAN, MNIST_STD).flatten(true);
/// assert_eq!(train.len(), 8000);
/// let loader = DataLoader::builder(train).batch_size(64).shuffle(true).seed(0).build()?;
/// let (xb, yb) = loader.iter().next().unwrap();
/// assert_eq!((xb.shape(), yb.shape()), (vec![64, 784], vec![64]));
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mnist {
    pixels: Vec<u8>,
    targets: Vec<u8>,
    rows: usize,
    cols: usize,
    /// The f32 value of each grey level, after scaling to [0, 1] and normalising.
    lookup: Vec<f32>,
    flatten: bool,
}

/// File names of the standard distribution, without `.gz`; some copies use `.` before `idx`.
fn file_names(train: bool) -> [(&'static str, &'static str); 2] {
    if train {
        [
            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
        ]
    } else {
        [
            ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
            ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
        ]
    }
}

/// `dir/name` or `dir/name.gz`, whichever exists.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

impl Mnist {
    /// The directory of the 10,000 digits vendored with torchlet (8000 train, 2000 test).
    pub fn vendored_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k")
    }

    /// The vendored digits: 8000 for `train`, else 2000 (no download needed).
    ///
    /// # Errors
    ///
    /// As [`from_dir`](Self::from_dir), e.g. when the repository's `data/` is missing.
    pub fn vendored(train: bool) -> Result<Mnist> {
        Mnist::from_dir(Self::vendored_dir(), train)
    }

    /// The training (`train`, as torchvision's argument) or test digits in `dir`: the files
    /// `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` or `t10k-…`, each plain or `.gz`.
    /// torchvision's layout (`dir/MNIST/raw`) is found too.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the files are not there (naming what was looked for), and the errors
    /// of [`from_files`](Self::from_files).
    pub fn from_dir(dir: impl AsRef<Path>, train: bool) -> Result<Mnist> {
        let dir = dir.as_ref();
        for place in [dir.to_path_buf(), dir.join("MNIST").join("raw")] {
            for (images, labels) in file_names(train) {
                if let (Some(i), Some(l)) = (find(&place, images), find(&place, labels)) {
                    return Mnist::from_files(i, l);
                }
            }
        }
        let (images, labels) = file_names(train)[0];
        Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no MNIST {} files here or in MNIST/raw: expected {images} and {labels} \
                     (optionally .gz); Mnist::vendored({train}) needs no files",
                    if train { "training" } else { "test" }
                ),
            ),
        })
    }

    /// Digits from an IDX image file (`[N, rows, cols]`) and an IDX label file (`[N]`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file cannot be read; [`Error::Format`] naming the file when it is
    /// not valid IDX (see [`IdxArray::read`]), has the wrong number of dimensions, holds no
    /// images, images that are not 28×28 (the size every MNIST-format set uses, and the 784
    /// features models for them expect), a label above 9, or when the two files disagree on
    /// the number of digits. For other image sizes, read the files with [`IdxArray`].
    pub fn from_files(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Mnist> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let image_array = IdxArray::read(images)?;
        let label_array = IdxArray::read(labels)?;
        let &[n, rows, cols] = image_array.shape.as_slice() else {
            return Err(format_error(
                images,
                format!(
                    "MNIST images need 3 dimensions [N, rows, cols], the file has {:?}",
                    image_array.shape
                ),
            ));
        };
        let &[n_labels] = label_array.shape.as_slice() else {
            return Err(format_error(
                labels,
                format!(
                    "MNIST labels need 1 dimension [N], the file has {:?}",
                    label_array.shape
                ),
            ));
        };
        if (rows, cols) != (28, 28) {
            return Err(format_error(
                images,
                format!(
                    "MNIST images are 28×28, the file's are {rows}×{cols} (shape {:?}); read \
                     other image sizes with IdxArray::read",
                    image_array.shape
                ),
            ));
        }
        if n == 0 {
            return Err(format_error(
                images,
                "the file holds 0 images (shape [0, 28, 28]); an empty training set would \
                 train on nothing and report NaN accuracy"
                    .to_string(),
            ));
        }
        if n != n_labels {
            return Err(format_error(
                labels,
                format!(
                    "{n_labels} labels for the {n} images of {}",
                    images.display()
                ),
            ));
        }
        if let Some((i, l)) = label_array.data.iter().enumerate().find(|(_, l)| **l > 9) {
            return Err(format_error(
                labels,
                format!("label {l} at index {i} is not a digit 0..=9"),
            ));
        }
        Ok(Mnist {
            pixels: image_array.data,
            targets: label_array.data,
            rows,
            cols,
            lookup: lookup(0.0, 1.0),
            flatten: false,
        })
    }

    /// Normalise pixels to `(v / 255 - mean) / std`; use [`MNIST_MEAN`] and [`MNIST_STD`] for the
    /// usual MNIST normalisation.
    pub fn normalize(mut self, mean: f32, std: f32) -> Mnist {
        self.lookup = lookup(mean, std);
        self
    }

    /// Images as `[rows * cols]` vectors instead of `[1, rows, cols]`, for MLPs.
    pub fn flatten(mut self, flatten: bool) -> Mnist {
        self.flatten = flatten;
        self
    }

    /// The number of digits.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no digits.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Image height and width (28, 28).
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The raw grey levels, `len() * rows * cols` bytes in row-major order.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The raw labels, one byte (0..=9) per digit.
    pub fn targets(&self) -> &[u8] {
        &self.targets
    }

    /// Every image as one f32 tensor, `[N, 1, rows, cols]` or `[N, rows * cols]` when flattened,
    /// scaled and normalised as configured.
    pub fn images(&self) -> Tensor {
        self.image_batch((0..self.len()).collect::<Vec<_>>().as_slice())
    }

    /// Every label as an i64 tensor `[N]`.
    pub fn labels(&self) -> Tensor {
        let labels: Vec<i64> = self.targets.iter().map(|&l| i64::from(l)).collect();
        Tensor::from_vec(labels, &[self.len()])
    }

    /// The whole set as tensors in memory, `(images(), labels())`.
    ///
    /// # Errors
    ///
    /// Never in practice: the two tensors have one row per digit by construction.
    pub fn to_tensor_dataset(&self) -> Result<TensorDataset<(Tensor, Tensor)>> {
        TensorDataset::new((self.images(), self.labels()))
    }

    fn image_shape(&self, n: usize) -> Vec<usize> {
        if self.flatten {
            vec![n, self.rows * self.cols]
        } else {
            vec![n, 1, self.rows, self.cols]
        }
    }

    fn image_batch(&self, indices: &[usize]) -> Tensor {
        let size = self.rows * self.cols;
        let mut data = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            let image = &self.pixels[i * size..(i + 1) * size];
            data.extend(image.iter().map(|&p| self.lookup[usize::from(p)]));
        }
        Tensor::from_vec(data, &self.image_shape(indices.len()))
    }
}

fn format_error(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// The f32 value of each of the 256 grey levels.
fn lookup(mean: f32, std: f32) -> Vec<f32> {
    (0..=255u8)
        .map(|p| (f32::from(p) / 255.0 - mean) / std)
        .collect()
}

impl Dataset for Mnist {
    type Item = (Tensor, i64);

    fn len(&self) -> usize {
        self.targets.len()
    }

    fn get(&self, index: usize) -> Result<(Tensor, i64)> {
        crate::data::dataset::check_index(self.len(), index)?;
        let image = self.image_batch(&[index]).select(0, 0);
        Ok((image, i64::from(self.targets[index])))
    }

    fn get_batch(&self, indices: &[usize]) -> Option<Result<(Tensor, Tensor)>> {
        let labels: Vec<i64> = indices
            .iter()
            .map(|&i| i64::from(self.targets[i]))
            .collect();
        let labels = Tensor::from_vec(labels, &[indices.len()]);
        Some(Ok((self.image_batch(indices), labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::collate::{Collate, DefaultCollate};
    use crate::dtype::DType;

    #[test]
    fn vendored_files_hold_8000_train_and_2000_test_digits() {
        let train = Mnist::vendored(true).unwrap();
        let test = Mnist::vendored(false).unwrap();
        assert_eq!((train.len(), test.len()), (8000, 2000));
        assert_eq!(train.image_size(), (28, 28));
        assert_eq!(train.pixels().len(), 8000 * 784);
        for set in [&train, &test] {
            let mut histogram = [0usize; 10];
            for &l in set.targets() {
                histogram[usize::from(l)] += 1;
            }
            // Each digit is roughly a tenth of the set.
            let n = set.len();
            assert!(
                histogram.iter().all(|&c| c > n / 20 && c < n / 5),
                "{histogram:?}"
            );
            // Real digits: mostly black background, some full-white strokes.
            let max = set.pixels().iter().copied().max();
            let zeros = set.pixels().iter().filter(|&&p| p == 0).count();
            assert_eq!(max, Some(255));
            assert!(zeros > set.pixels().len() / 2);
        }
    }

    #[test]
    fn images_are_scaled_and_normalised() {
        let mnist = Mnist::vendored(false).unwrap();
        let images = mnist.images();
        assert_eq!(images.shape(), vec![2000, 1, 28, 28]);
        assert_eq!(images.dtype(), DType::F32);
        let v = images.to_vec::<f32>();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((mean - 0.13).abs() < 0.02, "{mean}");
        let normalised = mnist
            .normalize(MNIST_MEAN, MNIST_STD)
            .flatten(true)
            .images();
        assert_eq!(normalised.shape(), vec![2000, 784]);
        let v = normalised.to_vec::<f32>();
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.1, "{mean}");
    }

    #[test]
    fn batches_match_single_samples() {
        let mnist = Mnist::vendored(false).unwrap();
        let (xb, yb) = DefaultCollate.fetch(&mnist, &[5, 1999, 0]).unwrap();
        assert_eq!(xb.shape(), vec![3, 1, 28, 28]);
        assert_eq!(yb.dtype(), DType::I64);
        let (x, y) = mnist.get(1999).unwrap();
        assert_eq!(x.shape(), vec![1, 28, 28]);
        assert_eq!(yb.to_vec::<i64>()[1], y);
        assert_eq!(xb.select(0, 1).to_vec::<f32>(), x.to_vec::<f32>());
    }

    #[test]
    fn from_dir_names_the_missing_files() {
        let err = Mnist::from_dir("/nonexistent", true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent") && err.contains("train-images-idx3-ubyte"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_or_bad_label_files_are_format_errors() {
        let dir = std::env::temp_dir().join(format!("torchlet-mnist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let images = write("images", &images_idx(2, 28, 28));
        let three = write("three", &[0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]);
        let big = write("big", &[0, 0, 8, 1, 0, 0, 0, 2, 1, 12]);
        let good = write("good", &[0, 0, 8, 1, 0, 0, 0, 2, 1, 2]);
        let err = Mnist::from_files(&images, &three).unwrap_err().to_string();
        assert!(err.contains("3 labels for the 2 images"), "{err}");
        let err = Mnist::from_files(&images, &big).unwrap_err().to_string();
        assert!(err.contains("label 12 at index 1"), "{err}");
        let err = Mnist::from_files(&good, &good).unwrap_err().to_string();
        assert!(err.contains("need 3 dimensions"), "{err}");
        assert_eq!(Mnist::from_files(&images, &good).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An IDX image file `[n, rows, cols]` of zeros.
    fn images_idx(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut file = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            file.extend_from_slice(&d.to_be_bytes());
        }
        file.resize(file.len() + (n * rows * cols) as usize, 0);
        file
    }

    #[test]
    fn images_other_than_28x28_and_empty_files_are_format_errors() {
        let dir = std::env::temp_dir().join(format!("torchlet-mnist-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let two_labels = write("two", &[0, 0, 8, 1, 0, 0, 0, 2, 1, 2]);
        let no_labels = write("none", &[0, 0, 8, 1, 0, 0, 0, 0]);
        let big = write("big", &images_idx(2, 32, 32));
        let err = Mnist::from_files(&big, &two_labels)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("big: MNIST images are 28×28, the file's are 32×32 (shape [2, 32, 32])"),
            "{err}"
        );
        let empty = write("empty", &images_idx(0, 28, 28));
        let err = Mnist::from_files(&empty, &no_labels)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty: the file holds 0 images"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
