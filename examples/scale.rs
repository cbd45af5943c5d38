//! The assignment at scale from Rust alone, for profilers: `cargo run --release --example
//! scale -- N ROUNDS TIMEOUT` (defaults 1000 1 2.0), quiet.

use matchtracker::simulation::{self, SimulationConfig};
use matchtracker::transcript::Transcript;

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, default: f64| args.get(i).copied().unwrap_or(default);
    let config =
        match SimulationConfig::new(arg(0, 1000.0) as i128, arg(1, 1.0) as i128, arg(2, 2.0), Some(1), false)
        {
            Ok(config) => config,
            Err(e) => {
                eprintln!("scale: {e}");
                std::process::exit(2);
            }
        };
    let result = simulation::run(config, Transcript::off(), Default::default()).await;
    match result {
        Ok(report) => {
            let incomplete = report
                .requests
                .iter()
                .filter(|r| {
                    let want: Vec<_> = report
                        .servers
                        .iter()
                        .filter(|s| s.number == r.number)
                        .map(|s| s.name.clone())
                        .collect();
                    *r.servers != want[..]
                })
                .count();
            let mut elapsed: Vec<f64> = report.requests.iter().map(|r| r.elapsed.as_secs_f64()).collect();
            elapsed.sort_by(f64::total_cmp);
            let at = |q: f64| elapsed[((elapsed.len() - 1) as f64 * q) as usize];
            println!(
                "{:.3} s, {} requests, {incomplete} incomplete, {} late replies; request time min {:.3} s, \
                 median {:.3} s, max {:.3} s",
                report.duration.as_secs_f64(),
                report.requests.len(),
                report.late_replies,
                at(0.0),
                at(0.5),
                at(1.0)
            );
        }
        Err(e) => {
            eprintln!("scale: {e}");
            std::process::exit(1);
        }
    }
}
