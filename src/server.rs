//! A server node: says `HELLO` with its name, then answers the tracker's queries about the
//! number it holds until the tracker says `BYE`, the connection drops, or its owner stops it.

use std::ops::ControlFlow;

use tokio::task::JoinHandle;

use crate::connection::{Endpoint, LineReader, WriteHalf};
use crate::error::{Error, Result};
use crate::node;
use crate::protocol::{self, Message, Name, ReplyMode, Token};
use crate::shutdown::{Shutdown, StopSignal};
use crate::transcript::{Event, Transcript};

/// The number a server holds: drawn at random (as the assignment's servers do), or given to
/// it; its transcript line says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Number {
    Drawn(u8),
    Given(u8),
}

/// A plain number is one given to the server.
impl From<u8> for Number {
    fn from(n: u8) -> Number {
        Number::Given(n)
    }
}

impl Number {
    /// The number itself.
    pub fn value(self) -> u8 {
        match self {
            Number::Drawn(n) | Number::Given(n) => n,
        }
    }
}

/// A running server node. Dropping it stops it; [`ServerNode::close`] also waits.
pub struct ServerNode {
    name: Name,
    number: u8,
    shutdown: Shutdown,
    task: JoinHandle<Result<()>>,
}

impl ServerNode {
    /// Connects to the tracker at `tracker`, says `HELLO` (with `token`, if the tracker wants
    /// one) and returns once registered.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `number` is outside 1..=10; [`Error::Io`] or
    /// [`Error::Timeout`] if the tracker cannot be reached; [`Error::Refused`] if it refuses
    /// the name.
    pub async fn start(
        tracker: impl Into<Endpoint>,
        name: Name,
        number: impl Into<Number>,
        token: Option<Token>,
        transcript: Transcript,
    ) -> Result<ServerNode> {
        let number = number.into();
        let drawn = matches!(number, Number::Drawn(_));
        let number = crate::args::number(number.value().into())?;
        let greeting = Message::Hello { name: name.clone(), token };
        let greeted = || {
            transcript.record_with(|| Event::HelloSent { server: name.clone() });
            transcript.record_with(|| Event::NumberSelected { server: name.clone(), number, drawn });
        };
        let node::Registered { reader, write, replies, .. } =
            node::register(&tracker.into(), &name, greeting, &transcript, greeted).await?;
        let shutdown = Shutdown::new();
        let serving = Serving { name: name.clone(), number, replies, transcript };
        let task = tokio::spawn(serving.run(reader, write, shutdown.signal()));
        Ok(ServerNode { name, number, shutdown, task })
    }

    /// The server's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The number the server holds.
    pub fn number(&self) -> u8 {
        self.number
    }

    /// Whether the server has stopped serving (the tracker left or the connection broke).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the server stops serving on its own: the tracker said `BYE` (`Ok`) or the
    /// connection failed. The node is spent afterwards: drop it rather than `close` it.
    ///
    /// # Errors
    /// What ended the serving loop.
    pub async fn finished(&mut self) -> Result<()> {
        (&mut self.task).await?
    }

    /// Stops serving, closes the connection and waits for the task to end.
    ///
    /// # Errors
    /// What ended the serving loop, if it ended on an error before it was stopped.
    pub async fn close(self) -> Result<()> {
        self.shutdown.request();
        self.task.await?
    }
}

struct Serving {
    name: Name,
    number: u8,
    replies: ReplyMode,
    transcript: Transcript,
}

impl Serving {
    async fn run(self, mut reader: LineReader, mut write: WriteHalf, mut stop: StopSignal) -> Result<()> {
        tokio::select! {
            result = self.answer_queries(&mut reader, &mut write) => result,
            () = stop.requested() => Ok(()),
        }
    }

    async fn answer_queries(&self, reader: &mut LineReader, write: &mut WriteHalf) -> Result<()> {
        let mut out = Vec::new();
        let mut ended = None;
        loop {
            let open = reader
                .read_batch(|line| match self.on_line(line, &mut out) {
                    None => ControlFlow::Continue(()),
                    Some(end) => {
                        ended = Some(end);
                        ControlFlow::Break(())
                    }
                })
                .await?;
            // The replies to a burst of queries go out in one write.
            if !out.is_empty() {
                write.send(&out).await?;
                out.clear();
            }
            if !open {
                return Ok(());
            }
            if let Some(end) = ended.take() {
                return end;
            }
        }
    }

    /// Handles one line from the tracker, adding any reply to `out`. `Some` when the line
    /// ends the serving: `Ok` for `BYE`, the error for anything else but a query.
    fn on_line(&self, line: &[u8], out: &mut Vec<u8>) -> Option<Result<()>> {
        // Queries are most of what a server reads: take them without the general parser, and
        // make the client's name only when the transcript will show it.
        if let Some((id, client, number)) = protocol::parse_query(line) {
            let client = if self.transcript.is_on() { Name::from_bytes(client).ok() } else { None };
            self.answer(id, client, number, out);
            return None;
        }
        match protocol::parse(line) {
            Ok(Message::Query { id, client, number }) => self.answer(id, Some(client), number, out),
            Ok(Message::Bye) => return Some(Ok(())),
            Ok(Message::Error { code, text }) => return Some(Err(Error::Refused { code, text })),
            Ok(other) => return Some(Err(Error::Unexpected(format!("{other:?}")))),
            Err(e) => return Some(Err(e.into())),
        }
        None
    }

    /// Answers one query; `client` is there when the transcript is on.
    fn answer(&self, id: u64, client: Option<Name>, number: u8, out: &mut Vec<u8>) {
        let t = &self.transcript;
        if let Some(client) = &client {
            t.record(Event::QueryReceived { server: self.name.clone(), client: client.clone(), number });
        }
        let matched = number == self.number;
        if !matched && self.replies == ReplyMode::Matches {
            return;
        }
        if let Some(client) = client {
            t.record(Event::ReplySent { server: self.name.clone(), client, matched });
        }
        let reply = if matched { Message::Match { id } } else { Message::Miss { id } };
        protocol::encode(&reply, out);
    }
}
