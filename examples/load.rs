//! A closed-loop load from Rust alone, for profilers: `cargo run --release --example load --
//! K C SECONDS` (defaults 100 10 3), early mode.

use std::time::Duration;

use matchtracker::bench::{closed_loop, LoadConfig};
use matchtracker::protocol::ReplyMode;

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, default: f64| args.get(i).copied().unwrap_or(default);
    let config = LoadConfig {
        servers: arg(0, 100.0) as usize,
        clients: arg(1, 10.0) as usize,
        duration: Duration::from_secs_f64(arg(2, 3.0)),
        deadline: Duration::from_secs(2),
        replies: ReplyMode::All,
        trackers: Vec::new(),
        token: None,
        tls: None,
    };
    match closed_loop(config).await {
        Ok(report) => println!(
            "{} requests, {:.0} req/s, p50 {:?}, p99 {:?}",
            report.requests,
            report.rate(),
            report.quantile(0.5),
            report.quantile(0.99)
        ),
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(1);
        }
    }
}
