//! What library nodes tell their owners (lost the tracker, back, ended), carried to Python
//! without a runtime thread ever taking the GIL: the runtime puts each on one bounded queue
//! and, when the queue was empty, writes a byte to a socket that Python's watcher thread
//! reads (`matchtracker._watch`); that thread takes the queue and calls the callbacks and the
//! `matchtracker` logger. So a callback, or a logging handler, that blocks holds up nobody's
//! network, and the logging deadlock of a runtime thread waiting for the GIL cannot happen.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::live::{Happened, Tell};
use crate::protocol::Name;

/// Most happenings kept for Python at once; past it the oldest are dropped (and counted in
/// the logger's next line), so a Python that stopped reading costs no more memory.
const KEPT: usize = 1024;

/// The happenings not yet taken, and the socket that wakes the watcher.
struct Happenings {
    queue: VecDeque<(u64, Name, Happened)>,
    dropped: u64,
    /// The watcher's socket (the end the runtime writes), once Python has one.
    wake: Option<RawFd>,
}

static HAPPENINGS: Mutex<Happenings> =
    Mutex::new(Happenings { queue: VecDeque::new(), dropped: 0, wake: None });

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A key for a new node: how its happenings are told apart.
pub fn new_key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Where the node `key` (named `name`) tells what happens to it.
pub fn teller(key: u64, name: Name) -> Tell {
    Arc::new(move |happened| {
        let wake = {
            let mut happenings = HAPPENINGS.lock();
            if happenings.queue.len() == KEPT {
                happenings.queue.pop_front();
                happenings.dropped += 1;
            }
            happenings.queue.push_back((key, name.clone(), happened));
            happenings.wake.filter(|_| happenings.queue.len() == 1)
        };
        if let Some(fd) = wake {
            // SAFETY: one byte from a live buffer to a socket descriptor Python keeps open
            // for the life of the process; MSG_NOSIGNAL turns a closed reader into an
            // error rather than SIGPIPE, and a full socket (the watcher is behind) into
            // EAGAIN: either way the watcher takes the whole queue when it reads.
            unsafe {
                libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
            }
        }
    })
}

/// Starts Python's watcher thread if it is not running (`matchtracker._watch.start`).
///
/// # Errors
/// The watcher's, if it cannot start.
pub fn start_watcher(py: Python<'_>) -> PyResult<()> {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !STARTED.load(Ordering::Relaxed) {
        py.import("matchtracker._watch")?.call_method0("start")?;
        STARTED.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Gives the runtime the socket to wake Python's watcher with (its writing end, which the
/// watcher keeps open).
#[pyfunction]
pub fn _watch_with(fd: RawFd) {
    HAPPENINGS.lock().wake = Some(fd);
}

/// The happenings not yet taken: (node key, node name, kind, text), with kind `lost`, `back`
/// or `ended`; and how many were dropped since the last call because nobody took them.
#[pyfunction]
pub fn _take_happenings() -> (Vec<(u64, String, &'static str, String)>, u64) {
    let mut happenings = HAPPENINGS.lock();
    let taken = happenings
        .queue
        .drain(..)
        .map(|(key, name, happened)| {
            let (kind, text) = match happened {
                Happened::Lost(why) => ("lost", why),
                Happened::Back(at) => ("back", at),
                Happened::Ended(why) => ("ended", why),
            };
            (key, name.to_string(), kind, text)
        })
        .collect();
    (taken, std::mem::take(&mut happenings.dropped))
}
