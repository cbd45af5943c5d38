//! The assignment's run in one process: a tracker on 127.0.0.1 (a free port), n servers each
//! holding a random number, n clients, and rounds in which every client asks once, all at
//! once, and waits for its answer. Returns a [`Report`] of everything that was decided.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Barrier, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args;
use crate::client::{Answer, AnswerCache, ClientNode};
use crate::error::Result;
use crate::limits;
use crate::protocol::{Name, ReplyMode, NUMBERS};
pub use crate::report::{Report, RequestRecord, ServerRecord};
use crate::server::{Number, ServerNode};
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::Transcript;

/// Most nodes connecting at once. Kept well under the kernel's cap on a listener's queue of
/// connections not yet accepted (`net.core.somaxconn`, often 4096): past it, connections are
/// dropped and retried a second later, and thousands of nodes start at once.
const HANDSHAKES_AT_ONCE: usize = 1024;

/// How far below normal priority descriptors are counted (see `count_open_files`): as low
/// as it goes.
const COUNT_NICE: i32 = 19;

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
    pub fn new(n: i128, rounds: i128, timeout: f64, seed: Option<u64>, early: bool) -> Result<Self> {
        Ok(SimulationConfig {
            n: args::count(n, "n", 2, args::MAX_N)?,
            rounds: args::count(rounds, "rounds", 1, args::MAX_ROUNDS)?,
            deadline: args::seconds(timeout, "timeout")?,
            seed,
            replies: ReplyMode::early(early),
        })
    }

    /// Descriptors the run holds at once: both ends of 2n loopback connections.
    pub fn open_files_needed(&self) -> u64 {
        4 * self.n as u64 + 1
    }

    /// Local ports the run connects from at once: one per node.
    pub fn local_ports_needed(&self) -> u64 {
        2 * self.n as u64
    }
}

/// Runs the simulation, counting answered requests in `answered` as it goes (for progress).
/// Every socket is closed and every task has ended when it returns; if the future is dropped
/// early, the nodes it owns stop as they are dropped.
///
/// The phases: draw every number; start the tracker; register every server, then every
/// client; the rounds; close everything.
///
/// # Errors
/// [`Error::TooManyFiles`] or [`Error::TooFewPorts`] before anything is opened if n cannot
/// fit under the open-files limit or in the local port range; any node's error if the run
/// cannot complete.
pub async fn run(
    config: SimulationConfig,
    transcript: Transcript,
    answered: Arc<AtomicUsize>,
) -> Result<Report> {
    limits::ensure_open_files(config.open_files_needed())?;
    limits::ensure_local_ports(config.local_ports_needed())?;
    let started = Instant::now();
    let (numbers, picks) = draw(&config);
    let sides = Sides::get()?;
    let tracker_config = TrackerConfig {
        deadline: config.deadline,
        replies: config.replies,
        max_connections: (2 * config.n + 16).max(TrackerConfig::default().max_connections),
        ..TrackerConfig::default()
    };
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let tracker = sides.central.spawn(Tracker::bind(local, tracker_config, transcript.clone())).await??;
    let addr = tracker.local_addr();
    // At most this many nodes say hello at once, servers and clients alike.
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    // Every server is registered (its WELCOME received) before any client says anything.
    let servers = start_servers(addr, &numbers, &transcript, &handshakes, sides).await?;
    let clients = connect_clients(addr, config.n, &transcript, &handshakes).await?;
    let startup = started.elapsed();

    let open_files = count_open_files();
    let (clients, requests) = ask_every_round(clients, picks, &answered).await?;
    let answered_all = Instant::now();
    let open_files = open_files.await;

    // Everything closes at once: the servers on their threads, the clients here.
    let mut closing = JoinSet::new();
    for server in servers {
        closing.spawn(server.close());
    }
    drop(clients);
    // How a server's serving ended does not change the run's answers.
    while closing.join_next().await.is_some() {}
    let late_replies = tracker.stats().late_replies;
    tracker.shutdown(SHUTDOWN_GRACE).await;
    let servers = numbers
        .iter()
        .enumerate()
        .map(|(i, &number)| Ok(ServerRecord { name: node_name('S', i)?, number }))
        .collect::<Result<_>>()?;
    Ok(Report {
        config,
        servers,
        requests,
        late_replies,
        duration: started.elapsed(),
        startup,
        closing: answered_all.elapsed(),
        open_files,
    })
}

/// Every number of the run, drawn before anything starts and in the same order for a given
/// seed: the servers' numbers, then each round's picks (returned per client).
fn draw(config: &SimulationConfig) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut rng = match config.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };
    let numbers: Vec<u8> = (0..config.n).map(|_| rng.random_range(NUMBERS)).collect();
    let mut picks: Vec<Vec<u8>> = vec![Vec::with_capacity(config.rounds); config.n];
    for _ in 0..config.rounds {
        for client in &mut picks {
            client.push(rng.random_range(NUMBERS));
        }
    }
    (numbers, picks)
}

/// Starts a server for each of `numbers` on the servers' threads; returns once every one is
/// registered.
async fn start_servers(
    addr: SocketAddr,
    numbers: &[u8],
    transcript: &Transcript,
    handshakes: &Arc<Semaphore>,
    sides: &Sides,
) -> Result<Vec<ServerNode>> {
    let mut starting = JoinSet::new();
    for (i, &number) in numbers.iter().enumerate() {
        let (transcript, handshakes) = (transcript.clone(), handshakes.clone());
        let start = async move {
            let started = async {
                let _turn = handshakes.acquire().await;
                ServerNode::start(addr, node_name('S', i)?, Number::Drawn(number), None, transcript).await
            };
            (i, started.await)
        };
        starting.spawn_on(start, sides.servers.handle());
    }
    in_order(starting, numbers.len()).await
}

/// Connects `n` clients; returns once every one is registered. The clients share what they
/// parse of their answers: a run of thousands of nodes has few distinct answers and millions
/// of names in them.
async fn connect_clients(
    addr: SocketAddr,
    n: usize,
    transcript: &Transcript,
    handshakes: &Arc<Semaphore>,
) -> Result<Vec<ClientNode>> {
    let answers = Arc::new(AnswerCache::default());
    let mut connecting = JoinSet::new();
    for i in 0..n {
        let (transcript, handshakes, answers) = (transcript.clone(), handshakes.clone(), answers.clone());
        connecting.spawn(async move {
            let connected = async {
                let _turn = handshakes.acquire().await;
                let mut client = ClientNode::connect(addr, node_name('C', i)?, None, transcript).await?;
                client.share_answers(answers);
                Ok(client)
            };
            (i, connected.await)
        });
    }
    in_order(connecting, n).await
}

/// Counts the process's descriptors, every node being connected. Listing 16,000 of them
/// takes tens of milliseconds, so it is done on a thread of its own at the lowest priority,
/// where it delays nothing the rounds do; the count is awaited after them.
fn count_open_files() -> impl std::future::Future<Output = u64> {
    let (counted, count) = oneshot::channel();
    let thread = std::thread::Builder::new().name("matchtracker-count".into()).spawn(move || {
        lower_priority(COUNT_NICE);
        // The receiver is awaited below; it is gone only if the run was cancelled.
        let _ = counted.send(limits::open_files());
    });
    async move {
        match thread {
            Ok(thread) => {
                let counted = count.await.unwrap_or_default();
                // The thread has sent its count; joining it only reaps it.
                let _ = thread.join();
                counted
            }
            // No thread to be had: counted now, every node still connected.
            Err(_) => limits::open_files(),
        }
    }
}

/// Every client's requests: one task per client for the whole run, a barrier starting each
/// round once every client has its answer to the last. Returns the clients (still connected)
/// and the requests, round by round, each round in the clients' order.
async fn ask_every_round(
    clients: Vec<ClientNode>,
    picks: Vec<Vec<u8>>,
    answered: &Arc<AtomicUsize>,
) -> Result<(Vec<ClientNode>, Vec<RequestRecord>)> {
    let n = clients.len();
    let rounds = picks.first().map_or(0, Vec::len);
    let barrier = Arc::new(Barrier::new(n));
    let mut asking = JoinSet::new();
    for (i, (client, picks)) in clients.into_iter().zip(picks).enumerate() {
        let (barrier, answered) = (barrier.clone(), answered.clone());
        asking.spawn(async move { (i, ask_rounds(client, picks, &barrier, &answered).await) });
    }
    let (clients, asked): (Vec<_>, Vec<_>) = in_order(asking, n).await?.into_iter().unzip();
    let mut asked: Vec<_> = asked.into_iter().map(Vec::into_iter).collect();
    let mut requests = Vec::with_capacity(n * rounds);
    for _ in 0..rounds {
        requests.extend(asked.iter_mut().filter_map(Iterator::next));
    }
    Ok((clients, requests))
}

/// Makes one client's requests, a round each, and returns the client (still connected: one
/// that closed while others wait for their answers would delay them) and what it saw.
async fn ask_rounds(
    client: ClientNode,
    picks: Vec<u8>,
    barrier: &Barrier,
    answered: &AtomicUsize,
) -> Result<(ClientNode, Vec<RequestRecord>)> {
    let mut seen = Vec::with_capacity(picks.len());
    for (round, number) in (1..).zip(picks) {
        barrier.wait().await;
        let Answer { servers, end, elapsed } = client.find_match(number).await?;
        seen.push(RequestRecord { round, client: client.name().clone(), number, servers, end, elapsed });
        answered.fetch_add(1, Ordering::Relaxed);
    }
    Ok((client, seen))
}

/// Threads of their own for the tracker and for the servers of every run, as they would
/// have in processes of their own: at scale the servers' work (millions of queries a round)
/// would otherwise queue ahead of the tracker reading requests, and every moment a request
/// waits to be read is added to its deadline. The clients run on the caller's threads.
///
/// Made on first use and kept, like the caller's own runtime: a run ends every task it
/// started on them, and runs come and go without starting or stopping threads.
struct Sides {
    central: Runtime,
    servers: Runtime,
}

impl Sides {
    fn get() -> Result<&'static Sides> {
        static SIDES: OnceLock<Sides> = OnceLock::new();
        static MAKING: Mutex<()> = Mutex::new(());
        if let Some(made) = SIDES.get() {
            return Ok(made);
        }
        // One caller makes them; the others wait for it rather than make spares.
        let _making = MAKING.lock();
        if let Some(made) = SIDES.get() {
            return Ok(made);
        }
        let central = threads("matchtracker-central", 2)?;
        let servers = match threads("matchtracker-servers", 2) {
            Ok(servers) => servers,
            Err(e) => {
                // Async code may not wait for threads to stop, as dropping would.
                central.shutdown_background();
                return Err(e);
            }
        };
        Ok(SIDES.get_or_init(|| Sides { central, servers }))
    }
}

/// A runtime of `count` threads named `name`.
fn threads(name: &str, count: usize) -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(count)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Lowers the calling thread's scheduling priority by `nice` steps from where it is (on
/// Linux; elsewhere it does nothing). Lowering one's own priority needs no privilege, and
/// failing to is harmless.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: system calls about the calling thread; no memory is passed.
    unsafe {
        // A thread id is positive, so it fits id_t as it is.
        #[allow(clippy::cast_sign_loss)]
        let thread = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, now.saturating_add(nice).min(19));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
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
