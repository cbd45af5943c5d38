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
    fn from(gather: Gather) -> Heard {
        Heard {
            complete: gather.complete(),
            asked: gather.asked,
            silent: gather.silent.len(),
            names: gather.names,
        }
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
        let standing = *federation.cluster.standing().borrow();
        Some((federation.cluster.live_peers().len(), standing))
    }

    /// The cluster's side, for the tasks that serve it.
    pub fn federation(&self) -> Option<&Federation> {
        match self {
            Peers::Alone => None,
            Peers::Cluster(federation) => Some(federation),
        }
    }

    /// Takes `name` across the cluster for a node registering here; the refusal to send
    /// otherwise. A name held by another node of this tracker counts as taken here, and is
    /// refused by the local registry next.
    pub async fn claim(&self, name: &Name) -> Result<(), (ErrorCode, String)> {
        let Some(federation) = self.federation().filter(|_| name.as_str() != CENTRAL) else { return Ok(()) };
        if !*federation.cluster.standing().borrow() {
            return Err((ErrorCode::Internal, CUT_OFF.to_owned()));
        }
        match federation.cluster.claim(name).await {
            Ok(Claim::Ours) => Ok(()),
            Ok(Claim::Taken) => {
                Err((ErrorCode::NameTaken, format!("the name {name} is taken by a live node")))
            }
            Err(e) => Err((ErrorCode::Internal, e.to_string())),
        }
    }

    /// Gives `name` back to the cluster once its node has left, unless another node of the
    /// same name has registered here meanwhile.
    pub fn release(shared: &Arc<Shared>, name: &Name) {
        if let Peers::Cluster(_) = shared.peers {
            let (shared, name) = (shared.clone(), name.clone());
            tokio::spawn(async move {
                if let Some(federation) = shared.peers.federation().filter(|_| !shared.holds(&name)) {
                    federation.cluster.release(&name).await;
                }
            });
        }
    }

    /// Resolves when this tracker loses its place in its cluster (never, alone): then it must
    /// serve no node, whose name another tracker may soon give out.
    pub async fn cut_off(&self) {
        match self.federation() {
            Some(federation) => {
                let mut standing = federation.cluster.standing();
                // The sender lives as long as the tracker: an error is the tracker going away.
                let _ = standing.wait_for(|standing| !standing).await;
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
