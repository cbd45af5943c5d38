//! Taking connections: the accept loop, the connection limit, TLS (and telling plain text
//! from a TLS record by the first byte), and the greeting that decides whether a connection
//! is a server's ([`server_link`](super::server_link)) or a client's
//! ([`client_link`](super::client_link)). Also the last words a refused peer gets.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::connections::Origin;
use super::{client_link, server_link, Shared, Signals};
use crate::connection::{self, LineReader, Stream, TlsStream, WriteHalf};
use crate::error::Error;
use crate::protocol::{self, ErrorCode, Message, ProtocolError, Sender, MAX_REQUEST_LINE};
use crate::tls;
use crate::transcript::Event;

/// How long the accept loop pauses after an accept error (such as running out of file
/// descriptors) before trying again, so it never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a last line (`ERROR`, `BYE`) to a peer may take before we close regardless.
const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections until the tracker drains or stops; then the port closes, and nodes
/// that knock find another tracker.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut signals: Signals) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signals.drain.requested() => break,
            () = signals.stop.requested() => break,
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
        let (shared, signals) = (shared.clone(), signals.clone());
        tokio::spawn(async move {
            match shared.limit.clone().try_acquire_owned() {
                Ok(_permit) => greet(&shared, stream, peer, signals).await,
                // A TLS tracker just closes: a handshake to say why would cost the most
                // when it can least afford it, and the node retries a closed tracker anyway.
                Err(_) if shared.config.tls.is_some() || shared.keys.read().tls.is_some() => {
                    shared.metrics.refused_at_limit();
                    drop(stream);
                }
                Err(_) => {
                    shared.metrics.refused_at_limit();
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

/// Takes the TLS handshake (if the tracker speaks TLS) and the greeting, then hands the
/// connection to its link. A tracker that starts draining meanwhile just closes: the node
/// finds another.
async fn greet(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, mut signals: Signals) {
    // The TLS handshake and the greeting share one timeout.
    let greeted_by = Instant::now() + shared.config.handshake_timeout;
    let peer = peer.to_string();
    let fd = stream.as_raw_fd();
    // The certificate in force now: a reload changes it for the next handshake.
    let tls = shared.keys.read().tls.clone();
    let stream = match tls {
        None => Stream::Plain(stream),
        Some(config) => {
            let opened = tokio::select! {
                opened = tokio::time::timeout_at(greeted_by, open_tls(&config, stream)) => opened,
                () = signals.ending() => return,
            };
            match opened {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(TlsRefused::PlainText(stream))) => {
                    shared.metrics.tls_failed();
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
        first = tokio::time::timeout_at(greeted_by, reader.next_with(|line| protocol::parse_from(line, Sender::Greeting))) => first,
        () = signals.ending() => return,
    };
    let (code, text) = match first {
        Ok(Ok(Some(Ok(Message::Hello { token, .. } | Message::Hi { token, .. }))))
            if !shared.admits(token.as_ref()) =>
        {
            (ErrorCode::Unauthorized, "a wrong or missing token".to_owned())
        }
        Ok(Ok(Some(Ok(Message::Hello { name, .. })))) => {
            // A server does not hold up a drain: it stays until the tracker stops.
            let Signals { stop, drain } = signals;
            drop(drain);
            return server_link::run(shared, name, Origin { peer, fd }, reader, write, stop).await;
        }
        Ok(Ok(Some(Ok(Message::Hi { name, .. })))) => {
            return client_link::run(shared, name, Origin { peer, fd }, reader, write, signals).await;
        }
        Ok(Ok(None) | Err(Error::Closed | Error::Io(_))) => return,
        // Another verb of the protocol, whatever its fields.
        Ok(Ok(Some(Ok(_) | Err(None)))) => {
            (ErrorCode::NotRegistered, "say HELLO <name> (a server) or HI <name> (a client) first".to_owned())
        }
        Ok(Ok(Some(Err(Some(e))))) => (e.code(), e.to_string()),
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
    shared.metrics.tls_failed();
    shared.transcript.record(Event::TlsFailed { peer, reason });
}

/// The `ERROR` line with `code` and `text`.
pub(super) fn error_line(code: ErrorCode, text: &str) -> Vec<u8> {
    protocol::to_line(&Message::Error { code, text: text.to_owned() })
}

/// Sends a last `ERROR` line and gives up on the peer.
pub(super) async fn refuse(shared: &Shared, write: &mut WriteHalf, peer: &str, code: ErrorCode, text: &str) {
    shared.transcript.record(Event::ErrorSent { peer: peer.to_owned(), code });
    shared.metrics.error_sent(code);
    last_word(write, &error_line(code, text)).await;
}

/// Writes a last line to a peer we are about to close, giving up after a moment: a peer that
/// does not read it is being dropped anyway.
pub(super) async fn last_word(write: &mut WriteHalf, line: &[u8]) {
    let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, write.send(line)).await;
}

/// The `ERROR` line for a message that cannot be handled, and whether to close after it.
pub(super) fn error_for(e: &Error) -> (ErrorCode, String, bool) {
    match e {
        Error::Protocol(p) => (p.code(), p.to_string(), *p == ProtocolError::LineTooLong),
        Error::Timeout(_) => (ErrorCode::LineTimeout, "a line was left half-sent for too long".into(), true),
        other => (ErrorCode::Internal, other.to_string(), true),
    }
}
