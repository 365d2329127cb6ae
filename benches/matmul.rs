//! Matrix-multiply throughput through the Tensor API (f32) on the shapes the benchmark
//! workloads multiply: W5's Linear layers (forward `x @ wᵀ`, `dx = dy @ w`,
//! `dw = dyᵀ @ x`) and attention's batched products, W2's layers, and a 1024³ product.
//!
//!     cargo bench --bench matmul            # one JSON line per shape
//!     python3 benches/matmul_peer.py        # the same shapes beside torch.matmul
//!
//! Each line gives the median GFLOP/s of the timed repetitions (about 0.3 s per shape).
//! `benches/matmul_shapes.txt` lists the shapes; `matmul_peer.py` reads the same file.

use std::time::Instant;
use torchlet::{Tensor, manual_seed};

/// Seconds this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`): unlike the wall
/// clock, it does not count the time other processes hold the core.
#[cfg(target_os = "linux")]
fn thread_cpu_secs() -> f64 {
    cpu_secs(3)
}

/// Seconds all threads of this process have spent on a CPU (`CLOCK_PROCESS_CPUTIME_ID`).
#[cfg(target_os = "linux")]
fn process_cpu_secs() -> f64 {
    cpu_secs(2)
}

#[cfg(target_os = "linux")]
fn cpu_secs(clock: i32) -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit Linux), and
    // the C library, which std links, provides clock_gettime.
    unsafe { clock_gettime(clock, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_secs() -> f64 {
    START.with(|s| s.elapsed().as_secs_f64())
}

#[cfg(not(target_os = "linux"))]
fn process_cpu_secs() -> f64 {
    thread_cpu_secs()
}

/// How a run is timed.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// Wall-clock seconds.
    Wall,
    /// On-CPU seconds of this (the only) thread.
    Thread,
    /// On-CPU seconds of all threads together: the work done, whatever the waits.
    Process,
}

/// Median seconds of runs of `f`, repeated for about `budget` seconds after a warm-up.
fn median_secs(budget: f64, clock: Clock, mut f: impl FnMut()) -> f64 {
    let now = || match clock {
        Clock::Thread => thread_cpu_secs(),
        Clock::Process => process_cpu_secs(),
        Clock::Wall => START.with(|s| s.elapsed().as_secs_f64()),
    };
    let t = now();
    f();
    f();
    let once = ((now() - t) / 2.0).max(1e-7);
    let reps = ((budget / once) as usize).clamp(5, 2000);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = now();
            f();
            now() - t
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

/// An operand of `shape`, transposed in its last two dimensions when `t` (a view of a
/// row-major tensor with those dimensions swapped, as backward's `wᵀ` and `xᵀ` are).
fn operand(batch: usize, rows: usize, cols: usize, t: bool) -> Tensor {
    let shape: Vec<usize> = match (batch, t) {
        (0, false) => vec![rows, cols],
        (0, true) => vec![cols, rows],
        (_, false) => vec![batch, rows, cols],
        (_, true) => vec![batch, cols, rows],
    };
    let x = Tensor::randn(&shape);
    if t { x.transpose(-1, -2) } else { x }
}

thread_local! {
    static START: Instant = Instant::now();
}

fn main() {
    manual_seed(0);
    // `--cpu`: one thread, timed by its on-CPU seconds (for A/B on a busy machine);
    // `--work`: the default threads, timed by the on-CPU seconds of all of them.
    let args: Vec<String> = std::env::args().collect();
    let clock = match () {
        _ if args.iter().any(|a| a == "--cpu") => Clock::Thread,
        _ if args.iter().any(|a| a == "--work") => Clock::Process,
        _ => Clock::Wall,
    };
    if clock == Clock::Thread {
        torchlet::set_num_threads(1).expect("a fresh thread pool");
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let shapes = include_str!("matmul_shapes.txt");
    for line in shapes
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        // name batch m k n layout (NN, NT, TN: which operand is a transposed view)
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, batch, m, k, n, layout] = f[..] else {
            panic!("matmul_shapes.txt: bad line {line:?}")
        };
        if filter.as_deref().is_some_and(|p| !name.contains(p)) {
            continue;
        }
        let num = |s: &str| s.parse::<usize>().expect("matmul_shapes.txt: a number");
        let (batch, m, k, n) = (num(batch), num(m), num(k), num(n));
        let a = operand(batch, m, k, layout.starts_with('T'));
        let b = operand(batch, k, n, layout.ends_with('T'));
        let secs = median_secs(0.3, clock, || {
            std::hint::black_box(a.matmul(&b));
        });
        let flops = 2.0 * (batch.max(1) * m * k * n) as f64;
        println!(
            "{{\"peer\":\"torchlet\",\"bench\":\"{name}\",\"gflops\":{:.1},\"median_us\":{:.1}}}",
            flops / secs / 1e9,
            secs * 1e6
        );
    }
}
