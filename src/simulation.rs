//! The assignment's run in one process: a tracker on 127.0.0.1 (a free port), n servers each
//! holding a random number, n clients, and rounds in which every client asks once, all at
//! once, and waits for its answer. Returns a [`Report`] of everything that was decided.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Answer, ClientNode};
use crate::error::{Error, Result};
use crate::limits;
use crate::protocol::{End, Name, ReplyMode, NUMBERS};
use crate::server::ServerNode;
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::Transcript;

/// Largest n accepted; the open-files limit usually binds well before it.
pub const MAX_N: i64 = 100_000;
/// Largest number of rounds accepted.
pub const MAX_ROUNDS: i64 = 100_000;
/// Longest deadline accepted, in seconds.
pub const MAX_TIMEOUT: f64 = 3600.0;

/// How long the tracker's tasks get to end after the run before they are left behind.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A validated simulation setup.
#[derive(Clone, Debug)]
pub struct SimulationConfig {
    pub n: usize,
    pub rounds: usize,
    pub deadline: Duration,
    pub seed: Option<u64>,
    pub replies: ReplyMode,
}

impl SimulationConfig {
    /// Checks each argument against its range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first argument out of range and the range.
    pub fn new(n: i64, rounds: i64, timeout: f64, seed: Option<u64>, early: bool) -> Result<Self> {
        let invalid = |text: String| Err(Error::InvalidArgument(text));
        if n < 2 {
            return invalid(format!("n must be at least 2 (got {n})"));
        }
        if n > MAX_N {
            return invalid(format!("n must be at most {MAX_N} (got {n})"));
        }
        if !(1..=MAX_ROUNDS).contains(&rounds) {
            return invalid(format!("rounds must be from 1 to {MAX_ROUNDS} (got {rounds})"));
        }
        if !(timeout > 0.0 && timeout <= MAX_TIMEOUT) {
            return invalid(format!(
                "timeout must be more than 0 and at most {MAX_TIMEOUT} seconds (got {timeout})"
            ));
        }
        Ok(SimulationConfig {
            n: n as usize,
            rounds: rounds as usize,
            deadline: Duration::from_secs_f64(timeout),
            seed,
            replies: if early { ReplyMode::All } else { ReplyMode::Matches },
        })
    }

    /// Descriptors the run holds at once: both ends of 2n loopback connections.
    pub fn open_files_needed(&self) -> u64 {
        4 * self.n as u64 + 1
    }
}

/// One server of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    pub name: Name,
    pub number: u8,
}

/// One request of the run, as the client saw it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// 1-based round.
    pub round: usize,
    pub client: Name,
    pub number: u8,
    /// The matching servers, in index order. Shared between requests with the same answer:
    /// a run of thousands of nodes has few distinct answers and millions of names in them.
    pub servers: Arc<[Name]>,
    pub end: End,
    pub elapsed: Duration,
}

/// Everything a run decided.
#[derive(Clone, Debug)]
pub struct Report {
    pub config: SimulationConfig,
    pub servers: Vec<ServerRecord>,
    pub requests: Vec<RequestRecord>,
    pub late_replies: u64,
    pub duration: Duration,
    /// Open file descriptors of the process once every node was connected.
    pub open_files: u64,
}

/// Runs the simulation, counting answered requests in `answered` as it goes (for progress).
/// Every socket is closed and every task has ended when it returns;
/// if the future is dropped early, the nodes it owns stop as they are dropped.
///
/// # Errors
/// [`Error::TooManyFiles`] before anything is opened if n cannot fit under the open-files
/// limit; any node's error if the run cannot complete.
pub async fn run(
    config: SimulationConfig,
    transcript: Transcript,
    answered: Arc<AtomicUsize>,
) -> Result<Report> {
    limits::ensure_open_files(config.open_files_needed())?;
    let started = Instant::now();
    let mut rng = match config.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };

    let tracker_config = TrackerConfig {
        deadline: config.deadline,
        replies: config.replies,
        max_connections: (2 * config.n + 16).max(TrackerConfig::default().max_connections),
        ..TrackerConfig::default()
    };
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let tracker = Tracker::bind(local, tracker_config, transcript.clone()).await?;
    let addr = tracker.local_addr();

    // Every server is registered (its WELCOME received) before any client says anything.
    let numbers: Vec<u8> = (0..config.n).map(|_| rng.random_range(NUMBERS)).collect();
    let mut starting = JoinSet::new();
    for (i, &number) in numbers.iter().enumerate() {
        let (name, transcript) = (node_name('S', i), transcript.clone());
        starting.spawn(async move {
            let started = async { ServerNode::start(addr, name?, number, None, transcript).await };
            (i, started.await)
        });
    }
    let servers = in_order(starting, config.n).await?;

    let mut connecting = JoinSet::new();
    for i in 0..config.n {
        let (name, transcript) = (node_name('C', i), transcript.clone());
        connecting.spawn(async move {
            let connected = async { ClientNode::connect(addr, name?, None, transcript).await };
            (i, connected.await)
        });
    }
    let mut clients = in_order(connecting, config.n).await?;
    let open_files = limits::open_files();

    let mut requests = Vec::with_capacity(config.n * config.rounds);
    let mut answers: HashMap<Vec<Name>, Arc<[Name]>> = HashMap::new();
    for round in 1..=config.rounds {
        let picks: Vec<u8> = (0..config.n).map(|_| rng.random_range(NUMBERS)).collect();
        let mut asking = JoinSet::new();
        for (i, (mut client, number)) in clients.drain(..).zip(picks).enumerate() {
            let answered = answered.clone();
            asking.spawn(async move {
                let answer = client.find_match(number).await;
                answered.fetch_add(1, Ordering::Relaxed);
                (i, answer.map(|answer| (client, number, answer)))
            });
        }
        for (client, number, Answer { servers, end, elapsed }) in in_order(asking, config.n).await? {
            let client_name = client.name().clone();
            let servers =
                answers.entry(servers).or_insert_with_key(|names| Arc::from(names.as_slice())).clone();
            requests.push(RequestRecord { round, client: client_name, number, servers, end, elapsed });
            clients.push(client);
        }
    }

    drop(clients);
    let mut closing = JoinSet::new();
    for server in servers {
        closing.spawn(server.close());
    }
    while closing.join_next().await.is_some() {}
    let late_replies = tracker.stats().late_replies;
    tracker.shutdown(SHUTDOWN_GRACE).await;
    let servers = numbers
        .iter()
        .enumerate()
        .map(|(i, &number)| Ok(ServerRecord { name: node_name('S', i)?, number }))
        .collect::<Result<_>>()?;
    Ok(Report { config, servers, requests, late_replies, duration: started.elapsed(), open_files })
}

/// `S1`, `C3`, ...: the prefix and the 1-based index.
fn node_name(prefix: char, index: usize) -> Result<Name> {
    Ok(Name::new(&format!("{prefix}{}", index + 1))?)
}

/// Joins every task of `set`, returning their results by index; the first error wins and
/// the remaining tasks are aborted as the set is dropped.
async fn in_order<T: 'static>(mut set: JoinSet<(usize, Result<T>)>, n: usize) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined?;
        slots[i] = Some(result?);
    }
    Ok(slots.into_iter().flatten().collect())
}
