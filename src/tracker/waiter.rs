//! One client's open requests, waited for by its connection: each ends when every part of
//! it has heard from everyone it asked (this tracker's servers, the other trackers of a
//! cluster), or at its deadline, whichever is first. No task per request: the connection
//! waits for the next [`Waiting::next`] beside its reading.
//!
//! Every request of a tracker has the same deadline, counted from when it was read, so the
//! deadlines come in the order the requests were read, and a queue in that order is all the
//! timer a connection needs. Requests that end at the same moment are so answered in the
//! order they were read.
//!
//! [`end_of`] is the decision of how a request ended, a pure function.

use std::collections::VecDeque;

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::requests::{Done, Part};
use crate::hash::FastMap;
use crate::protocol::End;

/// One request read from a client and not yet answered.
pub(super) struct Open {
    /// The client's id for it, echoed in the answer.
    pub client_id: u64,
    /// Its id among this tracker's requests, if this tracker had servers to ask.
    pub local: Option<u64>,
    /// Its id among the other trackers, in a cluster.
    pub remote: Option<u64>,
    /// Its place among the client's open requests, which travels with its answer to the
    /// socket: the client's bound on open requests holds by construction.
    pub permit: OwnedSemaphorePermit,
    /// When it was read, for how long it took.
    pub asked_at: Instant,
    /// The parts still to hear from everyone asked.
    waiting_local: bool,
    waiting_peers: bool,
}

impl Open {
    pub fn new(
        client_id: u64,
        local: Option<u64>,
        remote: Option<u64>,
        permit: OwnedSemaphorePermit,
        asked_at: Instant,
    ) -> Open {
        Open {
            asked_at,
            client_id,
            local,
            remote,
            permit,
            waiting_local: local.is_some(),
            waiting_peers: remote.is_some(),
        }
    }
}

/// A client's open requests, by a key of the connection's own.
pub(super) struct Waiting {
    open: FastMap<u64, Open>,
    /// Keys in the order of their deadlines; a key whose request has ended is skipped.
    deadlines: VecDeque<(Instant, u64)>,
    /// Keys by the client's ids, for `CANCEL`.
    by_client_id: FastMap<u64, u64>,
    next_key: u64,
    done: mpsc::UnboundedSender<(u64, Part)>,
    heard: mpsc::UnboundedReceiver<(u64, Part)>,
}

impl Default for Waiting {
    fn default() -> Waiting {
        let (done, heard) = mpsc::unbounded_channel();
        Waiting {
            open: FastMap::default(),
            deadlines: VecDeque::new(),
            by_client_id: FastMap::default(),
            next_key: 0,
            done,
            heard,
        }
    }
}

impl Waiting {
    /// A key for the next request.
    pub fn reserve(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// Where `part` of request `key` says it is complete.
    pub fn done(&self, key: u64, part: Part) -> Done {
        Done::new(self.done.clone(), key, part)
    }

    /// Waits for request `key` until `deadline`, which is no earlier than any before it.
    pub fn insert(&mut self, key: u64, open: Open, deadline: Instant) {
        self.by_client_id.insert(open.client_id, key);
        self.open.insert(key, open);
        self.deadlines.push_back((deadline, key));
    }

    /// Whether no request is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Takes the request the client calls `client_id` out, if it is open: it will not be
    /// answered.
    pub fn cancel(&mut self, client_id: u64) -> Option<Open> {
        let key = self.by_client_id.remove(&client_id)?;
        self.open.remove(&key)
    }

    /// The next request to end, and whether its deadline ended it. Waits for ever while none
    /// is open.
    ///
    /// Cancel-safe: nothing is taken out before the wait is over.
    pub async fn next(&mut self) -> (Open, bool) {
        loop {
            while self.deadlines.front().is_some_and(|(_, key)| !self.open.contains_key(key)) {
                self.deadlines.pop_front();
            }
            let due = self.deadlines.front().map(|&(at, _)| at);
            tokio::select! {
                biased;
                // Always `Some`: the sender is held here.
                Some((key, part)) = self.heard.recv() => {
                    if let Some(open) = self.heard_from_all(key, part) {
                        return (open, false);
                    }
                }
                () = sleep_until(due), if due.is_some() => {
                    if let Some((_, key)) = self.deadlines.pop_front() {
                        if let Some(open) = self.take(key) {
                            return (open, true);
                        }
                    }
                }
            }
        }
    }

    /// Notes that `part` of request `key` has heard from everyone; the request if that was
    /// the last part it waited for.
    fn heard_from_all(&mut self, key: u64, part: Part) -> Option<Open> {
        let open = self.open.get_mut(&key)?;
        match part {
            Part::Local => open.waiting_local = false,
            Part::Peers => open.waiting_peers = false,
        }
        if open.waiting_local || open.waiting_peers {
            return None;
        }
        self.take(key)
    }

    /// Every request still open, taken out (the connection is ending).
    pub fn take_all(&mut self) -> impl Iterator<Item = Open> + '_ {
        self.deadlines.clear();
        self.by_client_id.clear();
        self.open.drain().map(|(_, open)| open)
    }

    fn take(&mut self, key: u64) -> Option<Open> {
        let open = self.open.remove(&key)?;
        if self.by_client_id.get(&open.client_id) == Some(&key) {
            self.by_client_id.remove(&open.client_id);
        }
        Some(open)
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// What the other trackers' part of a request heard by its end: whether every tracker
/// waited for told all, and how many servers they asked between them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Asked {
    pub complete: bool,
    pub servers: usize,
}

/// How a request ended: `local` is whether every server of this tracker replied (`None`: it
/// had none to ask), `peers` what the other trackers heard (`None`: none was asked).
pub(super) fn end_of(local: Option<bool>, peers: Option<Asked>) -> End {
    let none_asked = local.is_none() && peers.is_none_or(|p| p.servers == 0 && p.complete);
    if none_asked {
        End::NoServers
    } else if local.unwrap_or(true) && peers.is_none_or(|p| p.complete) {
        End::Replied
    } else {
        End::Deadline
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    fn peers(complete: bool, servers: usize) -> Option<Asked> {
        Some(Asked { complete, servers })
    }

    #[test]
    fn how_a_request_ended() {
        assert_eq!(end_of(None, None), End::NoServers);
        assert_eq!(end_of(None, peers(true, 0)), End::NoServers, "peers with no servers");
        assert_eq!(end_of(None, peers(false, 0)), End::Deadline, "a peer that never told");
        assert_eq!(end_of(Some(true), None), End::Replied);
        assert_eq!(end_of(Some(false), None), End::Deadline);
        assert_eq!(end_of(Some(true), peers(true, 4)), End::Replied);
        assert_eq!(end_of(Some(true), peers(false, 4)), End::Deadline);
        assert_eq!(end_of(Some(false), peers(true, 4)), End::Deadline);
        assert_eq!(end_of(None, peers(true, 4)), End::Replied, "only the peers had servers");
    }

    fn permit(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        semaphore.clone().try_acquire_owned().unwrap()
    }

    #[tokio::test]
    async fn a_request_ends_when_every_part_is_complete_or_at_its_deadline() {
        let permits = Arc::new(Semaphore::new(8));
        let mut waiting = Waiting::default();
        let far = Instant::now() + Duration::from_secs(60);
        let both = waiting.reserve();
        let (local, peers) = (waiting.done(both, Part::Local), waiting.done(both, Part::Peers));
        waiting.insert(both, Open::new(1, Some(10), Some(20), permit(&permits), Instant::now()), far);
        local.fire();
        let only = waiting.reserve();
        waiting.done(only, Part::Local).fire();
        waiting.insert(only, Open::new(2, Some(11), None, permit(&permits), Instant::now()), far);
        // The one with a single part is over first: the other still waits for its peers.
        let (open, by_deadline) = waiting.next().await;
        assert_eq!((open.client_id, by_deadline), (2, false));
        peers.fire();
        let (open, by_deadline) = waiting.next().await;
        assert_eq!((open.client_id, by_deadline), (1, false));
        assert!(waiting.is_empty());
        drop(open);
        assert_eq!(permits.available_permits(), 7, "a permit lives as long as its request's answer");
    }

    #[tokio::test]
    async fn requests_due_together_end_in_the_order_they_were_read() {
        let permits = Arc::new(Semaphore::new(8));
        let mut waiting = Waiting::default();
        let at = Instant::now() + Duration::from_millis(20);
        for client_id in 1..=4 {
            let key = waiting.reserve();
            waiting.insert(
                key,
                Open::new(client_id, Some(client_id), None, permit(&permits), Instant::now()),
                at,
            );
        }
        assert!(waiting.cancel(3).is_some());
        assert!(waiting.cancel(3).is_none(), "cancelled once");
        let mut ended = Vec::new();
        while !waiting.is_empty() {
            let (open, by_deadline) = waiting.next().await;
            assert!(by_deadline);
            ended.push(open.client_id);
        }
        assert_eq!(ended, [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_word_for_a_request_that_is_over_is_ignored() {
        let permits = Arc::new(Semaphore::new(8));
        let mut waiting = Waiting::default();
        let key = waiting.reserve();
        let late = waiting.done(key, Part::Local);
        waiting.insert(
            key,
            Open::new(1, Some(1), None, permit(&permits), Instant::now()),
            Instant::now() + Duration::from_secs(60),
        );
        assert!(waiting.cancel(1).is_some());
        late.fire();
        let key = waiting.reserve();
        waiting.done(key, Part::Local).fire();
        waiting.insert(
            key,
            Open::new(2, Some(2), None, permit(&permits), Instant::now()),
            Instant::now() + Duration::from_secs(60),
        );
        assert_eq!(waiting.next().await.0.client_id, 2);
    }
}
