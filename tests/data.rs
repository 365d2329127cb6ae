//! The data pipeline end to end on the vendored MNIST digits: determinism across worker
//! counts, reshuffling, samplers and splits.

use torchlet::data::{
    DataLoader, Dataset, MNIST_MEAN, MNIST_STD, Mnist, WeightedRandomSampler, random_split,
};

/// The batches of `epochs` epochs, as (images, labels) vectors.
fn run(num_workers: usize, epochs: usize) -> Vec<Vec<(Vec<f32>, Vec<i64>)>> {
    let train = Mnist::vendored(true)
        .unwrap()
        .normalize(MNIST_MEAN, MNIST_STD)
        .flatten(true);
    let loader = DataLoader::builder(train)
        .batch_size(64)
        .shuffle(true)
        .seed(2024)
        .num_workers(num_workers)
        .build()
        .unwrap();
    assert_eq!(loader.len(), 125);
    (0..epochs)
        .map(|_| {
            loader
                .iter()
                .map(|(xb, yb)| (xb.to_vec::<f32>(), yb.to_vec::<i64>()))
                .collect()
        })
        .collect()
}

#[test]
fn mnist_batches_are_identical_for_0_1_2_and_4_workers() {
    let reference = run(0, 2);
    for workers in [1, 2, 4] {
        assert!(run(workers, 2) == reference, "num_workers = {workers}");
    }
    // Each epoch is a new permutation of all 8000 digits.
    assert!(reference[0] != reference[1]);
    for epoch in &reference {
        let labels: usize = epoch.iter().map(|(_, y)| y.len()).sum();
        assert_eq!(labels, 8000);
    }
}

#[test]
fn in_memory_tensors_and_mnist_give_the_same_batches() {
    let mnist = Mnist::vendored(false).unwrap().flatten(true);
    let tensors = mnist.to_tensor_dataset().unwrap();
    let a = DataLoader::builder(mnist)
        .batch_size(100)
        .shuffle(true)
        .seed(1)
        .build()
        .unwrap();
    let b = DataLoader::builder(tensors)
        .batch_size(100)
        .shuffle(true)
        .seed(1)
        .build()
        .unwrap();
    for ((xa, ya), (xb, yb)) in a.iter().zip(b.iter()) {
        assert_eq!(xa.to_vec::<f32>(), xb.to_vec::<f32>());
        assert_eq!(ya.to_vec::<i64>(), yb.to_vec::<i64>());
    }
}

#[test]
fn a_weighted_sampler_balances_a_skewed_split() {
    let test = Mnist::vendored(false).unwrap();
    // Weight each digit by 1 / its count, so that every class is drawn equally often.
    let mut counts = [0usize; 10];
    for &l in test.targets() {
        counts[usize::from(l)] += 1;
    }
    let weights: Vec<f64> = test
        .targets()
        .iter()
        .map(|&l| 1.0 / counts[usize::from(l)] as f64)
        .collect();
    let sampler = WeightedRandomSampler::new(weights, 10_000, true).unwrap();
    let loader = DataLoader::builder(test)
        .batch_size(500)
        .sampler(sampler)
        .seed(3)
        .num_workers(2)
        .build()
        .unwrap();
    let mut drawn = [0usize; 10];
    for (_, yb) in &loader {
        for y in yb.to_vec::<i64>() {
            drawn[y as usize] += 1;
        }
    }
    // 1000 expected per class; 5 standard deviations is about 150.
    assert!(drawn.iter().all(|&c| (850..1150).contains(&c)), "{drawn:?}");
}

#[test]
fn random_split_gives_disjoint_loaders() {
    let parts = random_split(Mnist::vendored(false).unwrap(), [0.9, 0.1], 0).unwrap();
    assert_eq!((parts[0].len(), parts[1].len()), (1800, 200));
    let valid = DataLoader::builder(parts[1].clone())
        .batch_size(64)
        .build()
        .unwrap();
    assert_eq!(valid.len(), 4);
    let (xb, yb) = valid.iter().last().unwrap();
    assert_eq!((xb.shape(), yb.shape()), (vec![8, 1, 28, 28], vec![8]));
}
