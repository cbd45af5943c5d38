//! A client node: says `HI` with its name, then asks the tracker for matches, each answered
//! by an `ANSWER` carrying the request's id; many requests may be open at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::connection::{Endpoint, ReadHalf, WriteHalf};
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::node;
use crate::protocol::{self, End, Message, Name, ProtocolError, Token};
use crate::session::{self, Session, Settled};
use crate::transcript::{Event, Transcript};

/// Most bytes of server lists an [`AnswerCache`] keeps (their names take up to about 25
/// times as much); past it, it starts over.
const CACHED_BYTES: usize = 1 << 20;

/// The tracker's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The servers holding the number, in index order; empty means no match. Shared with
    /// other answers that list the same servers (see [`AnswerCache`]).
    pub servers: Arc<[Name]>,
    /// How the request ended.
    pub end: End,
    /// From sending the request to receiving the answer.
    pub elapsed: Duration,
}

/// A connected, registered client node. Its requests may come from many tasks at once over
/// the one connection, each with its own id: whichever caller holds the reading half reads
/// for everyone, feeding the connection's [`Session`], which hands each answer to the
/// caller waiting for it, until its own comes.
pub struct ClientNode {
    name: Name,
    /// How long to wait for an answer: [`session::patience`] of the tracker's deadline.
    patience: Duration,
    transcript: Transcript,
    /// The reading half, and the bytes read and not yet taken as lines.
    reader: tokio::sync::Mutex<(ReadHalf, BytesMut)>,
    write: tokio::sync::Mutex<WriteHalf>,
    /// The protocol state: requests sent and not answered yet, `CANCEL`s owed, whether the
    /// connection is still usable, the tracker's bytes not yet taken as lines.
    session: Mutex<Session<Waiter>>,
    /// Raised by [`ClientNode::close`]: every caller still waiting gives up at once.
    closed: watch::Sender<bool>,
}

/// Where a request's answer (or failure) goes.
type Waiter = oneshot::Sender<Result<Answered>>;

/// An answer as the reader hands it over: how the request ended, and the servers.
type Answered = (End, Arc<[Name]>);

/// Server lists already parsed, by their bytes on the wire. At scale, thousands of clients
/// receive the same few answers, each hundreds of names long: with one cache between them
/// each list is checked and parsed once, and the answers that carry it share one copy.
#[derive(Default)]
pub struct AnswerCache(Mutex<CachedLists>);

#[derive(Default)]
struct CachedLists {
    lists: FastMap<Box<[u8]>, Arc<[Name]>>,
    bytes: usize,
}

impl AnswerCache {
    /// Reads one line from the tracker: an `ANSWER` whose server list is known costs a
    /// lookup; anything else is parsed.
    pub(crate) fn read(&self, line: &[u8]) -> std::result::Result<Received, ProtocolError> {
        let split = protocol::split_answer(line);
        if let Some((id, end, listed)) = split {
            if let Some(servers) = self.0.lock().lists.get(listed) {
                return Ok(Received::Answer { id, end, servers: servers.clone() });
            }
        }
        Ok(match (protocol::parse(line)?, split) {
            (Message::Answer { id, end, servers }, Some((.., listed))) => {
                Received::Answer { id, end, servers: self.keep(listed, servers) }
            }
            (message, _) => message.into(),
        })
    }

    fn keep(&self, listed: &[u8], servers: Vec<Name>) -> Arc<[Name]> {
        let servers: Arc<[Name]> = servers.into();
        let mut cached = self.0.lock();
        if cached.bytes + listed.len() > CACHED_BYTES {
            *cached = CachedLists::default();
        }
        cached.bytes += listed.len();
        cached.lists.insert(listed.into(), servers.clone());
        servers
    }
}

/// A line from the tracker, with an answer's servers shared.
pub(crate) enum Received {
    Answer { id: u64, end: End, servers: Arc<[Name]> },
    Other(Message),
}

impl From<Message> for Received {
    fn from(message: Message) -> Received {
        match message {
            Message::Answer { id, end, servers } => Received::Answer { id, end, servers: servers.into() },
            other => Received::Other(other),
        }
    }
}

impl ClientNode {
    /// Connects to the tracker at `tracker`, says `HI` (with `token`, if the tracker wants
    /// one) and returns once registered.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Timeout`] if the tracker cannot be reached;
    /// [`Error::Refused`] if it refuses the name.
    pub async fn connect(
        tracker: impl Into<Endpoint>,
        name: Name,
        token: Option<Token>,
        transcript: Transcript,
    ) -> Result<ClientNode> {
        let greeting = Message::Hi { name: name.clone(), token };
        let greeted = || transcript.record_with(|| Event::HiSent { client: name.clone() });
        let node::Registered { reader, write, deadline, .. } =
            node::register(&tracker.into(), &name, greeting, &transcript, greeted).await?;
        let (read, inbuf) = reader.into_parts();
        Ok(ClientNode {
            name,
            patience: session::patience(deadline),
            transcript,
            reader: tokio::sync::Mutex::new((read, inbuf)),
            write: tokio::sync::Mutex::new(write),
            session: Mutex::new(Session::new()),
            closed: watch::channel(false).0,
        })
    }

    /// Shares `answers` with other clients, so that a server list any of them has parsed is
    /// not parsed again.
    pub fn share_answers(&mut self, answers: Arc<AnswerCache>) {
        self.session.get_mut().share_answers(answers);
    }

    /// The client's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How long a request waits for its answer: the tracker's deadline and a half, plus a
    /// margin.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// Asks which servers hold `number` and waits for the tracker's answer. Any number of
    /// calls may wait at once. A call that gives up (its time runs out, or it is dropped)
    /// tells the tracker, which frees the request (`CANCEL`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `number` is outside 1..=10; [`Error::Timeout`] if no
    /// answer comes within the tracker's deadline plus a margin; [`Error::Closed`] if the
    /// tracker leaves; [`Error::Refused`] if it answers with `ERROR`; [`Error::NodeClosed`]
    /// once [`close`](Self::close) is called.
    pub async fn find_match(&self, number: u8) -> Result<Answer> {
        let number = crate::args::number(number.into())?;
        let started = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let mut line = Vec::with_capacity(24);
        let id = self.session.lock().ask(number, tx, &mut line)?;
        // From here on, giving up (an error, a timeout, the caller dropping this future)
        // frees the request on both sides.
        let _request = Request { node: self, id };
        self.transcript.record_with(|| Event::FindSent { client: self.name.clone(), number });
        self.send(&line).await?;
        let give_up = started + self.patience;
        let (end, servers) = tokio::time::timeout_at(give_up, self.await_answer(&mut rx))
            .await
            .map_err(|_| Error::Timeout(format!("waiting for the answer to request {id}")))??;
        self.transcript
            .record_with(|| Event::AnswerReceived { client: self.name.clone(), servers: servers.to_vec() });
        Ok(Answer { servers, end, elapsed: started.elapsed() })
    }

    /// Makes every call waiting for an answer fail at once with [`Error::NodeClosed`], and
    /// every later one too. The connection closes when the node is dropped.
    pub fn close(&self) {
        self.fail_all(Error::NodeClosed);
        self.closed.send_replace(true);
    }

    /// Writes `line`. A write cut off halfway (its caller dropped it) leaves the stream
    /// unusable, so the connection is then marked broken.
    async fn send(&self, line: &[u8]) -> Result<()> {
        let mut write = self.write.lock().await;
        let mut unfinished = Unfinished(Some(self));
        let written = write.send(line).await;
        unfinished.0 = None;
        written.map_err(|e| {
            self.fail_all(Error::Closed);
            Error::Io(e)
        })
    }

    /// Waits for the answer that `rx` will get: from whoever is reading, or by reading for
    /// everyone until it comes.
    async fn await_answer(&self, rx: &mut oneshot::Receiver<Result<Answered>>) -> Result<Answered> {
        let mut closed = self.closed.subscribe();
        let mut reader = tokio::select! {
            biased;
            got = &mut *rx => return got.unwrap_or(Err(Error::Closed)),
            _ = closed.wait_for(|&closed| closed) => return Err(Error::NodeClosed),
            reader = self.reader.lock() => reader,
        };
        let (read, buf) = &mut *reader;
        loop {
            // The caller that read before may have handed this answer over already.
            if let Ok(got) = rx.try_recv() {
                return got;
            }
            let filled = tokio::select! {
                filled = read.fill(buf) => filled,
                _ = closed.wait_for(|&closed| closed) => return Err(Error::NodeClosed),
            };
            let settled: Vec<Settled<Waiter>> = {
                let mut session = self.session.lock();
                match filled {
                    Ok(0) => vec![session.fail(Error::Closed)],
                    Ok(_) => std::iter::from_fn(|| session.next_settled(buf)).collect(),
                    Err(e) => vec![session.fail(Error::Io(e))],
                }
            };
            for settled in settled {
                hand_over(settled);
            }
        }
    }

    /// Fails every waiting request with `e`, and every later one.
    fn fail_all(&self, e: Error) {
        let settled = self.session.lock().fail(e);
        hand_over(settled);
    }
}

/// Wakes the callers a line (or a failure) settled.
fn hand_over(settled: Settled<Waiter>) {
    match settled {
        // A caller that went away meanwhile hears nothing.
        Settled::One(waiter, outcome) => drop(waiter.send(outcome)),
        Settled::All(waiters, e) => {
            for waiter in waiters {
                let _ = waiter.send(Err(e.same_failure()));
            }
        }
    }
}

/// One request in flight. Dropped before its answer (a timeout, the caller gone), it frees
/// its place in the session and asks the tracker to free the request.
struct Request<'a> {
    node: &'a ClientNode,
    id: u64,
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        let owed = {
            let mut session = self.node.session.lock();
            if session.give_up(self.id).is_none() {
                // Answered, or failed with the connection: nothing to free.
                return;
            }
            session.take_owed()
        };
        // Written at once if the socket takes it; otherwise by the next request's write.
        let written = self.node.write.try_lock().ok().and_then(|write| write.try_write(&owed).ok());
        match written {
            Some(n) if n == owed.len() => {}
            Some(n) if n > 0 => {
                // Part of the line went out: the stream is cut mid-line.
                self.node.fail_all(Error::Closed);
            }
            _ => self.node.session.lock().owe(owed),
        }
    }
}

/// Marks the connection broken if a write is dropped before it finished.
struct Unfinished<'a>(Option<&'a ClientNode>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(node) = self.0 {
            node.fail_all(Error::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(received: Result<Received, ProtocolError>) -> (u64, End, Arc<[Name]>) {
        match received {
            Ok(Received::Answer { id, end, servers }) => (id, end, servers),
            _ => panic!("not an answer"),
        }
    }

    #[test]
    fn a_cached_list_reads_as_the_parser_reads_it_and_is_shared() {
        let cache = AnswerCache::default();
        let first = answer(cache.read(b"ANSWER 1 deadline S1 S2"));
        let second = answer(cache.read(b"ANSWER 7 replied S1 S2"));
        let names: Vec<Name> = ["S1", "S2"].iter().map(|n| Name::new(n).unwrap()).collect();
        assert_eq!((first.0, first.1, &first.2[..]), (1, End::Deadline, &names[..]));
        assert_eq!((second.0, second.1, &second.2[..]), (7, End::Replied, &names[..]));
        assert!(Arc::ptr_eq(&first.2, &second.2));
        // A list that does not parse is refused every time, and not kept.
        for _ in 0..2 {
            assert_eq!(cache.read(b"ANSWER 2 replied S1 S!").err(), Some(ProtocolError::BadName));
        }
        assert!(matches!(cache.read(b"BYE"), Ok(Received::Other(Message::Bye))));
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let cache = AnswerCache::default();
        let long = format!("ANSWER 1 replied {}", vec!["S1"; 300_000].join(" "));
        let kept = answer(cache.read(long.as_bytes())).2;
        answer(cache.read(format!("{long} S2").as_bytes()));
        assert!(cache.0.lock().bytes <= CACHED_BYTES);
        // The first list was dropped to make room: reading it again parses it anew.
        assert!(!Arc::ptr_eq(&kept, &answer(cache.read(long.as_bytes())).2));
    }
}
