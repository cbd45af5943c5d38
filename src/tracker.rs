//! The central tracker: accepts nodes, keeps the registry of live servers and clients, fans
//! each client's request out to every server and gathers the replies until every queried
//! server has answered or the deadline passes.
//!
//! Shape: one task per connection (it reads and writes its socket in one `select!`), one
//! short-lived task per open request (it waits for completion or the deadline). The registry
//! and the table of open requests sit behind short `parking_lot` locks that are never held
//! across an `.await`; when both are taken, the registry comes first.
//!
//! Fan-out costs the same whatever the number of servers: a query is encoded once and put on
//! one broadcast channel that every server's connection task reads from. A server that falls
//! more than `server_queue` queries behind is a slow consumer and is disconnected; nobody
//! waits for it.

use std::cmp::Ordering::Less;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::connection::{self, LineReader};
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::protocol::{self, End, Message, Name, ProtocolError, ReplyMode, Token, MAX_REQUEST_LINE};
use crate::transcript::{Event, Role, Transcript};

/// Listen backlog. The default of 128 makes a burst of thousands of connections stall for
/// seconds on SYN retries.
const BACKLOG: u32 = 4096;

/// How long the accept loop pauses after an accept error (such as running out of file
/// descriptors) before trying again, so it never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a last line (`ERROR`, `BYE`) to a peer may take before we close regardless.
const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes joined into one write when several messages wait for the same socket.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes of queries the outbox holds before it is flushed without waiting: a round of
/// 4000 requests (about 80 KB) goes out as one batch.
const OUTBOX_LIMIT: usize = 256 * 1024;

/// Without early replies, the quiet that ends a burst of requests: queries are held until
/// none has come for this long (and for at most a tenth of the deadline).
const LINGER: Duration = Duration::from_millis(2);

/// Most bytes of server lists the registry keeps encoded (see `Registry::answers`; their
/// names take up to about 25 times as much).
const LISTED_BYTES: usize = 1 << 20;

/// Lines queued to one client's connection; answers to a client that reads nothing pile up
/// here until it is disconnected.
const CLIENT_QUEUE: usize = 1024;

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
    /// How many queries a server may fall behind before it is dropped as a slow consumer.
    pub server_queue: usize,
    /// The shared secret nodes must present in their greeting; `None` admits every node.
    pub token: Option<Token>,
    /// Listen beyond loopback without a token. Off, such a bind is refused: anyone who can
    /// reach the port could register servers and read every request.
    pub insecure_no_token: bool,
    /// The kernel's send buffer for each connection, in bytes: with `server_queue`, what a
    /// node that stops reading can hold before it is found out.
    pub send_buffer: usize,
    /// Most requests one client may have open at once; more are refused with an `ERROR`.
    /// Bounds how fast one client can push queries at the servers.
    pub max_open_per_client: usize,
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
            send_buffer: 256 * 1024,
            token: None,
            insecure_no_token: false,
        }
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
    /// Requests waiting for replies now.
    pub open_requests: usize,
}

/// A running tracker. Dropping it stops every task; [`Tracker::shutdown`] also waits for them.
pub struct Tracker {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// Each task holds a clone of this sender; when all are gone, `finished` yields `None`.
    alive: Option<mpsc::Sender<()>>,
    finished: mpsc::Receiver<()>,
}

impl Tracker {
    /// Binds `addr` (port 0 picks a free port) and starts accepting nodes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad config; [`Error::Io`] if the address cannot be
    /// bound.
    pub async fn bind(addr: SocketAddr, config: TrackerConfig, transcript: Transcript) -> Result<Tracker> {
        validate(&config)?;
        if !addr.ip().is_loopback() && config.token.is_none() && !config.insecure_no_token {
            return Err(Error::InvalidArgument(format!(
                "listening on {} reaches beyond this machine, so it needs a token (--token, or the \
                 MATCHTRACKER_TOKEN environment variable), or --insecure-no-token to accept the risk",
                addr.ip()
            )));
        }
        // Every connection costs a descriptor: take all the process may have.
        crate::limits::raise_open_files_limit();
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Lets a restarted tracker take its port back while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        let local_addr = listener.local_addr()?;

        let (stop, stop_rx) = watch::channel(false);
        let (alive, finished) = mpsc::channel(1);
        let (queries, _) = broadcast::channel(config.server_queue);
        let shared = Arc::new(Shared {
            limit: Arc::new(Semaphore::new(config.max_connections)),
            config,
            transcript,
            registry: Mutex::new(Registry::new(queries)),
            pending: Mutex::new(FastMap::default()),
            next_query: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            counts: watch::channel((0, 0)).0,
            outbox_ready: Notify::new(),
        });
        tokio::spawn(flush_loop(shared.clone(), stop_rx.clone(), alive.clone()));
        tokio::spawn(accept_loop(listener, shared.clone(), stop_rx, alive.clone()));
        Ok(Tracker { local_addr, shared, stop, alive: Some(alive), finished })
    }

    /// The address the tracker listens on, with the port it was given.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let (servers, clients) = *self.shared.counts.borrow();
        Stats {
            servers,
            clients,
            requests: self.shared.requests.load(Ordering::Relaxed),
            late_replies: self.shared.late_replies.load(Ordering::Relaxed),
            open_requests: self.shared.pending.lock().len(),
        }
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

    /// Tells every node the tracker is leaving (`BYE`), closes every connection and waits for
    /// every task to end. Tasks still running after `grace` are left to end on their own.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.send_replace(true);
        self.alive = None;
        let _ = tokio::time::timeout(grace, self.finished.recv()).await;
    }
}

fn validate(config: &TrackerConfig) -> Result<()> {
    let bad = |text: &str| Err(Error::InvalidArgument(text.to_owned()));
    if config.deadline.is_zero() || config.deadline > Duration::from_secs(3600) {
        return bad("timeout must be more than 0 and at most 3600 seconds");
    }
    if config.handshake_timeout.is_zero() || config.stall_timeout.is_zero() {
        return bad("handshake_timeout and stall_timeout must be more than 0");
    }
    if config.max_connections == 0 || config.max_open_per_client == 0 {
        return bad("max_connections and max_open_per_client must be at least 1");
    }
    if config.server_queue == 0 || config.server_queue > 1 << 24 {
        return bad("server_queue must be from 1 to 16777216");
    }
    Ok(())
}

/// State shared by every task of one tracker.
struct Shared {
    config: TrackerConfig,
    transcript: Transcript,
    registry: Mutex<Registry>,
    /// Open requests by the tracker's query id. An entry exists before its query is sent and
    /// is removed when the answer goes out; a reply that finds no entry is late.
    pending: Mutex<FastMap<u64, Pending>>,
    /// Query ids are unique for the tracker's lifetime, so a late reply can never be taken
    /// for a reply to a newer request.
    next_query: AtomicU64,
    requests: AtomicU64,
    late_replies: AtomicU64,
    limit: Arc<Semaphore>,
    /// (servers, clients) registered, for callers that wait on registration.
    counts: watch::Sender<(usize, usize)>,
    /// Raised when the outbox receives its first query.
    outbox_ready: Notify,
}

struct Registry {
    /// Every live node's name: names are unique across servers and clients.
    names: HashSet<Name>,
    /// Server slots; a slot is a small index a request's bitset can use. Freed slots are
    /// reused, which is safe because a leaving server's bits are cleared from every request.
    servers: Vec<Option<Name>>,
    free: Vec<usize>,
    /// The slots of live servers: what a new request asks.
    live: Slots,
    /// The slots of live servers in the index order of their names, the order of answers;
    /// its length is the number of live servers.
    ordered: Vec<usize>,
    clients: usize,
    /// Every query goes here once; each server's connection task holds a receiver.
    queries: broadcast::Sender<Bytes>,
    /// Queries not yet put on `queries`: a burst of requests goes out as one message per
    /// server, not one each (see `flush_loop`).
    outbox: Vec<u8>,
    /// Answers' server lists, named and encoded, by the set of servers that matched: at
    /// scale thousands of requests a round end with the same few lists of hundreds of names
    /// each. Emptied whenever a server comes or goes, since that changes whose a slot is.
    answers: FastMap<Slots, Listed>,
    /// Encoded bytes in `answers`; past `LISTED_BYTES` it starts over.
    listed_bytes: usize,
}

/// The servers of an answer, as names and as they go on the wire.
#[derive(Clone, Default)]
struct Listed {
    names: Arc<[Name]>,
    encoded: Arc<[u8]>,
}

impl Listed {
    fn new(names: Vec<Name>) -> Listed {
        let mut encoded = Vec::with_capacity(names.len() * 8);
        protocol::list_names(&names, &mut encoded);
        Listed { names: names.into(), encoded: encoded.into() }
    }
}

impl Registry {
    fn new(queries: broadcast::Sender<Bytes>) -> Registry {
        Registry {
            names: HashSet::new(),
            servers: Vec::new(),
            free: Vec::new(),
            live: Slots::default(),
            ordered: Vec::new(),
            clients: 0,
            queries,
            outbox: Vec::new(),
            answers: FastMap::default(),
            listed_bytes: 0,
        }
    }

    /// Forgets every answer's list: a slot is about to change hands.
    fn forget_answers(&mut self) {
        self.answers = FastMap::default();
        self.listed_bytes = 0;
    }

    /// Sends the queries waiting in the outbox to every server.
    fn flush(&mut self) {
        if !self.outbox.is_empty() {
            let batch = Bytes::from(std::mem::take(&mut self.outbox));
            let _ = self.queries.send(batch);
        }
    }

    fn counts(&self) -> (usize, usize) {
        (self.ordered.len(), self.clients)
    }

    /// Where `name` stands, or would stand, in `ordered`.
    fn position(&self, name: &Name) -> std::result::Result<usize, usize> {
        let servers = &self.servers;
        self.ordered.binary_search_by(|&slot| servers[slot].as_ref().map_or(Less, |s| s.index_order(name)))
    }
}

/// One open request.
struct Pending {
    client: Name,
    /// The servers asked that have not replied yet.
    asked: Slots,
    remaining: usize,
    /// The servers that replied `MATCH`, while they are registered.
    matched: Slots,
    /// The servers that replied `MATCH` and have left since.
    departed: Vec<Name>,
    /// Fired when `remaining` reaches zero, to end the wait before the deadline.
    done: Option<oneshot::Sender<()>>,
}

impl Pending {
    /// Marks `slot` as answered; false if it was not asked or has answered already.
    fn take(&mut self, slot: usize) -> bool {
        if !self.asked.remove(slot) {
            return false;
        }
        self.remaining -= 1;
        if self.remaining == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
        true
    }

    /// The servers that matched, listed once per distinct set of them.
    fn listed(&self, reg: &mut Registry) -> Listed {
        if !self.departed.is_empty() {
            return Listed::new(self.matched_names(reg));
        }
        if let Some(listed) = reg.answers.get(&self.matched) {
            return listed.clone();
        }
        let listed = Listed::new(self.matched_names(reg));
        if reg.listed_bytes + listed.encoded.len() > LISTED_BYTES {
            reg.forget_answers();
        }
        reg.listed_bytes += listed.encoded.len();
        reg.answers.insert(self.matched.clone(), listed.clone());
        listed
    }

    /// The names of the servers that matched, in index order. Walking the registry's order
    /// costs a bit test per server, less than sorting hundreds of names per answer.
    fn matched_names(&self, reg: &Registry) -> Vec<Name> {
        let matched = reg.ordered.iter().filter(|&&slot| self.matched.contains(slot));
        let mut names: Vec<Name> = matched.filter_map(|&slot| reg.servers[slot].clone()).collect();
        if !self.departed.is_empty() {
            names.extend_from_slice(&self.departed);
            names.sort_unstable_by(Name::index_order);
        }
        names
    }
}

/// A set of server slots, one bit each.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct Slots(Vec<u64>);

impl Slots {
    fn insert(&mut self, slot: usize) {
        let word = slot / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (slot % 64);
    }

    fn contains(&self, slot: usize) -> bool {
        self.0.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    /// Removes `slot`; false if it was not there.
    fn remove(&mut self, slot: usize) -> bool {
        let bit = 1 << (slot % 64);
        match self.0.get_mut(slot / 64) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                true
            }
            _ => false,
        }
    }
}

/// Why a reply was refused.
enum Refusal {
    /// This server was not asked, or has replied already.
    NotAsked,
    /// No request ever had this id.
    Unknown,
}

impl Shared {
    /// Whether a greeting with `token` may register: any greeting when the tracker has no
    /// token, only the right token when it has one.
    fn admits(&self, token: Option<&Token>) -> bool {
        match (&self.config.token, token) {
            (None, _) => true,
            (Some(want), Some(got)) => want.matches(got),
            (Some(_), None) => false,
        }
    }

    fn publish_counts(&self, registry: &Registry) {
        self.counts.send_replace(registry.counts());
    }

    /// Registers a server; `None` if its name is taken.
    fn add_server(&self, name: &Name) -> Option<(usize, broadcast::Receiver<Bytes>)> {
        let mut reg = self.registry.lock();
        if !reg.names.insert(name.clone()) {
            return None;
        }
        let slot = match reg.free.pop() {
            Some(slot) => slot,
            None => {
                reg.servers.push(None);
                reg.servers.len() - 1
            }
        };
        reg.servers[slot] = Some(name.clone());
        reg.forget_answers();
        reg.live.insert(slot);
        if let Err(at) = reg.position(name) {
            reg.ordered.insert(at, slot);
        }
        // Subscribing under the lock that fan-out also takes, after the queries asked of the
        // servers before it went out: a server either is in a request's bitset and receives
        // its query, or neither.
        reg.flush();
        let queries = reg.queries.subscribe();
        self.publish_counts(&reg);
        Some((slot, queries))
    }

    /// Unregisters a server; requests stop waiting for it, and keep its name if it matched.
    fn remove_server(&self, slot: usize, name: &Name) {
        let mut reg = self.registry.lock();
        if let Ok(at) = reg.position(name) {
            reg.ordered.remove(at);
        }
        reg.servers[slot] = None;
        reg.forget_answers();
        reg.live.remove(slot);
        reg.free.push(slot);
        reg.names.remove(name);
        self.publish_counts(&reg);
        for pending in self.pending.lock().values_mut() {
            pending.take(slot);
            // The slot may be given to another server before this request is answered.
            if pending.matched.remove(slot) {
                pending.departed.push(name.clone());
            }
        }
    }

    fn add_client(&self, name: &Name) -> bool {
        let mut reg = self.registry.lock();
        if !reg.names.insert(name.clone()) {
            return false;
        }
        reg.clients += 1;
        self.publish_counts(&reg);
        true
    }

    fn remove_client(&self, name: &Name) {
        let mut reg = self.registry.lock();
        reg.names.remove(name);
        reg.clients -= 1;
        self.publish_counts(&reg);
    }

    /// Opens a request and sends its query to every registered server. Returns the query id
    /// and the receiver that fires when every server has replied, or `None` if there are no
    /// servers to ask.
    fn fan_out(&self, client: &Name, number: u8) -> Option<(u64, oneshot::Receiver<()>)> {
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let (done, done_rx) = oneshot::channel();
        let mut reg = self.registry.lock();
        if reg.ordered.is_empty() {
            return None;
        }
        let pending = Pending {
            client: client.clone(),
            asked: reg.live.clone(),
            remaining: reg.ordered.len(),
            matched: Slots::default(),
            departed: Vec::new(),
            done: Some(done),
        };
        // Register before sending, so that no reply, however fast, can find nothing.
        self.pending.lock().insert(id, pending);
        // Recorded before the query goes out, so no server's line about it can come first.
        if self.transcript.is_on() {
            for server in reg.servers.iter().flatten() {
                self.transcript.record(Event::QuerySent {
                    server: server.clone(),
                    client: client.clone(),
                    number,
                });
            }
        }
        let was_empty = reg.outbox.is_empty();
        protocol::encode(&Message::Query { id, client: client.clone(), number }, &mut reg.outbox);
        if reg.outbox.len() >= OUTBOX_LIMIT {
            reg.flush();
        } else if was_empty {
            self.outbox_ready.notify_one();
        }
        Some((id, done_rx))
    }

    /// Counts a burst of one server's replies (`true` for `MATCH`), adding to `refused` the
    /// outcome of each reply that is refused.
    fn on_replies(&self, slot: usize, server: &Name, replies: &[(u64, bool)], refused: &mut Vec<Refusal>) {
        if replies.is_empty() {
            return;
        }
        let mut pending = self.pending.lock();
        for &(id, matched) in replies {
            match pending.get_mut(&id) {
                Some(request) => {
                    if !request.take(slot) {
                        refused.push(Refusal::NotAsked);
                        continue;
                    }
                    if matched {
                        request.matched.insert(slot);
                    }
                    self.transcript.record_with(|| Event::ReplyReceived {
                        server: server.clone(),
                        client: request.client.clone(),
                        matched,
                    });
                }
                None if id > 0 && id < self.next_query.load(Ordering::Relaxed) => {
                    self.late_replies.fetch_add(1, Ordering::Relaxed);
                    self.transcript.record_with(|| Event::LateReply { server: server.clone(), id });
                }
                None => refused.push(Refusal::Unknown),
            }
        }
    }

    /// Sends a client its answer.
    fn answer(&self, client: &Name, to: &ClientLink, id: u64, end: End, servers: &Listed) {
        self.transcript
            .record_with(|| Event::AnswerSent { client: client.clone(), servers: servers.names.to_vec() });
        let mut line = Vec::with_capacity(servers.encoded.len() + 40);
        protocol::encode_answer(id, end, &servers.encoded, &mut line);
        to.send(line);
    }
}

/// The way to one client's connection: its queue of lines, and a signal raised when the
/// queue is full. A client that does not read its answers is a slow consumer: it is dropped
/// rather than let its answers pile up.
#[derive(Clone)]
struct ClientLink {
    lines: mpsc::Sender<Bytes>,
    full: Arc<Notify>,
    /// Requests of this client still waiting for replies.
    open: Arc<AtomicUsize>,
}

impl ClientLink {
    fn send(&self, line: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.lines.try_send(Bytes::from(line)) {
            self.full.notify_one();
        }
    }
}

/// Puts queued queries on the broadcast channel. Waiting while other request handlers are
/// still adding theirs means that under a burst (thousands of clients asking at once) each
/// server gets one large write instead of one per request.
///
/// With early replies every moment counts, so it waits only for the scheduler turns that
/// add queries. Without, a request lasts its deadline however soon its query goes out, so
/// it waits for the burst to end ([`LINGER`]): the tracker then reads a burst of requests
/// without writing to every server in between, and every moment a request waits to be read
/// would be added to its deadline.
async fn flush_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, alive: mpsc::Sender<()>) {
    let linger = shared.config.replies == ReplyMode::Matches;
    loop {
        tokio::select! {
            () = shared.outbox_ready.notified() => {}
            () = stopped(&mut stop) => break,
        }
        let mut queued = 0;
        let until = Instant::now() + shared.config.deadline / 10;
        loop {
            let now = Instant::now();
            if linger && now < until {
                tokio::time::sleep_until((now + LINGER).min(until)).await;
            } else {
                tokio::task::yield_now().await;
            }
            let now = shared.registry.lock().outbox.len();
            if now == queued || now >= OUTBOX_LIMIT {
                break;
            }
            queued = now;
        }
        shared.registry.lock().flush();
    }
    drop(alive);
}

/// Resolves when the tracker is told to stop (or its owner is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(_) => {
                // Out of descriptors, or a connection reset before we took it: back off
                // instead of spinning on the same error.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = connection::set_send_buffer(&stream, shared.config.send_buffer);
        let shared = shared.clone();
        let (stop, alive) = (stop.clone(), alive.clone());
        tokio::spawn(async move {
            match shared.limit.clone().try_acquire_owned() {
                Ok(_permit) => handle_connection(&shared, stream, peer, stop, &alive).await,
                Err(_) => {
                    let (_, mut write) = stream.into_split();
                    let text = "the tracker has too many connections";
                    refuse(&shared, &mut write, &peer.to_string(), "too-many-connections", text).await;
                }
            }
            drop(alive);
        });
    }
    // Closed before the tracker counts as stopped: its port is free once `shutdown` returns.
    drop(listener);
    drop(alive);
}

/// Sends a last `ERROR` line and gives up on the peer.
async fn refuse(shared: &Shared, write: &mut OwnedWriteHalf, peer: &str, code: &'static str, text: &str) {
    shared.transcript.record(Event::ErrorSent { peer: peer.to_owned(), code });
    let line = protocol::to_line(&Message::Error { code: code.to_owned(), text: text.to_owned() });
    let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, write.write_all(&line)).await;
}

/// Sends `BYE` as the tracker leaves.
async fn say_bye(write: &mut OwnedWriteHalf) {
    let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, write.write_all(b"BYE\n")).await;
}

/// An `ERROR` line for a message that cannot be handled, and whether to close after it.
fn error_for(e: &Error) -> (&'static str, String, bool) {
    match e {
        Error::Protocol(p) => (p.code(), p.to_string(), *p == ProtocolError::LineTooLong),
        Error::Timeout(_) => ("line-timeout", "a line was left half-sent for too long".into(), true),
        other => ("internal", other.to_string(), true),
    }
}

async fn handle_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = LineReader::new(read, MAX_REQUEST_LINE).with_line_timeout(shared.config.stall_timeout);
    let first = tokio::select! {
        first = tokio::time::timeout(shared.config.handshake_timeout, reader.next()) => first,
        () = stopped(&mut stop) => return,
    };
    let peer = peer.to_string();
    match first {
        Ok(Ok(Some(Message::Hello { token, .. } | Message::Hi { token, .. })))
            if !shared.admits(token.as_ref()) =>
        {
            let text = "a wrong or missing token";
            refuse(shared, &mut write, &peer, "unauthorized", text).await;
        }
        Ok(Ok(Some(Message::Hello { name, .. }))) => {
            serve_server(shared, name, reader, write, stop).await;
        }
        Ok(Ok(Some(Message::Hi { name, .. }))) => {
            serve_client(shared, name, reader, write, stop, alive).await;
        }
        Ok(Ok(None)) | Ok(Err(Error::Closed | Error::Io(_))) => {}
        Ok(Ok(Some(_))) => {
            let text = "say HELLO <name> (a server) or HI <name> (a client) first";
            refuse(shared, &mut write, &peer, "not-registered", text).await;
        }
        Ok(Err(e)) => {
            let (code, text, _) = error_for(&e);
            refuse(shared, &mut write, &peer, code, &text).await;
        }
        Err(_elapsed) => {
            let text = "no HELLO or HI in time";
            refuse(shared, &mut write, &peer, "handshake-timeout", text).await;
        }
    }
}

/// Why a node's connection ended.
enum Ending {
    /// The node closed or said `BYE`.
    Left,
    /// The tracker is stopping.
    Stopped,
    /// The node misbehaved: send this last `ERROR` (if any) and drop it for this reason.
    Dropped(Option<(&'static str, String)>, String),
}

fn slow_consumer(why: String) -> Ending {
    let reason = format!("{why} (a slow consumer)");
    Ending::Dropped(Some(("slow-consumer", reason.clone())), reason)
}

async fn welcome(shared: &Shared, role: Role, name: &Name, write: &mut OwnedWriteHalf) -> Result<()> {
    shared.transcript.record_with(|| Event::WelcomeSent { role, node: name.clone() });
    let deadline_ms = shared.config.deadline.as_millis() as u64;
    let message = Message::Welcome { name: name.clone(), deadline_ms, replies: shared.config.replies };
    connection::write_message(write, &message).await
}

async fn finish(shared: &Shared, role: Role, name: &Name, write: &mut OwnedWriteHalf, ending: Ending) {
    match ending {
        Ending::Left => {}
        Ending::Stopped => say_bye(write).await,
        Ending::Dropped(last, reason) => {
            if let Some((code, text)) = last {
                refuse(shared, write, name.as_str(), code, &text).await;
            }
            shared.transcript.record(Event::Dropped { role, node: name.clone(), reason });
        }
    }
}

async fn serve_server(
    shared: &Arc<Shared>,
    name: Name,
    mut reader: LineReader,
    mut write: OwnedWriteHalf,
    mut stop: watch::Receiver<bool>,
) {
    shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Server, node: name.clone() });
    let Some((slot, mut queries)) = shared.add_server(&name) else {
        let text = format!("the name {name} is taken by a live node");
        return refuse(shared, &mut write, name.as_str(), "name-taken", &text).await;
    };
    let (errors, mut errors_rx) = mpsc::channel(16);
    let ending = match welcome(shared, Role::Server, &name, &mut write).await {
        Err(_) => Ending::Left,
        Ok(()) => tokio::select! {
            ending = server_reads(shared, slot, &name, &mut reader, &errors) => ending,
            ending = server_writes(&mut write, &mut queries, &mut errors_rx, shared.config.stall_timeout) => ending,
            () = stopped(&mut stop) => Ending::Stopped,
        },
    };
    shared.remove_server(slot, &name);
    drop(queries);
    finish(shared, Role::Server, &name, &mut write, ending).await;
}

async fn server_reads(
    shared: &Shared,
    slot: usize,
    name: &Name,
    reader: &mut LineReader,
    errors: &mpsc::Sender<Bytes>,
) -> Ending {
    let mut replies = Vec::new();
    let mut refused = Vec::new();
    loop {
        tokio::task::consume_budget().await;
        let mut left = false;
        let read = reader
            .read_batch(|line| {
                // Replies are most of what a server sends: take them without the general parser.
                match protocol::parse_reply(line) {
                    Some(reply) => replies.push(reply),
                    None => match protocol::parse(line) {
                        Ok(Message::Match { id }) => replies.push((id, true)),
                        Ok(Message::Miss { id }) => replies.push((id, false)),
                        Ok(Message::Bye) => {
                            left = true;
                            return ControlFlow::Break(());
                        }
                        Ok(_) => {
                            send_error(errors, "unexpected", "a server may send only MATCH, MISS or BYE")
                        }
                        Err(e) => send_error(errors, e.code(), &e.to_string()),
                    },
                }
                ControlFlow::Continue(())
            })
            .await;
        // A burst of replies is counted under one lock.
        shared.on_replies(slot, name, &replies, &mut refused);
        replies.clear();
        for outcome in refused.drain(..) {
            match outcome {
                Refusal::NotAsked => {
                    send_error(errors, "not-asked", "this server was not asked, or has already replied")
                }
                Refusal::Unknown => send_error(errors, "unknown-request", "no request has this id"),
            }
        }
        match read {
            Ok(true) if left => return Ending::Left,
            Ok(true) => {}
            Ok(false) | Err(Error::Closed) => return Ending::Left,
            Err(e) => {
                let (code, text, _) = error_for(&e);
                return Ending::Dropped(Some((code, text)), e.to_string());
            }
        }
    }
}

/// Queues an `ERROR` line on a server's writer; if even that queue is full the server is
/// flooding us with bad lines and not reading, and the line is dropped.
fn send_error(errors: &mpsc::Sender<Bytes>, code: &str, text: &str) {
    let _ = errors.try_send(Bytes::from(error_line(code, text)));
}

fn error_line(code: &str, text: &str) -> Vec<u8> {
    protocol::to_line(&Message::Error { code: code.to_owned(), text: text.to_owned() })
}

async fn server_writes(
    write: &mut OwnedWriteHalf,
    queries: &mut broadcast::Receiver<Bytes>,
    errors: &mut mpsc::Receiver<Bytes>,
    stall: Duration,
) -> Ending {
    use broadcast::error::{RecvError, TryRecvError};
    let lagged = |behind| slow_consumer(format!("it fell {behind} batches of queries behind"));
    loop {
        let first = tokio::select! {
            query = queries.recv() => match query {
                Ok(lines) => lines,
                Err(RecvError::Lagged(behind)) => return lagged(behind),
                Err(RecvError::Closed) => return Ending::Stopped,
            },
            Some(line) = errors.recv() => line,
        };
        // Requests being read go first: every moment one waits to be read is added to its
        // deadline, while queries have the whole deadline to arrive.
        tokio::task::yield_now().await;
        // Usually one message waits, and is written as it is; when more queued up behind it
        // they are joined, so that the burst costs one system call.
        let out = match queries.try_recv() {
            Ok(next) => {
                let mut batch = Vec::with_capacity(first.len() + next.len());
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&next);
                while batch.len() < WRITE_BATCH {
                    match queries.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(TryRecvError::Lagged(behind)) => return lagged(behind),
                        Err(_) => break,
                    }
                }
                Bytes::from(batch)
            }
            Err(TryRecvError::Lagged(behind)) => return lagged(behind),
            Err(_) => first,
        };
        // A server stuck in a write never comes back to the queue to see that it lagged, so a
        // write that makes no progress for `stall` is what marks it as a slow consumer.
        match tokio::time::timeout(stall, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ending::Left,
            Err(_) => return slow_consumer(format!("it read nothing for {stall:?}")),
        }
    }
}

async fn serve_client(
    shared: &Arc<Shared>,
    name: Name,
    mut reader: LineReader,
    mut write: OwnedWriteHalf,
    mut stop: watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
) {
    shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Client, node: name.clone() });
    if !shared.add_client(&name) {
        let text = format!("the name {name} is taken by a live node");
        return refuse(shared, &mut write, name.as_str(), "name-taken", &text).await;
    }
    let (lines, mut lines_rx) = mpsc::channel(CLIENT_QUEUE);
    let link = ClientLink { lines, full: Arc::new(Notify::new()), open: Arc::new(AtomicUsize::new(0)) };
    let requests_stop = stop.clone();
    let ending = match welcome(shared, Role::Client, &name, &mut write).await {
        Err(_) => Ending::Left,
        Ok(()) => tokio::select! {
            ending = client_reads(shared, &name, &mut reader, &link, &requests_stop, alive) => ending,
            () = link.full.notified() => slow_consumer(format!("it left {CLIENT_QUEUE} answers unread")),
            result = connection::write_lines(&mut write, &mut lines_rx, shared.config.stall_timeout) => match result {
                Ok(()) => Ending::Stopped,
                Err(Error::Timeout(_)) => slow_consumer(format!("it read nothing for {:?}", shared.config.stall_timeout)),
                Err(_) => Ending::Left,
            },
            () = stopped(&mut stop) => Ending::Stopped,
        },
    };
    shared.remove_client(&name);
    finish(shared, Role::Client, &name, &mut write, ending).await;
}

async fn client_reads(
    shared: &Arc<Shared>,
    name: &Name,
    reader: &mut LineReader,
    link: &ClientLink,
    stop: &watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
) -> Ending {
    loop {
        // Lines already buffered are read without touching the socket; without this, one
        // client's burst would be fanned out before any server's writer gets to run.
        tokio::task::consume_budget().await;
        let (client_id, number) = match reader.next().await {
            Ok(Some(Message::Find { id, number })) => (id, number),
            Ok(Some(Message::Bye) | None) | Err(Error::Closed) => return Ending::Left,
            Ok(Some(_)) => {
                link.send(error_line("unexpected", "a client may send only FIND or BYE"));
                continue;
            }
            Err(e) => {
                let (code, text, fatal) = error_for(&e);
                if fatal {
                    return Ending::Dropped(Some((code, text)), e.to_string());
                }
                link.send(error_line(code, &text));
                continue;
            }
        };
        if link.open.load(Ordering::Relaxed) >= shared.config.max_open_per_client {
            let text = format!(
                "request {client_id} refused: {} requests are already open",
                shared.config.max_open_per_client
            );
            link.send(error_line("too-many-requests", &text));
            continue;
        }
        // The deadline runs from the moment the request is read, so the work of fanning
        // out many requests at once happens inside their deadlines, not after them.
        let deadline = Instant::now() + shared.config.deadline;
        shared.requests.fetch_add(1, Ordering::Relaxed);
        shared.transcript.record_with(|| Event::FindReceived { client: name.clone() });
        match shared.fan_out(name, number) {
            None => shared.answer(name, link, client_id, End::NoServers, &Listed::default()),
            Some((id, done)) => {
                link.open.fetch_add(1, Ordering::Relaxed);
                let waiter = Waiter {
                    shared: shared.clone(),
                    id,
                    client: name.clone(),
                    client_id,
                    link: link.clone(),
                };
                let (stop, alive) = (stop.clone(), alive.clone());
                tokio::spawn(async move {
                    waiter.wait(done, deadline, stop).await;
                    drop(alive);
                });
            }
        }
    }
}

/// Waits for one request to complete or reach its deadline, then answers the client.
struct Waiter {
    shared: Arc<Shared>,
    id: u64,
    client: Name,
    client_id: u64,
    link: ClientLink,
}

impl Waiter {
    async fn wait(self, done: oneshot::Receiver<()>, deadline: Instant, mut stop: watch::Receiver<bool>) {
        let by_deadline = tokio::select! {
            _ = done => false,
            () = tokio::time::sleep_until(deadline) => true,
            // The tracker is stopping, or the client left: nobody is waiting for the answer.
            () = stopped(&mut stop) => true,
            () = self.link.lines.closed() => true,
        };
        // No longer open, before the answer goes out: a client that asks again the moment it
        // has its answer must not find this request still counted against it.
        self.link.open.fetch_sub(1, Ordering::Relaxed);
        // Removing the entry is what makes any later reply late: nothing outlives the answer.
        // The registry is held too, so that no matched server's slot changes hands meanwhile.
        let (request, servers) = {
            let mut reg = self.shared.registry.lock();
            let Some(request) = self.shared.pending.lock().remove(&self.id) else { return };
            let servers = request.listed(&mut reg);
            (request, servers)
        };
        if *stop.borrow() || self.link.lines.is_closed() {
            return;
        }
        let transcript = &self.shared.transcript;
        if by_deadline && request.remaining > 0 {
            transcript.record_with(|| Event::DeadlineReached { client: self.client.clone() });
        }
        let end = if request.remaining == 0 { End::Replied } else { End::Deadline };
        self.shared.answer(&self.client, &self.link, self.client_id, end, &servers);
    }
}
