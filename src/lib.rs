//! torchlet: PyTorch's training stack rebuilt in Rust.
