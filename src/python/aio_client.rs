//! The asyncio client, on the event loop's own thread: once registered, its socket is
//! watched by the loop (`add_reader`), each request's line is written from the calling
//! coroutine, and each answer is read, parsed and handed to its future by the loop's thread
//! when the socket becomes readable. No runtime thread is involved after the greeting, so a
//! request costs no thread switch beyond the loop's own wake-up.
//!
//! Each request has a timer (`call_later`) for the tracker's deadline plus a margin, and a
//! done-callback: a request whose future is cancelled, or that times out, sends `CANCEL`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyTuple};

use super::args::{self, Int};
use super::errors::to_py;
use super::nodes::{opening, Opening, Reach};
use crate::connection::{self, Endpoint, Stream, TlsStream};
use crate::error::Error;
use crate::node;
use crate::protocol::{Message, Name};
use crate::roles;
use crate::session::{self, Session, Settled};
use crate::transcript::Transcript;

/// A request's future, and the timer that gives up on it.
type Waiter = (Py<PyAny>, Py<PyAny>);

/// A future and what to settle it with.
type Outcome = (Py<PyAny>, Result<Arc<[Name]>, Error>);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// `Client` for asyncio: `await AsyncClient.connect(...)`, `await client.find_match(5)`.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct AsyncClient {
    name: String,
    conn: Mutex<Option<Conn>>,
}

/// A registered connection, used only on the loop's thread.
struct Conn {
    stream: TcpStream,
    /// TLS over `stream`, if the tracker speaks it: rustls encrypts and decrypts, and this
    /// connection moves its records to and from the socket.
    tls: Option<rustls::ClientConnection>,
    /// The protocol state: each open request's future and timer, `CANCEL`s owed.
    session: Session<Waiter>,
    /// Bytes read and not yet taken as lines.
    inbuf: BytesMut,
    /// Plain TCP: bytes not yet written (the socket was full); the loop writes them when it
    /// can. Over TLS, rustls holds them instead.
    outbuf: Vec<u8>,
    /// How long a request waits for its answer ([`session::patience`]), in seconds.
    patience: f64,
    /// The loop watching the socket, once the first request has been made.
    watched_by: Option<Py<PyAny>>,
}

#[pymethods]
impl AsyncClient {
    /// Registers with the tracker; an awaitable of the connected client.
    #[staticmethod]
    #[pyo3(signature = (name, tracker_address, *, token = None, tls = false, tls_ca = None))]
    fn connect(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        token: Option<&str>,
        tls: bool,
        tls_ca: Option<PathBuf>,
    ) -> PyResult<Opening> {
        let name = args::name(name, "name")?;
        let (target, token) = Reach { address: tracker_address, token, tls, tls_ca }.checked()?;
        opening(py, async move {
            let greeting = Message::Hi { name: name.clone(), token };
            let register = |to: Endpoint| {
                let greeting = greeting.clone();
                let name = name.clone();
                async move { node::register(&to, &name, greeting, &Transcript::off(), || {}).await }
            };
            let node::Registered { reader, write, deadline, .. } = roles::first_of(&target, register).await?;
            let (read, inbuf) = reader.into_parts();
            let (stream, tls) = match connection::unsplit(read, write)? {
                Stream::Plain(stream) => (stream, None),
                Stream::Tls(stream) => match *stream {
                    TlsStream::Client(stream) => {
                        let (stream, mut tls) = stream.into_inner();
                        // The requests are bounded by the tracker; their lines wait here
                        // only while the socket is full.
                        tls.set_buffer_limit(None);
                        (stream, Some(tls))
                    }
                    TlsStream::Server(_) => return Err(Error::Unexpected("a server's TLS stream".into())),
                },
            };
            let stream = stream.into_std()?;
            stream.set_nonblocking(true)?;
            let conn = Conn {
                stream,
                tls,
                session: Session::new(),
                inbuf,
                outbuf: Vec::new(),
                patience: session::patience(deadline).as_secs_f64(),
                watched_by: None,
            };
            Ok(AsyncClient { name: name.to_string(), conn: Mutex::new(Some(conn)) })
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// An awaitable of the servers holding `number`. Any number may be in flight at once;
    /// cancelling one frees its request on the tracker.
    fn find_match<'py>(slf: &Bound<'py, Self>, number: Int) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let number = args::number(number)?;
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let future = event_loop.call_method0("create_future")?;
        let mut guard = slf.get().conn.lock();
        let Some(conn) = guard.as_mut() else {
            future.call_method1("set_exception", (to_py(Error::NodeClosed).into_value(py),))?;
            return Ok(future);
        };
        if conn.watched_by.is_none() {
            let fd = conn.stream.as_raw_fd();
            event_loop.call_method1("add_reader", (fd, slf.getattr("_readable")?))?;
            conn.watched_by = Some(event_loop.clone().unbind());
        }
        let id = conn.session.next_id();
        let client = slf.clone().unbind();
        let on_timeout = PyCFunction::new_closure(py, None, None, move |args: &Bound<'_, PyTuple>, _| {
            client.get().give_up(args.py(), id, true);
        })?;
        let timer = event_loop.call_method1("call_later", (conn.patience, on_timeout))?;
        let mut line = Vec::with_capacity(24);
        if let Err(e) = conn.session.ask(number, (future.clone().unbind(), timer.clone().unbind()), &mut line)
        {
            // Not opened: nothing else will settle it.
            timer.call_method0("cancel")?;
            future.call_method1("set_exception", (to_py(e).into_value(py),))?;
            return Ok(future);
        }
        let sent = conn.send(py, &line, slf);
        drop(guard);
        if let Err(e) = sent {
            slf.get().fail_all(py, &e);
            return Ok(future);
        }
        let client = slf.clone().unbind();
        let on_done =
            PyCFunction::new_closure(py, None, None, move |args: &Bound<'_, PyTuple>, _| -> PyResult<()> {
                if args.get_item(0)?.call_method0("cancelled")?.is_truthy()? {
                    client.get().give_up(args.py(), id, false);
                }
                Ok(())
            })?;
        future.call_method1("add_done_callback", (on_done,))?;
        Ok(future)
    }

    /// Closes the connection at once: every call still waiting raises `MatchTrackerError`.
    /// An awaitable, like every node's `close()` in asyncio; the closing is done when it is
    /// made.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.fail_all(py, &Error::NodeClosed);
        let done = py.import("asyncio")?.call_method0("get_running_loop")?.call_method0("create_future")?;
        done.call_method1("set_result", (py.None(),))?;
        Ok(done)
    }

    /// The loop's callback when the socket is readable: hands every complete answer over.
    fn _readable(&self, py: Python<'_>) -> PyResult<()> {
        let mut settled: Vec<Outcome> = Vec::new();
        let failed = {
            let mut guard = self.conn.lock();
            let Some(conn) = guard.as_mut() else { return Ok(()) };
            conn.read_answers(py, &mut settled)
        };
        for (future, outcome) in settled {
            settle(py, future.bind(py), outcome)?;
        }
        if let Some(e) = failed {
            self.fail_all(py, &e);
        }
        Ok(())
    }

    /// The loop's callback when the socket can take the bytes that did not fit.
    fn _writable(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let sent = {
            let mut guard = slf.get().conn.lock();
            let Some(conn) = guard.as_mut() else { return };
            conn.send(py, &[], slf)
        };
        if let Err(e) = sent {
            slf.get().fail_all(py, &e);
        }
    }

    fn __repr__(&self) -> String {
        format!("AsyncClient(name={:?})", self.name)
    }
}

impl AsyncClient {
    /// Request `id` is given up (its time ran out, or its future was cancelled): the tracker
    /// is told to free it.
    fn give_up(&self, py: Python<'_>, id: u64, timed_out: bool) {
        let entry = {
            let mut guard = self.conn.lock();
            let Some(conn) = guard.as_mut() else { return };
            let Some(entry) = conn.session.give_up(id) else { return };
            // A CANCEL that cannot be written now goes with the next write; a failing
            // socket shows itself on the next read.
            let owed = conn.session.take_owed();
            let _ = conn.queue(&owed).and_then(|()| conn.push());
            entry
        };
        let (future, timer) = entry;
        if timed_out {
            let e = Error::Timeout(format!("waiting for the answer to request {id}"));
            let _ = settle(py, future.bind(py), Err(e));
        } else {
            let _ = timer.bind(py).call_method0("cancel");
        }
    }

    /// Fails every open request with `e`, stops watching the socket and closes it.
    fn fail_all(&self, py: Python<'_>, e: &Error) {
        let Some(mut conn) = self.conn.lock().take() else { return };
        if let Some(event_loop) = &conn.watched_by {
            let fd = conn.stream.as_raw_fd();
            // A loop that is closed already watches nothing.
            let _ = event_loop.bind(py).call_method1("remove_reader", (fd,));
            let _ = event_loop.bind(py).call_method1("remove_writer", (fd,));
        }
        if let Settled::All(waiters, _) = conn.session.fail(e.same_failure()) {
            for (future, timer) in waiters {
                let _ = timer.bind(py).call_method0("cancel");
                let _ = settle(py, future.bind(py), Err(e.same_failure()));
            }
        }
    }
}

impl Conn {
    /// Writes `bytes` after whatever waits, keeping what the socket cannot take for the loop
    /// to write later.
    fn send(&mut self, py: Python<'_>, bytes: &[u8], client: &Bound<'_, AsyncClient>) -> Result<(), Error> {
        self.queue(bytes)?;
        let all_out = self.push()?;
        if let Some(event_loop) = self.watched_by.as_ref().filter(|_| !all_out) {
            let fd = self.stream.as_raw_fd();
            client
                .getattr("_writable")
                .and_then(|writable| event_loop.bind(py).call_method1("add_writer", (fd, writable)))
                .map_err(|e| Error::Unexpected(e.to_string()))?;
        } else if let Some(event_loop) = &self.watched_by {
            let _ = event_loop.bind(py).call_method1("remove_writer", (self.stream.as_raw_fd(),));
        }
        Ok(())
    }

    /// Puts `bytes` behind what waits to be written.
    fn queue(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.tls {
            Some(tls) => tls.writer().write_all(bytes),
            None => {
                self.outbuf.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Writes what waits until the socket takes no more; `true` when nothing is left.
    fn push(&mut self) -> std::io::Result<bool> {
        let mut stream = &self.stream;
        loop {
            let written = match &mut self.tls {
                Some(tls) if tls.wants_write() => tls.write_tls(&mut stream),
                Some(_) => return Ok(true),
                None if self.outbuf.is_empty() => return Ok(true),
                None => stream.write(&self.outbuf).inspect(|&n| {
                    self.outbuf.drain(..n);
                }),
            };
            match written {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the socket holds into `inbuf` (through rustls over TLS); `Some` when the
    /// connection has failed or the tracker closed it.
    fn read_in(&mut self) -> Option<Error> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut stream = &self.stream;
        loop {
            let read = match &mut self.tls {
                None => stream.read(&mut chunk),
                Some(tls) => tls.read_tls(&mut stream),
            };
            match read {
                Ok(0) => return Some(Error::Closed),
                Ok(n) => match &mut self.tls {
                    None => self.inbuf.extend_from_slice(&chunk[..n]),
                    Some(tls) => {
                        if let Err(e) = tls.process_new_packets() {
                            return Some(Error::Tls(format!("the connection to the tracker failed: {e}")));
                        }
                        loop {
                            match tls.reader().read(&mut chunk) {
                                Ok(0) => return Some(Error::Closed),
                                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(_) => return Some(Error::Closed),
                            }
                        }
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(Error::Io(e)),
            }
        }
    }

    /// Reads what the socket holds and takes each complete line: answers go to `settled`
    /// with their futures. `Some` when the connection has failed (or the tracker left).
    fn read_answers(&mut self, py: Python<'_>, settled: &mut Vec<Outcome>) -> Option<Error> {
        let closed = self.read_in();
        if self.tls.as_ref().is_some_and(|tls| tls.wants_write()) {
            // rustls has something to say back (an alert, a key update): it goes now, or with
            // the next request.
            let _ = self.push();
        }
        while let Some(next) = self.session.next_settled(&mut self.inbuf) {
            match next {
                Settled::One((future, timer), outcome) => {
                    let _ = timer.bind(py).call_method0("cancel");
                    settled.push((future, outcome.map(|(_, servers)| servers)));
                }
                Settled::All(waiters, e) => {
                    for (future, timer) in waiters {
                        let _ = timer.bind(py).call_method0("cancel");
                        settled.push((future, Err(e.same_failure())));
                    }
                    return Some(e);
                }
            }
        }
        closed
    }
}

/// Settles `future` with `outcome`, unless it is done already (cancelled meanwhile).
fn settle(py: Python<'_>, future: &Bound<'_, PyAny>, outcome: Result<Arc<[Name]>, Error>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    match outcome {
        Ok(names) => {
            let names: Vec<&str> = names.iter().map(Name::as_str).collect();
            future.call_method1("set_result", (names,))?
        }
        Err(e) => future.call_method1("set_exception", (to_py(e).into_value(py),))?,
    };
    Ok(())
}
