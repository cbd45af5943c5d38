//! Trackers acting as one Central over NATS (docs/CLUSTER.md). This module is the NATS side:
//! joining the cluster, who is alive, and the cluster-wide names; the lines trackers send
//! each other are encoded and parsed in `protocol` (`Ask`, `Told`, `Beat`). What a tracker
//! does with a request from another tracker lives with the tracker (`tracker::federation`).
//!
//! Subjects, under `mt.<cluster name>`:
//! - `.ask`: `ASK <origin> <request> <client> <number> <deadline ms>`, published once by the
//!   tracker a client asked; every other tracker asks its own servers.
//! - `.told.<origin>`: `TOLD <request> <tracker> <lease ms> <complete 0|1> <servers asked>
//!   [names...]`, each tracker's last word on the request (when all its servers replied, or
//!   just before the deadline), and before it `SOME <request> <tracker> <lease ms> [names...]`
//!   as its servers match, so that a match reaches the asking tracker at once whenever it
//!   comes; `<lease ms>` says how long the names count (see `protocol::Told`).
//! - `.alive`: `ALIVE <tracker>` every [`BEAT`], so each tracker knows whom to wait for, and
//!   `LEAVING <tracker>` once from a tracker that is stopping: it is no longer waited for.
//!
//! Names live in the JetStream key-value bucket `mt-<name>-names` (name → owning tracker),
//! each tracker holding a lease in `mt-<name>-trackers` that it renews every [`BEAT`] and that
//! expires [`LEASE`] after its last renewal: a name whose owner's lease has expired is free.
//! Both are read from the buckets' leaders, and a name is written only on its revision (see
//! [`Cluster::claim`]). A tracker acts for its nodes only while [`Cluster::holds`] their term.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::protocol::{Ask, Beat, Name, Told};
use crate::shutdown::StopSignal;
use crate::transcript::{Event, Transcript};

/// How often a tracker says it is alive and renews its lease.
pub const BEAT: Duration = Duration::from_millis(500);
/// How long a tracker's lease (and so its names) outlives its last renewal.
pub const LEASE: Duration = Duration::from_secs(2);
/// A tracker stops serving its nodes once this long has passed since it sent its last lease
/// renewal that JetStream acknowledged: well before the lease can expire (it runs from when
/// JetStream stored the renewal, which is later), so no other tracker can hand out the
/// name of a node it still serves.
const FENCE: Duration = Duration::from_millis(1200);
/// How long one renewal may take before it counts as failed.
const RENEW_PATIENCE: Duration = Duration::from_millis(400);
/// A peer not heard from for this long is not waited for.
const PEER_SILENCE: Duration = Duration::from_secs(3);
/// How long joining waits for JetStream (a cluster electing its leader after start).
const JOIN_PATIENCE: Duration = Duration::from_secs(15);

/// Which NATS cluster to join, and under what name.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers, e.g. `nats://10.0.0.1:4222`; any one is enough, the client learns the rest.
    pub urls: Vec<String>,
    /// Trackers with the same name (and NATS) are one Central.
    pub name: String,
}

impl ClusterConfig {
    /// Checks the name and the urls.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad value.
    pub fn new(urls: Vec<String>, name: &str) -> Result<ClusterConfig> {
        if name.is_empty()
            || name.len() > 32
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidArgument(format!(
                "cluster name must be 1 to 32 characters from A-Z a-z 0-9 _ - (got {name:?})"
            )));
        }
        if urls.is_empty() {
            return Err(Error::InvalidArgument("a cluster needs at least one NATS url".into()));
        }
        for url in &urls {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| Error::InvalidArgument(format!("{url:?} is not a NATS url: {e}")))?;
        }
        Ok(ClusterConfig { urls, name: name.to_owned() })
    }
}

/// Whether a name could be had.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// It is this tracker's now, at this revision of the name (its fencing token).
    Ours(u64),
    /// A live tracker holds it.
    Taken,
}

/// Whether a tracker holds its lease, and its term: the number of times it has lost it so
/// far. A node is served only in the term it registered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub term: u64,
    pub holding: bool,
}

/// This tracker's membership of a cluster.
pub struct Cluster {
    /// This tracker's id, fresh at every start.
    pub id: String,
    nats: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    names: kv::Store,
    leases: kv::Store,
    /// Peers by id, with when each was last heard from.
    peers: Mutex<FastMap<String, Instant>>,
    /// Whether this tracker holds a lease it has renewed lately, and how many times it has
    /// lost it: while it does not hold it, it serves no nodes (it cannot keep their names),
    /// and a node registered before a loss is served no more.
    standing: watch::Sender<Standing>,
    /// When the last renewal that JetStream acknowledged was sent, in nanoseconds since
    /// `born`: the lease's age by the monotonic clock, whatever the timers managed to run.
    renewed: AtomicU64,
    born: Instant,
    /// Set once this tracker has said it is leaving: it says `ALIVE` no more.
    leaving: AtomicBool,
}

impl Cluster {
    /// Connects to NATS and opens (or makes) the cluster's buckets, waiting a while for
    /// JetStream to be ready.
    ///
    /// # Errors
    /// [`Error::Cluster`] if NATS cannot be reached or JetStream does not answer in time.
    pub async fn join(config: &ClusterConfig) -> Result<Cluster> {
        let failed = |what: &str, e: &dyn std::fmt::Display| Error::Cluster(format!("{what}: {e}"));
        let addrs: Vec<async_nats::ServerAddr> = config.urls.iter().filter_map(|u| u.parse().ok()).collect();
        let nats = tokio::time::timeout(
            JOIN_PATIENCE,
            async_nats::ConnectOptions::new()
                .name("matchtracker tracker")
                .retry_on_initial_connect()
                .connect(addrs),
        )
        .await
        .map_err(|_| Error::Cluster(format!("no NATS server answered at {}", config.urls.join(", "))))?
        .map_err(|e| failed("cannot connect to NATS", &e))?;
        let js = jetstream::new(nats.clone());
        let prefix = format!("mt.{}", config.name);
        let names = bucket(&js, &format!("mt-{}-names", config.name), None).await?;
        let leases = bucket(&js, &format!("mt-{}-trackers", config.name), Some(LEASE)).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let standing = watch::channel(Standing { term: 0, holding: true }).0;
        let peers = Mutex::new(FastMap::default());
        let born = Instant::now();
        let cluster = Cluster {
            id,
            nats,
            js,
            prefix,
            names,
            leases,

            peers,
            standing,
            renewed: AtomicU64::new(0),
            born,
            leaving: AtomicBool::new(false),
        };
        // A bucket another tracker has just made may take a moment to elect its leader.
        let until = Instant::now() + JOIN_PATIENCE;
        loop {
            let sent = Instant::now();
            match cluster.renew().await {
                Ok(()) => {
                    cluster.renewed_at(sent);
                    return Ok(cluster);
                }
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    fn subject(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }

    /// Renews this tracker's lease.
    async fn renew(&self) -> Result<()> {
        self.leases
            .put(&self.id, Bytes::new())
            .await
            .map(drop)
            .map_err(|e| Error::Cluster(format!("cannot renew this tracker's lease: {e}")))
    }

    /// Says it is alive and renews its lease every [`BEAT`], and keeps the table of peers,
    /// until `stop`. On stop it gives the lease up, so its names are free at once.
    ///
    /// The lease is renewed apart from the beat: JetStream may take seconds to answer while
    /// it elects a new leader (a NATS server died), and the peers must keep hearing this
    /// tracker meanwhile.
    pub async fn keep_alive(self: Arc<Self>, transcript: Transcript, mut stop: StopSignal) {
        let Ok(mut heard) = self.nats.subscribe(self.subject("alive")).await else { return };
        let renewing = tokio::spawn(self.clone().keep_lease(transcript.clone(), stop.clone()));
        let mut beat = tokio::time::interval(BEAT);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if !self.leaving.load(Ordering::Relaxed) {
                        let _ = self.nats.publish(self.subject("alive"), Beat::Alive(self.id.clone()).encode()).await;
                    }
                    let mut peers = self.peers.lock();
                    peers.retain(|peer, seen| {
                        let alive = seen.elapsed() < PEER_SILENCE;
                        if !alive {
                            transcript.record(Event::TrackerLeft { tracker: peer.clone() });
                        }
                        alive
                    });
                }
                message = heard.next() => {
                    let Some(message) = message else { break };
                    match Beat::decode(&message.payload) {
                        Some(Beat::Alive(peer))
                            if peer != self.id && self.peers.lock().insert(peer.clone(), Instant::now()).is_none() =>
                        {
                            transcript.record(Event::TrackerJoined { tracker: peer });
                        }
                        Some(Beat::Leaving(peer)) if self.peers.lock().remove(&peer).is_some() => {
                            transcript.record(Event::TrackerLeft { tracker: peer });
                        }
                        _ => {}
                    }
                }
                () = stop.requested() => break,
            }
        }
        let _ = renewing.await;
        let _ = self.leases.purge(&self.id).await;
    }

    /// Renews the lease every [`BEAT`] until `stop`. A missed renewal is made up by the next;
    /// past [`FENCE`] without one, the tracker loses its standing (and drops its nodes) until
    /// a renewal goes through again. A renewal that comes after such a gap (the process was
    /// paused, say, and no timer ran meanwhile) ends the term all the same: the lease may have
    /// expired in the gap and the names of its nodes been given out.
    async fn keep_lease(self: Arc<Self>, transcript: Transcript, mut stop: StopSignal) {
        let mut beat = tokio::time::interval(BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said = *self.standing.borrow();
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                () = stop.requested() => break,
            }
            let sent = Instant::now();
            let renewed = matches!(tokio::time::timeout(RENEW_PATIENCE, self.renew()).await, Ok(Ok(())));
            if self.lease_age() >= FENCE {
                self.lapse();
            }
            if renewed {
                self.renewed_at(sent);
                self.standing.send_if_modified(|now| !std::mem::replace(&mut now.holding, true));
            }
            // Said as it changed, a loss even if the standing came back before this task ran.
            let now = *self.standing.borrow();
            if now != said {
                if said.holding {
                    transcript.record(Event::Standing { standing: false });
                }
                if now.holding {
                    transcript.record(Event::Standing { standing: true });
                }
                said = now;
            }
        }
    }

    /// Notes a renewal sent at `sent` that JetStream acknowledged.
    fn renewed_at(&self, sent: Instant) {
        let nanos = u64::try_from(sent.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX);
        self.renewed.fetch_max(nanos, Ordering::Relaxed);
    }

    /// How long ago the last acknowledged renewal was sent, by the monotonic clock.
    fn lease_age(&self) -> Duration {
        self.born.elapsed().saturating_sub(Duration::from_nanos(self.renewed.load(Ordering::Relaxed)))
    }

    /// Ends the term: the tracker no longer holds its lease. True if it held it until now.
    fn lapse(&self) -> bool {
        self.standing.send_if_modified(|now| {
            let was = now.holding;
            if was {
                *now = Standing { term: now.term + 1, holding: false };
            }
            was
        })
    }

    /// Whether this tracker may act on a node registered in `term`: by the monotonic clock,
    /// its lease is younger than `FENCE` (1.2 s, so it cannot have expired), and it has not lost
    /// it since. Checked where each decision is taken (a name granted, a request read, a
    /// query written, an answer or a report sent), since after a pause work queued in the
    /// sockets may run before the timer that would have stopped the tracker.
    pub fn holds(&self, term: u64) -> bool {
        if self.lease_age() >= FENCE {
            self.lapse();
            return false;
        }
        let now = *self.standing.borrow();
        now.holding && now.term == term
    }

    /// How much longer, at least, the lease lasts: a name of one of this tracker's nodes is
    /// not given out elsewhere before then.
    pub fn lease_left(&self) -> Duration {
        LEASE.saturating_sub(self.lease_age())
    }

    /// Tells the other trackers that this one is stopping, so that no request of theirs
    /// waits for it from now on; it says `ALIVE` no more. Its lease stays until it stops, so
    /// the names of its nodes are kept until they leave.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        let _ = self.nats.publish(self.subject("alive"), Beat::Leaving(self.id.clone()).encode()).await;
        let _ = self.nats.flush().await;
    }

    /// Whether this tracker holds its lease, and its term, as they change.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    /// The peers heard from lately: the trackers a request waits for.
    pub fn live_peers(&self) -> Vec<String> {
        let peers = self.peers.lock();
        peers.iter().filter(|(_, seen)| seen.elapsed() < PEER_SILENCE).map(|(id, _)| id.clone()).collect()
    }

    /// Asks the other trackers.
    ///
    /// # Errors
    /// [`Error::Cluster`] if NATS does not take it.
    pub async fn ask(&self, ask: &Ask) -> Result<()> {
        let reply = self.subject(&format!("told.{}", self.id));
        self.nats
            .publish_with_reply(self.subject("ask"), reply, ask.encode())
            .await
            .map_err(|e| Error::Cluster(format!("cannot ask the other trackers: {e}")))
    }

    /// Answers an `ASK` from another tracker on `reply`.
    pub async fn tell(&self, reply: async_nats::Subject, told: &Told) {
        // A report that cannot be sent leaves that request incomplete at its origin, which
        // its deadline covers.
        let _ = self.nats.publish(reply, told.encode()).await;
    }

    /// Every `ASK` from the other trackers, with the subject to answer it on.
    ///
    /// # Errors
    /// [`Error::Cluster`] if the subscription fails.
    pub async fn asks(&self) -> Result<async_nats::Subscriber> {
        self.nats.subscribe(self.subject("ask")).await.map_err(|e| Error::Cluster(e.to_string()))
    }

    /// Every `TOLD` sent to this tracker.
    ///
    /// # Errors
    /// [`Error::Cluster`] if the subscription fails.
    pub async fn reports(&self) -> Result<async_nats::Subscriber> {
        self.nats
            .subscribe(self.subject(&format!("told.{}", self.id)))
            .await
            .map_err(|e| Error::Cluster(e.to_string()))
    }

    /// Takes `name` for a node registering here, unless a live tracker holds it.
    ///
    /// Nothing is decided on a plain read of the bucket: those may come from any replica,
    /// and one that lags gives an old value. The name is read from the bucket's leader, and
    /// it is this tracker's only through a write that the leader accepts only if nothing in
    /// the bucket has changed since that read. (JetStream's per-key compare-and-set is not
    /// serialized in a clustered stream on nats-server 2.9, nats-server#4320: with it, two
    /// trackers took one name at once. The check on the whole stream's last sequence is.)
    ///
    /// # Errors
    /// [`Error::Cluster`] if the bucket cannot be reached (a partition, JetStream down), or
    /// is so busy that the write never finds it unchanged.
    pub async fn claim(&self, name: &Name) -> Result<Claim> {
        let mut lost_at = None;
        for _ in 0..WRITE_TRIES {
            let entry = latest(&self.names, name.as_str()).await.map_err(|e| unreachable(&e))?;
            let revision = entry.as_ref().map_or(0, |entry| entry.revision);
            // Another tracker's write on the same revision won and is not stored yet: it is
            // that tracker's.
            if lost_at == Some(revision) || self.held_elsewhere(entry.as_ref()).await? {
                return Ok(Claim::Taken);
            }
            // Free, ours already (a node of ours left and its release has not gone through),
            // or its owner's lease has lapsed: take it, unless it changed since the read.
            match self.write_name(name, Some(&self.id), revision).await? {
                Some(written) => return Ok(Claim::Ours(written)),
                None => lost_at = Some(revision),
            }
        }
        Err(Error::Cluster("the cluster's names are too busy to be written; try again".into()))
    }

    /// Whether `entry` gives the name to another tracker whose lease is alive.
    async fn held_elsewhere(&self, entry: Option<&Latest>) -> Result<bool> {
        match entry.and_then(|entry| entry.owner.as_deref()) {
            Some(owner) if owner != self.id => self.lease_alive(owner).await.map_err(|e| unreachable(&e)),
            _ => Ok(false),
        }
    }

    /// Whether tracker `owner` holds its lease, as the leases bucket's leader sees it.
    async fn lease_alive(&self, owner: &str) -> std::result::Result<bool, LastRawMessageError> {
        Ok(latest(&self.leases, owner).await?.is_some_and(|entry| entry.owner.is_some()))
    }

    /// Gives `name` back when its node leaves, if the name still has the `revision` this
    /// node's claim wrote (its fencing token): not if another tracker took it over, nor if
    /// another node of this tracker has claimed it again since.
    pub async fn release(&self, name: &Name, revision: u64) {
        if let Ok(Some(entry)) = latest(&self.names, name.as_str()).await {
            if entry.revision == revision && entry.owner.as_deref() == Some(self.id.as_str()) {
                // Given back, or changed meanwhile, or the bucket out of reach (the lease
                // covers the name then): either way there is nothing more to do.
                let _ = self.write_name(name, None, revision).await;
            }
        }
    }

    /// Writes `name`'s owner (`None`: deletes it) if the name is still at `revision` (0: it
    /// has never been written): the new revision, or `None` if it has changed.
    ///
    /// On nats-server 2.9 the per-key condition alone lets two writes based on the same
    /// revision both through when they are in flight together (nats-server#4320). Each write
    /// also carries the id `take <name>@<revision>` (or `give ...`), and JetStream keeps one
    /// message per id (it
    /// answers any other with the first's sequence, marked a duplicate): so of all writes
    /// based on one revision, one is stored.
    async fn write_name(&self, name: &Name, owner: Option<&str>, revision: u64) -> Result<Option<u64>> {
        let mut headers = async_nats::HeaderMap::new();
        headers
            .insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, revision.to_string().as_str());
        // A take and a give-back based on one revision must not pass for each other.
        let verb = if owner.is_some() { "take" } else { "give" };
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{verb} {name}@{revision}").as_str());
        if owner.is_none() {
            headers.insert("KV-Operation", "DEL");
        }
        let subject = format!("{}{name}", self.names.prefix);
        let payload = Bytes::from(owner.unwrap_or_default().to_owned());
        let ack = match self.js.publish_with_headers(subject, headers, payload).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) if ack.duplicate => Ok(None),
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(unreachable(&e)),
        }
    }
}

/// How many times a write to the names bucket is tried when others keep changing it.
const WRITE_TRIES: usize = 50;

fn unreachable(e: &dyn std::fmt::Display) -> Error {
    Error::Cluster(format!("the cluster's names cannot be reached: {e}"))
}

/// A key's last entry, as the bucket's leader has it.
struct Latest {
    /// The value of a put (a name's owner; any value for a lease), or `None` for a delete or
    /// purge marker.
    owner: Option<String>,
    revision: u64,
}

/// Reads `key` from the leader of `store`'s stream (a replica may lag); `None` if the key
/// has never been written, or its last entry has expired.
async fn latest(store: &kv::Store, key: &str) -> std::result::Result<Option<Latest>, LastRawMessageError> {
    let subject = format!("{}{key}", store.prefix);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let put = message.headers.get("KV-Operation").is_none_or(|op| op.as_str() == "PUT");
            let owner = put.then(|| String::from_utf8_lossy(&message.payload).into_owned());
            Ok(Some(Latest { owner, revision: message.sequence }))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The bucket `name`, made if it is not there yet; entries expire after `max_age` if given.
async fn bucket(js: &jetstream::Context, name: &str, max_age: Option<Duration>) -> Result<kv::Store> {
    let until = Instant::now() + JOIN_PATIENCE;
    loop {
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(store);
        }
        let mut last = String::new();
        // Three copies where the cluster has three servers; one on a single server.
        for replicas in [3, 1] {
            let config = kv::Config {
                bucket: name.to_owned(),
                history: 1,
                max_age: max_age.unwrap_or_default(),
                storage: jetstream::stream::StorageType::Memory,
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(store) => return Ok(store),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() >= until {
            return Err(Error::Cluster(format!(
                "JetStream did not make the bucket {name} (is nats-server running with -js?): {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_and_urls_are_checked() {
        assert!(ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "mt_1-a").is_ok());
        assert!(ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "a b").is_err());
        assert!(ClusterConfig::new(vec![], "x").is_err());
    }
}
