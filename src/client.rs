//! A client node: says `HI` with its name, then asks the tracker for matches, each answered
//! by an `ANSWER` carrying the request's id; many requests may be open at once.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::connection::{Endpoint, LineReader, WriteHalf};
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::node;
use crate::protocol::{self, End, Message, Name, ProtocolError, Token};
use crate::transcript::{Event, Transcript};

/// How much longer than the tracker's deadline a client waits for an answer before giving
/// up on its own, so that it hears the tracker's answer rather than racing it.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

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
/// for everyone, handing each answer to the caller waiting for it, until its own comes.
pub struct ClientNode {
    name: Name,
    next_id: AtomicU64,
    /// How long to wait for an answer: the tracker's deadline plus a margin.
    patience: Duration,
    transcript: Transcript,
    /// Shared with other clients by [`ClientNode::share_answers`]; a client on its own
    /// parses every answer.
    answers: Option<Arc<AnswerCache>>,
    reader: tokio::sync::Mutex<LineReader>,
    write: tokio::sync::Mutex<WriteHalf>,
    /// Requests sent and not answered yet, and whether the connection is still usable.
    waiting: Mutex<Waiting>,
    /// Raised by [`ClientNode::close`]: every caller still waiting gives up at once.
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct Waiting {
    /// Where each request's answer (or failure) goes, by id; registered before it is sent.
    slots: FastMap<u64, oneshot::Sender<Result<Answered>>>,
    /// Requests given up on (timed out, or their caller went away) whose `CANCEL` could not
    /// be written at once: the next write sends it first.
    cancels: Vec<u64>,
    /// Set once the connection cannot carry another request: why.
    broken: Option<Broken>,
}

/// Why a client's connection is no longer usable.
#[derive(Clone, Copy)]
enum Broken {
    Closed,
    ByCaller,
}

/// An answer as the reader hands it over.
struct Answered {
    end: End,
    servers: Arc<[Name]>,
}

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
    fn read(&self, line: &[u8]) -> std::result::Result<Received, ProtocolError> {
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

/// What one line from the tracker means for a client's open requests: the outcome of one of
/// them, or the end of the connection for all.
pub(crate) enum Routed {
    /// Request `id`'s answer (how it ended, and the servers), or its refusal.
    One(u64, Result<(End, Arc<[Name]>)>),
    /// The connection cannot go on: every request fails with this.
    All(Error),
}

/// The rules both clients (this one, and the asyncio one on the event loop's thread) route
/// the tracker's lines by.
pub(crate) fn route(line: std::result::Result<Received, ProtocolError>) -> Routed {
    match line {
        Ok(Received::Answer { id, end, servers }) => Routed::One(id, Ok((end, servers))),
        // The tracker never refuses a request on its own (it reads more slowly instead), so
        // an error is about the connection.
        Ok(Received::Other(Message::Error { code, text })) => Routed::All(Error::Refused { code, text }),
        Ok(Received::Other(Message::Bye)) => Routed::All(Error::Closed),
        Ok(Received::Other(other)) => Routed::All(Error::Unexpected(format!("{other:?} instead of ANSWER"))),
        Err(e) => Routed::All(Error::Protocol(e)),
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
        Ok(ClientNode {
            name,
            next_id: AtomicU64::new(1),
            patience: deadline + deadline / 2 + ANSWER_MARGIN,
            transcript,
            answers: None,
            reader: tokio::sync::Mutex::new(reader),
            write: tokio::sync::Mutex::new(write),
            waiting: Mutex::new(Waiting::default()),
            closed: watch::channel(false).0,
        })
    }

    /// Shares `answers` with other clients, so that a server list any of them has parsed is
    /// not parsed again.
    pub fn share_answers(&mut self, answers: Arc<AnswerCache>) {
        self.answers = Some(answers);
    }

    /// The client's name.
    pub fn name(&self) -> &Name {
        &self.name
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if let Some(broken) = waiting.broken {
                return Err(broken.error());
            }
            waiting.slots.insert(id, tx);
        }
        // From here on, giving up (an error, a timeout, the caller dropping this future)
        // frees the request on both sides.
        let mut request = Request { node: self, id, settled: false };
        self.transcript.record_with(|| Event::FindSent { client: self.name.clone(), number });
        self.send(&protocol::to_line(&Message::Find { id, number })).await?;
        let give_up = started + self.patience;
        let answered = tokio::time::timeout_at(give_up, self.await_answer(id, &mut rx))
            .await
            .map_err(|_| Error::Timeout(format!("waiting for the answer to request {id}")))?;
        request.settled = answered.is_ok() || self.waiting.lock().broken.is_some();
        let Answered { end, servers } = answered?;
        self.transcript
            .record_with(|| Event::AnswerReceived { client: self.name.clone(), servers: servers.to_vec() });
        Ok(Answer { servers, end, elapsed: started.elapsed() })
    }

    /// Makes every call waiting for an answer fail at once with [`Error::NodeClosed`], and
    /// every later one too. The connection closes when the node is dropped.
    pub fn close(&self) {
        self.fail_all(Broken::ByCaller);
        self.closed.send_replace(true);
    }

    /// Writes `line`, after any `CANCEL` that could not be written when its request was
    /// given up. A write cut off halfway (its caller dropped it) leaves the stream
    /// unusable, so the connection is then marked broken.
    async fn send(&self, line: &[u8]) -> Result<()> {
        let mut write = self.write.lock().await;
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.waiting.lock().cancels) {
            protocol::encode(&Message::Cancel { id }, &mut out);
        }
        out.extend_from_slice(line);
        let mut unfinished = Unfinished(Some(self));
        let written = write.send(&out).await;
        unfinished.0 = None;
        written.map_err(|e| {
            self.fail_all(Broken::Closed);
            Error::Io(e)
        })
    }

    /// Waits for the answer to request `id`: from whoever is reading, or by reading itself.
    async fn await_answer(&self, id: u64, rx: &mut oneshot::Receiver<Result<Answered>>) -> Result<Answered> {
        let mut closed = self.closed.subscribe();
        let mut reader = tokio::select! {
            biased;
            got = &mut *rx => return got.unwrap_or(Err(Error::Closed)),
            _ = closed.wait_for(|&closed| closed) => return Err(Error::NodeClosed),
            reader = self.reader.lock() => reader,
        };
        // The caller that read before may have handed this answer over already.
        if let Ok(got) = rx.try_recv() {
            return got;
        }
        let answers = self.answers.as_deref();
        let parse = |line: &[u8]| match answers {
            Some(cache) => cache.read(line),
            None => protocol::parse(line).map(Received::from),
        };
        loop {
            let line = tokio::select! {
                line = reader.next_with(parse) => line,
                _ = closed.wait_for(|&closed| closed) => return Err(Error::NodeClosed),
            };
            if let Some(mine) = self.dispatch(id, line) {
                return mine;
            }
        }
    }

    /// Hands one line from the tracker to the request it answers; `Some` when it settles
    /// request `mine` (its answer, or a failure of the whole connection).
    #[allow(clippy::type_complexity)]
    fn dispatch(
        &self,
        mine: u64,
        line: Result<Option<std::result::Result<Received, ProtocolError>>>,
    ) -> Option<Result<Answered>> {
        let routed = match line {
            Ok(Some(received)) => route(received),
            Ok(None) => Routed::All(Error::Closed),
            Err(e) => {
                self.fail_all(Broken::Closed);
                return Some(Err(e));
            }
        };
        let (to, outcome) = match routed {
            Routed::One(id, outcome) => (id, outcome.map(|(end, servers)| Answered { end, servers })),
            Routed::All(e) => return self.fail_all_but(mine, &e),
        };
        if to == mine {
            self.waiting.lock().slots.remove(&mine);
            return Some(outcome);
        }
        // Another caller's, or one whose caller gave up (no slot): dropped then.
        if let Some(slot) = self.waiting.lock().slots.remove(&to) {
            let _ = slot.send(outcome);
        }
        None
    }

    /// Fails every waiting request with what `e` says (the connection is unusable), and
    /// returns the failure for request `mine` (as `dispatch` does).
    #[allow(clippy::unnecessary_wraps)]
    fn fail_all_but(&self, mine: u64, e: &Error) -> Option<Result<Answered>> {
        let slots = {
            let mut waiting = self.waiting.lock();
            waiting.broken = Some(Broken::Closed);
            std::mem::take(&mut waiting.slots)
        };
        for (id, slot) in slots {
            if id != mine {
                let _ = slot.send(Err(e.same_failure()));
            }
        }
        Some(Err(e.same_failure()))
    }

    fn fail_all(&self, why: Broken) {
        let slots = {
            let mut waiting = self.waiting.lock();
            waiting.broken.get_or_insert(why);
            std::mem::take(&mut waiting.slots)
        };
        for slot in slots.into_values() {
            let _ = slot.send(Err(why.error()));
        }
    }
}

impl Broken {
    fn error(self) -> Error {
        match self {
            Broken::Closed => Error::Closed,
            Broken::ByCaller => Error::NodeClosed,
        }
    }
}

/// One request in flight. Dropped before its answer (a timeout, the caller gone), it frees
/// its slot and asks the tracker to free the request.
struct Request<'a> {
    node: &'a ClientNode,
    id: u64,
    /// Answered, or nothing left to cancel.
    settled: bool,
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        let mut waiting = self.node.waiting.lock();
        waiting.slots.remove(&self.id);
        if self.settled || waiting.broken.is_some() {
            return;
        }
        // Written at once if the socket takes it; otherwise by the next write.
        let line = protocol::to_line(&Message::Cancel { id: self.id });
        let written = self.node.write.try_lock().ok().and_then(|write| write.try_write(&line).ok());
        if written != Some(line.len()) {
            if written.is_some() {
                // Part of the line went out: the stream is cut mid-line.
                waiting.broken = Some(Broken::Closed);
            } else {
                waiting.cancels.push(self.id);
            }
        }
    }
}

/// Marks the connection broken if a write is dropped before it finished.
struct Unfinished<'a>(Option<&'a ClientNode>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(node) = self.0 {
            node.fail_all(Broken::Closed);
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
