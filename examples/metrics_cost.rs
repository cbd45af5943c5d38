//! What counting one answered request costs the tracker (`Metrics::answered`: an atomic add
//! and the histogram's short lock), alone and with two threads contending:
//! `cargo run --release --example metrics_cost`. BENCHMARKS.md, "Watching a tracker", sets
//! it beside what a whole request costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use matchtracker::protocol::End;
use matchtracker::tracker::metrics::Metrics;

const CALLS: u32 = 10_000_000;

fn count(metrics: &Metrics, calls: u32) {
    for i in 0..calls {
        let end = if i % 4 == 0 { End::Deadline } else { End::Replied };
        metrics.answered(black_box(end), i % 3 == 0, Duration::from_micros(u64::from(i % 5000)));
    }
}

fn main() {
    let metrics = Metrics::new(Duration::from_secs(2), false);
    let started = Instant::now();
    count(&metrics, CALLS);
    let alone = started.elapsed();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| count(&metrics, CALLS));
        }
    });
    let contended = started.elapsed();
    println!(
        "one thread: {:.1} ns per request counted; two threads at once: {:.1} ns per request",
        alone.as_secs_f64() * 1e9 / f64::from(CALLS),
        contended.as_secs_f64() * 1e9 / f64::from(2 * CALLS),
    );
}
