//! The timing harness of the cached-path benches (`hot_path`, `tenants`): each arm timed with one
//! caller and with one caller per core, in batches interleaved across arms (so that a noisy
//! moment of a shared machine falls on every arm alike), medians printed side by side.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

/// What one thread sends: one request per call, its result kept from the optimiser.
pub type Sender = Box<dyn FnMut() -> usize + Send>;

/// ns per request over `batch` requests on each of `threads` threads started together, each
/// with its own sender (`make(thread)`) warmed by `warm` requests first: aggregate wall time /
/// all requests (so 2 threads doing twice the work in the same time give half the figure of
/// one).
pub fn measure(
    make: &(dyn Fn(usize) -> Sender + Sync),
    threads: usize,
    warm: usize,
    batch: u64,
) -> f64 {
    let (barrier, done) = (Barrier::new(threads + 1), Barrier::new(threads + 1));
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (barrier, done) = (&barrier, &done);
            scope.spawn(move || {
                let mut send = make(thread);
                for _ in 0..warm {
                    black_box(send());
                }
                barrier.wait();
                for _ in 0..batch {
                    black_box(send());
                }
                done.wait();
            });
        }
        barrier.wait();
        let started = Instant::now();
        done.wait();
        started.elapsed().as_nanos() as f64 / (batch * threads as u64) as f64
    })
}

/// What [`table`] measured: each arm's medians, and its one-caller figure of each round.
pub struct Table {
    /// Medians (1 caller, `cores` callers), in arm order.
    pub medians: Vec<(f64, f64)>,
    /// One caller, per arm, per round (in round order).
    rounds: Vec<Vec<f64>>,
}

impl Table {
    /// How much more arm `a` costs than arm `b` with one caller: the median of the rounds'
    /// differences (both arms timed within the same round, so that a machine's slower spell
    /// falls on both), and the smallest and largest of them.
    pub fn over(&self, a: usize, b: usize) -> (f64, f64, f64) {
        let mut d: Vec<f64> = self.rounds[a]
            .iter()
            .zip(&self.rounds[b])
            .map(|(x, y)| x - y)
            .collect();
        let (low, high) = d
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        (median(&mut d), low, high)
    }
}

/// Times every arm (`time(arm, threads)`) with 1 and `cores` callers, `rounds` times in turn
/// (the order rotated each round), prints the medians as a table whose names are `width` wide,
/// and returns them with each round's figures.
pub fn table(
    names: &[&str],
    time: impl Fn(usize, usize) -> f64,
    rounds: usize,
    batch: u64,
    cores: usize,
    width: usize,
) -> Table {
    let mut one: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut many: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for k in 0..names.len() {
            let i = (k + round) % names.len();
            one[i].push(time(i, 1));
            many[i].push(time(i, cores));
        }
    }
    println!(
        "\nns/request, medians of {rounds} interleaved batches of {batch} requests per thread; {cores} cores"
    );
    println!(
        "{:<width$} {:>10} {:>14} {:>12}",
        "cached path", "1 caller", "1 per core", "throughput"
    );
    let mut medians = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (m1, mn) = (median(&mut one[i].clone()), median(&mut many[i]));
        medians.push((m1, mn));
        println!("{name:<width$} {m1:>10.1} {mn:>14.1} {:>11.2}x", m1 / mn);
    }
    Table {
        medians,
        rounds: one,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
