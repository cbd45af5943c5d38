//! The same closed-loop scatter-gather through NATS and through matchtracker, side by side.
//!
//! Through NATS: K responders subscribed to one subject, each on its own connection, and C
//! requesters, each on its own connection, publishing a request with a reply inbox and
//! gathering all K replies before sending the next (the early mode of matchtracker, where
//! every server replies). Through matchtracker: `bench::closed_loop` with the same K and C.
//! Run by `benches/compare.sh`, which starts and stops the NATS server.

use std::time::Duration;

use futures::StreamExt;
use matchtracker::bench::{self, LoadConfig, LoadReport};
use matchtracker::protocol::ReplyMode;
use tokio::time::Instant;

/// How long a NATS request waits for all K replies before it counts as failed.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

struct Args {
    nats: String,
    duration: Duration,
    loads: Vec<(usize, usize)>,
    /// Only start this many responders and serve until killed (for `compare_py.py`).
    responders: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { nats: String::new(), duration: Duration::from_secs(5), loads: Vec::new(), responders: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--nats" => args.nats = value()?,
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|_| "--duration takes seconds".to_string())?;
                args.duration = Duration::from_secs_f64(secs);
            }
            "--responders" => {
                args.responders = Some(value()?.parse().map_err(|_| "--responders takes a count".to_string())?);
            }
            "--load" => {
                let text = value()?;
                let (k, c) = text.split_once('x').ok_or("--load takes KxC, such as 10x10")?;
                let parse = |s: &str| s.parse::<usize>().map_err(|_| format!("bad --load {text}"));
                args.loads.push((parse(k)?, parse(c)?));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.nats.is_empty() {
        return Err("--nats URL is required".into());
    }
    if args.loads.is_empty() {
        args.loads = vec![(10, 10), (100, 10)];
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    };
    if let Some(count) = args.responders {
        match start_responders(&args.nats, count).await {
            Ok(responders) => {
                println!("ready: {count} responders");
                for responder in responders {
                    let _ = responder.await;
                }
                return;
            }
            Err(e) => {
                eprintln!("compare: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{:<10} {:>12} {:>12} {:>7} {:>11} {:>11} {:>11} {:>11}",
        "K x C", "NATS req/s", "mt req/s", "ratio", "NATS p50", "mt p50", "NATS p99", "mt p99"
    );
    for &(servers, clients) in &args.loads {
        let nats = match nats_load(&args.nats, servers, clients, args.duration).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("compare: NATS run failed: {e}");
                std::process::exit(1);
            }
        };
        let config = LoadConfig {
            servers,
            clients,
            duration: args.duration,
            deadline: GATHER_TIMEOUT,
            replies: ReplyMode::All,
            trackers: Vec::new(),
            token: None,
            tls: None,
        };
        let ours = match bench::closed_loop(config).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("compare: matchtracker run failed: {e}");
                std::process::exit(1);
            }
        };
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<10} {:>12.0} {:>12.0} {:>6.2}x {:>11} {:>11} {:>11} {:>11}",
            format!("{servers} x {clients}"),
            nats.rate(),
            ours.rate(),
            ours.rate() / nats.rate(),
            ms(nats.quantile(0.5)),
            ms(ours.quantile(0.5)),
            ms(nats.quantile(0.99)),
            ms(ours.quantile(0.99)),
        );
    }
}

/// K responders on subject `match.query`, each on its own connection: server i holds
/// `i % 10 + 1` and replies "<seq> match" or "<seq> miss" to every query.
async fn start_responders(url: &str, servers: usize) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let mut responders = Vec::new();
    for i in 0..servers {
        let conn = async_nats::connect(url).await.map_err(|e| fail(&e))?;
        let mut queries = conn.subscribe("match.query").await.map_err(|e| fail(&e))?;
        conn.flush().await.map_err(|e| fail(&e))?;
        let number = (i % 10 + 1) as u8;
        responders.push(tokio::spawn(async move {
            while let Some(msg) = queries.next().await {
                let Some(reply) = msg.reply else { continue };
                // Payload: "<seq> <number>"; the reply echoes the seq and says match or miss.
                let text = String::from_utf8_lossy(&msg.payload);
                let mut fields = text.split(' ');
                let seq = fields.next().unwrap_or("0").to_owned();
                let asked: u8 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let verdict = if asked == number { "match" } else { "miss" };
                if conn.publish(reply, format!("{seq} {verdict}").into()).await.is_err() {
                    break;
                }
            }
        }));
    }
    Ok(responders)
}

/// The closed loop through NATS.
async fn nats_load(url: &str, servers: usize, clients: usize, duration: Duration) -> Result<LoadReport, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let responders = start_responders(url, servers).await?;
    let started = Instant::now();
    let until = started + duration;
    let mut requesters = Vec::new();
    for i in 0..clients {
        let conn = async_nats::connect(url).await.map_err(|e| fail(&e))?;
        requesters.push(tokio::spawn(async move {
            let inbox = conn.new_inbox();
            let mut replies = conn.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
            conn.flush().await.map_err(|e| e.to_string())?;
            let mut latencies = Vec::new();
            let mut seq: u64 = 0;
            while Instant::now() < until {
                seq += 1;
                let number = (seq % 10 + 1) as u8 ^ (i as u8 & 1);
                let sent = Instant::now();
                conn.publish_with_reply("match.query", inbox.clone(), format!("{seq} {number}").into())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut gathered = 0;
                let deadline = sent + GATHER_TIMEOUT;
                while gathered < servers {
                    let next = tokio::time::timeout_at(deadline, replies.next()).await;
                    let Ok(Some(msg)) = next else { return Err("a request did not gather all replies".to_string()) };
                    // A reply to an earlier request cannot arrive: each waits for all of its own.
                    if msg.payload.starts_with(format!("{seq} ").as_bytes()) {
                        gathered += 1;
                    }
                }
                latencies.push(sent.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for requester in requesters {
        latencies.extend(requester.await.map_err(|e| fail(&e))??);
    }
    let elapsed = started.elapsed();
    for responder in responders {
        responder.abort();
    }
    latencies.sort_unstable();
    Ok(LoadReport { requests: latencies.len() as u64, elapsed, latencies })
}
