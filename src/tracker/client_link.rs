//! A client's connection: requests come in, are fanned out, wait in the client's
//! [`Waiting`] for their replies or their deadline, and their answers go out in the order
//! they end.
//!
//! Backpressure, not refusal: every line that gets a line back (an answer, or an `ERROR`)
//! first takes one of the client's permits (`max_open_per_client` of them), which travels
//! with the request and then with its line in the write queue, and is given back once the
//! line is written to the socket. Out of permits, the connection stops reading: the
//! client's further requests wait in the socket, and TCP's flow control slows it down. So
//! every request that was read is answered exactly once (or cancelled by `CANCEL`), and a
//! client that stops reading fills its socket, leaves a write stuck, and is dropped as a slow
//! consumer. Reading takes at most [`LINES_PER_TURN`] lines before giving others a turn.
//!
//! On a drain the connection reads no more requests, answers every open one as usual, and
//! then says `BYE`; a client that leaves (`BYE`, or closing its side) gets the same.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::accept::{error_for, error_line};
use super::connections::{Conn, Origin};
use super::peers::Heard;
use super::registry::Listed;
use super::requests::Part;
use super::seat::{Ending, Seat};
use super::waiter::{end_of, Asked, Open, Waiting};
use super::{Shared, Signals};
use crate::connection::{self, LineReader, WriteHalf};
use crate::error::Error;
use crate::protocol::{self, End, ErrorCode, Message, Name, ProtocolError, Sender};
use crate::transcript::Event;

/// Most lines one connection reads before letting the others run: a client pipelining
/// thousands of requests in one write must not keep the rest waiting.
const LINES_PER_TURN: usize = 64;

/// A line on its way to the client, with the permit it holds until it is written.
struct Outgoing {
    line: Bytes,
    permit: OwnedSemaphorePermit,
}

/// A registered client's connection, as its task sees it.
struct ClientLink {
    shared: Arc<Shared>,
    name: Name,
    reader: LineReader,
    /// Its entry among the tracker's connections, told when the client says something.
    conn: Arc<Conn>,
    permits: Arc<Semaphore>,
    waiting: Waiting,
    out: mpsc::UnboundedSender<Outgoing>,
    /// The cluster term the client registered in: it is served while the tracker holds it.
    term: u64,
}

/// Serves the client `name` from its greeting to its leaving.
pub(super) async fn run(
    shared: &Arc<Shared>,
    name: Name,
    origin: Origin,
    reader: LineReader,
    mut write: WriteHalf,
    mut signals: Signals,
) {
    let Some(seat) = Seat::for_client(shared, name, origin, &mut write).await else { return };
    let permits = Arc::new(Semaphore::new(shared.config.max_open_per_client));
    seat.conn().watch_permits(permits.clone(), shared.config.max_open_per_client);
    // The permits bound what the queue can hold, so the queue needs no bound of its own.
    let (out, mut out_rx) = mpsc::unbounded_channel();
    let mut link = ClientLink {
        shared: shared.clone(),
        name: seat.name().clone(),
        reader,
        conn: seat.conn().clone(),
        permits,
        waiting: Waiting::default(),
        out,
        term: seat.term(),
    };
    let stall = shared.config.stall_timeout;
    let ending = tokio::select! {
        ending = link.serve(&mut signals) => ending,
        ending = write_lines(&seat, &mut write, &mut out_rx, stall) => ending,
    };
    let ending = match ending {
        // Every request is answered and nothing more will be read: write what is queued,
        // then close (the queue ends once its sender is gone).
        Ending::Left | Ending::Drained => {
            drop(link);
            tokio::select! {
                written = write_lines(&seat, &mut write, &mut out_rx, stall) => match written {
                    Ending::Left => ending,
                    other => other,
                },
                () = signals.stop.requested() => Ending::Stopped,
            }
        }
        other => other,
    };
    seat.leave(&mut write, ending).await;
}

impl ClientLink {
    /// Reads requests and answers them until the client is done and every request it asked
    /// has been answered (`Left`), the tracker has drained it (`Drained`), or the link must
    /// end at once.
    async fn serve(&mut self, signals: &mut Signals) -> Ending {
        let mut reading = true;
        let mut done_reading = Ending::Left;
        // Grows to the most lines one turn has read: a client that asks one request at a
        // time keeps a small buffer (4000 clients hold 4000 of them).
        let mut lines = Vec::new();
        loop {
            if !reading && self.waiting.is_empty() {
                return done_reading;
            }
            let budget = self.permits.available_permits().min(LINES_PER_TURN);
            let read = tokio::select! {
                read = self.reader.read_batch(|line| {
                    lines.push(protocol::parse_from(line, Sender::Client));
                    if lines.len() < budget { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
                }), if reading && budget > 0 => read,
                // Out of permits: read on once an answer has been written.
                _ = self.permits.acquire(), if reading && budget == 0 => continue,
                (open, by_deadline) = self.waiting.next() => {
                    // An answer goes out only while the tracker's lease holds: the names in it
                    // may be other nodes' once it may have lapsed. The client hears why.
                    if !self.shared.peers.holds(self.term) {
                        self.free(open);
                        return Ending::cut_off();
                    }
                    self.answer(open, by_deadline);
                    continue;
                }
                () = signals.drain.requested(), if reading => {
                    reading = false;
                    done_reading = Ending::Drained;
                    continue;
                }
                () = signals.stop.requested() => return Ending::Stopped,
                () = self.shared.peers.cut_off(self.term) => return Ending::cut_off(),
            };
            // Requests read after the lease may have lapsed (a pause, say) are not served.
            if !self.shared.peers.holds(self.term) {
                return Ending::cut_off();
            }
            let full_turn = lines.len() == LINES_PER_TURN;
            self.conn.touch();
            for line in lines.drain(..) {
                if !self.on_line(line).await {
                    reading = false;
                }
            }
            match read {
                Ok(true) => {}
                Ok(false) | Err(Error::Closed) => reading = false,
                Err(e) => return Ending::failed(&e),
            }
            if full_turn {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Handles one line from the client; false once it has said `BYE`.
    async fn on_line(&mut self, line: Result<Message, Option<ProtocolError>>) -> bool {
        match line {
            Ok(Message::Find { id, number }) => self.find(id, number).await,
            Ok(Message::Cancel { id }) => {
                // Unknown or already answered: nothing to free.
                if let Some(open) = self.waiting.cancel(id) {
                    self.shared.metrics.cancelled();
                    self.free(open);
                }
            }
            Ok(Message::Bye) => return false,
            Ok(_) | Err(None) => {
                self.complain(ErrorCode::Unexpected, "a client may send only FIND, CANCEL or BYE").await
            }
            Err(Some(e)) => {
                let (code, text, _) = error_for(&Error::Protocol(e));
                self.complain(code, &text).await;
            }
        }
        true
    }

    /// Frees a request that will not be answered (cancelled, or its connection ending):
    /// a later reply to it is late, and its permit goes back.
    fn free(&self, open: Open) {
        if let Some(local) = open.local {
            self.shared.cancel(local);
        }
        self.shared.peers.take(open.remote);
    }

    /// A permit for one more line to the client. At once: lines are read only while there
    /// are permits for them. (`None` only if the semaphore were closed, which it never is.)
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    async fn complain(&mut self, code: ErrorCode, text: &str) {
        if let Some(permit) = self.permit().await {
            self.shared.metrics.error_sent(code);
            self.send(error_line(code, text), permit);
        }
    }

    fn send(&self, line: Vec<u8>, permit: OwnedSemaphorePermit) {
        // Fails only once the writer has ended, and then the link is ending too.
        let _ = self.out.send(Outgoing { line: Bytes::from(line), permit });
    }

    /// Opens the client's request `client_id` for `number`: fans it out to this tracker's
    /// servers and asks the other trackers, or answers at once if nobody can be asked.
    async fn find(&mut self, client_id: u64, number: u8) {
        let Some(permit) = self.permit().await else { return };
        // The deadline runs from the moment the request is read, so the work of fanning
        // out many requests at once happens inside their deadlines, not after them.
        let asked_at = Instant::now();
        let deadline = asked_at + self.shared.config.deadline;
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        self.shared.transcript.record_with(|| Event::FindReceived { client: self.name.clone() });
        let key = self.waiting.reserve();
        let local = self.shared.fan_out(&self.name, number, self.waiting.done(key, Part::Local));
        let remote =
            self.shared.peers.ask(&self.name, number, deadline, self.waiting.done(key, Part::Peers)).await;
        if local.is_none() && remote.is_none() {
            let line = self.shared.answer(&self.name, client_id, End::NoServers, &Listed::default());
            self.shared.metrics.answered(End::NoServers, false, asked_at.elapsed());
            return self.send(line, permit);
        }
        self.waiting.insert(key, Open::new(client_id, local, remote, permit, asked_at), deadline);
    }

    /// Answers a request that has ended.
    fn answer(&self, open: Open, by_deadline: bool) {
        let shared = &self.shared;
        let heard: Option<Heard> = shared.peers.take(open.remote);
        let local = open.local.and_then(|id| shared.close(id));
        let end = end_of(
            local.as_ref().map(|(request, _)| request.all_replied()),
            heard.as_ref().map(|heard| Asked { complete: heard.complete, servers: heard.asked }),
        );
        if by_deadline && end == End::Deadline {
            shared.transcript.record_with(|| Event::DeadlineReached { client: self.name.clone() });
        }
        if let Some(silent) = heard.as_ref().map(|heard| heard.silent).filter(|&n| n > 0) {
            shared
                .transcript
                .record_with(|| Event::TrackersSilent { client: self.name.clone(), trackers: silent });
        }
        let servers =
            merged(local.map(|(_, listed)| listed), heard.map(|heard| heard.names).unwrap_or_default());
        shared.metrics.answered(end, !servers.names.is_empty(), open.asked_at.elapsed());
        self.send(shared.answer(&self.name, open.client_id, end, &servers), open.permit);
    }
}

impl Drop for ClientLink {
    /// A link that ends with requests open (the tracker stopped, the client was dropped)
    /// frees them: nobody will hear their answers.
    fn drop(&mut self) {
        let open: Vec<Open> = self.waiting.take_all().collect();
        for open in open {
            self.free(open);
        }
    }
}

/// This tracker's matching servers with the other trackers', in index order.
fn merged(local: Option<Listed>, remote: Vec<Name>) -> Listed {
    if remote.is_empty() {
        return local.unwrap_or_default();
    }
    let mut names: Vec<Name> = local.map(|listed| listed.names.to_vec()).unwrap_or_default();
    names.extend(remote);
    names.sort_unstable_by(Name::index_order);
    names.dedup();
    Listed::new(names)
}

/// Writes a client's lines, several to a system call when they queue up, giving each line's
/// permit back once it is written. Ends when the queue is closed and drained (`Left`), the
/// socket fails (`Broken`), or a write makes no progress for `stall` (a slow consumer).
async fn write_lines(
    seat: &Seat,
    write: &mut WriteHalf,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    stall: Duration,
) -> Ending {
    let mut written = Vec::new();
    loop {
        let Some(first) = queue.recv().await else { return Ending::Left };
        written.push(first.permit);
        let batch = connection::join_batch(first.line, || {
            Ok::<_, std::convert::Infallible>(queue.try_recv().ok().map(|next| {
                written.push(next.permit);
                next.line
            }))
        });
        let Ok(batch) = batch;
        // Checked again right before the write: the answers were made while the lease held,
        // but this task may run after a pause.
        if !seat.held() {
            return Ending::cut_off();
        }
        match tokio::time::timeout(stall, write.send(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ending::Broken,
            Err(_) => return Ending::slow_consumer(&format!("it read nothing for {stall:?}")),
        }
        // Written: the client may have that many more lines read.
        written.clear();
    }
}
