//! [`CsvTable`]: tabular data from a CSV file (RFC 4180 quoting), turned into feature tensors
//! and class labels.
//!
//! # NOTE [ Untrusted CSV files ]
//! A file larger than `max_bytes` ([`DEFAULT_MAX_BYTES`], 1 GiB, unless raised with
//! [`CsvOptions::max_bytes`]) is refused before it is read: parsed, a table takes a few times
//! its file's size in memory. Error messages quote at most [`QUOTE_CHARS`] characters of a
//! field or a column name, with its length, so that a 50 MB field gives a one-line error.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The largest CSV file read unless told otherwise: 1 GiB. See NOTE [ Untrusted CSV files ].
pub const DEFAULT_MAX_BYTES: usize = 1 << 30;
/// The most characters of a field that an error message quotes.
pub const QUOTE_CHARS: usize = 40;

/// How to read a CSV file: the delimiter, whether the first record names the columns, and the
/// largest file accepted.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    delimiter: char,
    has_headers: bool,
    max_bytes: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ',',
            has_headers: true,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl CsvOptions {
    /// The field separator (default `,`; `;` and `\t` are common too).
    pub fn delimiter(mut self, delimiter: char) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Whether the first record holds column names (default true). Without, the columns are
    /// named `"0"`, `"1"`, …
    pub fn has_headers(mut self, has_headers: bool) -> Self {
        self.has_headers = has_headers;
        self
    }

    /// The largest file (or text) accepted, in bytes (default [`DEFAULT_MAX_BYTES`], 1 GiB).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Reads `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file and the
    /// line when it is larger than `max_bytes`, not UTF-8, a quote is not closed, or a record
    /// has a different number of fields from the first.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<CsvTable> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        self.check_size(size, path)?;
        let text = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(text).map_err(|e| {
            format_error(
                path,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        self.parse(&text, path)
    }

    /// Parses CSV `text`; `path` only names the source in errors.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), for the format errors.
    pub fn parse(&self, text: &str, path: &Path) -> Result<CsvTable> {
        self.check_size(text.len() as u64, path)?;
        let mut records = split_records(text, self.delimiter, path)?.into_iter();
        let headers = match (self.has_headers, records.as_slice().first()) {
            (true, Some(_)) => records.next().map(|(_, h)| h).unwrap_or_default(),
            (_, Some((_, first))) => (0..first.len()).map(|i| i.to_string()).collect(),
            (_, None) => Vec::new(),
        };
        let mut rows = Vec::new();
        let mut lines = Vec::new();
        for (line, record) in records {
            if record.len() != headers.len() {
                return Err(format_error(
                    path,
                    format!(
                        "line {line} has {} fields, but the table has {} columns",
                        record.len(),
                        headers.len()
                    ),
                ));
            }
            rows.push(record);
            lines.push(line);
        }
        Ok(CsvTable {
            path: path.to_path_buf(),
            headers,
            rows,
            lines,
        })
    }

    fn check_size(&self, size: u64, path: &Path) -> Result<()> {
        if size > self.max_bytes as u64 {
            return Err(format_error(
                path,
                format!(
                    "the file is {size} bytes, above max_bytes {}; raise CsvOptions::max_bytes \
                     if you trust it",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// `text` quoted for an error message: whole when short, else its first [`QUOTE_CHARS`]
/// characters and its length. See NOTE [ Untrusted CSV files ].
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// The column names for an error message: each quoted short, at most 20 of them.
fn quote_all(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(20).map(|n| quote(n)).collect();
    if names.len() > 20 {
        shown.push(format!("and {} more", names.len() - 20));
    }
    format!("[{}]", shown.join(", "))
}

/// Splits CSV text into records of fields, each with the line it starts on. Blank lines are
/// skipped; `"` quotes a field, `""` inside quotes is one `"`, and quoted fields may hold the
/// delimiter and line breaks.
fn split_records(text: &str, delimiter: char, path: &Path) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut start_line) = (1, 1);
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, c) if c == delimiter => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                end_record(&mut records, &mut record, &mut field, start_line);
                line += 1;
                start_line = line;
            }
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err(format_error(
            path,
            format!("the quote opened on line {start_line} is never closed"),
        ));
    }
    end_record(&mut records, &mut record, &mut field, start_line);
    Ok(records)
}

fn end_record(
    records: &mut Vec<(usize, Vec<String>)>,
    record: &mut Vec<String>,
    field: &mut String,
    line: usize,
) {
    if record.is_empty() && field.trim().is_empty() {
        field.clear();
        return;
    }
    record.push(std::mem::take(field));
    records.push((line, std::mem::take(record)));
}

fn format_error(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// The records of a CSV file as text, with column names; [`tensor`](Self::tensor) and
/// [`labels`](Self::labels) turn columns into tensors.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{CsvOptions, TensorDataset};
/// # use std::path::Path;
/// let csv = "sepal_length,sepal_width,species\n5.1,3.5,setosa\n7.0,3.2,versicolor\n";
/// let table = CsvOptions::default().parse(csv, Path::new("iris.csv"))?;
/// let x = table.tensor(&["sepal_length", "sepal_width"])?; // [2, 2] f32
/// let (y, classes) = table.labels("species")?;              // [2] i64
/// assert_eq!(classes, vec!["setosa", "versicolor"]);
/// let dataset = TensorDataset::new((x, y))?;
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CsvTable {
    path: PathBuf,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// The line each row starts on, for error messages.
    lines: Vec<usize>,
}

impl CsvTable {
    /// Reads a comma-separated file whose first line names the columns; see [`CsvOptions`] for
    /// other layouts.
    ///
    /// # Errors
    ///
    /// As [`CsvOptions::read`].
    pub fn read(path: impl AsRef<Path>) -> Result<CsvTable> {
        CsvOptions::default().read(path)
    }

    /// The column names.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The number of records (rows), not counting the header.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The fields of the records, as text.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The position of column `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the column and listing the ones there are.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::Config(format!(
                "{}: no column {}; the columns are {}",
                self.path.display(),
                quote(name),
                quote_all(&self.headers)
            ))
        })
    }

    /// The named columns as a f32 tensor `[len(), columns.len()]`, e.g. the features.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown column; [`Error::Format`] naming the line, the column
    /// and the text of a field that is not a number.
    pub fn tensor(&self, columns: &[&str]) -> Result<Tensor> {
        let positions = columns
            .iter()
            .map(|c| self.column_index(c))
            .collect::<Result<Vec<_>>>()?;
        let mut data = Vec::with_capacity(self.rows.len() * positions.len());
        for (row, line) in self.rows.iter().zip(&self.lines) {
            for &p in &positions {
                let text = row[p].trim();
                let value: f32 = text.parse().map_err(|_| {
                    format_error(
                        &self.path,
                        format!(
                            "line {line}, column {}: {} is not a number",
                            quote(&self.headers[p]),
                            quote(text)
                        ),
                    )
                })?;
                data.push(value);
            }
        }
        Ok(Tensor::from_vec(data, &[self.rows.len(), positions.len()]))
    }

    /// Every column except `exclude`, in file order: the usual feature list beside a target.
    pub fn columns_except(&self, exclude: &[&str]) -> Vec<&str> {
        self.headers
            .iter()
            .map(String::as_str)
            .filter(|h| !exclude.contains(h))
            .collect()
    }

    /// Column `name` as class labels: an i64 tensor `[len()]` and the class names, where label
    /// `k` is `classes[k]`. Classes are the column's distinct values in sorted order; when they
    /// are all integers they are used as the labels directly (`"3"` is label 3).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown column.
    pub fn labels(&self, name: &str) -> Result<(Tensor, Vec<String>)> {
        let p = self.column_index(name)?;
        let texts: Vec<&str> = self.rows.iter().map(|r| r[p].trim()).collect();
        let integers: Option<Vec<i64>> = texts.iter().map(|t| t.parse().ok()).collect();
        let (labels, classes) = match integers {
            Some(values) => {
                let distinct: BTreeSet<i64> = values.iter().copied().collect();
                (values, distinct.iter().map(i64::to_string).collect())
            }
            None => {
                let distinct: BTreeSet<&str> = texts.iter().copied().collect();
                let classes: Vec<String> = distinct.iter().map(|s| s.to_string()).collect();
                let labels = texts
                    .iter()
                    .map(|t| classes.binary_search_by(|c| c.as_str().cmp(t)).unwrap_or(0) as i64)
                    .collect();
                (labels, classes)
            }
        };
        Ok((Tensor::from_vec(labels, &[self.rows.len()]), classes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CsvTable> {
        CsvOptions::default().parse(text, Path::new("t.csv"))
    }

    #[test]
    fn quoted_fields_blank_lines_and_crlf() {
        let t = parse("a,b\r\n1,\"x, \"\"y\"\"\"\r\n\r\n2,\"two\nlines\"\n").unwrap();
        assert_eq!(t.headers(), ["a", "b"]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.rows()[0][1], "x, \"y\"");
        assert_eq!(t.rows()[1][1], "two\nlines");
    }

    #[test]
    fn numeric_columns_become_a_float_tensor() {
        let t = parse("x1,x2,y\n1,2.5,a\n-3,4e1,b\n").unwrap();
        let x = t.tensor(&t.columns_except(&["y"])).unwrap();
        assert_eq!(x.shape(), vec![2, 2]);
        assert_eq!(x.to_vec::<f32>(), vec![1.0, 2.5, -3.0, 40.0]);
    }

    #[test]
    fn labels_from_names_or_integers() {
        let t = parse("y,z\ncat,3\ndog,1\ncat,3\n").unwrap();
        let (y, classes) = t.labels("y").unwrap();
        assert_eq!(y.to_vec::<i64>(), vec![0, 1, 0]);
        assert_eq!(classes, ["cat", "dog"]);
        let (z, classes) = t.labels("z").unwrap();
        assert_eq!(z.to_vec::<i64>(), vec![3, 1, 3]);
        assert_eq!(classes, ["1", "3"]);
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let err = parse("a,b\n1,2\n3\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "t.csv: line 3 has 1 fields, but the table has 2 columns"
        );
        let t = parse("a,b\n1,2\n3,oops\n").unwrap();
        let err = t.tensor(&["a", "b"]).unwrap_err().to_string();
        assert_eq!(err, "t.csv: line 3, column \"b\": \"oops\" is not a number");
        let err = t.tensor(&["c"]).unwrap_err().to_string();
        assert!(err.contains("no column \"c\""), "{err}");
        let err = parse("a\n\"open\n").unwrap_err().to_string();
        assert!(err.contains("quote opened on line 2"), "{err}");
    }

    #[test]
    fn a_50_mb_field_is_quoted_by_a_short_prefix() {
        // Built directly: parsing 50 MB char by char takes seconds in a debug build.
        let field = "x".repeat(50 << 20);
        let table = |headers: Vec<String>, row: Vec<String>| CsvTable {
            path: PathBuf::from("t.csv"),
            headers,
            rows: vec![row],
            lines: vec![2],
        };
        let t = table(
            vec!["a".into(), "b".into()],
            vec!["1".into(), field.clone()],
        );
        let err = t.tensor(&["a", "b"]).unwrap_err().to_string();
        let prefix = "x".repeat(QUOTE_CHARS);
        assert_eq!(
            err,
            format!("t.csv: line 2, column \"b\": \"{prefix}\"… (52428800 bytes) is not a number")
        );
        // A huge column name is shortened in the list of columns too.
        let t = table(vec![field, "b".into()], vec!["1".into(), "2".into()]);
        let err = t.tensor(&["c"]).unwrap_err().to_string();
        assert!(
            err.len() < 200 && err.contains("(52428800 bytes)"),
            "{err:.200}"
        );
        // Parsing keeps long fields intact; only messages shorten them.
        let t = parse(&format!("a\n{}\n", "y".repeat(1000))).unwrap();
        assert_eq!(t.rows()[0][0].len(), 1000);
    }

    #[test]
    fn files_above_max_bytes_are_refused_before_reading() {
        let err = CsvOptions::default()
            .max_bytes(8)
            .parse("a,b\n1,2\n3,4\n", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.csv: the file is 12 bytes, above max_bytes 8; raise CsvOptions::max_bytes if you \
             trust it"
        );
        let dir = std::env::temp_dir().join(format!("torchlet-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.csv");
        std::fs::write(&file, "a,b\n1,2\n").unwrap();
        let err = CsvOptions::default().max_bytes(4).read(&file).unwrap_err();
        assert!(err.to_string().contains("above max_bytes 4"), "{err}");
        assert_eq!(CsvOptions::default().read(&file).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_headers_columns_are_numbered() {
        let t = CsvOptions::default()
            .has_headers(false)
            .delimiter(';')
            .parse("1;2\n3;4\n", Path::new("t.csv"))
            .unwrap();
        assert_eq!(t.headers(), ["0", "1"]);
        assert_eq!(t.len(), 2);
    }
}
