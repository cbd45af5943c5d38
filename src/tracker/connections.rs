//! Every registered node's connection as an operator sees it (`/connections` on the
//! monitoring port): who, from where, since when, how recently it said anything, what it
//! has open, and how much the kernel still holds for it; and the last few hundred closed
//! ones with why they closed. Enough to find the slow consumer.
//!
//! A node's entry is added when its seat is taken and moved to the closed ones when the seat
//! is given up, so it lives exactly as long as the registration. The links touch their entry
//! once per batch of lines read; nothing else is kept per message.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::protocol::Name;
use crate::transcript::Role;

/// How many closed connections are remembered: enough to see who went and why over the
/// last minutes of a busy tracker, bounded so that a tracker that runs for weeks stays flat.
pub const CLOSED_KEPT: usize = 256;

/// Where a connection came from: the peer's address, and the socket's descriptor (to ask
/// the kernel how much it still holds for the peer).
#[derive(Clone, Debug)]
pub struct Origin {
    pub peer: String,
    pub fd: RawFd,
}

/// One registered node's connection.
pub struct Conn {
    id: u64,
    name: Name,
    role: Role,
    origin: Origin,
    since: SystemTime,
    /// Milliseconds from the table's start to the last batch of lines read.
    active_ms: AtomicU64,
    started: Instant,
    /// A client's permits, once its link has them: its open requests are the ones taken.
    permits: OnceLock<(Arc<Semaphore>, usize)>,
}

impl Conn {
    /// The node said something now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// A client's permits (`max` of them), read for its open requests.
    pub fn watch_permits(&self, permits: Arc<Semaphore>, max: usize) {
        let _ = self.permits.set((permits, max));
    }

    fn describe(&self, now: SystemTime) -> Value {
        let idle = self.started.elapsed().as_secs_f64() - ms_to_secs(self.active_ms.load(Ordering::Relaxed));
        let mut entry = json!({
            "name": self.name.as_str(),
            "role": role_word(self.role),
            "peer": self.origin.peer,
            "connected_at": unix(self.since),
            "connected_for": now.duration_since(self.since).unwrap_or_default().as_secs_f64(),
            "idle_for": idle.max(0.0),
            "bytes_queued": queued_bytes(self.origin.fd),
        });
        if let Some((permits, max)) = self.permits.get() {
            entry["open_requests"] = json!(max - permits.available_permits());
        }
        entry
    }
}

/// A connection that has closed.
struct Closed {
    name: Name,
    role: Role,
    peer: String,
    since: SystemTime,
    closed: SystemTime,
    reason: String,
}

/// The connections open now and the last closed ones.
pub struct Connections {
    started: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    closed: Mutex<VecDeque<Closed>>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            started: Instant::now(),
            next: AtomicU64::new(0),
            open: Mutex::default(),
            closed: Mutex::new(VecDeque::with_capacity(CLOSED_KEPT)),
        }
    }
}

impl Connections {
    /// Lists a node that has just registered.
    pub fn opened(&self, name: &Name, role: Role, origin: Origin) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            name: name.clone(),
            role,
            origin,
            since: SystemTime::now(),
            active_ms: AtomicU64::new(0),
            started: self.started,
            permits: OnceLock::new(),
        });
        conn.touch();
        self.open.lock().insert(conn.id, conn.clone());
        conn
    }

    /// Moves a connection to the closed ones, with why it closed.
    pub fn closed(&self, conn: &Conn, reason: String) {
        self.open.lock().remove(&conn.id);
        let mut closed = self.closed.lock();
        if closed.len() == CLOSED_KEPT {
            closed.pop_front();
        }
        closed.push_back(Closed {
            name: conn.name.clone(),
            role: conn.role,
            peer: conn.origin.peer.clone(),
            since: conn.since,
            closed: SystemTime::now(),
            reason,
        });
    }

    /// Every open connection (oldest first) and the closed ones (most recent first), as one
    /// JSON object.
    pub fn to_json(&self) -> String {
        let now = SystemTime::now();
        let mut open: Vec<Arc<Conn>> = self.open.lock().values().cloned().collect();
        open.sort_unstable_by_key(|conn| conn.id);
        let open: Vec<Value> = open.iter().map(|conn| conn.describe(now)).collect();
        let closed: Vec<Value> = self
            .closed
            .lock()
            .iter()
            .rev()
            .map(|c| {
                json!({
                    "name": c.name.as_str(),
                    "role": role_word(c.role),
                    "peer": c.peer,
                    "connected_at": unix(c.since),
                    "closed_at": unix(c.closed),
                    "reason": c.reason,
                })
            })
            .collect();
        json!({ "open": open, "closed": closed, "closed_kept": CLOSED_KEPT }).to_string()
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Client => "client",
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[allow(clippy::cast_precision_loss)] // milliseconds since start: far below 2^52
fn ms_to_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Bytes the kernel holds for the peer on socket `fd` (written, not yet acknowledged): the
/// backlog of a slow consumer. `None` if the kernel does not say.
fn queued_bytes(fd: RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for a TCP socket) writes one int through the pointer, which
    // points at a live local; the descriptor stays open while its entry is listed (the entry
    // is removed before the connection's socket is dropped).
    let done = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    (done == 0).then(|| u64::try_from(queued).unwrap_or(0))
}
