//! A client node: says `HI` with its name, then asks the tracker for matches, one request at
//! a time, each answered by an `ANSWER` carrying the request's id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;

use crate::connection::{self, LineReader};
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::node;
use crate::protocol::{self, End, Message, Name, ProtocolError, Token};
use crate::transcript::{Event, Transcript};

/// How much longer than the tracker's deadline a client waits for an answer before giving
/// up on its own, so that it hears the tracker's answer rather than racing it.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

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

/// A connected, registered client node.
pub struct ClientNode {
    name: Name,
    reader: LineReader,
    write: OwnedWriteHalf,
    next_id: u64,
    /// How long to wait for an answer: the tracker's deadline plus a margin.
    patience: Duration,
    transcript: Transcript,
    /// Shared with other clients by [`ClientNode::share_answers`]; a client on its own
    /// parses every answer.
    answers: Option<Arc<AnswerCache>>,
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
enum Received {
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
        tracker: SocketAddr,
        name: Name,
        token: Option<Token>,
        transcript: Transcript,
    ) -> Result<ClientNode> {
        let greeting = Message::Hi { name: name.clone(), token };
        let greeted = || transcript.record_with(|| Event::HiSent { client: name.clone() });
        let node::Registered { reader, write, deadline, .. } =
            node::register(tracker, &name, greeting, &transcript, greeted).await?;
        let patience = deadline + deadline / 2 + ANSWER_MARGIN;
        Ok(ClientNode { name, reader, write, next_id: 1, patience, transcript, answers: None })
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

    /// Asks which servers hold `number` and waits for the tracker's answer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `number` is outside 1..=10; [`Error::Timeout`] if no
    /// answer comes within the tracker's deadline plus a margin; [`Error::Closed`] if the
    /// tracker leaves; [`Error::Refused`] if it answers with `ERROR`.
    pub async fn find_match(&mut self, number: u8) -> Result<Answer> {
        let number = crate::args::number(number.into())?;
        let id = self.next_id;
        self.next_id += 1;
        let started = Instant::now();
        self.transcript.record_with(|| Event::FindSent { client: self.name.clone(), number });
        connection::write_message(&mut self.write, &Message::Find { id, number }).await?;
        let give_up = started + self.patience;
        loop {
            match tokio::time::timeout_at(give_up, self.receive())
                .await
                .map_err(|_| Error::Timeout(format!("waiting for the answer to request {id}")))??
            {
                Some(Received::Answer { id: got, end, servers }) if got == id => {
                    let elapsed = started.elapsed();
                    self.transcript.record_with(|| Event::AnswerReceived {
                        client: self.name.clone(),
                        servers: servers.to_vec(),
                    });
                    return Ok(Answer { servers, end, elapsed });
                }
                // The answer to an earlier request whose caller gave up waiting: not ours.
                Some(Received::Answer { .. }) => {}
                Some(Received::Other(Message::Error { code, text })) => {
                    return Err(Error::Refused { code, text })
                }
                Some(Received::Other(Message::Bye)) | None => return Err(Error::Closed),
                Some(Received::Other(other)) => {
                    return Err(Error::Unexpected(format!("{other:?} instead of ANSWER")))
                }
            }
        }
    }

    /// The next line from the tracker, or `None` if it closed the connection.
    async fn receive(&mut self) -> Result<Option<Received>> {
        let answers = self.answers.as_deref();
        let read = |line: &[u8]| match answers {
            Some(cache) => cache.read(line),
            None => protocol::parse(line).map(Received::from),
        };
        Ok(self.reader.next_with(read).await?.transpose()?)
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
