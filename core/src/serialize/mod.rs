//! State dicts as safetensors files, with PyTorch's key names and layouts, so that a file
//! written by `safetensors.torch.save_file(model.state_dict(), path)` loads into the same
//! model written with torchlet, and the other way round.
//!
//! The format is read and written here (NOTE [ safetensors layout ] below, the
//! header's JSON in `json.rs`) rather than with the safetensors crate: the layout is small,
//! and the crate brought serde, serde_json and tempfile into every build of torchlet.
//!
//! This module knows tensors and state dicts only: modules come in through
//! [`Stateful`], which every module implements.
//!
//! # NOTE [ safetensors layout ]
//! A file is an 8-byte little-endian u64 `N`; `N` bytes of UTF-8 JSON, an object mapping each
//! tensor's name to `{"dtype":"F32","shape":[2,3],"data_offsets":[begin,end]}`, plus an
//! optional `"__metadata__"` object of strings; then the data, each tensor's little-endian,
//! row-major bytes at `begin..end` counted from the start of the data.
//!
//! The safetensors library (which PyTorch's `safetensors.torch` calls) writes the tensors
//! ordered by dtype, the reverse of the order it declares them in (by increasing alignment:
//! F16, BF16, F32, F64, I64 among ours), then by name; back to back from offset 0; with compact JSON
//! padded with spaces to a multiple of 8 bytes. It reads a file only when the tensors, in
//! offset order, cover the data exactly and back to back. torchlet writes and checks the same,
//! so a file one side reads the other reads too, and saving the PyTorch-written files in
//! `tests/reference/interop` again gives the same bytes.
//!
//! # NOTE [ Checkpoint writes ]
//! A checkpoint is written to a temporary file in the same directory, flushed to disk and
//! renamed over the destination, and the directory is flushed so that the rename itself
//! survives a power cut: a crash or a full disk leaves the previous checkpoint whole rather
//! than a truncated one.
//! - Each call writes its own temporary file, `{file}.tmp-{pid}-{n}`, so that two threads or
//!   two processes saving to one path both succeed (the last rename wins, whole).
//! - A failed write removes its temporary file; one left by a save that was killed is
//!   removed by the next save to the same path, once its process is gone (on Linux, where
//!   `/proc` tells; elsewhere once it is an hour old).

mod format;
mod half;
mod json;

pub use half::Precision;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::state_dict::{IncompatibleKeys, StateDict, Stateful};
use crate::tensor::Tensor;
use format::{Entry, FileDtype};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// One tensor's little-endian, row-major bytes; floating-point tensors in `precision` when
/// one is given (NOTE [ Half precision in files ] on [`Precision`]).
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
/// back (torchlet widens them to f32). See NOTE [ Half precision in files ] on
/// [`Precision`](Precision#note--half-precision-in-files-).
///
/// # Errors
/// As [`save_file`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::StateDict, serialize::{self, Precision}};
/// let mut sd = StateDict::new();
/// sd.insert("weight", Tensor::from_vec(vec![1.0f32, 0.1], &[2]));
/// let path = std::env::temp_dir().join(format!("doc-bf16-{}.safetensors", std::process::id()));
/// serialize::save_file_as(&sd, &path, Precision::BF16)?;
/// let back = serialize::load_file(&path)?;
/// // 0.1 has no exact bfloat16: the nearest one is 0.10009765625.
/// assert_eq!(back.get("weight").unwrap().to_vec::<f32>(), [1.0, 0.10009765625]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), torchlet::Error>(())
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
    let file_name = path.file_name().unwrap_or_default().to_os_string();
    let tmp = TempFile::new(path, &file_name);
    remove_stale_temps(path, &file_name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp.path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(io(&tmp.path))?;
    std::fs::rename(&tmp.path, path).map_err(io(path))?;
    tmp.renamed();
    sync_dir(path).map_err(io(path.parent().unwrap_or(Path::new("."))))
}

/// The `n` of the temporary files this process is writing now (see NOTE [ Checkpoint
/// writes ]); the next free one comes from `NEXT_TEMP`.
static WRITING: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A temporary file of this process, removed when dropped unless renamed into place.
struct TempFile {
    path: PathBuf,
    n: u64,
    renamed: bool,
}

impl TempFile {
    fn new(path: &Path, file_name: &std::ffi::OsStr) -> TempFile {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        writing(|w| w.insert(n));
        let mut name = file_name.to_os_string();
        name.push(format!(".tmp-{}-{n}", std::process::id()));
        TempFile {
            path: path.with_file_name(name),
            n,
            renamed: false,
        }
    }

    fn renamed(mut self) {
        self.renamed = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
        writing(|w| w.remove(&self.n));
    }
}

fn writing<R>(f: impl FnOnce(&mut HashSet<u64>) -> R) -> R {
    let mut guard = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashSet::new))
}

/// Removes the temporary files of earlier saves to `path` whose writer is gone.
fn remove_stale_temps(path: &Path, file_name: &std::ffi::OsStr) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}.tmp-", file_name.to_string_lossy());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if temp_is_stale(rest, &entry) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the temporary file `{pid}-{n}` (or an older `{pid}`) has no live writer.
fn temp_is_stale(suffix: &str, entry: &std::fs::DirEntry) -> bool {
    let (pid, n) = match suffix.split_once('-') {
        Some((pid, n)) => (pid.parse::<u32>().ok(), n.parse::<u64>().ok()),
        None => (suffix.parse::<u32>().ok(), None),
    };
    let Some(pid) = pid else { return false };
    if pid == std::process::id() {
        // Ours, unless a save of this process is writing it now (an earlier process with
        // the same pid left it otherwise).
        return n.is_none_or(|n| !writing(|w| w.contains(&n)));
    }
    if cfg!(target_os = "linux") {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    let age = entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_some_and(|a| a.as_secs() > 3600)
}

/// Flushes the directory entry of `path` after a rename, where the platform allows it.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            // Some file systems cannot flush a directory; the rename is done all the same.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Ok(()),
            r => r,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// The largest file [`load_file`] reads: 16 GiB, more than any single-machine checkpoint
/// torchlet trains, and a bound on what a wrong path (a disk image, a dataset) costs.
/// [`load_file_limited`] sets another.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// Reads a safetensors file into a state dict (keys in file order: the order of their data),
/// refusing files larger than [`DEFAULT_MAX_BYTES`].
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file (and the
/// key, where one is at fault) when it is truncated or corrupt, larger than the limit, or
/// holds a dtype other than F16, BF16 (both read as f32), F32, F64 and I64.
pub fn load_file(path: impl AsRef<Path>) -> Result<StateDict> {
    load_file_limited(path, DEFAULT_MAX_BYTES)
}

/// [`load_file`] for files of at most `max_bytes` bytes: nothing larger is read into memory.
///
/// # Errors
/// As [`load_file`]; the limit is checked before reading and while reading (a file that
/// grows meanwhile is refused too).
pub fn load_file_limited(path: impl AsRef<Path>, max_bytes: u64) -> Result<StateDict> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |len: u64| {
        format_error(
            path,
            format!(
                "the file has {len} bytes or more, over the limit of {max_bytes} bytes; read \
                 it with serialize::load_file_limited and a larger max_bytes if it is the \
                 checkpoint you meant"
            ),
        )
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    let entries = format::deserialize(&bytes).map_err(|message| format_error(path, message))?;
    let mut out = StateDict::new();
    for entry in entries {
        let tensor = to_tensor(&entry);
        out.insert(entry.name, tensor);
    }
    Ok(out)
}

/// Loads the safetensors file at `path` into `model` (see
/// [`Module::load_state_dict`](crate::nn::Module::load_state_dict)), checking each tensor
/// against the model first.
///
/// # Errors
/// As [`load_file`], and [`Error::Format`] naming the file and every key whose dtype kind
/// (floating point or integer) or shape differs from the model's, or that is missing or
/// unexpected (with `strict`).
///
/// # Example
///
/// Loading a backbone's weights into a larger model, as PyTorch's
/// `model.load_state_dict(torch.load(path), strict=False)`: the keys the file lacks are
/// reported, not refused.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Linear, Module, ReLU, sequential};
/// use torchlet::serialize;
///
/// let backbone = sequential![Linear::new(4, 8), ReLU];
/// let path = std::env::temp_dir().join(format!("doc-backbone-{}.safetensors", std::process::id()));
/// serialize::save(&backbone, &path)?;
///
/// let mut model = sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2)];
/// let report = serialize::load_into(&mut model, &path, false)?;
/// assert_eq!(report.missing_keys, ["2.weight", "2.bias"]);
/// assert!(report.unexpected_keys.is_empty());
/// assert_eq!(model.layers.0.weight.to_vec::<f32>(), backbone.layers.0.weight.to_vec::<f32>());
///
/// // With `strict`, the same file is refused, naming it and the missing keys.
/// let err = serialize::load_into(&mut model, &path, true).unwrap_err();
/// assert!(err.to_string().contains("2.weight"), "{err}");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_into<M: Stateful + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<IncompatibleKeys> {
    let path = path.as_ref();
    let file = load_file(path)?;
    let own = model.save_state();
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
        .load_state(&file, strict)
        .map_err(|e| format_error(path, e.to_string()))
}

/// Writes `model`'s state dict to `path` (shorthand for `save_file(&model.state_dict(), path)`).
///
/// # Errors
/// As [`save_file`].
///
/// # Example
///
/// Saving a model and loading the file into a fresh one (PyTorch's
/// `save_file(model.state_dict(), path)` and `model.load_state_dict(load_file(path))`):
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::nn::{Forward, Linear, ReLU, sequential};
/// use torchlet::serialize;
///
/// let model = sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2)];
/// let path = std::env::temp_dir().join(format!("doc-save-{}.safetensors", std::process::id()));
/// serialize::save(&model, &path)?;
///
/// let mut fresh = sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2)];
/// serialize::load_into(&mut fresh, &path, true)?;
/// let x = Tensor::randn(&[3, 4]);
/// assert_eq!(fresh.forward(&x).to_vec::<f32>(), model.forward(&x).to_vec::<f32>());
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save<M: Stateful + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    save_file(&model.save_state(), path)
}

/// Writes `model`'s state dict with its floating-point tensors in `precision` (shorthand for
/// `save_file_as(&model.state_dict(), path, precision)`); [`load_into`] reads it back.
///
/// # Errors
/// As [`save_file`].
pub fn save_as<M: Stateful + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
    precision: Precision,
) -> Result<()> {
    save_file_as(&model.save_state(), path, precision)
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
    fn two_threads_saving_to_one_path_both_succeed() {
        let path = temp_path("two-writers.safetensors");
        let writers: Vec<_> = (0..2)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut sd = StateDict::new();
                    sd.insert("w", Tensor::full(&[1000], f64::from(i)));
                    (0..20).try_for_each(|_| save_file(&sd, &path))
                })
            })
            .collect();
        for w in writers {
            w.join()
                .expect("writer thread")
                .expect("every save succeeds");
        }
        let back = load_file(&path).unwrap();
        let v = back.get("w").unwrap().to_vec::<f32>();
        assert!(v == [0.0; 1000] || v == [1.0; 1000], "one whole file wins");
        assert_eq!(
            temps_of(&path),
            Vec::<String>::new(),
            "no temporary file is left"
        );
        std::fs::remove_file(&path).unwrap();
    }

    fn temps_of(path: &Path) -> Vec<String> {
        let prefix = format!("{}.tmp-", path.file_name().unwrap().to_string_lossy());
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    #[test]
    fn temporary_files_of_killed_saves_are_removed_by_the_next_save() {
        let path = temp_path("stale.safetensors");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let with = |suffix: &str| path.with_file_name(format!("{name}{suffix}"));
        // A save killed before this change (`.tmp-{pid}`), one killed after, both by a
        // process that is gone (pid 0 is never a user process), one of ours from an earlier
        // process with our pid, and a file that only looks alike.
        let stale = [
            ".tmp-0",
            ".tmp-0-17",
            &format!(".tmp-{}-999999", std::process::id()),
        ];
        for s in stale {
            std::fs::write(with(s), b"half a checkpoint").unwrap();
        }
        std::fs::write(with(".tmp-notes"), b"keep").unwrap();
        save_file(&StateDict::new(), &path).unwrap();
        assert_eq!(temps_of(&path), [format!("{name}.tmp-notes")]);
        std::fs::remove_file(with(".tmp-notes")).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = temp_path("missing-dir");
        let err = save_file(&StateDict::new(), dir.join("x.safetensors")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn files_over_the_limit_are_refused_before_they_are_read() {
        let path = temp_path("limit.safetensors");
        let mut sd = StateDict::new();
        sd.insert("w", Tensor::zeros(&[100]));
        save_file(&sd, &path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(load_file_limited(&path, len).is_ok());
        let err = load_file_limited(&path, len - 1).unwrap_err().to_string();
        assert!(
            err.contains("limit.safetensors")
                && err.contains(&format!(
                    "has {len} bytes or more, over the limit of {} bytes",
                    len - 1
                )),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
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
