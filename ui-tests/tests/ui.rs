//! Compile-fail tests: each file in tests/ui makes one mistake and its `.stderr` holds the one
//! error the compiler gives. The wording is rustc 1.95.0's (rust-toolchain.toml); regenerate
//! with `TRYBUILD=overwrite cargo test -p torchlet-ui-tests --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
