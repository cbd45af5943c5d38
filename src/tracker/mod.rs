//! The central tracker: accepts nodes, keeps the registry of live servers and clients, fans
//! each client's request out to every server and gathers the replies until every queried
//! server has answered or the deadline passes.
//!
//! - this file: the handle ([`Tracker`]) and its settings, its stop (a drain, then `BYE`),
//!   and the tracker's decisions (register, open a request, count a reply, answer), each
//!   under short locks;
//! - [`accept`]: the accept loop, TLS, the greeting;
//! - [`seat`]: a node's registration, undone when it is dropped;
//! - [`server_link`], [`client_link`]: one task per connection of each kind;
//! - [`waiter`]: a client's open requests until their end, and how each ended;
//! - [`registry`]: who is registered, and the server lists of answers;
//! - [`requests`]: the open requests and what became of each reply;
//! - [`outbox`]: queries on their way to every server, in batches;
//! - [`peers`]: the one seam to the cluster (`Alone` does nothing), and [`federation`]
//!   behind it.
//!
//! Locks are `parking_lot` mutexes, never held across an `.await`; when both are taken, the
//! board comes before the requests.

mod accept;
mod client_link;
mod connections;
mod federation;
pub mod metrics;
mod monitor;
mod outbox;
mod peers;
mod registry;
mod requests;
mod seat;
mod server_link;
mod waiter;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpSocket;
use tokio::sync::{broadcast, watch, Notify, Semaphore};

use crate::args::MAX_SECONDS;
use crate::cluster::{Cluster, ClusterConfig};
use crate::error::{Error, Result};
use crate::protocol::{self, End, Message, Name, ReplyMode, Token};
use crate::shutdown::{Shutdown, StopSignal};
use crate::transcript::{Event, Transcript};
use metrics::Metrics;
pub use monitor::MonitorConfig;
use outbox::Outbox;
use peers::Peers;
use registry::{Listed, Registry};
use requests::{Done, Pending, Reply, Requests};

/// Listen backlog. The default of 128 makes a burst of thousands of connections stall for
/// seconds on SYN retries.
const BACKLOG: u32 = 4096;

/// How much longer than the deadline a drain may take by default: the last answers are
/// written after their requests' deadlines.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// Settings of a tracker.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// How long a request waits for replies (the assignment's 2 seconds).
    pub deadline: Duration,
    /// Whether servers reply to every query (`All`, so requests end early) or only on a match.
    pub replies: ReplyMode,
    /// How long a new connection has to say `HELLO` or `HI`.
    pub handshake_timeout: Duration,
    /// How long a peer may stall before it is dropped: leave a line half-sent, or leave our
    /// lines unread while its socket is full.
    pub stall_timeout: Duration,
    /// Most connections open at once; more are refused with an `ERROR` line.
    pub max_connections: usize,
    /// How many batches of queries a server may fall behind before it is dropped as a slow
    /// consumer.
    pub server_queue: usize,
    /// The shared secret nodes must present in their greeting; `None` admits every node.
    pub token: Option<Token>,
    /// Listen beyond loopback without a token. Off, such a bind is refused: anyone who can
    /// reach the port could register servers and read every request.
    pub insecure_no_token: bool,
    /// The kernel's send buffer for each connection, in bytes: with `server_queue`, what a
    /// node that stops reading can hold before it is found out.
    pub send_buffer: usize,
    /// Most requests one client may have open at once (read, and not yet answered on the
    /// wire). At the bound the tracker reads no more from that client until an answer has
    /// been written: the client is slowed down, never refused. Bounds how fast one client
    /// can push queries at the servers.
    pub max_open_per_client: usize,
    /// How long a stop may wait for the open requests to be answered before it closes every
    /// connection regardless; `None` is the deadline plus a second.
    pub drain_timeout: Option<Duration>,
    /// How long a connection may be silent before TCP keepalive probes it: a node whose
    /// host vanished without closing is dropped about 2.5 times this long after it went
    /// quiet, while a live idle node answers the probes and stays.
    pub keepalive: Duration,
    /// The certificate and key to speak TLS with; `None` speaks plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Listen beyond loopback without TLS. Off, such a bind is refused: the token, the names
    /// and every request would cross the network readable by anyone on the path.
    pub insecure_plaintext: bool,
    /// The NATS cluster to join as one of several trackers acting as one Central; `None`
    /// works alone.
    pub cluster: Option<ClusterConfig>,
    /// The monitoring port (Prometheus metrics, health, stats); `None` has none.
    pub monitor: Option<MonitorConfig>,
    /// Where [`Tracker::reload`] reads the certificate, key and token again.
    pub reload: Reload,
}

/// The files a reload reads again: the TLS certificate and key the tracker started with, and
/// the file its token came from. A token given as text (an argument, the environment) is
/// kept as it is.
#[derive(Clone, Debug, Default)]
pub struct Reload {
    /// The certificate chain and the private key, PEM.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// A file holding the token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
}

impl Reload {
    /// Reads what the files hold now.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming a file that cannot be read, holds no certificate,
    /// key or valid token, or a key that does not match its certificate.
    fn read(&self) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<Token>)> {
        let tls =
            self.tls_files.as_ref().map(|(cert, key)| crate::tls::tracker_config(cert, key)).transpose()?;
        let token = self.token_file.as_deref().map(read_token).transpose()?;
        Ok((tls, token))
    }
}

/// The token in `path`: its first line, surrounding whitespace ignored.
///
/// # Errors
/// [`Error::InvalidArgument`] if the file cannot be read or holds no valid token.
pub fn read_token(path: &Path) -> Result<Token> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read the token file {}: {e}", path.display())))?;
    Token::new(text.lines().next().unwrap_or("").trim())
        .map_err(|e| Error::InvalidArgument(format!("the token file {}: {e}", path.display())))
}

/// What a reload changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub tls: bool,
    pub token: bool,
}

/// The keys the tracker admits nodes with now: swapped whole by a reload, read once per
/// connection (the certificate) or greeting (the token).
struct Keys {
    tls: Option<Arc<rustls::ServerConfig>>,
    token: Option<Token>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            deadline: Duration::from_secs(2),
            replies: ReplyMode::Matches,
            handshake_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            server_queue: 65_536,
            max_open_per_client: 1024,
            drain_timeout: None,
            send_buffer: 256 * 1024,
            keepalive: crate::connection::KEEPALIVE_IDLE,
            tls: None,
            insecure_plaintext: false,
            cluster: None,
            monitor: None,
            reload: Reload::default(),
            token: None,
            insecure_no_token: false,
        }
    }
}

impl TrackerConfig {
    /// The most a stop waits for open requests to be answered.
    pub fn drain_bound(&self) -> Duration {
        self.drain_timeout.unwrap_or(self.deadline + DRAIN_MARGIN)
    }

    fn validate(&self, addr: SocketAddr) -> Result<()> {
        let bad = |text: String| Err(Error::InvalidArgument(text));
        let cap = Duration::from_secs_f64(MAX_SECONDS);
        if self.deadline.is_zero() || self.deadline > cap {
            return bad(format!("timeout must be more than 0 and at most {MAX_SECONDS} seconds"));
        }
        if self.handshake_timeout.is_zero()
            || self.stall_timeout.is_zero()
            || self.keepalive < Duration::from_secs(1)
        {
            return bad(
                "handshake_timeout and stall_timeout must be more than 0, keepalive at least 1 s".into()
            );
        }
        if self.drain_timeout.is_some_and(|drain| drain > cap) {
            return bad(format!("drain_timeout must be at most {MAX_SECONDS} seconds"));
        }
        if self.max_connections == 0 || self.max_open_per_client == 0 {
            return bad("max_connections and max_open_per_client must be at least 1".into());
        }
        if self.server_queue == 0 || self.server_queue > 1 << 24 {
            return bad("server_queue must be from 1 to 16777216".into());
        }
        if let Some(monitor) = &self.monitor {
            if !monitor.addr.ip().is_loopback() && self.token.is_none() && !monitor.insecure {
                return bad(format!(
                    "a monitor on {} reaches beyond this machine and shows node names, so it needs \
                     the tracker's token (--token, or the MATCHTRACKER_TOKEN environment variable), \
                     which it then asks for, or --monitor-insecure to accept the risk",
                    monitor.addr.ip()
                ));
            }
        }
        if !addr.ip().is_loopback() {
            let mut missing = Vec::new();
            if self.tls.is_none() && !self.insecure_plaintext {
                missing.push("TLS (--tls-cert and --tls-key, or --insecure-plaintext to accept the risk)");
            }
            if self.token.is_none() && !self.insecure_no_token {
                missing.push(
                    "a token (--token, or the MATCHTRACKER_TOKEN environment variable, or \
                     --insecure-no-token to accept the risk)",
                );
            }
            if !missing.is_empty() {
                return bad(format!(
                    "listening on {} reaches beyond this machine, so it needs {}",
                    addr.ip(),
                    missing.join(" and ")
                ));
            }
        }
        Ok(())
    }
}

/// Counters a caller can read while the tracker runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Servers registered now.
    pub servers: usize,
    /// Clients registered now.
    pub clients: usize,
    /// Requests received so far.
    pub requests: u64,
    /// Replies that came after their request was answered, and were dropped.
    pub late_replies: u64,
    /// Connections closed because their TLS handshake failed or took too long (plain text
    /// sent to a TLS tracker included).
    pub tls_failed: u64,
    /// Requests waiting for replies now.
    pub open_requests: usize,
}

impl Stats {
    /// The counters as one JSON object, under the names `Tracker.stats()` gives them.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "servers": self.servers,
            "clients": self.clients,
            "requests": self.requests,
            "late_replies": self.late_replies,
            "tls_failed": self.tls_failed,
            "open_requests": self.open_requests,
        })
        .to_string()
    }
}

/// A running tracker. Dropping it stops every task at once; [`Tracker::shutdown`] first
/// answers every open request, then says `BYE` and waits for them.
pub struct Tracker {
    local_addr: SocketAddr,
    /// Where the monitoring port listens, if it has one.
    monitor_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    /// The tasks a drain waits for: the accept loop, greetings under way, client links.
    drain: Shutdown,
}

/// What a connection's task listens to: a drain (read no more requests, answer the open
/// ones) and a stop (end now).
#[derive(Clone)]
struct Signals {
    drain: StopSignal,
    stop: StopSignal,
}

impl Signals {
    /// Resolves at a drain or a stop, whichever comes first.
    async fn ending(&mut self) {
        tokio::select! {
            () = self.drain.requested() => {}
            () = self.stop.requested() => {}
        }
    }
}

impl Tracker {
    /// Binds `addr` (port 0 picks a free port) and starts accepting nodes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad config, or for listening beyond loopback without
    /// a token; [`Error::Io`] if the address cannot be bound.
    // Async though nothing in it waits: it must run inside the runtime (its sockets register
    // with the runtime's reactor, and it spawns the tracker's tasks there), which an async
    // function makes sure of.
    #[allow(clippy::unused_async)]
    pub async fn bind(addr: SocketAddr, config: TrackerConfig, transcript: Transcript) -> Result<Tracker> {
        config.validate(addr)?;
        // Every connection costs a descriptor: take all the process may have.
        crate::limits::raise_open_files_limit();
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Lets a restarted tracker take its port back while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        let local_addr = listener.local_addr()?;
        let monitor = match &config.monitor {
            Some(monitor) => Some(tokio::net::TcpListener::bind(monitor.addr).await.map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("the monitor cannot listen on {}: {e}", monitor.addr),
                ))
            })?),
            None => None,
        };
        let monitor_addr = monitor.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;

        let (shutdown, drain) = (Shutdown::new(), Shutdown::new());
        let cluster = match &config.cluster {
            Some(cluster) => Some(Arc::new(Cluster::join(cluster).await?)),
            None => None,
        };
        let metrics = Metrics::new(config.deadline, cluster.is_some());
        let shared = Arc::new(Shared {
            metrics,
            connections: connections::Connections::default(),
            keys: RwLock::new(Keys { tls: config.tls.clone(), token: config.token.clone() }),
            peers: Peers::new(cluster),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            board: Mutex::new(Board {
                registry: Registry::default(),
                outbox: Outbox::new(config.server_queue),
            }),
            config,
            transcript,
            requests: Mutex::new(Requests::default()),
            received: AtomicU64::new(0),
            counts: watch::channel((0, 0)).0,
            outbox_ready: Notify::new(),
        });
        tokio::spawn(outbox::flush_loop(shared.clone(), shutdown.signal()));
        if let Some(federation) = shared.peers.federation() {
            let transcript = shared.transcript.clone();
            tokio::spawn(federation.cluster.clone().keep_alive(transcript, shutdown.signal()));
            tokio::spawn(federation::serve(shared.clone(), shutdown.signal()));
        }
        if let Some(monitor) = monitor {
            tokio::spawn(monitor::serve(monitor, shared.clone(), shutdown.signal()));
        }
        let signals = Signals { drain: drain.signal(), stop: shutdown.signal() };
        tokio::spawn(accept::accept_loop(listener, shared.clone(), signals));
        Ok(Tracker { local_addr, monitor_addr, shared, shutdown, drain })
    }

    /// The address the tracker listens on, with the port it was given.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the monitoring port listens, with the port it was given; `None` without one.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor_addr
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Reads the TLS certificate and key, and the token file, again: new handshakes use the
    /// new certificate and new greetings the new token, while every live node stays. Either
    /// all of them are taken or, if one cannot be read or does not fit, none: the old ones
    /// stay.
    ///
    /// Blocking: it reads files.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what could not be read or does not fit.
    pub fn reload(&self) -> Result<Reloaded> {
        let outcome = self.shared.config.reload.read();
        self.shared.metrics.reloaded(outcome.is_ok());
        let (tls, token) = outcome?;
        let reloaded = Reloaded { tls: tls.is_some(), token: token.is_some() };
        let mut keys = self.shared.keys.write();
        if tls.is_some() {
            keys.tls = tls;
        }
        if token.is_some() {
            keys.token = token;
        }
        Ok(reloaded)
    }

    /// Waits until exactly `servers` servers and `clients` clients are registered.
    pub async fn wait_for_nodes(&self, servers: usize, clients: usize) {
        let mut counts = self.subscribe_counts();
        // The sender lives in `shared`, which we hold, so this cannot fail.
        let _ = counts.wait_for(|&c| c == (servers, clients)).await;
    }

    /// A receiver of (servers, clients) registered, updated at every change.
    pub fn subscribe_counts(&self) -> watch::Receiver<(usize, usize)> {
        self.shared.counts.subscribe()
    }

    /// Stops the tracker without losing an answer: it stops accepting, reads no more
    /// requests, lets every open request end as usual (every server replied, or its
    /// deadline) and writes its answer, tells its cluster it is leaving, then says `BYE` to
    /// every node, closes every connection and waits for every task to end. The drain takes
    /// at most the config's `drain_timeout`; tasks still running `grace` after that are left
    /// to end on their own. Dropping the future stops at once (a second Ctrl-C).
    ///
    /// Returns whether every open request was answered in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let Tracker { shared, shutdown, drain, .. } = self;
        let bound = shared.config.drain_bound();
        let until = tokio::time::Instant::now() + bound;
        shared.draining.store(true, Ordering::Relaxed);
        let open = shared.requests.lock().len();
        shared.transcript.record(Event::Draining { open });
        let drained = async {
            shared.peers.leave().await;
            // The clients' links, each ending once its requests are answered on the wire,
            // then the requests of the other trackers, which this tracker's servers answer.
            drain.stop(bound).await && shared.requests_done().await
        };
        let drained = tokio::time::timeout_at(until, drained).await.unwrap_or(false);
        shutdown.stop(grace).await;
        drained
    }
}

/// A registered server, as its connection knows it.
struct ServerSeat {
    name: Name,
    /// Its slot in the registry.
    slot: usize,
    /// The id of the first request it was asked.
    asked_from: u64,
}

/// The registry and the outbox, under one lock. A request takes its set of servers to ask
/// from the registry and queues its query in the outbox in one step, and a new server is
/// added to the registry and subscribes to the outbox in one step: so a server is in a
/// request's set if, and only if, it receives the request's query.
struct Board {
    registry: Registry,
    outbox: Outbox,
}

/// State shared by every task of one tracker.
struct Shared {
    config: TrackerConfig,
    /// The other trackers of its cluster, if it has joined one.
    peers: Peers,
    /// Set when a stop begins: the tracker takes no new requests.
    draining: AtomicBool,
    /// Raised when the last open request closes during a drain.
    idle: Notify,
    transcript: Transcript,
    board: Mutex<Board>,
    requests: Mutex<Requests>,
    /// Requests received so far.
    received: AtomicU64,
    /// The figures for Prometheus; also the source of the late replies and failed TLS
    /// handshakes in [`Stats`].
    metrics: Metrics,
    /// Every registered node's connection, and the last closed ones.
    connections: connections::Connections,
    /// The certificate and token in force; a reload swaps them.
    keys: RwLock<Keys>,
    limit: Arc<Semaphore>,
    /// (servers, clients) registered, for callers that wait on registration.
    counts: watch::Sender<(usize, usize)>,
    /// Raised when the outbox receives its first query.
    outbox_ready: Notify,
}

impl Shared {
    /// Whether a greeting with `token` may register: any greeting when the tracker has no
    /// token, only the right token when it has one.
    fn admits(&self, token: Option<&Token>) -> bool {
        match (&self.keys.read().token, token) {
            (None, _) => true,
            (Some(want), Some(got)) => want.matches(got),
            (Some(_), None) => false,
        }
    }

    /// Registers a server; `None` if its name is taken.
    fn add_server(&self, name: &Name) -> Option<(ServerSeat, broadcast::Receiver<Bytes>)> {
        let mut board = self.board.lock();
        let slot = board.registry.add_server(name)?;
        let queries = board.outbox.subscribe();
        // Requests are opened under the board's lock: every one from this id on is asked of
        // the new server, and none before it.
        let asked_from = self.requests.lock().next_id();
        self.counts.send_replace(board.registry.counts());
        Some((ServerSeat { name: name.clone(), slot, asked_from }, queries))
    }

    /// Unregisters a server; requests stop waiting for it, and keep its name if it matched.
    fn remove_server(&self, server: &ServerSeat) {
        let mut board = self.board.lock();
        board.registry.remove_server(server.slot, &server.name);
        self.counts.send_replace(board.registry.counts());
        self.requests.lock().server_left(server.slot, &server.name);
    }

    /// Registers a client; false if its name is taken.
    fn add_client(&self, name: &Name) -> bool {
        let mut board = self.board.lock();
        let added = board.registry.add_client(name);
        self.counts.send_replace(board.registry.counts());
        added
    }

    fn remove_client(&self, name: &Name) {
        let mut board = self.board.lock();
        board.registry.remove_client(name);
        self.counts.send_replace(board.registry.counts());
    }

    /// Current counters.
    fn stats(&self) -> Stats {
        let (servers, clients) = *self.counts.borrow();
        Stats {
            servers,
            clients,
            requests: self.received.load(Ordering::Relaxed),
            late_replies: self.metrics.late_replies(),
            tls_failed: self.metrics.tls_failures(),
            open_requests: self.requests.lock().len(),
        }
    }

    /// Whether a stop has begun.
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves once no request is open. Only during a drain, when no new one opens.
    async fn requests_done(&self) -> bool {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.requests.lock().len() == 0 {
                return true;
            }
            idle.await;
        }
    }

    /// Opens a request and queues its query for every registered server. Returns the query
    /// id, or `None` if there are no servers to ask; `done` fires when every server asked
    /// has replied.
    fn fan_out(&self, client: &Name, number: u8, done: Done) -> Option<u64> {
        let mut board = self.board.lock();
        if board.registry.live().is_empty() {
            return None;
        }
        // Opened before the query is queued, so that no reply, however fast, finds nothing.
        let id = self.requests.lock().open(client.clone(), board.registry.live().clone(), done);
        // Recorded before the query goes out, so no server's line about it can come first.
        if self.transcript.is_on() {
            for server in board.registry.servers() {
                self.transcript.record(Event::QuerySent {
                    server: server.clone(),
                    client: client.clone(),
                    number,
                });
            }
        }
        if board.outbox.push(&Message::Query { id, client: client.clone(), number }) {
            self.outbox_ready.notify_one();
        }
        Some(id)
    }

    /// Counts a burst of one server's replies (`true` for `MATCH`) under one lock, adding to
    /// `refused` what became of each reply that is refused.
    fn on_replies(&self, server: &ServerSeat, replies: &[(u64, bool)], refused: &mut Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        let mut requests = self.requests.lock();
        for &(id, matched) in replies {
            match requests.reply(id, server.slot, server.asked_from, matched) {
                Reply::Counted { client } => {
                    self.transcript.record_with(|| Event::ReplyReceived {
                        server: server.name.clone(),
                        client,
                        matched,
                    });
                }
                Reply::Late => {
                    self.metrics.late_reply();
                    self.transcript.record_with(|| Event::LateReply { server: server.name.clone(), id });
                }
                other => refused.push(other),
            }
        }
    }

    /// Closes request `id` and lists its matching servers; `None` if it was closed already.
    /// Removing the entry is what makes any later reply late: nothing outlives the answer.
    /// The board is held too, so that no matched server's slot changes hands meanwhile.
    fn close(&self, id: u64) -> Option<(Pending, Listed)> {
        let mut board = self.board.lock();
        let request = self.requests.lock().close(id);
        let request = self.closed(request)?;
        let listed = board.registry.listed(&request.matched, &request.departed);
        Some((request, listed))
    }

    /// Passes on a request just taken out of the table, telling a drain when it was the last.
    fn closed(&self, request: Option<Pending>) -> Option<Pending> {
        if self.is_draining() && self.requests.lock().len() == 0 {
            self.idle.notify_waiters();
        }
        request
    }

    /// The servers that have matched request `id` so far, if it is open and more have matched
    /// than `known`; with how many that is.
    fn matched_beyond(&self, id: u64, known: usize) -> Option<(usize, Vec<Name>)> {
        let board = self.board.lock();
        let requests = self.requests.lock();
        let request = requests.get(id)?;
        let count = request.matched.len() + request.departed.len();
        if count <= known {
            return None;
        }
        let mut names = board.registry.names_of(&request.matched);
        names.extend_from_slice(&request.departed);
        Some((count, names))
    }

    /// Frees request `id` at its client's word: its waiter wakes and, finding it gone, sends
    /// no answer; a reply that comes for it later is late.
    fn cancel(&self, id: u64) {
        let request = self.requests.lock().close(id);
        self.closed(request);
    }

    /// The `ANSWER` line for a client, recorded as sent.
    fn answer(&self, client: &Name, id: u64, end: End, servers: &Listed) -> Vec<u8> {
        self.transcript
            .record_with(|| Event::AnswerSent { client: client.clone(), servers: servers.names.to_vec() });
        let mut line = Vec::with_capacity(servers.encoded.len() + 40);
        protocol::encode_answer(id, end, &servers.encoded, &mut line);
        line
    }
}
