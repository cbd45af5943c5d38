//! What servers and clients share: connecting to the tracker, greeting it, and waiting for
//! its `WELCOME`.

use std::time::Duration;

use crate::connection::{self, Endpoint, LineReader, WriteHalf};
use crate::error::{Error, Result};
use crate::protocol::{Message, Name, ReplyMode, MAX_LINE};
use crate::transcript::{Event, Transcript};

/// How long a node waits for `WELCOME` after its greeting.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's registered connection to the tracker, and what the tracker told it.
pub struct Registered {
    pub reader: LineReader,
    pub write: WriteHalf,
    /// How long the tracker waits for replies to a request.
    pub deadline: Duration,
    /// Which replies the tracker wants from servers.
    pub replies: ReplyMode,
}

/// Connects to the tracker at `tracker`, sends `greeting` (`HELLO` or `HI` for `name`) and
/// waits for the tracker's `WELCOME`. `greeted` is recorded just before the greeting goes.
///
/// # Errors
/// [`Error::Io`] or [`Error::Timeout`] if the tracker cannot be reached or does not answer;
/// [`Error::Refused`] if it answers with `ERROR`; [`Error::Closed`] or [`Error::Unexpected`]
/// if it does not welcome us.
pub async fn register(
    tracker: &Endpoint,
    name: &Name,
    greeting: Message,
    transcript: &Transcript,
    greeted: impl FnOnce(),
) -> Result<Registered> {
    let stream = connection::connect(tracker).await?;
    let (read, mut write) = stream.into_split();
    let mut reader = LineReader::new(read, MAX_LINE);
    greeted();
    connection::write_message(&mut write, &greeting).await?;
    let first = tokio::time::timeout(WELCOME_TIMEOUT, reader.next())
        .await
        .map_err(|_| Error::Timeout("waiting for the tracker's WELCOME".into()))??;
    match first {
        Some(Message::Welcome { name: welcomed, deadline_ms, replies }) if &welcomed == name => {
            transcript.record_with(|| Event::WelcomeReceived { node: name.clone() });
            Ok(Registered { reader, write, deadline: Duration::from_millis(deadline_ms), replies })
        }
        Some(Message::Error { code, text }) => Err(Error::Refused { code, text }),
        None | Some(Message::Bye) => Err(Error::Closed),
        Some(other) => Err(Error::Unexpected(format!("{other:?} instead of WELCOME"))),
    }
}
