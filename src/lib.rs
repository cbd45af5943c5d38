//! matchtracker: a central tracker over TCP that fans each client's match request out to
//! every server and gathers the replies within a deadline.
//!
//! The modules, from the wire up:
//! - [`protocol`]: messages and their text-line encoding; no I/O.
//! - [`connection`]: reading messages from and writing lines to a socket.
//! - [`tls`]: certificates, and TLS handshake failures in words.
//! - [`tracker`]: the central tracker: registry, fan-out, deadline-bounded gather.
//! - [`cluster`]: trackers acting as one Central over NATS.
//! - [`server`], [`client`]: the two kinds of node; [`node`] holds what they share, and
//!   [`session`] a client's protocol state with no I/O in it, which both clients drive;
//!   [`live`]: nodes that outlive their tracker (reconnection), for the roles and the library.
//! - [`bench`]: the closed-loop load benchmark.
//! - [`roles`]: a tracker, server or client running on its own, across processes and hosts.
//! - [`simulation`]: the assignment's run: a tracker, n servers, n clients, rounds.
//! - [`report`]: what a run decided, and its summary.
//! - [`transcript`]: the events of a run and their printed lines.
//! - [`limits`]: the open-files limit and the local port range.
//! - [`args`]: the values callers pass in, each checked in one place.
//! - [`shutdown`]: stopping, from the owner of a set of tasks to each of them.
//! - [`hash`]: a fast hasher for keys the program makes itself.
//! - [`error`]: the one error type.
//! - `python` (feature `python`): the only module that knows about Python.

// What `cargo clippy -- -W clippy::pedantic` asks that is not taken, and why:
// - `must_use_candidate`: most candidates are getters of plain values, where a result left
//   unused is harmless; the few whose result matters say so in their names and docs.
// - `single_match_else`: `match` on a result with an `Ok` arm and an `Err` arm reads as the
//   two outcomes side by side, which `if let ... else` hides.
#![allow(clippy::must_use_candidate, clippy::single_match_else)]

pub mod args;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod hash;
pub mod limits;
pub mod live;
pub mod node;
pub mod protocol;
pub mod report;
pub mod roles;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod simulation;
pub mod tls;
pub mod tracker;
pub mod transcript;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
