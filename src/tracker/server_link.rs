//! A server's connection: queries go out from the broadcast channel every server reads, in
//! batches; replies come in and are counted a burst at a time under one lock.
//!
//! A server that falls more than `server_queue` batches behind, or leaves a write stuck for
//! the stall timeout, is a slow consumer and is dropped; nobody waits for it. Servers stay
//! while the tracker drains (the open requests wait for their replies) and hear `BYE` when
//! it stops.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::accept::error_line;
use super::connections::Origin;
use super::requests::Reply;
use super::seat::{Ending, Seat};
use super::{ServerSeat, Shared};
use crate::connection::{self, LineReader, WriteHalf};
use crate::error::Error;
use crate::protocol::{self, ErrorCode, Message, Name, Sender};
use crate::shutdown::StopSignal;

/// Error lines queued to one server's connection; past it, a server flooding us with bad
/// lines while not reading loses them (a server has no requests of its own to lose).
const SERVER_ERRORS: usize = 16;

/// Serves the server `name` from its greeting to its leaving.
pub(super) async fn run(
    shared: &Arc<Shared>,
    name: Name,
    origin: Origin,
    mut reader: LineReader,
    mut write: WriteHalf,
    mut stop: StopSignal,
) {
    let Some((seat, mut queries)) = Seat::for_server(shared, name, origin, &mut write).await else { return };
    let Some(server) = seat.server() else { return };
    let (errors, mut errors_rx) = mpsc::channel(SERVER_ERRORS);
    let stall = shared.config.stall_timeout;
    let ending = tokio::select! {
        ending = read_replies(shared, &seat, server, &mut reader, &errors) => ending,
        ending = write_queries(&seat, &mut write, &mut queries, &mut errors_rx, stall) => ending,
        () = stop.requested() => Ending::Stopped,
        () = seat.cut_off() => Ending::cut_off(),
    };
    drop(queries);
    seat.leave(&mut write, ending).await;
}

async fn read_replies(
    shared: &Shared,
    seat: &Seat,
    server: &ServerSeat,
    reader: &mut LineReader,
    errors: &mpsc::Sender<Bytes>,
) -> Ending {
    let mut replies = Vec::new();
    let mut refused = Vec::new();
    loop {
        tokio::task::consume_budget().await;
        let mut left = false;
        let read = reader
            .read_batch(|line| {
                // Replies are most of what a server sends: take them without the general parser.
                match protocol::parse_reply(line) {
                    Some(reply) => replies.push(reply),
                    None => match protocol::parse_from(line, Sender::Server) {
                        Ok(Message::Match { id }) => replies.push((id, true)),
                        Ok(Message::Miss { id }) => replies.push((id, false)),
                        Ok(Message::Bye) => {
                            left = true;
                            return ControlFlow::Break(());
                        }
                        Ok(_) | Err(None) => {
                            send_error(
                                shared,
                                errors,
                                ErrorCode::Unexpected,
                                "a server may send only MATCH, MISS or BYE",
                            );
                        }
                        Err(Some(e)) => send_error(shared, errors, e.code(), &e.to_string()),
                    },
                }
                ControlFlow::Continue(())
            })
            .await;
        seat.conn().touch();
        // A reply read after the tracker's lease may have lapsed is not counted: the name
        // may be another node's by now.
        if !seat.held() {
            return Ending::cut_off();
        }
        shared.on_replies(server, &replies, &mut refused);
        replies.clear();
        for reply in refused.drain(..) {
            if reply == Reply::Unknown {
                send_error(shared, errors, ErrorCode::UnknownRequest, "no request has this id");
            } else {
                send_error(
                    shared,
                    errors,
                    ErrorCode::NotAsked,
                    "this server was not asked, or has already replied",
                );
            }
        }
        match read {
            Ok(true) if left => return Ending::Left,
            Ok(true) => {}
            Ok(false) | Err(Error::Closed) => return Ending::Left,
            Err(e) => return Ending::failed(&e),
        }
    }
}

/// Queues an `ERROR` line on a server's writer; if even that queue is full the server is
/// flooding us with bad lines and not reading, and the line is dropped (and not counted as
/// sent).
fn send_error(shared: &Shared, errors: &mpsc::Sender<Bytes>, code: ErrorCode, text: &str) {
    if errors.try_send(Bytes::from(error_line(code, text))).is_ok() {
        shared.metrics.error_sent(code);
    }
}

async fn write_queries(
    seat: &Seat,
    write: &mut WriteHalf,
    queries: &mut broadcast::Receiver<Bytes>,
    errors: &mut mpsc::Receiver<Bytes>,
    stall: Duration,
) -> Ending {
    use broadcast::error::{RecvError, TryRecvError};
    let lagged = |behind| Ending::slow_consumer(&format!("it fell {behind} batches of queries behind"));
    loop {
        let first = tokio::select! {
            query = queries.recv() => match query {
                Ok(lines) => lines,
                Err(RecvError::Lagged(behind)) => return lagged(behind),
                Err(RecvError::Closed) => return Ending::Stopped,
            },
            Some(line) = errors.recv() => line,
        };
        // Requests being read go first: every moment one waits to be read is added to its
        // deadline, while queries have the whole deadline to arrive.
        tokio::task::yield_now().await;
        let batch = connection::join_batch(first, || match queries.try_recv() {
            Ok(more) => Ok(Some(more)),
            Err(TryRecvError::Lagged(behind)) => Err(behind),
            Err(_) => Ok(None),
        });
        let out = match batch {
            Ok(out) => out,
            Err(behind) => return lagged(behind),
        };
        if !seat.held() {
            return Ending::cut_off();
        }
        // A server stuck in a write never comes back to the queue to see that it lagged, so a
        // write that makes no progress for `stall` is what marks it as a slow consumer.
        match tokio::time::timeout(stall, write.send(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ending::Broken,
            Err(_) => return Ending::slow_consumer(&format!("it read nothing for {stall:?}")),
        }
    }
}
