//! The one seam between the tracker and its cluster: [`Peers`] is `Alone` for a tracker on its
//! own (every method does nothing, or answers as if the cluster agreed) or `Cluster` for one
//! of several trackers acting as one Central. The request path calls these methods and never
//! looks at the cluster itself; what the cluster does lives in `federation` and
//! `crate::cluster`.

use std::sync::Arc;

use tokio::time::Instant;

use super::federation::{Federation, Gather};
use super::requests::Done;
use super::Shared;
use crate::cluster::{Claim, Cluster};
use crate::protocol::{ErrorCode, Name, CENTRAL};

/// Why a tracker cut off from its cluster's names refuses and drops nodes.
pub(super) const CUT_OFF: &str = "this tracker is cut off from its cluster for now; register with another";

/// How a node's name is held: the cluster term it registered in (it is served while the
/// tracker [`Peers::holds`] it), and the revision its claim wrote in the cluster's names, its
/// fencing token (`None` alone).
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub term: u64,
    revision: Option<u64>,
}

/// The other trackers, if any.
pub(super) enum Peers {
    Alone,
    Cluster(Federation),
}

/// What the other trackers told about one request, as the end of a request needs it.
pub(super) struct Heard {
    /// Their matching servers.
    pub names: Vec<Name>,
    /// Whether every tracker waited for told all, with every server it asked replied.
    pub complete: bool,
    /// How many servers they asked.
    pub asked: usize,
    /// How many trackers waited for never told.
    pub silent: usize,
}

impl From<Gather> for Heard {
    /// What the answer, sent now, takes from the other trackers.
    fn from(mut gather: Gather) -> Heard {
        let names = gather.names_now();
        Heard { complete: gather.complete(), asked: gather.asked, silent: gather.silent.len(), names }
    }
}

impl Peers {
    pub fn new(cluster: Option<Arc<Cluster>>) -> Peers {
        match cluster {
            Some(cluster) => Peers::Cluster(Federation::new(cluster)),
            None => Peers::Alone,
        }
    }

    /// In a cluster: the other trackers heard from lately, and whether this tracker holds
    /// its lease (may give out names). `None` alone.
    pub fn standing(&self) -> Option<(usize, bool)> {
        let federation = self.federation()?;
        let holding = federation.cluster.holds(federation.cluster.standing().borrow().term);
        Some((federation.cluster.live_peers().len(), holding))
    }

    /// The cluster's side, for the tasks that serve it.
    pub fn federation(&self) -> Option<&Federation> {
        match self {
            Peers::Alone => None,
            Peers::Cluster(federation) => Some(federation),
        }
    }

    /// The term a node registering now is registered in (always 0 alone): it is served
    /// while [`Peers::holds`] that term.
    pub fn term(&self) -> u64 {
        self.federation().map_or(0, |federation| federation.cluster.standing().borrow().term)
    }

    /// Whether this tracker may act for a node registered in `term`: always alone; in a
    /// cluster, while its lease is fresh by the monotonic clock and has not lapsed since.
    pub fn holds(&self, term: u64) -> bool {
        self.federation().is_none_or(|federation| federation.cluster.holds(term))
    }

    /// Takes `name` across the cluster for a node registering here: how it is held, or the
    /// refusal to send. A name held by another node of this tracker counts as taken here, and
    /// is refused by the local registry next.
    pub async fn claim(&self, name: &Name) -> Result<Held, (ErrorCode, String)> {
        let term = self.term();
        let Some(federation) = self.federation().filter(|_| name.as_str() != CENTRAL) else {
            return Ok(Held { term, revision: None });
        };
        let cut_off = || (ErrorCode::Internal, CUT_OFF.to_owned());
        if !federation.cluster.holds(term) {
            return Err(cut_off());
        }
        match federation.cluster.claim(name).await {
            // The lease may have lapsed while the name was being taken (the process paused):
            // then the name is not this tracker's to give.
            Ok(Claim::Ours(_)) if !federation.cluster.holds(term) => Err(cut_off()),
            Ok(Claim::Ours(revision)) => Ok(Held { term, revision: Some(revision) }),
            Ok(Claim::Taken) => {
                Err((ErrorCode::NameTaken, format!("the name {name} is taken by a live node")))
            }
            Err(e) => Err((ErrorCode::Internal, e.to_string())),
        }
    }

    /// Gives `name` back to the cluster once its node has left, if its claim's revision is
    /// still the name's.
    pub fn release(shared: &Arc<Shared>, name: &Name, held: Held) {
        let Some(revision) = held.revision else { return };
        let (shared, name) = (shared.clone(), name.clone());
        tokio::spawn(async move {
            if let Some(federation) = shared.peers.federation() {
                federation.cluster.release(&name, revision).await;
            }
        });
    }

    /// Resolves when this tracker may no longer serve a node registered in `term` (never,
    /// alone): it lost its place in its cluster, and another tracker may soon give out the
    /// node's name.
    pub async fn cut_off(&self, term: u64) {
        match self.federation() {
            Some(federation) => {
                let mut standing = federation.cluster.standing();
                // The sender lives as long as the tracker: an error is the tracker going away.
                let _ = standing.wait_for(|now| !now.holding || now.term != term).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Asks the other trackers for `client`'s request, which ends at `deadline`; `done`
    /// fires once all have told. The request's id among them, or `None` (alone, or NATS
    /// would not take it).
    pub async fn ask(&self, client: &Name, number: u8, deadline: Instant, done: Done) -> Option<u64> {
        self.federation()?.ask(client, number, deadline, done).await
    }

    /// What the other trackers told about request `remote`, which is over.
    pub fn take(&self, remote: Option<u64>) -> Option<Heard> {
        Some(self.federation()?.take(remote?)?.into())
    }

    /// Tells the other trackers that this one is stopping (nothing, alone).
    pub async fn leave(&self) {
        if let Some(federation) = self.federation() {
            federation.cluster.leave().await;
        }
    }
}
