//! The data pipeline end to end on the vendored MNIST digits: determinism across worker
//! counts, reshuffling, samplers and splits.

use std::time::{Duration, Instant};
use torchlet::Tensor;
use torchlet::data::{
    DataLoader, Dataset, MAX_NUM_WORKERS, MNIST_MEAN, MNIST_STD, Mnist, TensorDataset,
    WeightedRandomSampler, random_split,
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

// ---- Reliability of the loader: timeouts, dead workers, bounds (issue 11). ----

/// A data set whose `get` misbehaves at index `at` in one of several ways.
struct Faulty {
    len: usize,
    at: usize,
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    Sleep(Duration),
    NeverReturn,
    Panic,
    Overflow,
}

/// Recursion with a 4 KiB frame, far deeper than any worker stack here.
fn deep(n: u64) -> u64 {
    let frame = std::hint::black_box([n as u8; 4096]);
    if n == u64::MAX {
        return 0;
    }
    deep(n + 1) + u64::from(frame[7])
}

impl Dataset for Faulty {
    type Item = i64;
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> torchlet::Result<i64> {
        if index == self.at {
            match self.fault {
                Fault::Sleep(d) => std::thread::sleep(d),
                Fault::NeverReturn => loop {
                    std::thread::park();
                },
                Fault::Panic => panic!("sample {index} is corrupt"),
                Fault::Overflow => return Ok(deep(0) as i64),
            }
        }
        Ok(index as i64)
    }
}

fn faulty(at: usize, fault: Fault) -> Faulty {
    Faulty { len: 16, at, fault }
}

/// Runs `f` on its own thread; fails (instead of hanging CI) when it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the loader took longer than {limit:?}"))
}

const TIMEOUT: Duration = Duration::from_millis(500);
/// What `timeout` may overrun by on a loaded machine; far below the 30 s sleep.
const MARGIN: Duration = Duration::from_millis(2500);

/// Runs an epoch over `data` with 2 workers and a 500 ms timeout: what `try_iter` yields (as
/// text), when the first error came, and how long the whole epoch took, dropping included.
fn time_out(data: Faulty) -> (Vec<String>, Duration, Duration) {
    let start = Instant::now();
    let loader = DataLoader::builder(data)
        .batch_size(4)
        .num_workers(2)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let mut first_error = None;
    for result in loader.try_iter() {
        match result {
            Ok(batch) => seen.push(format!("{:?}", batch.to_vec::<i64>())),
            Err(err) => {
                first_error.get_or_insert(start.elapsed());
                seen.push(err.to_string());
            }
        }
    }
    drop(loader);
    (seen, first_error.unwrap_or_default(), start.elapsed())
}

#[test]
fn timeout_holds_when_a_worker_sleeps_past_it() {
    // Batch 1 (indices 4..8) sleeps 30 s: the error must come after the 500 ms timeout, and
    // the epoch (and dropping it) must not wait for the sleeper.
    let (seen, waited, total) = within(Duration::from_secs(10), || {
        time_out(faulty(5, Fault::Sleep(Duration::from_secs(30))))
    });
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "[0, 1, 2, 3]");
    assert!(
        seen[1].starts_with(
            "DataLoader: batch 1 (indices [4, 5, 6, 7]) did not arrive within the timeout of 500ms"
        ),
        "{}",
        seen[1]
    );
    assert!(
        waited >= TIMEOUT && total < TIMEOUT + MARGIN,
        "{waited:?}, {total:?}"
    );
}

#[test]
fn timeout_holds_when_a_worker_never_returns() {
    // The worker stuck in `get` is abandoned: its thread leaks until the process exits.
    let (seen, waited, total) = within(Duration::from_secs(10), || {
        time_out(faulty(0, Fault::NeverReturn))
    });
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("DataLoader: batch 0 (indices [0, 1, 2, 3]) did not arrive"),
        "{}",
        seen[0]
    );
    assert!(
        waited >= TIMEOUT && total < TIMEOUT + MARGIN,
        "{waited:?}, {total:?}"
    );
}

#[test]
fn a_panic_in_a_worker_is_an_error_naming_the_worker_and_the_message() {
    let seen = within(Duration::from_secs(10), || {
        let loader = DataLoader::builder(faulty(9, Fault::Panic))
            .batch_size(4)
            .num_workers(1)
            .build()
            .unwrap();
        loader
            .try_iter()
            .map(|r| r.map(|b| b.to_vec::<i64>()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    });
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[2].as_ref().unwrap_err(),
        "DataLoader: worker 0 failed on batch 2 (indices [8, 9, 10, 11]): dataset.get(9) \
         panicked: sample 9 is corrupt"
    );
}

/// Run by the two tests below in a child process, so that an overflow that aborts fails those
/// tests instead of killing this test binary. `TORCHLET_OVERFLOW_CHILD` says what to overflow.
#[test]
fn stack_overflow_child() {
    let Some(what) = std::env::var_os("TORCHLET_OVERFLOW_CHILD") else {
        return;
    };
    let loader = DataLoader::builder(faulty(6, Fault::Overflow))
        .batch_size(4)
        .num_workers(2)
        .worker_stack_size(256 * 1024)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let seen: Vec<_> = loader.try_iter().collect();
    let err = seen.last().unwrap().as_ref().unwrap_err().to_string();
    println!("\nCHILD-ERROR: {err}");
    if what == "plain-thread" {
        // The guard covers loader workers only: any other thread still aborts, as in Rust.
        let other = std::thread::Builder::new().stack_size(256 * 1024);
        let _ = other.spawn(|| deep(0)).unwrap().join();
        println!("CHILD-SURVIVED");
    }
}

/// Runs `stack_overflow_child` in a child process; its status, stdout and stderr.
fn overflow_child(what: &str) -> (std::process::ExitStatus, String, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stack_overflow_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TORCHLET_OVERFLOW_CHILD", what)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status, text(&output.stdout), text(&output.stderr))
}

#[test]
#[cfg(target_os = "linux")]
fn a_stack_overflow_in_a_worker_is_an_error() {
    let (status, stdout, stderr) = overflow_child("worker");
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD-ERROR: DataLoader: worker ")
            && stdout.contains(
                "overflowed its stack (worker_stack_size 262144 bytes) on batch 1 (indices [4, \
                 5, 6, 7]); its thread is stopped for good"
            )
            && stdout.contains("raise worker_stack_size"),
        "{stdout}\n{stderr}"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_stack_overflow_outside_the_workers_still_aborts_with_rusts_message() {
    let (status, stdout, stderr) = overflow_child("plain-thread");
    assert!(
        stdout.contains("CHILD-ERROR: DataLoader: worker ")
            && stdout.contains("overflowed its stack"),
        "{stdout}"
    );
    assert!(
        !status.success() && !stdout.contains("CHILD-SURVIVED"),
        "{status:?}"
    );
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
}

#[test]
fn num_workers_is_bounded_at_build() {
    for workers in [usize::MAX, MAX_NUM_WORKERS + 1] {
        let err = DataLoader::builder(faulty(0, Fault::Panic))
            .num_workers(workers)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("num_workers must be at most 256, got {workers}")),
            "{err}"
        );
    }
    assert!(
        DataLoader::builder(faulty(99, Fault::Panic))
            .num_workers(MAX_NUM_WORKERS)
            .build()
            .is_ok()
    );
    let err = DataLoader::builder(faulty(0, Fault::Panic))
        .num_workers(1)
        .worker_stack_size(1024)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("worker_stack_size must be between 65536 (64 KiB)")
            && err.contains("timeout must be longer than zero"),
        "{err}"
    );
}

#[test]
fn an_empty_data_set_is_refused_with_shuffle_and_gives_no_batches_without() {
    let empty = || TensorDataset::new((Tensor::zeros(&[0, 3]), Tensor::zeros(&[0]))).unwrap();
    // PyTorch: RandomSampler raises "num_samples should be a positive integer value, but got
    // num_samples=0".
    let err = DataLoader::builder(empty())
        .shuffle(true)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shuffle(true)")
            && err
                .contains("num_samples should be a positive integer value, but got num_samples=0"),
        "{err}"
    );
    let loader = DataLoader::builder(empty())
        .batch_size(4)
        .num_workers(2)
        .build()
        .unwrap();
    assert_eq!((loader.len(), loader.is_empty()), (0, true));
    assert_eq!(loader.iter().count(), 0);
}
