//! The IDX file format of MNIST (plain or gzip-compressed), read without trusting the header.
//!
//! An IDX file is: two zero bytes, a type code (0x08 = unsigned byte), the number of
//! dimensions, one big-endian u32 per dimension, then the values in row-major order.
//!
//! # NOTE [ Reading untrusted IDX files ]
//! Every size comes from the file, so every size is checked before it is used: the product of
//! the dimensions with overflow checks, and the bytes it promises against the bytes the file
//! has (for gzip, against the most that many compressed bytes can inflate to, since deflate
//! cannot expand by more than 1032:1), and against `max_bytes`, the most the reader will
//! allocate ([`DEFAULT_MAX_BYTES`], 1 GiB, unless raised with [`IdxOptions::max_bytes`]): a
//! gzip file of 2 MB may honestly inflate to 2 GiB, which a memory cap would not survive. Only
//! then is the data buffer allocated, so a lying header costs an error message, never a huge
//! allocation or a panic.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// The type code of unsigned bytes, the only element type MNIST uses.
const TYPE_U8: u8 = 0x08;
/// Deflate's largest expansion (a 258-byte match in about 2 bits), rounded up.
const MAX_DEFLATE_RATIO: usize = 1032;
/// Room for the gzip header and trailer on top of the deflate stream.
const GZIP_OVERHEAD: usize = 1024;
/// The longest IDX header: the magic number and 255 dimensions.
const MAX_HEADER: usize = 4 + 4 * 255;

/// The most data bytes an IDX reader allocates unless told otherwise: 1 GiB. The largest IDX
/// files in use fit (MNIST's training images are 47 MB, EMNIST ByClass's 550 MB); raise it
/// with [`IdxOptions::max_bytes`] for a larger file you trust.
pub const DEFAULT_MAX_BYTES: usize = 1 << 30;

/// How to read an IDX file: the most bytes its data may take. See
/// NOTE [ Reading untrusted IDX files ].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::IdxOptions;
/// # use std::path::Path;
/// let file = [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]; // 3 bytes: [7, 8, 9]
/// assert_eq!(IdxOptions::default().from_bytes(&file, Path::new("a.idx"))?.data, [7, 8, 9]);
/// let err = IdxOptions::default().max_bytes(2).from_bytes(&file, Path::new("a.idx"));
/// assert!(err.unwrap_err().to_string().contains("above max_bytes 2"));
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct IdxOptions {
    max_bytes: usize,
}

impl Default for IdxOptions {
    fn default() -> Self {
        IdxOptions {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The contents of an IDX file of unsigned bytes: its dimensions and its values in row-major
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, from the file's header.
    pub shape: Vec<usize>,
    /// The values in row-major order.
    pub data: Vec<u8>,
}

/// What the header says: the dimensions, the header's length and the data's length.
#[derive(Debug)]
struct Header {
    shape: Vec<usize>,
    header_len: usize,
    data_len: usize,
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parses the header at the start of `bytes` (which may be only the first few bytes of the
/// file). `bytes` must hold at least the whole header.
fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let Some(&[zero0, zero1, type_code, ndim]) = bytes.first_chunk::<4>() else {
        return Err(format_error(
            path,
            format!(
                "IDX header is truncated: {} bytes, the magic number needs 4",
                bytes.len()
            ),
        ));
    };
    if zero0 != 0 || zero1 != 0 {
        return Err(format_error(
            path,
            format!(
                "not an IDX file: magic number {:#010x} does not start with two zero bytes \
                 (MNIST files start 0x00000801 or 0x00000803)",
                u32::from_be_bytes([zero0, zero1, type_code, ndim])
            ),
        ));
    }
    if type_code != TYPE_U8 {
        return Err(format_error(
            path,
            format!(
                "IDX element type {type_code:#04x} is not supported; only unsigned bytes \
                 (0x08), the type of the MNIST files, are"
            ),
        ));
    }
    let ndim = usize::from(ndim);
    let header_len = 4 + 4 * ndim;
    let Some(dims) = bytes.get(4..header_len) else {
        return Err(format_error(
            path,
            format!(
                "IDX header is truncated: {ndim} dimensions need {header_len} header bytes, \
                 the file has {}",
                bytes.len()
            ),
        ));
    };
    let shape: Vec<usize> = dims
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let data_len = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            format_error(
                path,
                format!("IDX dimensions {shape:?} overflow: their product does not fit in memory"),
            )
        })?;
    Ok(Header {
        shape,
        header_len,
        data_len,
    })
}

impl IdxOptions {
    /// The most bytes the data may take (the product of the dimensions), and the largest file
    /// read (default [`DEFAULT_MAX_BYTES`], 1 GiB).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Reads an IDX file of unsigned bytes, gzip-compressed (detected by its magic bytes, not
    /// its name) or plain. See NOTE [ Reading untrusted IDX files ].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file and the
    /// problem when it is larger than `max_bytes` or its header promises more, when it is not
    /// gzip-valid, its magic number or element type is wrong, its header is truncated, or its
    /// dimensions promise more or fewer bytes than it holds.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<IdxArray> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > (self.max_bytes as u64).saturating_add(MAX_HEADER as u64) {
            return Err(format_error(
                path,
                format!(
                    "the file is {size} bytes, above max_bytes {} ({}); raise \
                     IdxOptions::max_bytes if you trust it",
                    self.max_bytes,
                    human(self.max_bytes)
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        if bytes.starts_with(&[0x1f, 0x8b]) {
            self.from_gzip_bytes(&bytes, path)
        } else {
            self.from_bytes(&bytes, path)
        }
    }

    /// Parses the bytes of a plain IDX file; `path` only names the file in errors.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), for the format errors.
    pub fn from_bytes(&self, bytes: &[u8], path: &Path) -> Result<IdxArray> {
        let header = self.parse_header(bytes, path)?;
        let available = bytes.len() - header.header_len;
        if available != header.data_len {
            return Err(size_mismatch(path, &header, available));
        }
        Ok(IdxArray {
            shape: header.shape,
            data: bytes[header.header_len..].to_vec(),
        })
    }

    /// Inflates and parses the bytes of a gzip-compressed IDX file.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), for the format errors.
    pub fn from_gzip_bytes(&self, compressed: &[u8], path: &Path) -> Result<IdxArray> {
        let gzip_error = |e: std::io::Error| format_error(path, format!("bad gzip data: {e}"));
        let mut decoder = GzDecoder::new(compressed);
        // The header is at most 4 + 4 * 255 bytes; read what there is of it.
        let mut head = Vec::with_capacity(MAX_HEADER);
        (&mut decoder)
            .take(4)
            .read_to_end(&mut head)
            .map_err(gzip_error)?;
        if let Some(&ndim) = head.get(3) {
            (&mut decoder)
                .take(4 * u64::from(ndim))
                .read_to_end(&mut head)
                .map_err(gzip_error)?;
        }
        let header = self.parse_header(&head, path)?;
        let most = compressed
            .len()
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(GZIP_OVERHEAD);
        if header.data_len > most {
            return Err(format_error(
                path,
                format!(
                    "IDX dimensions {:?} promise {} bytes, but {} compressed bytes inflate to at \
                     most {most}; the header is wrong or the file is truncated",
                    header.shape,
                    header.data_len,
                    compressed.len()
                ),
            ));
        }
        let mut data = Vec::with_capacity(header.data_len);
        // One byte more than promised, to notice data after the end.
        decoder
            .take(header.data_len as u64 + 1)
            .read_to_end(&mut data)
            .map_err(gzip_error)?;
        if data.len() != header.data_len {
            // At most one byte past the promise was read; say "more" rather than a wrong count.
            if data.len() > header.data_len {
                return Err(format_error(
                    path,
                    format!(
                        "IDX dimensions {:?} promise {} data bytes, but the file holds more",
                        header.shape, header.data_len
                    ),
                ));
            }
            return Err(size_mismatch(path, &header, data.len()));
        }
        Ok(IdxArray {
            shape: header.shape,
            data,
        })
    }

    /// The header, refused when its data would take more than `max_bytes`.
    fn parse_header(&self, bytes: &[u8], path: &Path) -> Result<Header> {
        let header = parse_header(bytes, path)?;
        if header.data_len > self.max_bytes {
            return Err(format_error(
                path,
                format!(
                    "IDX dimensions {:?} promise {} data bytes ({}), above max_bytes {} ({}); \
                     raise IdxOptions::max_bytes if you trust the file",
                    header.shape,
                    header.data_len,
                    human(header.data_len),
                    self.max_bytes,
                    human(self.max_bytes)
                ),
            ));
        }
        Ok(header)
    }
}

/// `1 GiB`, `47 MiB`, `512 bytes`: a size for messages.
fn human(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match UNITS.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) => format!("{:.1} {name}", bytes as f64 / *unit as f64),
        None => format!("{bytes} bytes"),
    }
}

impl IdxArray {
    /// Reads an IDX file with the default [`IdxOptions`] (data up to 1 GiB).
    ///
    /// # Errors
    ///
    /// As [`IdxOptions::read`].
    pub fn read(path: impl AsRef<Path>) -> Result<IdxArray> {
        IdxOptions::default().read(path)
    }

    /// Parses the bytes of a plain IDX file with the default [`IdxOptions`].
    ///
    /// # Errors
    ///
    /// As [`IdxOptions::read`], for the format errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<IdxArray> {
        IdxOptions::default().from_bytes(bytes, path)
    }

    /// Inflates and parses a gzip-compressed IDX file with the default [`IdxOptions`].
    ///
    /// # Errors
    ///
    /// As [`IdxOptions::read`], for the format errors.
    pub fn from_gzip_bytes(compressed: &[u8], path: &Path) -> Result<IdxArray> {
        IdxOptions::default().from_gzip_bytes(compressed, path)
    }
}

fn size_mismatch(path: &Path, header: &Header, available: usize) -> Error {
    format_error(
        path,
        format!(
            "IDX dimensions {:?} promise {} data bytes, but the file holds {available}{}",
            header.shape,
            header.data_len,
            if available < header.data_len {
                " (truncated?)"
            } else {
                ""
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;
    use std::io::Write;

    fn idx(shape: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, TYPE_U8, shape.len() as u8];
        for d in shape {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn path() -> &'static Path {
        Path::new("digits.idx")
    }

    fn parse_any(bytes: &[u8]) -> Result<IdxArray> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            IdxArray::from_gzip_bytes(bytes, path())
        } else {
            IdxArray::from_bytes(bytes, path())
        }
    }

    #[test]
    fn plain_and_gzip_files_parse_alike() {
        let file = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let plain = IdxArray::from_bytes(&file, path()).unwrap();
        assert_eq!(plain.shape, vec![2, 3]);
        assert_eq!(plain.data, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            IdxArray::from_gzip_bytes(&gzip(&file), path()).unwrap(),
            plain
        );
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0], "truncated"),
            (vec![1, 2, 8, 1, 0, 0, 0, 0], "magic number 0x01020801"),
            (vec![0, 0, 0x0D, 1, 0, 0, 0, 0], "element type 0x0d"),
            (
                vec![0, 0, 8, 3, 0, 0, 0, 1],
                "3 dimensions need 16 header bytes",
            ),
            (
                idx(&[4], &[1, 2]),
                "promise 4 data bytes, but the file holds 2",
            ),
            (idx(&[1], &[1, 2]), "holds 2"),
            (idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), "overflow"),
            (gzip(&idx(&[4], &[1, 2])), "holds 2"),
            (gzip(&idx(&[1], &[1, 2])), "holds more"),
            (
                gzip(&idx(&[60_000, 28, 28], &[0; 10])),
                "inflate to at most",
            ),
            (vec![0x1f, 0x8b, 0, 0, 0], "bad gzip data"),
        ];
        for (bytes, expected) in cases {
            let err = parse_any(&bytes).unwrap_err().to_string();
            assert!(
                err.starts_with("digits.idx: ") && err.contains(expected),
                "expected {expected:?} in {err:?}"
            );
        }
    }

    #[test]
    fn a_gzip_file_declaring_2_gib_is_refused_before_allocating() {
        // 2.2 MB of incompressible bytes: deflate could honestly inflate them to 2.2 GB, so only
        // the size limit stands between this header and a 2 GiB allocation.
        let mut noise = vec![0u8; 2_200_000];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for byte in &mut noise {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let file = gzip(&idx(&[2, 1024, 1024, 1024], &noise));
        assert!(file.len() * MAX_DEFLATE_RATIO > 1 << 31);
        let err = IdxArray::from_gzip_bytes(&file, path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "promise 2147483648 data bytes (2.0 GiB), above max_bytes 1073741824 (1.0 GiB)"
            ) && err.contains("raise IdxOptions::max_bytes"),
            "{err}"
        );
    }

    #[test]
    fn max_bytes_can_be_lowered_and_raised() {
        let file = idx(&[64, 64], &[1; 4096]);
        for bytes in [file.clone(), gzip(&file)] {
            let small = IdxOptions::default().max_bytes(4095);
            let err = parse_with(&small, &bytes).unwrap_err().to_string();
            assert!(err.contains("above max_bytes 4095"), "{err}");
            let enough = IdxOptions::default().max_bytes(4096);
            assert_eq!(parse_with(&enough, &bytes).unwrap().data.len(), 4096);
        }
        // `read` checks the file's size before reading it.
        let dir = std::env::temp_dir().join(format!("torchlet-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.idx");
        std::fs::write(&big, idx(&[1 << 20], &vec![0; 1 << 20])).unwrap();
        let err = IdxOptions::default()
            .max_bytes(1000)
            .read(&big)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the file is 1048584 bytes, above max_bytes 1000"),
            "{err}"
        );
        assert_eq!(IdxArray::read(&big).unwrap().shape, vec![1 << 20]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn parse_with(options: &IdxOptions, bytes: &[u8]) -> Result<IdxArray> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            options.from_gzip_bytes(bytes, path())
        } else {
            options.from_bytes(bytes, path())
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let err = IdxArray::read("/nonexistent/train-images-idx3-ubyte").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(
            err.to_string()
                .contains("/nonexistent/train-images-idx3-ubyte")
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = IdxArray::from_bytes(&bytes, path());
            let _ = IdxArray::from_gzip_bytes(&bytes, path());
        }

        #[test]
        fn random_headers_are_checked_before_allocating(
            ndim in 0u8..8,
            dims in proptest::collection::vec(any::<u32>(), 8),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let file = idx(&dims[..usize::from(ndim)], &tail);
            // Whatever the dimensions claim, parsing allocates at most the file's size; it
            // succeeds exactly when the product equals the bytes present.
            let expected = dims[..usize::from(ndim)]
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d as usize));
            for parsed in [parse_any(&file), parse_any(&gzip(&file))] {
                match parsed {
                    Ok(a) => prop_assert_eq!(Some(a.data.len()), expected),
                    Err(e) => prop_assert_ne!(expected, Some(tail.len()), "{}", e),
                }
            }
        }

        #[test]
        fn truncated_files_are_errors(cut in 0usize..40) {
            let file = idx(&[2, 4, 4], &[7; 32]);
            let short = &file[..cut.min(file.len() - 1)];
            prop_assert!(parse_any(short).is_err());
            let packed = gzip(&file);
            prop_assert!(parse_any(&packed[..cut.min(packed.len() - 1)]).is_err());
        }
    }
}
