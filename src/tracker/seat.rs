//! A node's registration, from its accepted greeting to its leaving, as one value: a
//! [`Seat`] is taken (the name claimed across the cluster, then added to the registry) and
//! dropping it takes the node out of the registry and gives its name back, so no path of a
//! link can forget or reorder the cleanup. Also how a link ends ([`Ending`]) and the last
//! word that goes with it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::accept::{error_for, last_word, refuse};
use super::connections::{Conn, Origin};
use super::metrics::DropReason;
use super::peers::{Held, Peers, CUT_OFF};
use super::{ServerSeat, Shared};
use crate::connection::{self, WriteHalf};
use crate::error::Error;
use crate::protocol::{ErrorCode, Message, Name, CENTRAL};
use crate::transcript::{Event, Role};

/// A registered node. Dropped, it leaves the registry and its name is released.
pub(super) struct Seat {
    shared: Arc<Shared>,
    name: Name,
    /// A server's place in the registry; `None` for a client.
    server: Option<ServerSeat>,
    /// Its entry among the tracker's connections, and why it ended once that is known.
    conn: Arc<Conn>,
    why: Option<String>,
    /// How its name is held in the cluster.
    held: Held,
}

impl Seat {
    /// Registers a client: claims its name across the cluster, adds it here, and welcomes
    /// it. `None` once it was refused (it has been told why) or could not be welcomed.
    pub async fn for_client(
        shared: &Arc<Shared>,
        name: Name,
        origin: Origin,
        write: &mut WriteHalf,
    ) -> Option<Seat> {
        shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Client, node: name.clone() });
        let held = claim(shared, &name, write).await?;
        if !shared.add_client(&name) {
            return refuse_taken(shared, &name, write).await;
        }
        let conn = shared.connections.opened(&name, Role::Client, origin);
        let seat = Seat { shared: shared.clone(), name, server: None, conn, why: None, held };
        seat.welcome(Role::Client, write).await.then_some(seat)
    }

    /// Registers a server as [`Seat::for_client`] does a client; with the queries it will be
    /// asked from now on.
    pub async fn for_server(
        shared: &Arc<Shared>,
        name: Name,
        origin: Origin,
        write: &mut WriteHalf,
    ) -> Option<(Seat, broadcast::Receiver<Bytes>)> {
        shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Server, node: name.clone() });
        let held = claim(shared, &name, write).await?;
        let Some((server, queries)) = shared.add_server(&name) else {
            return refuse_taken(shared, &name, write).await;
        };
        let conn = shared.connections.opened(&name, Role::Server, origin);
        let seat = Seat { shared: shared.clone(), name, server: Some(server), conn, why: None, held };
        seat.welcome(Role::Server, write).await.then_some((seat, queries))
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Its entry among the tracker's connections.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The cluster term it registered in.
    pub fn term(&self) -> u64 {
        self.held.term
    }

    /// Whether the tracker may still act for this node: its name cannot have been given out
    /// elsewhere (always, alone).
    pub fn held(&self) -> bool {
        self.shared.peers.holds(self.held.term)
    }

    /// Resolves once the tracker may no longer serve this node (never, alone).
    pub async fn cut_off(&self) {
        self.shared.peers.cut_off(self.held.term).await;
    }

    /// The server's place in the registry (a client's seat has none).
    pub fn server(&self) -> Option<&ServerSeat> {
        self.server.as_ref()
    }

    async fn welcome(&self, role: Role, write: &mut WriteHalf) -> bool {
        let shared = &self.shared;
        shared.transcript.record_with(|| Event::WelcomeSent { role, node: self.name.clone() });
        let deadline_ms = u64::try_from(shared.config.deadline.as_millis()).unwrap_or(u64::MAX);
        let message =
            Message::Welcome { name: self.name.clone(), deadline_ms, replies: shared.config.replies };
        connection::write_message(write, &message).await.is_ok()
    }

    /// Leaves the registry (as dropping it does), then says the last word `ending` calls
    /// for: the name is free before the node hears `BYE`, so that it may register again
    /// elsewhere at once.
    pub async fn leave(mut self, write: &mut WriteHalf, ending: Ending) {
        let (shared, name) = (self.shared.clone(), self.name.clone());
        let role = if self.server.is_some() { Role::Server } else { Role::Client };
        self.why = Some(ending.why());
        drop(self);
        match ending {
            Ending::Left => {}
            Ending::Broken => shared.metrics.dropped(DropReason::ConnectionLost),
            Ending::Stopped | Ending::Drained => last_word(write, b"BYE\n").await,
            Ending::Dropped { last, reason, kind } => {
                shared.metrics.dropped(kind);
                if let Some((code, text)) = last {
                    refuse(&shared, write, name.as_str(), code, &text).await;
                }
                shared.transcript.record(Event::Dropped { role, node: name, reason });
            }
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        match &self.server {
            Some(server) => self.shared.remove_server(server),
            None => self.shared.remove_client(&self.name),
        }
        Peers::release(&self.shared, &self.name, self.held);
        let why = self.why.take().unwrap_or_else(|| "the tracker stopped".to_owned());
        self.shared.connections.closed(&self.conn, why);
    }
}

/// Claims `name` across the cluster: how it is held, or `None` once the node has been
/// refused.
async fn claim(shared: &Shared, name: &Name, write: &mut WriteHalf) -> Option<Held> {
    match shared.peers.claim(name).await {
        Ok(held) => Some(held),
        Err((code, text)) => {
            refuse(shared, write, name.as_str(), code, &text).await;
            None
        }
    }
}

async fn refuse_taken<T>(shared: &Shared, name: &Name, write: &mut WriteHalf) -> Option<T> {
    let text = if name.as_str() == CENTRAL {
        format!("the name {CENTRAL} is the tracker's")
    } else {
        format!("the name {name} is taken by a live node")
    };
    refuse(shared, write, name.as_str(), ErrorCode::NameTaken, &text).await;
    None
}

/// Why a node's connection ended.
pub(super) enum Ending {
    /// The node closed or said `BYE`.
    Left,
    /// The socket failed: there is nobody to tell.
    Broken,
    /// The tracker is stopping.
    Stopped,
    /// The tracker is stopping, and every request of this client has been answered.
    Drained,
    /// The node misbehaved or failed: send it this last `ERROR` (if any), and drop it for
    /// `reason` (`kind` in a word, for the metrics).
    Dropped { last: Option<(ErrorCode, String)>, reason: String, kind: DropReason },
}

impl Ending {
    /// Why the connection ended, in a few words, for `/connections`.
    fn why(&self) -> String {
        match self {
            Ending::Left => "it left (BYE, or closed its side)".to_owned(),
            Ending::Broken => "the connection was lost".to_owned(),
            Ending::Stopped => "the tracker stopped".to_owned(),
            Ending::Drained => "the tracker stopped, after answering its requests".to_owned(),
            Ending::Dropped { reason, .. } => format!("dropped: {reason}"),
        }
    }

    pub fn slow_consumer(why: &str) -> Ending {
        let reason = format!("{why} (a slow consumer)");
        Ending::Dropped {
            last: Some((ErrorCode::SlowConsumer, reason.clone())),
            reason,
            kind: DropReason::SlowConsumer,
        }
    }

    /// The ending for a node of a tracker that lost its place in its cluster.
    pub fn cut_off() -> Ending {
        Ending::Dropped {
            last: Some((ErrorCode::Internal, CUT_OFF.to_owned())),
            reason: CUT_OFF.to_owned(),
            kind: DropReason::CutOff,
        }
    }

    /// The ending for a read that failed with `e`.
    pub fn failed(e: &Error) -> Ending {
        let (code, text, _) = error_for(e);
        // A socket that failed (reset, or TCP keepalive finding the peer gone) is a lost
        // connection; anything else is the peer's line.
        let kind =
            if matches!(e, Error::Io(_)) { DropReason::ConnectionLost } else { DropReason::ProtocolError };
        Ending::Dropped { last: Some((code, text)), reason: e.to_string(), kind }
    }
}
