//! DataLoader throughput on MNIST: batches/s with batch 64 and num_workers 0, 1, 2.
//!
//! `cargo bench --bench dataloader`. Each configuration runs whole epochs over the 8000
//! vendored training digits (normalised, flattened to 784 f32, shuffled with a seed) for at
//! least a second, touching every batch as a training loop would, and prints one JSON line.
//! Two sources: `Mnist` (u8 → f32 per batch) and `TensorDataset` (images already f32 in
//! memory, one `index_select` per batch: what W1 uses).

use std::hint::black_box;
use std::time::{Duration, Instant};
use torchlet::data::{DataLoader, Dataset, MNIST_MEAN, MNIST_STD, Mnist, Stack};

fn measure<D>(source: &str, dataset: D, num_workers: usize)
where
    D: Dataset + 'static,
    D::Item: Stack<Batch = (torchlet::Tensor, torchlet::Tensor)>,
{
    let loader = DataLoader::builder(dataset)
        .batch_size(64)
        .shuffle(true)
        .seed(0)
        .num_workers(num_workers)
        .build()
        .expect("valid options");
    // One warm-up epoch.
    for batch in &loader {
        black_box(batch);
    }
    let (mut batches, mut samples) = (0usize, 0usize);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for (xb, yb) in &loader {
            samples += yb.numel();
            batches += 1;
            black_box((xb, yb));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"dataloader\",\"source\":\"{source}\",\"batch_size\":64,\"num_workers\":{num_workers},\"batches_per_s\":{:.0},\"samples_per_s\":{:.0}}}",
        batches as f64 / secs,
        samples as f64 / secs
    );
}

fn main() {
    let mnist = Mnist::vendored(true)
        .expect("the vendored data/mnist-10k")
        .normalize(MNIST_MEAN, MNIST_STD)
        .flatten(true);
    let tensors = mnist.to_tensor_dataset().expect("one row per digit");
    for num_workers in [0, 1, 2] {
        measure("Mnist", mnist.clone(), num_workers);
        measure("TensorDataset", tensors.clone(), num_workers);
    }
}
