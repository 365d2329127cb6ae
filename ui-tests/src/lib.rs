//! Compile-fail tests of `#[derive(Module)]` and `sequential!` live in `tests/`: see
//! `tests/ui.rs`. They are a crate of their own so that building torchlet's examples does
//! not build trybuild.
