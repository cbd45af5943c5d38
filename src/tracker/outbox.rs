//! Queries on their way to the servers. A query is encoded once into the outbox; a burst of
//! them leaves as one message on the broadcast channel that every server's connection task
//! reads, so fan-out costs the same whatever the number of servers, and each server gets one
//! large write per burst instead of one per request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Shared;
use crate::protocol::{self, Message, ReplyMode};
use crate::shutdown::StopSignal;

/// Bytes of queries held before they are flushed without waiting: a round of 4000 requests
/// (about 80 KB) goes out as one batch.
const OUTBOX_LIMIT: usize = 256 * 1024;

/// Without early replies, the quiet that ends a burst of requests: queries are held until
/// none has come for this long (and for at most a tenth of the deadline).
const LINGER: Duration = Duration::from_millis(2);

/// Queries not yet sent, and the channel they go out on.
pub struct Outbox {
    queued: Vec<u8>,
    queries: broadcast::Sender<Bytes>,
}

impl Outbox {
    /// An outbox whose subscribers may fall `capacity` batches behind before they lag.
    pub fn new(capacity: usize) -> Outbox {
        Outbox { queued: Vec::new(), queries: broadcast::channel(capacity).0 }
    }

    /// Queues `query`. Returns true if it is the first one queued since the last flush (the
    /// flusher should be woken); flushes at once when the outbox is full.
    pub fn push(&mut self, query: &Message) -> bool {
        let first = self.queued.is_empty();
        protocol::encode(query, &mut self.queued);
        if self.queued.len() >= OUTBOX_LIMIT {
            self.flush();
            return false;
        }
        first
    }

    /// Sends every queued query to every subscriber.
    pub fn flush(&mut self) {
        if !self.queued.is_empty() {
            let batch = Bytes::from(std::mem::take(&mut self.queued));
            // No subscriber means no server; the requests asked nobody and wait for nobody.
            let _ = self.queries.send(batch);
        }
    }

    /// A receiver of every query sent from now on. The queries still queued were asked of
    /// the servers registered before this one, so they go out first: the new server is in
    /// a request's set of servers asked if, and only if, it receives that request's query.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Bytes> {
        self.flush();
        self.queries.subscribe()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }
}

/// Flushes the outbox after each burst of requests. Waiting while other request handlers are
/// still adding theirs means that under a burst (thousands of clients asking at once) each
/// server gets one large write instead of one per request.
///
/// With early replies every moment counts, so it waits only for the scheduler turns that
/// add queries. Without, a request lasts its deadline however soon its query goes out, so it
/// waits for the burst to end ([`LINGER`]): the tracker then reads a burst of requests
/// without writing to every server in between, and every moment a request waits to be read
/// would be added to its deadline.
pub(super) async fn flush_loop(shared: Arc<Shared>, mut stop: StopSignal) {
    let linger = shared.config.replies == ReplyMode::Matches;
    loop {
        tokio::select! {
            () = shared.outbox_ready.notified() => {}
            () = stop.requested() => return,
        }
        let mut queued = 0;
        let until = Instant::now() + shared.config.deadline / 10;
        loop {
            let now = Instant::now();
            if linger && now < until {
                tokio::time::sleep_until((now + LINGER).min(until)).await;
            } else {
                tokio::task::yield_now().await;
            }
            let now = shared.board.lock().outbox.len();
            if now == queued || now >= OUTBOX_LIMIT {
                break;
            }
            queued = now;
        }
        shared.board.lock().outbox.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Name;

    fn query(id: u64) -> Message {
        Message::Query { id, client: Name::new("C1").unwrap(), number: 3 }
    }

    #[test]
    fn a_new_subscriber_gets_no_query_queued_before_it() {
        let mut outbox = Outbox::new(16);
        let mut first = outbox.subscribe();
        assert!(outbox.push(&query(1)), "the first query wakes the flusher");
        assert!(!outbox.push(&query(2)));
        let mut second = outbox.subscribe();
        outbox.push(&query(3));
        outbox.flush();
        assert_eq!(&first.try_recv().unwrap()[..], b"QUERY 1 C1 3\nQUERY 2 C1 3\n");
        assert_eq!(&first.try_recv().unwrap()[..], b"QUERY 3 C1 3\n");
        assert_eq!(&second.try_recv().unwrap()[..], b"QUERY 3 C1 3\n");
        assert!(second.try_recv().is_err());
    }

    #[test]
    fn a_full_outbox_flushes_itself() {
        let mut outbox = Outbox::new(16);
        let mut rx = outbox.subscribe();
        let mut id = 0;
        while rx.try_recv().is_err() {
            id += 1;
            outbox.push(&query(id));
            assert!(outbox.len() < OUTBOX_LIMIT);
        }
        assert_eq!(outbox.len(), 0);
    }
}
