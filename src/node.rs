//! What servers and clients share: the greeting exchange with the tracker.

use std::time::Duration;

use crate::connection::LineReader;
use crate::error::{Error, Result};
use crate::protocol::{Message, Name, ReplyMode};
use crate::transcript::{Event, Transcript};

/// How long a node waits for `WELCOME` after its greeting.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for the tracker's `WELCOME` to `name`; returns the tracker's deadline and reply mode.
///
/// # Errors
/// [`Error::Refused`] if the tracker answers with `ERROR`; [`Error::Timeout`],
/// [`Error::Closed`] or [`Error::Unexpected`] if it does not welcome us.
pub async fn await_welcome(
    reader: &mut LineReader,
    name: &Name,
    transcript: &Transcript,
) -> Result<(Duration, ReplyMode)> {
    let first = tokio::time::timeout(WELCOME_TIMEOUT, reader.next())
        .await
        .map_err(|_| Error::Timeout("waiting for the tracker's WELCOME".into()))??;
    match first {
        Some(Message::Welcome { name: welcomed, deadline_ms, replies }) if &welcomed == name => {
            transcript.record_with(|| Event::WelcomeReceived { node: name.clone() });
            Ok((Duration::from_millis(deadline_ms), replies))
        }
        Some(Message::Error { code, text }) => Err(Error::Refused { code, text }),
        None | Some(Message::Bye) => Err(Error::Closed),
        Some(other) => Err(Error::Unexpected(format!("{other:?} instead of WELCOME"))),
    }
}
