//! The crate's one error type. Everything inside returns it; `python.rs` maps it to Python
//! exceptions in one place, and the command line maps it to a message and an exit code.

use std::fmt;
use std::io;

use crate::protocol::{ErrorCode, ProtocolError};

/// What went wrong, in terms a caller can act on.
#[derive(Debug)]
pub enum Error {
    /// A caller passed a value outside its allowed range; the text names it and the range.
    InvalidArgument(String),
    /// The run needs more open files than this process may have.
    TooManyFiles { needed: u64, available: u64 },
    /// The run needs more local ports than outgoing connections may use.
    TooFewPorts { needed: u64, available: u64 },
    /// The peer sent a line that is not a valid message.
    Protocol(ProtocolError),
    /// The peer sent a valid message that has no place at this point of the conversation.
    Unexpected(String),
    /// The tracker refused us with an `ERROR` line.
    Refused { code: ErrorCode, text: String },
    /// The peer closed the connection (or said `BYE`).
    Closed,
    /// Waiting for the peer took longer than allowed; the text says for what.
    Timeout(String),
    /// A socket operation failed.
    Io(io::Error),
    /// A TLS handshake failed; the text says why and what to do about it.
    Tls(String),
    /// The cluster of trackers (NATS, or its key-value store) failed; the text says how.
    Cluster(String),
    /// A node stopped trying to reach its tracker; the text says where and why.
    GaveUp(String),
    /// A task panicked; the panic was caught and turned into this.
    Panic(String),
    /// The node was used after `close()`.
    NodeClosed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(text) | Error::GaveUp(text) => f.write_str(text),
            Error::TooManyFiles { needed, available } => write!(
                f,
                "this run needs about {needed} open files but only {available} are available \
                 (raise `ulimit -n` or use a smaller n)"
            ),
            Error::TooFewPorts { needed, available } => write!(
                f,
                "this run connects from {needed} local ports but only {available} are allowed \
                 (net.ipv4.ip_local_port_range; widen it or use a smaller n)"
            ),
            Error::Protocol(e) => write!(f, "malformed message: {e}"),
            Error::Unexpected(text) => write!(f, "unexpected message: {text}"),
            Error::Refused { code, text } => write!(f, "refused by the tracker: {code}: {text}"),
            Error::Closed => f.write_str("the connection was closed by the other side"),
            Error::Timeout(what) => write!(f, "timed out {what}"),
            Error::Io(e) => write!(f, "network error: {e}"),
            Error::Tls(text) => write!(f, "TLS: {text}"),
            Error::Cluster(text) => write!(f, "cluster: {text}"),
            Error::Panic(text) => write!(f, "internal error (a task panicked): {text}"),
            Error::NodeClosed => f.write_str("this node is closed"),
        }
    }
}

impl Error {
    /// The protocol's code for this error: the tracker's, for a refusal; the codec's, for a
    /// malformed line.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            Error::Protocol(e) => Some(e.code()),
            _ => None,
        }
    }

    /// The same failure again, for another request on the same connection: a connection
    /// that fails fails every request on it. (`Error` holds an `io::Error`, which cannot be
    /// cloned; a socket failure is reported to the others as the connection closed.)
    #[must_use]
    pub fn same_failure(&self) -> Error {
        match self {
            Error::Refused { code, text } => Error::Refused { code: *code, text: text.clone() },
            Error::Protocol(e) => Error::Protocol(*e),
            Error::Unexpected(text) => Error::Unexpected(text.clone()),
            Error::Tls(text) => Error::Tls(text.clone()),
            Error::Cluster(text) => Error::Cluster(text.clone()),
            Error::NodeClosed => Error::NodeClosed,
            _ => Error::Closed,
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Panic(e.to_string())
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
