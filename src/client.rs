//! A client node: says `HI` with its name, then asks the tracker for matches, one request at
//! a time, each answered by an `ANSWER` carrying the request's id.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;

use crate::connection::{self, LineReader};
use crate::error::{Error, Result};
use crate::node;
use crate::protocol::{End, Message, Name, Token, MAX_LINE, NUMBERS};
use crate::transcript::{Event, Transcript};

/// How much longer than the tracker's deadline a client waits for an answer before giving
/// up on its own, so that it hears the tracker's answer rather than racing it.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// The tracker's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The servers holding the number, in index order; empty means no match.
    pub servers: Vec<Name>,
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
        let stream = connection::connect(tracker).await?;
        let (read, mut write) = stream.into_split();
        let mut reader = LineReader::new(read, MAX_LINE);
        transcript.record_with(|| Event::HiSent { client: name.clone() });
        connection::write_message(&mut write, &Message::Hi { name: name.clone(), token }).await?;
        let (deadline, _) = node::await_welcome(&mut reader, &name, &transcript).await?;
        let patience = deadline + deadline / 2 + ANSWER_MARGIN;
        Ok(ClientNode { name, reader, write, next_id: 1, patience, transcript })
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
        if !NUMBERS.contains(&number) {
            return Err(Error::InvalidArgument(format!("number must be from 1 to 10 (got {number})")));
        }
        let id = self.next_id;
        self.next_id += 1;
        let started = Instant::now();
        self.transcript.record_with(|| Event::FindSent { client: self.name.clone(), number });
        connection::write_message(&mut self.write, &Message::Find { id, number }).await?;
        let give_up = started + self.patience;
        loop {
            let message = tokio::time::timeout_at(give_up, self.reader.next())
                .await
                .map_err(|_| Error::Timeout(format!("waiting for the answer to request {id}")))??;
            match message {
                Some(Message::Answer { id: got, end, servers }) if got == id => {
                    let elapsed = started.elapsed();
                    self.transcript.record_with(|| Event::AnswerReceived {
                        client: self.name.clone(),
                        servers: servers.clone(),
                    });
                    return Ok(Answer { servers, end, elapsed });
                }
                // The answer to an earlier request whose caller gave up waiting: not ours.
                Some(Message::Answer { .. }) => continue,
                Some(Message::Error { code, text }) => return Err(Error::Refused { code, text }),
                Some(Message::Bye) | None => return Err(Error::Closed),
                Some(other) => return Err(Error::Unexpected(format!("{other:?} instead of ANSWER"))),
            }
        }
    }
}
