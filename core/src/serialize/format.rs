//! The safetensors layout: tensors to file bytes and back, checked so that no file, however
//! damaged, makes the reader panic or allocate for a size it claims but does not hold. The
//! layout is NOTE [ safetensors layout ] in `serialize/mod.rs`.

use super::json::{self, Value};
use crate::dtype::DType;
use std::borrow::Cow;
use std::fmt::Display;

/// One tensor of a file: its bytes as NOTE [ safetensors layout ] lays them out.
pub(super) struct Entry<'a> {
    pub(super) name: String,
    pub(super) dtype: FileDtype,
    pub(super) shape: Vec<usize>,
    pub(super) data: Cow<'a, [u8]>,
}

/// The element types torchlet reads and writes in a file: the tensor dtypes, and the 16-bit
/// floats (NOTE [ Half precision in files ] on `Precision`). Declared in the safetensors
/// library's order, which decides the order of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum FileDtype {
    F16,
    BF16,
    F32,
    F64,
    I64,
}

impl FileDtype {
    /// The file's name for the dtype.
    fn name(self) -> &'static str {
        match self {
            FileDtype::F16 => "F16",
            FileDtype::BF16 => "BF16",
            FileDtype::F32 => "F32",
            FileDtype::F64 => "F64",
            FileDtype::I64 => "I64",
        }
    }

    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            FileDtype::F16 | FileDtype::BF16 => 2,
            FileDtype::F32 => 4,
            FileDtype::F64 | FileDtype::I64 => 8,
        }
    }
}

impl From<DType> for FileDtype {
    fn from(dtype: DType) -> FileDtype {
        match dtype {
            DType::F32 => FileDtype::F32,
            DType::F64 => FileDtype::F64,
            DType::I64 => FileDtype::I64,
        }
    }
}

/// The bytes of a file holding `entries`, laid out as the safetensors library lays them out
/// (NOTE [ safetensors layout ]). Names must be unique.
pub(super) fn serialize(mut entries: Vec<Entry<'_>>) -> Vec<u8> {
    entries.sort_by(|a, b| {
        // The safetensors library writes the dtypes it declares last first.
        let by_dtype = b.dtype.cmp(&a.dtype);
        by_dtype.then_with(|| a.name.cmp(&b.name))
    });
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        json::write_string(&mut header, &entry.name);
        let shape: Vec<String> = entry.shape.iter().map(usize::to_string).collect();
        let end = offset + entry.data.len();
        header.push_str(&format!(
            r#":{{"dtype":"{}","shape":[{}],"data_offsets":[{offset},{end}]}}"#,
            entry.dtype.name(),
            shape.join(","),
        ));
        offset = end;
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for entry in &entries {
        bytes.extend_from_slice(&entry.data);
    }
    bytes
}

/// The tensors of a file, in the order of their data (in header order among empty tensors at
/// the same offset), borrowing their bytes from `bytes`.
///
/// # Errors
/// A message, without the file's name, for a file that is cut short, is not laid out as NOTE
/// [ safetensors layout ] says, or holds a dtype other than F16, BF16, F32, F64 and I64.
pub(super) fn deserialize(bytes: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let (header, data) = split(bytes)?;
    let mut tensors = parse_header(header)?;
    tensors.sort_by_key(|t| (t.begin, t.end));
    check_layout(&tensors, data.len())?;
    tensors
        .into_iter()
        .map(|t| {
            let data = data
                .get(t.begin..t.end)
                .ok_or_else(|| invalid(format!("tensor `{}` lies outside the data", t.name)))?;
            Ok(Entry {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                data: Cow::Borrowed(data),
            })
        })
        .collect()
}

/// A tensor as the header describes it, its size already checked against its shape.
struct Header {
    name: String,
    dtype: FileDtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

fn invalid(detail: impl Display) -> String {
    format!(
        "not a valid safetensors file: {detail}; was it truncated or written by another program?"
    )
}

/// The header's text and the data after it.
fn split(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(invalid(
            "it is shorter than the 8-byte header length it starts with",
        ));
    };
    let n = u64::from_le_bytes(*len);
    let Some(n) = usize::try_from(n).ok().filter(|&n| n <= rest.len()) else {
        return Err(invalid(format!(
            "the header of {n} bytes is cut off: only {} bytes follow its length",
            rest.len()
        )));
    };
    let (header, data) = rest.split_at(n);
    let header = std::str::from_utf8(header)
        .map_err(|e| invalid(format!("the header is not UTF-8 ({e})")))?;
    Ok((header, data))
}

/// The tensors the header lists, in header order.
fn parse_header(text: &str) -> Result<Vec<Header>, String> {
    let header =
        json::parse(text).map_err(|e| invalid(format!("the header is not valid JSON ({e})")))?;
    let Value::Object(members) = header else {
        return Err(invalid(format!(
            "the header is {} rather than a JSON object",
            header.kind()
        )));
    };
    let mut tensors = Vec::with_capacity(members.len());
    for (name, info) in members {
        if name == "__metadata__" {
            check_metadata(&info)?;
        } else {
            tensors.push(tensor_header(name, &info)?);
        }
    }
    Ok(tensors)
}

/// `__metadata__` maps names to strings; torchlet keeps none of it but refuses what the
/// safetensors library refuses.
fn check_metadata(metadata: &Value) -> Result<(), String> {
    let Value::Object(members) = metadata else {
        return Err(invalid(format!(
            "`__metadata__` is {} rather than an object of strings",
            metadata.kind()
        )));
    };
    match members.iter().find(|(_, v)| v.as_str().is_none()) {
        Some((key, value)) => Err(invalid(format!(
            "`__metadata__` entry `{key}` is {} rather than a string",
            value.kind()
        ))),
        None => Ok(()),
    }
}

fn tensor_header(name: String, info: &Value) -> Result<Header, String> {
    let Value::Object(_) = info else {
        return Err(invalid(format!(
            "tensor `{name}` is described by {} rather than an object with `dtype`, `shape` and `data_offsets`",
            info.kind()
        )));
    };
    let field = |key: &str| {
        info.get(key)
            .ok_or_else(|| invalid(format!("tensor `{name}` has no `{key}`")))
    };
    let dtype = field("dtype")?.as_str().ok_or_else(|| {
        invalid(format!(
            "the `dtype` of tensor `{name}` is not a string such as \"F32\""
        ))
    })?;
    let dtype = match dtype {
        "F16" => FileDtype::F16,
        "BF16" => FileDtype::BF16,
        "F32" => FileDtype::F32,
        "F64" => FileDtype::F64,
        "I64" => FileDtype::I64,
        other => {
            return Err(format!(
                "tensor `{name}` has dtype {other}; torchlet reads F16, BF16, F32, F64 and I64, so convert it (e.g. `.float()`) before saving"
            ));
        }
    };
    let shape = usizes(field("shape")?).ok_or_else(|| {
        invalid(format!(
            "the `shape` of tensor `{name}` is not an array of non-negative integers"
        ))
    })?;
    let (begin, end) = match usizes(field("data_offsets")?).as_deref() {
        Some(&[begin, end]) if begin <= end => (begin, end),
        _ => {
            return Err(invalid(format!(
                "the `data_offsets` of tensor `{name}` are not two integers [begin, end] with begin <= end"
            )));
        }
    };
    let Some(size) = element_count(&shape).and_then(|n| n.checked_mul(dtype.size())) else {
        return Err(invalid(format!(
            "tensor `{name}` has shape {shape:?}, more elements than memory can address"
        )));
    };
    if end - begin != size {
        return Err(invalid(format!(
            "tensor `{name}` of shape {shape:?} and dtype {} needs {size} bytes, but its data_offsets [{begin}, {end}] hold {}",
            dtype.name(),
            end - begin
        )));
    }
    Ok(Header {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

fn usizes(value: &Value) -> Option<Vec<usize>> {
    value.as_array()?.iter().map(Value::as_usize).collect()
}

/// The number of elements of `shape`; `None` when the product of its non-zero dimensions
/// passes `isize::MAX`, which no ndarray array (and so no tensor) can have: `[0, 2^63]` holds
/// no elements but `Tensor::from_vec` would panic on it.
fn element_count(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))?;
    isize::try_from(nonzero).ok()?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// Checks that `tensors`, sorted by offset, cover `data_len` bytes back to back. A tensor past
/// the end is reported first and by name, as the likely cause is a file cut short.
fn check_layout(tensors: &[Header], data_len: usize) -> Result<(), String> {
    if let Some(t) = tensors.iter().find(|t| t.end > data_len) {
        return Err(format!(
            "truncated: tensor `{}` ends at byte {} of the data but only {data_len} bytes are present; \
             the file was cut short (an interrupted write or copy?), so write or copy it again",
            t.name, t.end
        ));
    }
    let mut offset = 0;
    for t in tensors {
        if t.begin != offset {
            return Err(invalid(format!(
                "tensor `{}` has data_offsets [{}, {}] but the tensors before it end at byte {offset} \
                 (safetensors stores tensors back to back)",
                t.name, t.begin, t.end
            )));
        }
        offset = t.end;
    }
    if offset != data_len {
        return Err(invalid(format!(
            "the data holds {data_len} bytes but its tensors account for {offset}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dtype: DType, shape: &[usize], data: Vec<u8>) -> Entry<'static> {
        Entry {
            name: name.to_string(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
            data: Cow::Owned(data),
        }
    }

    fn le<const N: usize>(values: &[[u8; N]]) -> Vec<u8> {
        values.concat()
    }

    /// A state dict of every dtype, with empty tensors and a name that needs escaping.
    fn sample() -> Vec<Entry<'static>> {
        let f32s = |v: &[f32]| le(&v.iter().map(|x| x.to_le_bytes()).collect::<Vec<_>>());
        vec![
            entry(
                "weight",
                DType::F32,
                &[2, 3],
                f32s(&[1.0, -2.0, 0.5, 3.25, 0.0, -0.0]),
            ),
            entry("bias", DType::F32, &[2], f32s(&[0.25, 1.5])),
            entry(
                "running_var",
                DType::F64,
                &[1],
                1.0f64.to_le_bytes().to_vec(),
            ),
            entry(
                "num_batches_tracked",
                DType::I64,
                &[],
                7i64.to_le_bytes().to_vec(),
            ),
            entry(
                "a.b\"q\\\u{1}\n\t\u{7f}é€😀",
                DType::F32,
                &[1],
                f32s(&[2.0]),
            ),
            entry("Z_upper", DType::F32, &[0, 3], vec![]),
            entry("empty64", DType::I64, &[0], vec![]),
        ]
    }

    /// What the safetensors crate 0.8.0 (`safetensors::serialize(tensors, None)`) wrote for
    /// `sample()`, captured before torchlet dropped the crate.
    const SAMPLE_HEADER: &str = concat!(
        r#"{"empty64":{"dtype":"I64","shape":[0],"data_offsets":[0,0]},"#,
        r#""num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"#,
        r#""running_var":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"#,
        r#""Z_upper":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]},"#,
        r#""a.b\"q\\\u0001\n\t"#,
        "\u{7f}é€😀",
        r#"":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},"#,
        r#""bias":{"dtype":"F32","shape":[2],"data_offsets":[20,28]},"#,
        r#""weight":{"dtype":"F32","shape":[2,3],"data_offsets":[28,52]}}     "#,
    );

    const SAMPLE_DATA: [u8; 52] = [
        7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 64, 0, 0, 128, 62, 0, 0, 192,
        63, 0, 0, 128, 63, 0, 0, 0, 192, 0, 0, 0, 63, 0, 0, 80, 64, 0, 0, 0, 0, 0, 0, 0, 128,
    ];

    #[test]
    fn files_match_the_safetensors_crate_byte_for_byte() {
        let mut want = 464u64.to_le_bytes().to_vec();
        want.extend_from_slice(SAMPLE_HEADER.as_bytes());
        want.extend_from_slice(&SAMPLE_DATA);
        assert_eq!(SAMPLE_HEADER.len(), 464);
        assert_eq!(serialize(sample()), want);
        // The crate's output for no tensors, and for one scalar.
        let empty = b"\x08\0\0\0\0\0\0\0{}      ".to_vec();
        assert_eq!(serialize(vec![]), empty);
        let mut one = 56u64.to_le_bytes().to_vec();
        one.extend_from_slice(br#"{"x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}   "#);
        one.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(
            serialize(vec![entry(
                "x",
                DType::F32,
                &[],
                1.0f32.to_le_bytes().to_vec()
            )]),
            one
        );
    }

    #[test]
    fn reading_gives_back_what_was_written_in_data_order() {
        let bytes = serialize(sample());
        let back = deserialize(&bytes).unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "empty64",
                "num_batches_tracked",
                "running_var",
                "Z_upper",
                "a.b\"q\\\u{1}\n\t\u{7f}é€😀",
                "bias",
                "weight"
            ]
        );
        for want in sample() {
            let got = back.iter().find(|e| e.name == want.name).unwrap();
            assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape));
            assert_eq!(got.data, want.data, "{}", want.name);
        }
    }

    /// A file with `header` (padded) and `data_len` zero bytes of data.
    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut header = header.to_string();
        while !header.len().is_multiple_of(8) {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        bytes
    }

    #[test]
    fn pytorch_layouts_read_in_data_order_with_metadata_ignored() {
        let bytes = file(
            r#"{"__metadata__":{"format":"pt"},
                "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},
                "a":{"data_offsets":[0,8],"shape":[1],"dtype":"F64","extra":[null,1.5,true]}}"#,
            16,
        );
        let back = deserialize(&bytes).unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(back[0].dtype, FileDtype::F64);
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        let t = |info: &str| format!(r#"{{"t":{info}}}"#);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"1234567".to_vec(), "shorter than the 8-byte header"),
            (
                {
                    let mut b = file("{}", 0);
                    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                    b
                },
                "the header of 18446744073709551615 bytes is cut off: only 8 bytes follow",
            ),
            (
                [&8u64.to_le_bytes()[..], b"{\"\xff\":1}  "].concat(),
                "the header is not UTF-8",
            ),
            (
                file("{\"t\":", 0),
                "the header is not valid JSON (unexpected end",
            ),
            (
                file("[]", 0),
                "the header is an array rather than a JSON object",
            ),
            (
                file(r#"{"__metadata__":{"n":1}}"#, 0),
                "`__metadata__` entry `n` is a number rather than a string",
            ),
            (
                file(r#"{"__metadata__":[]}"#, 0),
                "`__metadata__` is an array",
            ),
            (file(&t("3"), 0), "tensor `t` is described by a number"),
            (
                file(&t(r#"{"shape":[],"data_offsets":[0,4]}"#), 4),
                "tensor `t` has no `dtype`",
            ),
            (
                file(&t(r#"{"dtype":7,"shape":[],"data_offsets":[0,4]}"#), 4),
                "the `dtype` of tensor `t` is not a string",
            ),
            (
                file(
                    &t(r#"{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}"#),
                    2,
                ),
                "tensor `t` has dtype F8_E4M3; torchlet reads F16, BF16, F32, F64 and I64",
            ),
            (
                file(
                    &t(r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#),
                    4,
                ),
                "the `shape` of tensor `t` is not an array of non-negative integers",
            ),
            (
                file(
                    &t(r#"{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}"#),
                    4,
                ),
                "the `shape` of tensor `t` is not an array",
            ),
            (
                file(&t(r#"{"dtype":"F32","shape":[],"data_offsets":[4,0]}"#), 4),
                "the `data_offsets` of tensor `t` are not two integers",
            ),
            (
                file(
                    &t(r#"{"dtype":"F32","shape":[],"data_offsets":[0,4,8]}"#),
                    8,
                ),
                "the `data_offsets` of tensor `t` are not two integers",
            ),
            (
                file(
                    &t(r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}"#),
                    0,
                ),
                "more elements than memory can address",
            ),
            (
                file(
                    &t(r#"{"dtype":"F64","shape":[0,9223372036854775808],"data_offsets":[0,0]}"#),
                    0,
                ),
                "more elements than memory can address",
            ),
            (
                file(
                    &t(r#"{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}"#),
                    0,
                ),
                "more elements than memory can address",
            ),
            (
                file(&t(r#"{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#), 4),
                "tensor `t` of shape [2] and dtype F32 needs 8 bytes, but its data_offsets [0, 4] hold 4",
            ),
            (
                file(
                    &t(
                        r#"{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551611,18446744073709551615]}"#,
                    ),
                    4,
                ),
                "truncated: tensor `t` ends at byte 18446744073709551615 of the data but only 4 bytes are present",
            ),
            (
                file(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#), 8),
                "tensor `t` has data_offsets [4, 8] but the tensors before it end at byte 0",
            ),
            (
                file(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#), 5),
                "the data holds 5 bytes but its tensors account for 4",
            ),
            (
                file(
                    r#"{"t":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}"#,
                    8,
                ),
                "key `t` appears twice",
            ),
        ];
        for (bytes, want) in cases {
            let Err(err) = deserialize(&bytes) else {
                panic!("accepted a file that should fail with {want:?}");
            };
            assert!(err.contains(want), "expected {want:?}, got {err:?}");
        }
    }

    /// xorshift64*: a fixed stream of numbers, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Reads `bytes` and checks that whatever comes back can become a tensor: the sizes agree
    /// and the shape's product cannot overflow (`Tensor::from_vec` would panic otherwise).
    fn read_without_panic(bytes: &[u8]) -> bool {
        let Ok(entries) = deserialize(bytes) else {
            return false;
        };
        for e in entries {
            let n = element_count(&e.shape).expect("accepted shape overflows");
            assert_eq!(n * e.dtype.size(), e.data.len(), "{}", e.name);
        }
        true
    }

    #[test]
    fn damaged_and_random_files_never_panic() {
        let good = serialize(sample());
        for len in 0..good.len() {
            read_without_panic(&good[..len]);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Bytes of the header swapped for ones that JSON and the layout give meaning to.
        let specials = b"{}[]\",:\\u0123456789-.eE FIt ";
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(8 + SAMPLE_HEADER.len());
                bytes[at] = match rng.below(3) {
                    0 => specials[rng.below(specials.len())],
                    1 => rng.next() as u8,
                    _ => bytes[at] ^ (1 << rng.below(8)),
                };
            }
            let keep = if rng.below(4) == 0 {
                rng.below(bytes.len() + 1)
            } else {
                bytes.len()
            };
            read_without_panic(&bytes[..keep]);
        }
        // Headers made of JSON's pieces, with a correct length and some data after them.
        let pieces = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"t\"",
            "\"dtype\"",
            "\"shape\"",
            "\"data_offsets\"",
            "\"__metadata__\"",
            "\"F32\"",
            "\"I64\"",
            "\"F64\"",
            "0",
            "4",
            "18446744073709551615",
            "9223372036854775807",
            "-1",
            "1.5",
            "true",
            "null",
            "\\u",
            "\\ud800",
            " ",
        ];
        for _ in 0..20_000 {
            let header: String = (0..rng.below(40))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.resize(bytes.len() + rng.below(24), 0);
            read_without_panic(&bytes);
        }
        // Valid headers with one value at a time pushed to an edge: a huge dimension, an
        // offset past the end, an unknown dtype, a byte too many or too few of data.
        let edges = [0, 1, 3, 1 << 32, 1 << 62, u64::MAX];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut values: Vec<u64> = Vec::new();
            let mut offset = 0;
            let mut tensors = Vec::new();
            for i in 0..3 {
                let dtype = [
                    FileDtype::F16,
                    FileDtype::BF16,
                    FileDtype::F32,
                    FileDtype::F64,
                    FileDtype::I64,
                ][rng.below(5)];
                let shape: Vec<u64> = (0..i).map(|_| rng.below(3) as u64).collect();
                let size = shape.iter().product::<u64>() * dtype.size() as u64;
                tensors.push((dtype.name(), shape.len(), values.len()));
                values.extend(&shape);
                values.extend([offset, offset + size]);
                offset += size;
            }
            let mut data_len = offset;
            match rng.below(4) {
                0 => {}
                1 => data_len = data_len.saturating_sub(1 + rng.below(4) as u64),
                2 => data_len += 1 + rng.below(4) as u64,
                _ => {
                    let at = rng.below(values.len());
                    values[at] = edges[rng.below(edges.len())];
                }
            }
            let entries: Vec<String> = tensors
                .iter()
                .enumerate()
                .map(|(i, &(dtype, rank, at))| {
                    let dtype = if rng.below(50) == 0 { "U8" } else { dtype };
                    let shape: Vec<String> =
                        values[at..at + rank].iter().map(u64::to_string).collect();
                    let (begin, end) = (values[at + rank], values[at + rank + 1]);
                    format!(
                        r#""t{i}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{begin},{end}]}}"#,
                        shape.join(",")
                    )
                })
                .collect();
            let header = format!("{{{}}}", entries.join(","));
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.resize(bytes.len() + data_len as usize, 0);
            accepted += usize::from(read_without_panic(&bytes));
        }
        assert!(
            accepted > 1000,
            "only {accepted} generated files were valid"
        );
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            read_without_panic(&bytes);
        }
    }
}
