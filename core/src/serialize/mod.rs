//! State dicts as safetensors files, with PyTorch's key names and layouts, so that a file
//! written by `safetensors.torch.save_file(model.state_dict(), path)` loads into the same
//! model written with torchlet, and the other way round.
//!
//! The format is read and written here (NOTE [ safetensors layout ] in `format.rs`, the
//! header's JSON in `json.rs`) rather than with the safetensors crate: the layout is small,
//! and the crate brought serde, serde_json and tempfile into every build of torchlet.
//!
//! NOTE [ Checkpoint writes ]
//! A checkpoint is written to a temporary file in the same directory, flushed to disk and
//! renamed over the destination: a crash or a full disk leaves the previous checkpoint
//! whole rather than a truncated one.

mod format;
mod half;
mod json;

pub use half::Precision;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::{IncompatibleKeys, Module, StateDict};
use crate::tensor::Tensor;
use format::{Entry, FileDtype};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One tensor's little-endian, row-major bytes; floating-point tensors in `precision` when
/// one is given (NOTE [ Half precision in files ] in `half.rs`).
fn to_entry(name: &str, t: &Tensor, precision: Option<Precision>) -> Entry<'static> {
    let dtype = match (t.dtype(), precision) {
        (DType::I64, _) | (_, None) => FileDtype::from(t.dtype()),
        (_, Some(Precision::F16)) => FileDtype::F16,
        (_, Some(Precision::BF16)) => FileDtype::BF16,
        (_, Some(Precision::F32)) => FileDtype::F32,
        (_, Some(Precision::F64)) => FileDtype::F64,
    };
    let data: Vec<u8> = match dtype {
        FileDtype::F16 => encode(t.to_vec::<f32>(), |v| half::f32_to_f16(v).to_le_bytes()),
        FileDtype::BF16 => encode(t.to_vec::<f32>(), |v| half::f32_to_bf16(v).to_le_bytes()),
        FileDtype::F32 => encode(t.to_vec::<f32>(), f32::to_le_bytes),
        FileDtype::F64 => encode(t.to_vec::<f64>(), f64::to_le_bytes),
        FileDtype::I64 => encode(t.to_vec::<i64>(), i64::to_le_bytes),
    };
    Entry {
        name: name.to_string(),
        dtype,
        shape: t.shape(),
        data: Cow::Owned(data),
    }
}

fn encode<T, const N: usize>(values: Vec<T>, to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to).collect()
}

/// The tensor of an entry that [`format::deserialize`] checked: its bytes fill its shape.
/// 16-bit floats are widened to f32 (NOTE [ Half precision in files ]).
fn to_tensor(entry: &Entry) -> Tensor {
    let shape = &entry.shape;
    let data = &entry.data;
    match entry.dtype {
        FileDtype::F16 => Tensor::from_vec(
            decode(data, |b| half::f16_to_f32(u16::from_le_bytes(b))),
            shape,
        ),
        FileDtype::BF16 => Tensor::from_vec(
            decode(data, |b| half::bf16_to_f32(u16::from_le_bytes(b))),
            shape,
        ),
        FileDtype::F32 => Tensor::from_vec(decode(data, f32::from_le_bytes), shape),
        FileDtype::F64 => Tensor::from_vec(decode(data, f64::from_le_bytes), shape),
        FileDtype::I64 => Tensor::from_vec(decode(data, i64::from_le_bytes), shape),
    }
}

fn decode<T, const N: usize>(data: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            from(b)
        })
        .collect()
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes `state_dict` to `path` as a safetensors file (f32, f64 and i64 tensors), byte for
/// byte the file `safetensors.torch.save_file` writes for the same tensors.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be written; the previous file at `path`, if
/// any, is then left as it was (NOTE [ Checkpoint writes ]).
pub fn save_file(state_dict: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    let entries = state_dict
        .iter()
        .map(|(k, t)| to_entry(k, t, None))
        .collect();
    write_atomically(path.as_ref(), &format::serialize(entries))
}

/// [`save_file`] with every floating-point tensor written in `precision` (rounded to
/// nearest, ties to even; integer tensors as they are): `Precision::BF16` or `F16` halve an
/// f32 checkpoint, which [`load_file`] and PyTorch's `safetensors.torch.load_file` read
/// back (torchlet widens them to f32). See NOTE [ Half precision in files ].
///
/// # Errors
/// As [`save_file`].
///
/// ```
/// use torchlet_core::{Tensor, nn::StateDict, serialize::{self, Precision}};
/// let mut sd = StateDict::new();
/// sd.insert("weight", Tensor::from_vec(vec![1.0f32, 0.1], &[2]));
/// let path = serialize::temp_path("doc-bf16.safetensors");
/// serialize::save_file_as(&sd, &path, Precision::BF16)?;
/// let back = serialize::load_file(&path)?;
/// // 0.1 has no exact bfloat16: the nearest one is 0.10009765625.
/// assert_eq!(back.get("weight").unwrap().to_vec::<f32>(), [1.0, 0.10009765625]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), torchlet_core::Error>(())
/// ```
pub fn save_file_as(
    state_dict: &StateDict,
    path: impl AsRef<Path>,
    precision: Precision,
) -> Result<()> {
    let entries = state_dict
        .iter()
        .map(|(k, t)| to_entry(k, t, Some(precision)))
        .collect();
    write_atomically(path.as_ref(), &format::serialize(entries))
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

/// Reads a safetensors file into a state dict (keys in file order: the order of their data).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file (and the
/// key, where one is at fault) when it is truncated or corrupt, or holds a dtype other than
/// F16, BF16 (both read as f32), F32, F64 and I64.
pub fn load_file(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let entries = format::deserialize(&bytes).map_err(|message| format_error(path, message))?;
    let mut out = StateDict::new();
    for entry in entries {
        let tensor = to_tensor(&entry);
        out.insert(entry.name, tensor);
    }
    Ok(out)
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

/// Writes `model`'s state dict with its floating-point tensors in `precision` (shorthand for
/// `save_file_as(&model.state_dict(), path, precision)`); [`load_into`] reads it back.
///
/// # Errors
/// As [`save_file`].
pub fn save_as<M: Module + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
    precision: Precision,
) -> Result<()> {
    save_file_as(&model.state_dict(), path, precision)
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
    fn keys_come_back_in_the_order_of_their_data() {
        // The writer orders I64 before F64 before F32, then by name (as safetensors does).
        let mut sd = StateDict::new();
        sd.insert("w", Tensor::zeros(&[2]));
        sd.insert("d", Tensor::zeros(&[1]).double());
        sd.insert("n", Tensor::from_vec(vec![1i64], &[]));
        sd.insert("a", Tensor::zeros(&[0, 4]));
        let path = temp_path("order.safetensors");
        save_file(&sd, &path).unwrap();
        let back = load_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["n", "d", "a", "w"]);
        assert_eq!(back.get("a").unwrap().shape(), [0, 4]);
    }

    #[test]
    fn an_empty_state_dict_round_trips() {
        let path = temp_path("empty.safetensors");
        save_file(&StateDict::new(), &path).unwrap();
        assert!(load_file(&path).unwrap().is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn corrupt_files_are_format_errors_naming_the_file() {
        let with_header = |header: &str, data_len: usize| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.resize(bytes.len() + data_len, 0);
            bytes
        };
        let tensor = |info: &str| with_header(&format!(r#"{{"w":{info}}}"#), 8);
        let cases = [
            (
                with_header("{}", 0)[..9].to_vec(),
                "the header of 2 bytes is cut off",
            ),
            (with_header("{\"w\":}", 0), "the header is not valid JSON"),
            (
                tensor(r#"{"dtype":"F32","shape":[2],"data_offsets":[8,16]}"#),
                "truncated: tensor `w` ends at byte 16 of the data but only 8 bytes are present",
            ),
            (
                tensor(r#"{"dtype":"F32","shape":[65536,65536,65536,65536],"data_offsets":[0,8]}"#),
                "tensor `w` has shape [65536, 65536, 65536, 65536], more elements than memory can address",
            ),
            (
                tensor(r#"{"dtype":"I32","shape":[2],"data_offsets":[0,8]}"#),
                "tensor `w` has dtype I32; torchlet reads F16, BF16, F32, F64 and I64",
            ),
        ];
        let path = temp_path("corrupt.safetensors");
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = load_file(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Format { .. }), "{msg}");
            assert!(
                msg.contains("corrupt.safetensors") && msg.contains(want),
                "expected {want:?}, got {msg:?}"
            );
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

    #[test]
    fn half_precision_checkpoints_load_into_models_and_keep_integers() {
        let bn = BatchNorm2d::new(3);
        let weight = bn.weight.as_ref().unwrap();
        crate::autograd::no_grad(|| {
            weight.copy_(&Tensor::from_vec(vec![0.1f32, 1.0, 65504.0], &[3]));
        });
        let counter = bn.num_batches_tracked.as_ref().unwrap();
        counter.copy_(&Tensor::from_vec(vec![123_456_789i64], &[]));
        for precision in [Precision::BF16, Precision::F16, Precision::F64] {
            let path = temp_path("half-model.safetensors");
            save_as(&bn, &path, precision).unwrap();
            let raw = load_file(&path).unwrap();
            let counter = raw.get("num_batches_tracked").unwrap();
            assert_eq!(
                (counter.dtype(), counter.to_vec::<i64>()),
                (DType::I64, vec![123_456_789])
            );
            let mut back = BatchNorm2d::new(3);
            load_into(&mut back, &path, true).unwrap();
            std::fs::remove_file(&path).unwrap();
            let w = back.weight.as_ref().unwrap().to_vec::<f32>();
            match precision {
                // The nearest bfloat16 to 0.1 is 205/2048 = 0.10009765625; 65504 needs 11 bits.
                Precision::BF16 => assert_eq!(w, [205.0 / 2048.0, 1.0, 65536.0]),
                // float16: 819/8192 = 0.0999755859375, and 65504 is its largest finite value.
                Precision::F16 => assert_eq!(w, [819.0 / 8192.0, 1.0, 65504.0]),
                _ => assert_eq!(w, [0.1, 1.0, 65504.0]),
            }
            let counter = back.num_batches_tracked.as_ref().unwrap();
            assert_eq!(counter.to_vec::<i64>(), [123_456_789]);
        }
    }
}
