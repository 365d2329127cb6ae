//! Every `unsafe` block and `unsafe impl` carries a `// SAFETY:` comment saying why it holds,
//! and every `unsafe fn` a `# Safety` doc section saying what its callers promise (issue 12,
//! and STYLE.md's last line). A line-based scan of the workspace's Rust sources: the comment
//! must be in the run of comment lines directly above the `unsafe` line (or on it).

use std::fs;
use std::path::{Path, PathBuf};

/// Folders scanned, relative to the workspace root.
const ROOTS: &[&str] = &[
    "core/src",
    "src",
    "macros/src",
    "tests",
    "examples",
    "benches",
];

/// Files whose `unsafe` code is still being annotated, each with the task doing it. Empty
/// this list as they land: a file listed here is not checked.
const PENDING: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The comment and attribute lines directly above line `i`, nearest first.
fn lines_above<'a>(lines: &[&'a str], i: usize) -> impl Iterator<Item = &'a str> {
    lines[..i]
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with("//") || l.starts_with("#["))
}

/// `path:line: problem` for each `unsafe` item of `text` without its comment.
fn problems(path: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("").trim_start();
        if code.starts_with("//") || !code.contains("unsafe") {
            continue;
        }
        let has = |marker: &str| {
            line.contains(marker) || lines_above(&lines, i).any(|l| l.contains(marker))
        };
        let is_fn = code.contains("unsafe fn ") || code.contains("unsafe extern \"C\" fn ");
        if is_fn {
            if !lines_above(&lines, i).any(|l| l.starts_with("///") && l.contains("# Safety")) {
                out.push(format!(
                    "{path}:{}: `unsafe fn` without a `# Safety` doc section",
                    i + 1
                ));
            }
        } else if (code.contains("unsafe {") || code.contains("unsafe impl")) && !has("SAFETY:") {
            out.push(format!(
                "{path}:{}: `unsafe` without a `// SAFETY:` comment above",
                i + 1
            ));
        }
    }
    out
}

#[test]
fn every_unsafe_block_and_fn_says_why_it_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    let mut found = Vec::new();
    let mut scanned = 0;
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "tests/unsafe_code.rs" || PENDING.iter().any(|(p, _)| *p == rel) {
            continue;
        }
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
        scanned += 1;
        found.extend(problems(&rel, &text));
    }
    assert!(
        scanned > 50,
        "only {scanned} Rust files found under {root:?}"
    );
    assert!(
        found.is_empty(),
        "{} unsafe sites lack their comment:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_a_missing_comment() {
    let bad = "fn f() {\n    let x = unsafe { g() };\n}\n/// Does it.\nunsafe fn h() {}\n";
    assert_eq!(problems("x.rs", bad).len(), 2);
    let good = "fn f() {\n    // SAFETY: g has no precondition.\n    let x = unsafe { g() };\n}\n\
                /// Does it.\n///\n/// # Safety\n/// None.\n#[inline]\nunsafe fn h() {}\n";
    assert_eq!(problems("x.rs", good), Vec::<String>::new());
}
