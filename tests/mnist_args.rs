//! The main job's command line (examples/mnist/args.rs): its unit tests, at the bottom of
//! that file, run here because the examples are built but not tested.

#[allow(dead_code)]
#[path = "../examples/mnist/args.rs"]
mod args;
