//! The closed-loop load benchmark: one tracker, K servers, C clients; each client sends its
//! next request as soon as it has the answer to the last, for a fixed duration. Measures
//! throughput and latency; the caller adds CPU and memory figures.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::ClientNode;
use crate::connection::Endpoint;
use crate::error::{Error, Result};
use crate::limits;
use crate::protocol::{Name, ReplyMode, Token, NUMBERS};
use crate::roles::Target;
use crate::server::{Number, ServerNode};
use crate::tls::Dial;
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::Transcript;

/// A closed-loop load to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub servers: usize,
    pub clients: usize,
    pub duration: Duration,
    pub deadline: Duration,
    pub replies: ReplyMode,
    /// Trackers to load (the nodes are spread over them in turn), whose own deadline and
    /// mode then apply; none starts one here.
    pub trackers: Vec<Target>,
    /// The token that tracker wants, if any.
    pub token: Option<Token>,
    /// TLS for a tracker started here: its certificate and key, and how its nodes check it.
    pub tls: Option<(Arc<rustls::ServerConfig>, Dial)>,
}

/// What a load run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests answered within the measured duration.
    pub requests: u64,
    /// The measured duration (from the first request to the end).
    pub elapsed: Duration,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Answered requests per second.
    #[allow(clippy::cast_precision_loss)] // exact below 2^52 requests
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which a fraction `q` (0..=1) of requests fall.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        // The nearest rank: within the slice for q in 0..=1, and exact below 2^52 latencies.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index]
    }
}

/// Runs the load.
///
/// # Errors
/// [`Error::InvalidArgument`] for a setup out of range; [`Error::TooManyFiles`] if it cannot
/// fit; any node's error.
pub async fn closed_loop(config: LoadConfig) -> Result<LoadReport> {
    if config.servers == 0 || config.clients == 0 || config.duration.is_zero() {
        return Err(Error::InvalidArgument("servers, clients and duration must be more than 0".into()));
    }
    let (tracker, endpoints) = if config.trackers.is_empty() {
        limits::ensure_open_files(2 * (config.servers + config.clients) as u64 + 1)?;
        let tracker_config = TrackerConfig {
            deadline: config.deadline,
            replies: config.replies,
            tls: config.tls.as_ref().map(|(tracker, _)| tracker.clone()),
            ..TrackerConfig::default()
        };
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let tracker = Tracker::bind(local, tracker_config, Transcript::off()).await?;
        let tls = config.tls.as_ref().map(|(_, dial)| dial.clone());
        let endpoint = Endpoint { addr: tracker.local_addr(), tls };
        (Some(tracker), vec![endpoint])
    } else {
        limits::ensure_open_files((config.servers + config.clients) as u64 + 1)?;
        let mut endpoints = Vec::with_capacity(config.trackers.len());
        for target in &config.trackers {
            endpoints.push(target.resolve().await?);
        }
        (None, endpoints)
    };
    let endpoint = |i: usize| endpoints[i % endpoints.len()].clone();
    let mut rng = StdRng::seed_from_u64(1);
    let mut servers = Vec::with_capacity(config.servers);
    for i in 0..config.servers {
        let (name, number) = (Name::new(&format!("S{}", i + 1))?, rng.random_range(NUMBERS));
        servers.push(
            ServerNode::start(
                endpoint(i),
                name,
                Number::Drawn(number),
                config.token.clone(),
                Transcript::off(),
            )
            .await?,
        );
    }
    let mut clients = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let name = Name::new(&format!("C{}", i + 1))?;
        clients.push(ClientNode::connect(endpoint(i), name, config.token.clone(), Transcript::off()).await?);
    }
    // The clock starts once every node is connected: connecting is not the load.
    let started = Instant::now();
    let until = started + config.duration;
    let mut load = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(i as u64 + 100);
        load.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let answer = client.find_match(rng.random_range(NUMBERS)).await?;
                latencies.push(answer.elapsed);
            }
            Ok::<_, Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = load.join_next().await {
        latencies.extend(joined??);
    }
    let elapsed = started.elapsed();
    for server in servers {
        // The load is measured; how a server's serving ended changes none of it.
        let _ = server.close().await;
    }
    if let Some(tracker) = tracker {
        tracker.shutdown(Duration::from_secs(2)).await;
    }
    latencies.sort_unstable();
    Ok(LoadReport { requests: latencies.len() as u64, elapsed, latencies })
}
