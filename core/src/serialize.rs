//! State dicts as safetensors files, with PyTorch's key names and layouts, so that a file
//! written by `safetensors.torch.save_file(model.state_dict(), path)` loads into the same
//! model written with torchlet, and the other way round.
//!
//! NOTE [ Checkpoint writes ]
//! A checkpoint is written to a temporary file in the same directory, flushed to disk and
//! renamed over the destination: a crash or a full disk leaves the previous checkpoint
//! whole rather than a truncated one.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::{IncompatibleKeys, Module, StateDict};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One tensor's bytes, as safetensors writes them (little-endian, row-major).
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Bytes {
    let (dtype, data) = match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            t.to_vec::<f32>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            t.to_vec::<f64>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            Dtype::I64,
            t.to_vec::<i64>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    };
    Bytes {
        dtype,
        shape: t.shape(),
        data,
    }
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes `state_dict` to `path` as a safetensors file (f32, f64 and i64 tensors).
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be written; the previous file at `path`, if
/// any, is then left as it was (NOTE [ Checkpoint writes ]).
pub fn save_file(state_dict: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors: Vec<(String, Bytes)> = state_dict
        .iter()
        .map(|(k, t)| (k.clone(), to_bytes(t)))
        .collect();
    let bytes = safetensors::serialize(tensors.iter().map(|(k, b)| (k.as_str(), b)), None)
        .map_err(|e| format_error(path, format!("cannot serialize the state dict: {e}")))?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Reads a safetensors file into a state dict (keys in file order).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file (and the
/// key, where one is at fault) when it is truncated or corrupt, or holds a dtype other than
/// F32, F64 and I64.
pub fn load_file(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_error(path, diagnose(&bytes, &e.to_string())))?;
    let mut views = file.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut out = StateDict::new();
    for (key, view) in views {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(decode(data, f32::from_le_bytes), &shape),
            Dtype::F64 => Tensor::from_vec(decode(data, f64::from_le_bytes), &shape),
            Dtype::I64 => Tensor::from_vec(decode(data, i64::from_le_bytes), &shape),
            other => {
                return Err(format_error(
                    path,
                    format!(
                        "tensor `{key}` has dtype {other:?}; torchlet reads F32, F64 and I64, so convert it (e.g. `.float()`) before saving"
                    ),
                ));
            }
        };
        out.insert(key, tensor);
    }
    Ok(out)
}

fn decode<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            from(b)
        })
        .collect()
}

/// A message for a file safetensors refused: names the first tensor whose data lies past
/// the end of a truncated file, when the header can still be read.
fn diagnose(bytes: &[u8], error: &str) -> String {
    let generic = format!(
        "not a valid safetensors file ({error}); was it truncated or written by another program?"
    );
    let Some(n) = bytes.get(..8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a) as usize
    }) else {
        return format!("{generic}: it is shorter than the 8-byte header length");
    };
    let Some(header) = bytes.get(8..8usize.saturating_add(n)) else {
        return format!("{generic}: the header of {n} bytes is cut off");
    };
    let Ok(serde_json::Value::Object(entries)) =
        serde_json::from_slice::<serde_json::Value>(header)
    else {
        return format!("{generic}: the header is not valid JSON");
    };
    let available = bytes.len() - 8 - n;
    let past_end = entries.iter().find_map(|(key, info)| {
        let end = info.get("data_offsets")?.get(1)?.as_u64()? as usize;
        (end > available).then(|| (key.clone(), end))
    });
    match past_end {
        Some((key, end)) => format!(
            "truncated: tensor `{key}` ends at byte {end} of the data but only {available} bytes are present"
        ),
        None => generic,
    }
}

/// Loads the safetensors file at `path` into `model` (see
/// [`Module::load_state_dict`]), checking each tensor against the model first.
///
/// # Errors
/// As [`load_file`], and [`Error::Format`] naming the file and every key whose dtype kind
/// (floating point or integer) or shape differs from the model's, or that is missing or
/// unexpected (with `strict`).
pub fn load_into<M: Module + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<IncompatibleKeys> {
    let path = path.as_ref();
    let file = load_file(path)?;
    let own = model.state_dict();
    let mut problems = Vec::new();
    for (key, target) in own.iter() {
        let Some(src) = file.get(key) else { continue };
        if src.dtype().is_float() != target.dtype().is_float() {
            problems.push(format!(
                "key `{key}`: the file holds {} but the model holds {}",
                src.dtype(),
                target.dtype()
            ));
        }
        if src.shape() != target.shape() {
            problems.push(format!(
                "key `{key}`: shape {:?} in the file, {:?} in the model",
                src.shape(),
                target.shape()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(format_error(path, problems.join("; ")));
    }
    model
        .load_state_dict(&file, strict)
        .map_err(|e| format_error(path, e.to_string()))
}

/// Writes `model`'s state dict to `path` (shorthand for `save_file(&model.state_dict(), path)`).
///
/// # Errors
/// As [`save_file`].
pub fn save<M: Module + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    save_file(&model.state_dict(), path)
}

/// A fresh path under the system's temporary directory, for tests and examples.
#[doc(hidden)]
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("torchlet-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{BatchNorm2d, Linear};

    #[test]
    fn round_trip_is_bit_exact_for_every_dtype() {
        let mut sd = StateDict::new();
        sd.insert("w", Tensor::randn(&[3, 2]));
        sd.insert("d", Tensor::randn(&[2]).double());
        sd.insert("n", Tensor::from_vec(vec![7i64], &[]));
        let path = temp_path("round-trip.safetensors");
        save_file(&sd, &path).unwrap();
        let back = load_file(&path).unwrap();
        for (k, t) in sd.iter() {
            let b = back.get(k).unwrap();
            assert_eq!((b.dtype(), b.shape()), (t.dtype(), t.shape()), "{k}");
            assert_eq!(b.to_vec::<f64>(), t.to_vec::<f64>(), "{k}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn truncated_files_name_the_file_and_the_cut_tensor() {
        let path = temp_path("truncated.safetensors");
        save(&BatchNorm2d::new(3), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated.safetensors") && err.contains("truncated: tensor `"),
            "{err}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("shorter than the 8-byte header"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn wrong_shapes_and_dtypes_name_the_file_and_key() {
        let path = temp_path("mismatch.safetensors");
        let mut sd = StateDict::new();
        sd.insert("weight", Tensor::zeros(&[2, 3]));
        sd.insert("bias", Tensor::from_vec(vec![1i64, 2], &[2]));
        save_file(&sd, &path).unwrap();
        let err = load_into(&mut Linear::new(4, 2), &path, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mismatch.safetensors"), "{err}");
        assert!(
            err.contains("key `weight`: shape [2, 3] in the file, [2, 4] in the model"),
            "{err}"
        );
        assert!(
            err.contains("key `bias`: the file holds int64 but the model holds float32"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
