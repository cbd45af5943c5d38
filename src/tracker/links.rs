//! The tracker's tasks: the accept loop, one task per connection (it reads and writes its
//! socket in one `select!`), and one short-lived task per open request (it waits for the
//! last reply or the deadline, then answers).
//!
//! A server's connection task reads the broadcast channel of queries; a server that falls
//! more than `server_queue` batches behind is a slow consumer and is disconnected, and
//! nobody waits for it. A client's answers go through a bounded queue; a client that leaves
//! it full is disconnected too.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::federation::Gather;
use super::registry::Listed;
use super::requests::Reply;
use super::{ServerSeat, Shared};
use crate::cluster::Claim;
use crate::connection::{self, LineReader, Stream, TlsStream, WriteHalf};
use crate::error::Error;
use crate::hash::FastMap;
use crate::protocol::{self, End, ErrorCode, Message, Name, ProtocolError, MAX_REQUEST_LINE};
use crate::shutdown::StopSignal;
use crate::tls;
use crate::transcript::{Event, Role, CENTRAL};

/// How long the accept loop pauses after an accept error (such as running out of file
/// descriptors) before trying again, so it never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a last line (`ERROR`, `BYE`) to a peer may take before we close regardless.
const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Error lines queued to one client's connection; past it, a client sending bad lines
/// faster than it reads loses the errors that do not fit.
const CLIENT_ERRORS: usize = 64;

/// Error lines queued to one server's connection; past it, a server flooding us with bad
/// lines while not reading loses them.
const SERVER_ERRORS: usize = 16;

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: StopSignal) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.requested() => break,
        };
        let Ok((stream, peer)) = accepted else {
            // Out of descriptors, or a connection reset before we took it: back off instead
            // of spinning on the same error.
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        // These options only tune the connection; one that cannot be set leaves it slower,
        // with the kernel's own buffer, or slower to find a vanished peer, still correct, so
        // the connection is served anyway.
        let _ = stream.set_nodelay(true);
        let _ = connection::set_send_buffer(&stream, shared.config.send_buffer);
        let _ = connection::set_keepalive(&stream, shared.config.keepalive);
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            match shared.limit.clone().try_acquire_owned() {
                Ok(_permit) => handle_connection(&shared, stream, peer, stop).await,
                // A TLS tracker just closes: a handshake to say why would cost the most
                // when it can least afford it, and the node retries a closed tracker anyway.
                Err(_) if shared.config.tls.is_some() => drop(stream),
                Err(_) => {
                    let (_, mut write) = Stream::Plain(stream).into_split();
                    let text = "the tracker has too many connections";
                    refuse(&shared, &mut write, &peer.to_string(), ErrorCode::TooManyConnections, text).await;
                }
            }
        });
    }
    // Closed before the tracker counts as stopped: its port is free once `shutdown` returns.
    drop(listener);
}

async fn handle_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, mut stop: StopSignal) {
    // The TLS handshake and the greeting share one timeout.
    let greeted_by = Instant::now() + shared.config.handshake_timeout;
    let peer = peer.to_string();
    let stream = match &shared.config.tls {
        None => Stream::Plain(stream),
        Some(config) => {
            let opened = tokio::select! {
                opened = tokio::time::timeout_at(greeted_by, open_tls(config, stream)) => opened,
                () = stop.requested() => return,
            };
            match opened {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(TlsRefused::PlainText(stream))) => {
                    shared.tls_failed.fetch_add(1, Ordering::Relaxed);
                    let (_, mut write) = Stream::Plain(stream).into_split();
                    let text = "this tracker speaks TLS: connect with --tls (and --tls-ca for a private CA)";
                    return refuse(shared, &mut write, &peer, ErrorCode::TlsRequired, text).await;
                }
                Ok(Err(TlsRefused::Failed(e))) => return tls_failed(shared, peer, e.to_string()),
                Err(_elapsed) => return tls_failed(shared, peer, "no handshake in time".into()),
            }
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = LineReader::new(read, MAX_REQUEST_LINE).with_line_timeout(shared.config.stall_timeout);
    let first = tokio::select! {
        first = tokio::time::timeout_at(greeted_by, reader.next()) => first,
        () = stop.requested() => return,
    };
    let (code, text) = match first {
        Ok(Ok(Some(Message::Hello { token, .. } | Message::Hi { token, .. })))
            if !shared.admits(token.as_ref()) =>
        {
            (ErrorCode::Unauthorized, "a wrong or missing token".to_owned())
        }
        Ok(Ok(Some(Message::Hello { name, .. }))) => {
            return serve_server(shared, name, reader, write, stop).await;
        }
        Ok(Ok(Some(Message::Hi { name, .. }))) => {
            return serve_client(shared, name, reader, write, stop).await;
        }
        Ok(Ok(None) | Err(Error::Closed | Error::Io(_))) => return,
        Ok(Ok(Some(_))) => {
            (ErrorCode::NotRegistered, "say HELLO <name> (a server) or HI <name> (a client) first".to_owned())
        }
        Ok(Err(e)) => {
            let (code, text, _) = error_for(&e);
            (code, text)
        }
        Err(_elapsed) => (ErrorCode::HandshakeTimeout, "no HELLO or HI in time".to_owned()),
    };
    refuse(shared, &mut write, &peer, code, &text).await;
}

/// Why a connection to a TLS tracker did not become a TLS stream.
enum TlsRefused {
    /// The peer began in plain text: it gets its `ERROR` line in plain text.
    PlainText(TcpStream),
    /// The handshake failed; there is no one to tell.
    Failed(std::io::Error),
}

/// Takes the TLS handshake on `stream`, unless its first byte shows plain text.
async fn open_tls(config: &Arc<rustls::ServerConfig>, stream: TcpStream) -> Result<TlsStream, TlsRefused> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] != tls::HANDSHAKE_RECORD => return Err(TlsRefused::PlainText(stream)),
        Ok(0) => return Err(TlsRefused::Failed(std::io::ErrorKind::UnexpectedEof.into())),
        Err(e) => return Err(TlsRefused::Failed(e)),
        Ok(_) => {}
    }
    match tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream).await {
        Ok(stream) => Ok(stream.into()),
        Err(e) => Err(TlsRefused::Failed(e)),
    }
}

/// Counts and records a connection whose TLS handshake failed, as it closes.
fn tls_failed(shared: &Shared, peer: String, reason: String) {
    shared.tls_failed.fetch_add(1, Ordering::Relaxed);
    shared.transcript.record(Event::TlsFailed { peer, reason });
}

/// Why a node's connection ended.
enum Ending {
    /// The node closed or said `BYE`.
    Left,
    /// The tracker is stopping.
    Stopped,
    /// The node misbehaved: send it this last `ERROR` (if any), and drop it for `reason`.
    Dropped { last: Option<(ErrorCode, String)>, reason: String },
}

impl Ending {
    fn slow_consumer(why: &str) -> Ending {
        let reason = format!("{why} (a slow consumer)");
        Ending::Dropped { last: Some((ErrorCode::SlowConsumer, reason.clone())), reason }
    }

    /// The ending for a node of a tracker that lost its place in its cluster.
    fn cut_off() -> Ending {
        Ending::Dropped { last: Some((ErrorCode::Internal, CUT_OFF.to_owned())), reason: CUT_OFF.to_owned() }
    }

    /// The ending for a read that failed with `e`.
    fn failed(e: &Error) -> Ending {
        let (code, text, _) = error_for(e);
        Ending::Dropped { last: Some((code, text)), reason: e.to_string() }
    }
}

async fn welcome(shared: &Shared, role: Role, name: &Name, write: &mut WriteHalf) -> crate::Result<()> {
    shared.transcript.record_with(|| Event::WelcomeSent { role, node: name.clone() });
    let deadline_ms = u64::try_from(shared.config.deadline.as_millis()).unwrap_or(u64::MAX);
    let message = Message::Welcome { name: name.clone(), deadline_ms, replies: shared.config.replies };
    connection::write_message(write, &message).await
}

async fn finish(shared: &Shared, role: Role, name: &Name, write: &mut WriteHalf, ending: Ending) {
    match ending {
        Ending::Left => {}
        Ending::Stopped => last_word(write, b"BYE\n").await,
        Ending::Dropped { last, reason } => {
            if let Some((code, text)) = last {
                refuse(shared, write, name.as_str(), code, &text).await;
            }
            shared.transcript.record(Event::Dropped { role, node: name.clone(), reason });
        }
    }
}

/// Takes `name` across the cluster, if there is one; `false` once the node is refused.
/// (A name held by another node of this tracker counts as taken here, and is refused by the
/// local registry next.)
async fn claim(shared: &Shared, name: &Name, write: &mut WriteHalf) -> bool {
    let Some(federation) = shared.federation.as_ref().filter(|_| name.as_str() != CENTRAL) else {
        return true;
    };
    if !*federation.cluster.standing().borrow() {
        refuse(shared, write, name.as_str(), ErrorCode::Internal, CUT_OFF).await;
        return false;
    }
    match federation.cluster.claim(name).await {
        Ok(Claim::Ours) => true,
        Ok(Claim::Taken) => {
            refuse_taken(shared, name, write).await;
            false
        }
        Err(e) => {
            refuse(shared, write, name.as_str(), ErrorCode::Internal, &e.to_string()).await;
            false
        }
    }
}

/// Why a tracker cut off from its cluster's names refuses and drops nodes.
const CUT_OFF: &str = "this tracker is cut off from its cluster for now; register with another";

/// Resolves when this tracker loses its place in its cluster (never, alone): then it must
/// serve no node, whose name another tracker may soon give out.
async fn cut_off(shared: &Shared) {
    match shared.federation.as_ref() {
        Some(federation) => {
            let mut standing = federation.cluster.standing();
            // The sender lives as long as the tracker: an error is the tracker going away.
            let _ = standing.wait_for(|standing| !standing).await;
        }
        None => std::future::pending().await,
    }
}

/// Gives `name` back to the cluster once its node has left, unless another node of the
/// same name has registered here meanwhile.
fn release(shared: &Arc<Shared>, name: &Name) {
    if shared.federation.is_some() {
        let (shared, name) = (shared.clone(), name.clone());
        tokio::spawn(async move {
            if let Some(federation) = shared.federation.as_ref().filter(|_| !shared.holds(&name)) {
                federation.cluster.release(&name).await;
            }
        });
    }
}

async fn refuse_taken(shared: &Shared, name: &Name, write: &mut WriteHalf) {
    let text = if name.as_str() == CENTRAL {
        format!("the name {CENTRAL} is the tracker's")
    } else {
        format!("the name {name} is taken by a live node")
    };
    refuse(shared, write, name.as_str(), ErrorCode::NameTaken, &text).await;
}

async fn serve_server(
    shared: &Arc<Shared>,
    name: Name,
    mut reader: LineReader,
    mut write: WriteHalf,
    mut stop: StopSignal,
) {
    shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Server, node: name.clone() });
    if !claim(shared, &name, &mut write).await {
        return;
    }
    let Some((seat, mut queries)) = shared.add_server(&name) else {
        return refuse_taken(shared, &name, &mut write).await;
    };
    let (errors, mut errors_rx) = mpsc::channel(SERVER_ERRORS);
    let stall = shared.config.stall_timeout;
    let ending = match welcome(shared, Role::Server, &name, &mut write).await {
        Err(_) => Ending::Left,
        Ok(()) => tokio::select! {
            ending = server_reads(shared, &seat, &mut reader, &errors) => ending,
            ending = server_writes(&mut write, &mut queries, &mut errors_rx, stall) => ending,
            () = stop.requested() => Ending::Stopped,
            () = cut_off(shared) => Ending::cut_off(),
        },
    };
    shared.remove_server(&seat);
    drop(queries);
    release(shared, &name);
    finish(shared, Role::Server, &name, &mut write, ending).await;
}

async fn server_reads(
    shared: &Shared,
    seat: &ServerSeat,
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
                    None => match protocol::parse(line) {
                        Ok(Message::Match { id }) => replies.push((id, true)),
                        Ok(Message::Miss { id }) => replies.push((id, false)),
                        Ok(Message::Bye) => {
                            left = true;
                            return ControlFlow::Break(());
                        }
                        Ok(_) => send_error(
                            errors,
                            ErrorCode::Unexpected,
                            "a server may send only MATCH, MISS or BYE",
                        ),
                        Err(e) => send_error(errors, e.code(), &e.to_string()),
                    },
                }
                ControlFlow::Continue(())
            })
            .await;
        shared.on_replies(seat, &replies, &mut refused);
        replies.clear();
        for reply in refused.drain(..) {
            if reply == Reply::Unknown {
                send_error(errors, ErrorCode::UnknownRequest, "no request has this id");
            } else {
                send_error(errors, ErrorCode::NotAsked, "this server was not asked, or has already replied");
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
/// flooding us with bad lines and not reading, and the line is dropped.
fn send_error(errors: &mpsc::Sender<Bytes>, code: ErrorCode, text: &str) {
    let _ = errors.try_send(Bytes::from(error_line(code, text)));
}

fn error_line(code: ErrorCode, text: &str) -> Vec<u8> {
    protocol::to_line(&Message::Error { code, text: text.to_owned() })
}

async fn server_writes(
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
        // A server stuck in a write never comes back to the queue to see that it lagged, so a
        // write that makes no progress for `stall` is what marks it as a slow consumer.
        match tokio::time::timeout(stall, write.send(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ending::Left,
            Err(_) => return Ending::slow_consumer(&format!("it read nothing for {stall:?}")),
        }
    }
}

async fn serve_client(
    shared: &Arc<Shared>,
    name: Name,
    mut reader: LineReader,
    mut write: WriteHalf,
    mut stop: StopSignal,
) {
    shared.transcript.record_with(|| Event::GreetingReceived { role: Role::Client, node: name.clone() });
    if !claim(shared, &name, &mut write).await {
        return;
    }
    if !shared.add_client(&name) {
        return refuse_taken(shared, &name, &mut write).await;
    }
    // Every answer in the queue is for a request still counted as open, so the queue never
    // holds more than the open requests a client may have: it cannot overflow.
    let (answers, mut answers_rx) = mpsc::channel(shared.config.max_open_per_client);
    let (errors, mut errors_rx) = mpsc::channel(CLIENT_ERRORS);
    let link = ClientLink { answers, errors, open: Arc::new(AtomicUsize::new(0)), asked: Arc::default() };
    let open = link.open.clone();
    let stall = shared.config.stall_timeout;
    let requests_stop = stop.clone();
    let ending = match welcome(shared, Role::Client, &name, &mut write).await {
        Err(_) => Ending::Left,
        Ok(()) => tokio::select! {
            ending = client_reads(shared, &name, &mut reader, &link, &requests_stop) => ending,
            ending = client_writes(&mut write, &mut answers_rx, &mut errors_rx, &open, stall) => ending,
            () = stop.requested() => Ending::Stopped,
            () = cut_off(shared) => Ending::cut_off(),
        },
    };
    let ending = match ending {
        // The client is done asking (it said BYE, or closed its side of the connection): it
        // still gets the answer to every request it has open, then the connection closes.
        // Once every request has answered, nothing holds the queue open and the writer ends.
        Ending::Left => {
            drop(link);
            drop(errors_rx);
            let mut no_errors = mpsc::channel(1).1;
            tokio::select! {
                ending = client_writes(&mut write, &mut answers_rx, &mut no_errors, &open, stall) => ending,
                () = stop.requested() => Ending::Stopped,
            }
        }
        other => other,
    };
    shared.remove_client(&name);
    release(shared, &name);
    finish(shared, Role::Client, &name, &mut write, ending).await;
}

/// Writes a client's answers and error lines, several to a system call when they queue up;
/// an answer stops counting as open once it is written. Ends when the answers' queue is
/// closed and drained (`Left`), the socket fails (`Left`), or a write makes no progress for
/// `stall` (a slow consumer).
async fn client_writes(
    write: &mut WriteHalf,
    answers: &mut mpsc::Receiver<Bytes>,
    errors: &mut mpsc::Receiver<Bytes>,
    open: &AtomicUsize,
    stall: Duration,
) -> Ending {
    loop {
        let (first, mut written) = tokio::select! {
            biased;
            answer = answers.recv() => match answer {
                Some(answer) => (answer, 1),
                None => return Ending::Left,
            },
            Some(error) = errors.recv() => (error, 0),
        };
        let batch = connection::join_batch(first, || {
            Ok::<_, std::convert::Infallible>(match answers.try_recv() {
                Ok(answer) => {
                    written += 1;
                    Some(answer)
                }
                Err(_) => errors.try_recv().ok(),
            })
        });
        let Ok(batch) = batch;
        match tokio::time::timeout(stall, write.send(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ending::Left,
            Err(_) => return Ending::slow_consumer(&format!("it read nothing for {stall:?}")),
        }
        // Written, so no longer open: a client that asks again the moment it has its answer
        // never finds this request still counted against it.
        open.fetch_sub(written, Ordering::Relaxed);
    }
}

async fn client_reads(
    shared: &Arc<Shared>,
    name: &Name,
    reader: &mut LineReader,
    link: &ClientLink,
    stop: &StopSignal,
) -> Ending {
    loop {
        // Lines already buffered are read without touching the socket; without this, one
        // client's burst would be fanned out before any server's writer gets to run.
        tokio::task::consume_budget().await;
        let (client_id, number) = match reader.next().await {
            Ok(Some(Message::Find { id, number })) => (id, number),
            Ok(Some(Message::Cancel { id })) => {
                // Unknown or already answered: nothing to free.
                if let Some(request) = link.asked.lock().remove(&id) {
                    shared.cancel(request);
                }
                continue;
            }
            Ok(Some(Message::Bye) | None) | Err(Error::Closed) => return Ending::Left,
            Ok(Some(_)) => {
                link.complain(ErrorCode::Unexpected, "a client may send only FIND, CANCEL or BYE");
                continue;
            }
            Err(e) => {
                let (code, text, fatal) = error_for(&e);
                if fatal {
                    return Ending::failed(&e);
                }
                link.complain(code, &text);
                continue;
            }
        };
        let most = shared.config.max_open_per_client;
        if link.open.load(Ordering::Relaxed) >= most {
            link.complain(ErrorCode::TooManyRequests, &protocol::too_many_requests(client_id, most));
            continue;
        }
        // The deadline runs from the moment the request is read, so the work of fanning
        // out many requests at once happens inside their deadlines, not after them.
        let deadline = Instant::now() + shared.config.deadline;
        shared.received.fetch_add(1, Ordering::Relaxed);
        shared.transcript.record_with(|| Event::FindReceived { client: name.clone() });
        link.open.fetch_add(1, Ordering::Relaxed);
        let local = shared.fan_out(name, number);
        let remote = match &shared.federation {
            Some(federation) => federation.ask(name, number, deadline).await,
            None => None,
        };
        if local.is_none() && remote.is_none() {
            link.answer(shared.answer(name, client_id, End::NoServers, &Listed::default()));
            continue;
        }
        if let Some((id, _)) = &local {
            link.asked.lock().insert(client_id, *id);
        }
        let waiter = Waiter {
            shared: shared.clone(),
            id: local.as_ref().map(|(id, _)| *id),
            remote: remote.as_ref().map(|(request, _)| *request),
            client: name.clone(),
            client_id,
            link: link.clone(),
        };
        let done = (local.map(|(_, done)| done), remote.map(|(_, done)| done));
        tokio::spawn(waiter.wait(done, deadline, stop.clone()));
    }
}

/// The way to one client's connection: a queue for its answers, one for error lines, the
/// count of its requests open (asked and not yet answered on the wire), and the tracker's
/// ids of the requests it may still cancel, by its own ids.
#[derive(Clone)]
struct ClientLink {
    answers: mpsc::Sender<Bytes>,
    errors: mpsc::Sender<Bytes>,
    open: Arc<AtomicUsize>,
    asked: Arc<Mutex<FastMap<u64, u64>>>,
}

impl ClientLink {
    /// Queues the answer to an open request. The queue has room for every open request, so
    /// this fails only when the connection's writer has ended, and then nobody is waiting.
    fn answer(&self, line: Vec<u8>) {
        if self.answers.try_send(Bytes::from(line)).is_err() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues an `ERROR` line. A client that sends bad lines faster than it reads their
    /// errors loses the errors that do not fit; its answers are never at stake.
    fn complain(&self, code: ErrorCode, text: &str) {
        let _ = self.errors.try_send(Bytes::from(error_line(code, text)));
    }
}

/// Waits for one request to complete or reach its deadline, then answers the client.
struct Waiter {
    shared: Arc<Shared>,
    /// The request asked of this tracker's servers, if it has any.
    id: Option<u64>,
    /// The request asked of the other trackers, in a cluster.
    remote: Option<u64>,
    client: Name,
    client_id: u64,
    link: ClientLink,
}

impl Waiter {
    /// Waits for `done` (this tracker's servers, then the other trackers', each that was
    /// asked) or the deadline. Holds `stop` while it waits, so the tracker's shutdown waits
    /// for it too.
    async fn wait(self, done: Done, deadline: Instant, mut stop: StopSignal) {
        let all_replied = async {
            if let Some(local) = done.0 {
                let _ = local.await;
            }
            if let Some(remote) = done.1 {
                let _ = remote.await;
            }
        };
        let by_deadline = tokio::select! {
            () = all_replied => false,
            () = tokio::time::sleep_until(deadline) => true,
            // The tracker is stopping, or the client's connection ended: nobody is waiting
            // for the answer.
            () = stop.requested() => true,
            () = self.link.answers.closed() => true,
        };
        self.link.asked.lock().remove(&self.client_id);
        let remote = self.remote.zip(self.shared.federation.as_ref()).and_then(|(r, f)| f.take(r));
        // Closed already: the client cancelled it.
        let local = self.id.map(|id| self.shared.close(id));
        if matches!(local, Some(None)) || stop.is_requested() || self.link.answers.is_closed() {
            self.link.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let local = local.flatten();
        let complete = local.as_ref().is_none_or(|(request, _)| request.all_replied())
            && remote.as_ref().is_none_or(Gather::complete);
        if by_deadline && !complete {
            self.shared.transcript.record_with(|| Event::DeadlineReached { client: self.client.clone() });
        }
        if let Some(silent) = remote.as_ref().map(|g| g.silent.len()).filter(|&n| n > 0) {
            self.shared.transcript.record_with(|| Event::TrackersSilent { client: self.client.clone(), trackers: silent });
        }
        let none_asked = local.is_none() && remote.as_ref().is_none_or(|g| g.asked == 0 && g.complete());
        let end = if none_asked {
            End::NoServers
        } else if complete {
            End::Replied
        } else {
            End::Deadline
        };
        let servers = merged(local.map(|(_, listed)| listed), remote.map(|g| g.names).unwrap_or_default());
        self.link.answer(self.shared.answer(&self.client, self.client_id, end, &servers));
    }
}

/// What a request waits for: this tracker's servers, and the other trackers.
type Done = (Option<oneshot::Receiver<()>>, Option<oneshot::Receiver<()>>);

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

/// Sends a last `ERROR` line and gives up on the peer.
async fn refuse(shared: &Shared, write: &mut WriteHalf, peer: &str, code: ErrorCode, text: &str) {
    shared.transcript.record(Event::ErrorSent { peer: peer.to_owned(), code });
    last_word(write, &error_line(code, text)).await;
}

/// Writes a last line to a peer we are about to close, giving up after a moment: a peer that
/// does not read it is being dropped anyway.
async fn last_word(write: &mut WriteHalf, line: &[u8]) {
    let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, write.send(line)).await;
}

/// The `ERROR` line for a message that cannot be handled, and whether to close after it.
fn error_for(e: &Error) -> (ErrorCode, String, bool) {
    match e {
        Error::Protocol(p) => (p.code(), p.to_string(), *p == ProtocolError::LineTooLong),
        Error::Timeout(_) => (ErrorCode::LineTimeout, "a line was left half-sent for too long".into(), true),
        other => (ErrorCode::Internal, other.to_string(), true),
    }
}
