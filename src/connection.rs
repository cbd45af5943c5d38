//! One socket's buffers: read whole messages from one half, write queued lines to the other.
//!
//! The codec (`protocol`) knows nothing of sockets and this module knows nothing of what the
//! messages mean; the tracker and the nodes combine the two.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::protocol::{self, Message};
use crate::tls;

/// TLS over TCP, from either side.
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// A link between a node and the tracker: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The two halves, to read in one place and write in another.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            Stream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }
}

/// The stream `read` and `write` were split from, whole again.
///
/// # Errors
/// [`Error::Unexpected`] if they are halves of different streams.
pub fn unsplit(read: ReadHalf, write: WriteHalf) -> Result<Stream> {
    match (read, write) {
        (ReadHalf::Plain(read), WriteHalf::Plain(write)) => read
            .reunite(write)
            .map(Stream::Plain)
            .map_err(|_| Error::Unexpected("halves of two streams".into())),
        (ReadHalf::Tls(read), WriteHalf::Tls(write)) if read.is_pair_of(&write) => {
            Ok(Stream::Tls(Box::new(read.unsplit(write))))
        }
        _ => Err(Error::Unexpected("halves of two streams".into())),
    }
}

/// The half of a [`Stream`] that reads.
pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The half of a [`Stream`] that writes.
pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl WriteHalf {
    /// Writes all of `bytes` and, over TLS, pushes the records out: rustls may keep
    /// encrypted bytes buffered after a write that the socket did not take at once.
    ///
    /// # Errors
    /// The socket's.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if let WriteHalf::Tls(_) = self {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what the socket takes at once, without waiting. Over TLS nothing is written
    /// this way (`WouldBlock`): the bytes go with the next [`send`](Self::send).
    ///
    /// # Errors
    /// `WouldBlock` if nothing can be written now; the socket's error otherwise.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(write) => write.try_write(bytes),
            WriteHalf::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_write(cx, buf),
            WriteHalf::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_flush(cx),
            WriteHalf::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_shutdown(cx),
            WriteHalf::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// Where a node finds its tracker: the address, and how to check it over TLS (`None`: plain
/// TCP).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<tls::Dial>,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }
}

/// How much to ask the kernel for per read; most reads carry a few short lines.
const READ_CHUNK: usize = 4096;

/// A batch of queued lines is written with one system call up to this size.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a node waits for the TCP connection to the tracker to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads messages, one line each, from a byte stream.
pub struct LineReader {
    inner: ReadHalf,
    buf: BytesMut,
    max_line: usize,
    /// How long a line may take from its first byte to its newline.
    line_timeout: Option<Duration>,
    /// When the first bytes of the line still incomplete in `buf` arrived.
    partial_since: Option<Instant>,
}

impl LineReader {
    /// Wraps `inner`, refusing lines longer than `max_line` bytes.
    pub fn new(inner: ReadHalf, max_line: usize) -> Self {
        LineReader { inner, buf: BytesMut::new(), max_line, line_timeout: None, partial_since: None }
    }

    /// Bounds how long one line may take from its first byte to its newline, however its
    /// bytes trickle in; an idle peer between lines is not affected.
    #[must_use]
    pub fn with_line_timeout(mut self, timeout: Duration) -> Self {
        self.line_timeout = Some(timeout);
        self
    }

    /// The read half back, with the bytes read but not yet handed over as lines.
    pub fn into_parts(self) -> (ReadHalf, BytesMut) {
        (self.inner, self.buf)
    }

    /// The next message, or `None` when the peer closed the connection between lines.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    ///
    /// # Errors
    /// - [`Error::Protocol`] for a malformed line; the line is consumed, so the caller may
    ///   answer with an `ERROR` and read on.
    /// - As [`read_batch`](Self::read_batch).
    pub async fn next(&mut self) -> Result<Option<Message>> {
        Ok(self.next_with(protocol::parse).await?.transpose()?)
    }

    /// The next line, handed to `read` (without its line ending) and consumed; `None` when
    /// the peer closed the connection between lines.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    ///
    /// # Errors
    /// As [`read_batch`](Self::read_batch).
    pub async fn next_with<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let mut read = Some(read);
        let mut got = None;
        let open = self
            .read_batch(|line| {
                got = read.take().map(|read| read(line));
                ControlFlow::Break(())
            })
            .await?;
        Ok(if open { got } else { None })
    }

    /// Waits until at least one whole line is buffered, then hands every whole line buffered
    /// to `each` (without its line ending), in order, until `each` breaks. The lines handed
    /// over are consumed. Returns `false` when the peer closed the connection between lines.
    ///
    /// A node reads a burst of lines this way to answer them with one write, and the tracker
    /// to count a burst of replies under one lock.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    ///
    /// # Errors
    /// [`Error::Protocol`] (`LineTooLong`) for a line longer than the limit: nothing after
    /// it can be read, and the connection must be closed; [`Error::Closed`] if the peer closed
    /// in the middle of a line; [`Error::Io`] on a socket failure; [`Error::Timeout`] if a
    /// line stays half-sent past the line timeout.
    pub async fn read_batch(&mut self, mut each: impl FnMut(&[u8]) -> ControlFlow<()>) -> Result<bool> {
        loop {
            let mut used = 0;
            let handed = loop {
                match protocol::split_line(&self.buf[used..], self.max_line) {
                    Ok(Some((line, len))) => {
                        used += len;
                        if each(line).is_break() {
                            break Ok(true);
                        }
                    }
                    Ok(None) => break Ok(used > 0),
                    Err(e) => break Err(e),
                }
            };
            self.buf.advance(used);
            if self.buf.is_empty() {
                // Nothing left over: give the memory back while the connection waits.
                self.buf = BytesMut::new();
                self.partial_since = None;
            } else if used > 0 || self.partial_since.is_none() {
                // What is left is the start of a new line, which came with the last read.
                self.partial_since = Some(Instant::now());
            }
            if handed? {
                return Ok(true);
            }
            let read = match (self.line_timeout, self.partial_since) {
                (Some(limit), Some(since)) => tokio::time::timeout_at(since + limit, self.fill())
                    .await
                    .map_err(|_| Error::Timeout("for the rest of a half-sent line".into()))??,
                _ => self.fill().await?,
            };
            if read == 0 {
                return if self.buf.is_empty() { Ok(false) } else { Err(Error::Closed) };
            }
        }
    }
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.inner.fill(&mut self.buf).await
    }
}

impl ReadHalf {
    /// Reads what the socket holds into `buf`; 0 when the peer has closed. Waits for bytes
    /// before taking memory for them, so that thousands of idle connections hold no
    /// buffers. The read itself goes through `AsyncRead`, which takes a read that leaves room
    /// in the buffer to mean the socket is drained: the next wait goes straight to the poller
    /// instead of first trying a read that finds nothing.
    ///
    /// Over TLS the bytes come through rustls, which holds its own buffers; a peer that
    /// closes without TLS's goodbye (`close_notify`) is taken to have closed: a line cut
    /// short is found out as one anyway.
    ///
    /// Cancel-safe: a read cut off takes nothing from the socket.
    ///
    /// # Errors
    /// The socket's.
    pub async fn fill(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            ReadHalf::Plain(read) => {
                read.readable().await?;
                buf.reserve(READ_CHUNK);
                read.read_buf(buf).await
            }
            ReadHalf::Tls(read) => {
                buf.reserve(READ_CHUNK);
                match read.read_buf(buf).await {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    other => other,
                }
            }
        }
    }
}

/// `first`, joined with what `more` yields next (until it yields `None`, or the batch
/// reaches [`WRITE_BATCH`] bytes), so that a burst of queued lines costs one system call.
/// Usually nothing waits behind `first`, and it is returned as it is, without a copy.
///
/// # Errors
/// The first error `more` returns.
pub fn join_batch<E>(first: Bytes, mut more: impl FnMut() -> Result<Option<Bytes>, E>) -> Result<Bytes, E> {
    let Some(next) = more()? else { return Ok(first) };
    let mut batch = Vec::with_capacity(first.len() + next.len());
    batch.extend_from_slice(&first);
    batch.extend_from_slice(&next);
    while batch.len() < WRITE_BATCH {
        match more()? {
            Some(line) => batch.extend_from_slice(&line),
            None => break,
        }
    }
    Ok(Bytes::from(batch))
}

/// Writes one message to `out`.
///
/// # Errors
/// [`Error::Io`] if the socket fails.
pub async fn write_message(out: &mut WriteHalf, message: &Message) -> Result<()> {
    out.send(&protocol::to_line(message)).await?;
    Ok(())
}

/// Opens a connection to the tracker at `to`, over TLS if it says so (the handshake within
/// [`CONNECT_TIMEOUT`] too).
///
/// # Errors
/// As [`connect_tcp`]; [`Error::Tls`] if the handshake fails.
pub async fn connect(to: &Endpoint) -> Result<Stream> {
    let tcp = connect_tcp(to.addr).await?;
    let Some(dial) = &to.tls else { return Ok(Stream::Plain(tcp)) };
    // Boxed, so that a plain node's futures do not carry a handshake's large state.
    let handshake =
        Box::pin(tokio_rustls::TlsConnector::from(dial.config.clone()).connect(dial.name.clone(), tcp));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| Error::Timeout(format!("for the TLS handshake with the tracker at {}", to.addr)))?
        .map_err(|e| tls::node_handshake_failed(e, dial, to.addr))?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

/// Opens a TCP connection to the tracker with `TCP_NODELAY` set: without it Nagle's
/// algorithm and delayed ACKs add tens of milliseconds to each short line.
///
/// # Errors
/// [`Error::Io`] if the connection is refused, or [`Error::Timeout`] after
/// [`CONNECT_TIMEOUT`].
async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout(format!("connecting to the tracker at {addr}")))?
        .map_err(|e| match e.kind() {
            // Every local port is taken, perhaps by connections closed in the last minute
            // (TIME_WAIT): say so, rather than the kernel's "cannot assign requested address".
            io::ErrorKind::AddrNotAvailable => Error::Io(io::Error::new(
                e.kind(),
                format!(
                    "no local port is free to connect to {addr} from (closed connections keep \
                     theirs for about a minute; net.ipv4.ip_local_port_range sets how many there are)"
                ),
            )),
            _ => Error::Io(e),
        })?;
    stream.set_nodelay(true)?;
    // Without it, a node whose tracker's host vanished would wait on it forever.
    set_keepalive(&stream, KEEPALIVE_IDLE)?;
    Ok(stream)
}

/// Caps the kernel's send buffer of `stream` at `bytes`. Left alone, Linux grows it up to
/// 4 MiB for a peer that does not read, which then takes minutes of queries to fill before
/// the peer is found to be a slow consumer.
///
/// # Errors
/// [`Error::Io`] if the option cannot be set.
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) -> Result<()> {
    socket2::SockRef::from(stream).set_send_buffer_size(bytes)?;
    Ok(())
}

/// Turns on TCP keepalive for `stream`: after `idle` without traffic the kernel probes the
/// peer every `idle / 2` (at least a second), and after [`KEEPALIVE_PROBES`] unanswered
/// probes the connection fails. A peer whose host vanished without closing (power cut,
/// cable pulled, network gone) is so found out within `idle * 2.5`, while a live idle peer
/// answers the probes from its kernel and stays, however long it says nothing.
///
/// # Errors
/// [`Error::Io`] if the option cannot be set.
pub fn set_keepalive(stream: &TcpStream, idle: Duration) -> Result<()> {
    let every = (idle / 2).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(idle).with_interval(every);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)?;
    Ok(())
}

/// Unanswered keepalive probes after which a connection fails.
pub const KEEPALIVE_PROBES: u32 = 3;

/// How long a connection may be silent before keepalive probes start, by default: with
/// [`KEEPALIVE_PROBES`] probes 2.5 s apart, a vanished peer is found within about 12.5 s.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);

/// Resolves `host` (a name or an address) and `port` to the first address found.
///
/// # Errors
/// [`Error::Io`] if the name does not resolve.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let mut found = tokio::net::lookup_host((host, port)).await?;
    found.next().ok_or_else(|| Error::Io(std::io::Error::other(format!("no address found for {host}"))))
}
