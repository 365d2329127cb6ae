//! W2 data-parallel: the W2 MLP (784-1024-1024-10, SGD lr 0.05, 3 epochs) on every rank of an
//! MPI job, each rank training on its `DistributedSampler` share with a per-rank batch of
//! 512 / world_size, so the global batch stays W2's 512. The same loop as PyTorch's
//! `../shared/bench/torch_ddp_peer.py`; rank 0 prints the global samples/s.

use std::sync::Arc;
use std::time::Instant;
use torchlet::data::{DistributedSampler, Mnist};
use torchlet::distributed::{self, DistributedDataParallel, ReduceOp};
use torchlet::optim::SgdConfig;
use torchlet::prelude::*;

pub fn run() -> torchlet::Result<()> {
    let (rank, world) = (distributed::rank(), distributed::world_size());
    let train = Mnist::vendored(true)?.flatten(true).to_tensor_dataset()?;
    let test = Mnist::vendored(false)?.flatten(true);
    let sampler = Arc::new(DistributedSampler::new(train.len(), world, rank)?.seed(0));
    let loader = DataLoader::builder(train)
        .batch_size(512 / world)
        .sampler(Arc::clone(&sampler))
        .build()?;
    manual_seed(0);
    let model = DistributedDataParallel::new(sequential![
        Linear::new(784, 1024),
        ReLU,
        Linear::new(1024, 1024),
        ReLU,
        Linear::new(1024, 10)
    ])?;
    let mut opt = Sgd::new(
        model.named_parameters(),
        SgdConfig {
            lr: 0.05,
            ..Default::default()
        },
    )?;
    distributed::barrier();
    let start = Instant::now();
    let (mut seen, mut steps) = (0usize, 0usize);
    for epoch in 0..3 {
        sampler.set_epoch(epoch);
        for (xb, yb) in &loader {
            let loss = cross_entropy(&model.forward(&xb), &yb);
            opt.zero_grad();
            loss.backward();
            opt.step();
            seen += xb.shape()[0];
            steps += 1;
        }
    }
    distributed::barrier();
    let secs = start.elapsed().as_secs_f64();
    let total = Tensor::from_vec(vec![seen as f64], &[1]);
    distributed::all_reduce(&total, ReduceOp::Sum);
    if rank == 0 {
        let acc = no_grad(|| {
            model
                .module()
                .forward(&test.images())
                .argmax(1, false)
                .eq(&test.labels())
                .mean()
                .item()
        });
        println!(
            "{{\"peer\":\"torchlet\",\"workload\":\"w2-ddp\",\"world_size\":{world},\"threads_per_rank\":{},\"samples_per_s\":{:.1},\"steps_per_s\":{:.1},\"train_secs\":{secs:.3},\"test_acc\":{acc:.4},\"buckets\":{},\"peak_rss_mb\":{:.1}}}",
            torchlet::get_num_threads(),
            total.item() / secs,
            steps as f64 / secs,
            model.num_buckets(),
            super::peak_rss_mb()
        );
    }
    Ok(())
}
