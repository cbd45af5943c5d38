//! The tracker's part in a cluster (docs/CLUSTER.md): a request from one of its clients is
//! asked of the other trackers too, and what they tell is gathered with its own servers'
//! replies; a request asked by another tracker goes to its own servers, and their matches
//! go back to the asking tracker once, when all have replied or just before the deadline.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::requests::{Done, Part};
use super::Shared;
use crate::cluster::Cluster;
use crate::hash::FastMap;
use crate::protocol::Name;
use crate::protocol::{Ask, Told};
use crate::shutdown::StopSignal;

/// How long asking the other trackers may take before a request goes without them.
const ASK_PATIENCE: Duration = Duration::from_millis(250);

/// What the other trackers have told about one request so far.
pub(super) struct Gather {
    /// When the request was asked of them: no tracker can have received it earlier.
    asked_at: Instant,
    /// Peers that have not yet told everything (all their servers replied).
    incomplete: HashSet<String>,
    /// Peers that have not told at all.
    pub silent: HashSet<String>,
    /// Their matching servers, by tracker, with how long after `asked_at` that tracker's
    /// lease surely holds.
    told: FastMap<String, (Duration, Vec<Name>)>,
    /// Servers they asked.
    pub asked: usize,
    done: Option<Done>,
}

impl Gather {
    /// Whether every peer asked has told, with all its servers replied.
    pub fn complete(&self) -> bool {
        self.incomplete.is_empty()
    }

    /// The names an answer sent now may carry: those of trackers whose lease surely still
    /// holds. A tracker whose lease may have lapsed (it was paused, or cut off) could have
    /// lost its nodes' names to other nodes: its names are left out, and it counts as
    /// silent.
    pub fn names_now(&mut self) -> Vec<Name> {
        let now = Instant::now();
        let mut names = Vec::new();
        for (tracker, (lease, told)) in self.told.drain() {
            if told.is_empty() || now < self.asked_at + lease {
                names.extend(told);
            } else {
                self.silent.insert(tracker.clone());
                self.incomplete.insert(tracker);
            }
        }
        names
    }
}

/// A tracker's membership of a cluster, with its requests out to the other trackers.
pub(super) struct Federation {
    pub cluster: Arc<Cluster>,
    next: AtomicU64,
    gathers: Mutex<FastMap<u64, Gather>>,
}

impl Federation {
    pub fn new(cluster: Arc<Cluster>) -> Federation {
        Federation { cluster, next: AtomicU64::new(1), gathers: Mutex::new(FastMap::default()) }
    }

    /// Asks the other trackers for `client`'s request, which ends at `deadline`. Returns the
    /// request's id among them; `done` fires once every live peer has told all (at once if
    /// there are none). `None` if NATS would not take it.
    pub async fn ask(&self, client: &Name, number: u8, deadline: Instant, done: Done) -> Option<u64> {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let peers: HashSet<String> = self.cluster.live_peers().into_iter().collect();
        let gather = Gather {
            asked_at: Instant::now(),
            incomplete: peers.clone(),
            silent: peers,
            told: FastMap::default(),
            asked: 0,
            done: Some(done),
        };
        let nobody = gather.complete();
        self.gathers.lock().insert(request, gather);
        if nobody {
            self.settle(request);
            return Some(request);
        }
        let deadline_ms =
            u64::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX);
        let ask =
            Ask { origin: self.cluster.id.clone(), request, client: client.clone(), number, deadline_ms };
        // NATS out of reach for long fills the client's buffer and would stall this client's
        // reading: past a moment the request goes to this tracker's servers alone.
        if !matches!(tokio::time::timeout(ASK_PATIENCE, self.cluster.ask(&ask)).await, Ok(Ok(()))) {
            self.gathers.lock().remove(&request);
            return None;
        }
        Some(request)
    }

    /// Fires a gather's receiver if every peer has told all.
    fn settle(&self, request: u64) {
        let mut gathers = self.gathers.lock();
        if let Some(gather) = gathers.get_mut(&request).filter(|g| g.complete()) {
            if let Some(done) = gather.done.take() {
                done.fire();
            }
        }
    }

    /// What the other trackers told about `request`, which is over; `None` if it was taken.
    pub fn take(&self, request: u64) -> Option<Gather> {
        self.gathers.lock().remove(&request)
    }

    /// Adds one peer's report. A report for a request already answered is dropped.
    fn told(&self, told: Told) {
        {
            let mut gathers = self.gathers.lock();
            let Some(gather) = gathers.get_mut(&told.request) else { return };
            // A tracker that was not waited for (not heard from lately when the request
            // went out) is welcome all the same: its names are right.
            let (lease, names) = gather.told.entry(told.tracker.clone()).or_default();
            *lease = (*lease).max(Duration::from_millis(told.lease_ms));
            names.extend(told.names);
            if !told.last {
                return;
            }
            gather.silent.remove(&told.tracker);
            gather.asked += told.asked;
            if told.complete {
                gather.incomplete.remove(&told.tracker);
            }
        }
        self.settle(told.request);
    }
}

/// Serves the cluster until `stop`: reports from the other trackers, and their requests.
pub(super) async fn serve(shared: Arc<Shared>, mut stop: StopSignal) {
    let Some(federation) = shared.peers.federation() else { return };
    let cluster = federation.cluster.clone();
    let (Ok(mut reports), Ok(mut asks)) = (cluster.reports().await, cluster.asks().await) else { return };
    loop {
        tokio::select! {
            report = reports.next() => match report {
                Some(message) => {
                    if let Some(told) = Told::decode(&message.payload) {
                        federation.told(told);
                    }
                }
                None => break,
            },
            asked = asks.next() => match asked {
                Some(message) => {
                    let (Some(ask), Some(reply)) = (Ask::decode(&message.payload), message.reply) else { continue };
                    if ask.origin == cluster.id {
                        continue;
                    }
                    shared.metrics.peer_request();
                    if shared.is_draining() {
                        // A stopping tracker takes no new requests: it tells at once that it
                        // has nothing, so that a peer that had not yet heard it is leaving
                        // does not wait for it.
                        let told = Told { request: ask.request, tracker: cluster.id.clone(), lease_ms: 0, last: true, complete: true, asked: 0, names: Vec::new() };
                        cluster.tell(reply, &told).await;
                        continue;
                    }
                    tokio::spawn(answer_peer(shared.clone(), ask, reply, stop.clone()));
                }
                None => break,
            },
            () = stop.requested() => break,
        }
    }
}

/// How often a tracker passes on its servers' new matches for another tracker's request.
const PASS_ON_EVERY: Duration = Duration::from_millis(20);
/// How often, at most, a tracker that has told matches for a request still open says that its
/// lease holds longer now (once per renewal).
const REFRESH_EVERY: Duration = crate::cluster::BEAT;

/// Asks this tracker's servers for another tracker's request, and tells it their matches as
/// they come, then its last word when all have replied or just before the deadline.
async fn answer_peer(shared: Arc<Shared>, ask: Ask, reply: async_nats::Subject, mut stop: StopSignal) {
    let Some(federation) = shared.peers.federation() else { return };
    let cluster = &federation.cluster;
    let received = Instant::now();
    // Whatever this tracker tells is told in the term it received the request in: once its
    // lease may have lapsed, its servers' names may be other nodes', and it tells no more.
    let term = shared.peers.term();
    let asked = shared.counts.borrow().0;
    let told = |last, names| {
        let lease = received.elapsed() + cluster.lease_left();
        Told {
            request: ask.request,
            tracker: cluster.id.clone(),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            last,
            complete: true,
            asked: 0,
            names,
        }
    };
    if !cluster.holds(term) {
        return;
    }
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let Some(id) = shared.fan_out(&ask.client, ask.number, Done::new(done, 0, Part::Local)) else {
        return cluster.tell(reply, &told(true, Vec::new())).await;
    };
    // The last word goes a little before the asking tracker's deadline, so that it arrives
    // in time.
    let deadline = Duration::from_millis(ask.deadline_ms);
    let margin = (deadline / 10).min(Duration::from_millis(200));
    let until = Instant::now() + deadline.saturating_sub(margin);
    let mut sent: HashSet<Name> = HashSet::new();
    let mut known = 0;
    let mut every = tokio::time::interval(PASS_ON_EVERY);
    let mut reported = Instant::now();
    loop {
        tokio::select! {
            _ = done_rx.recv() => break,
            () = tokio::time::sleep_until(until) => break,
            () = stop.requested() => break,
            _ = every.tick() => {}
        }
        let new = match shared.matched_beyond(id, known) {
            Some((count, names)) => {
                known = count;
                names.into_iter().filter(|name| sent.insert(name.clone())).collect()
            }
            // Nothing new, but the lease has been renewed since the last report: say so, so
            // that the names told so far may go in an answer sent later (the last word may
            // come too late for that when the trip between trackers is slow).
            None if !sent.is_empty() && reported.elapsed() >= REFRESH_EVERY => Vec::new(),
            None => continue,
        };
        if !cluster.holds(term) {
            shared.close(id);
            return;
        }
        cluster.tell(reply.clone(), &told(false, new)).await;
        reported = Instant::now();
    }
    let Some((request, listed)) = shared.close(id) else { return };
    if !cluster.holds(term) {
        return;
    }
    let mut last = told(true, listed.names.iter().filter(|name| !sent.contains(*name)).cloned().collect());
    last.complete = request.all_replied();
    last.asked = asked;
    let told_names = !sent.is_empty() || !last.names.is_empty();
    cluster.tell(reply.clone(), &last).await;
    // A last word that came early (every server replied) may wait at the asking tracker
    // until its deadline: its names count until then only if the lease is said to hold.
    while told_names && Instant::now() < until {
        tokio::select! {
            () = tokio::time::sleep_until((Instant::now() + REFRESH_EVERY).min(until)) => {}
            () = stop.requested() => return,
        }
        if !cluster.holds(term) {
            return;
        }
        cluster.tell(reply.clone(), &told(false, Vec::new())).await;
    }
}
