//! The asyncio client, on the event loop's own thread: once registered, its socket is
//! watched by the loop (`add_reader`), each request's line is written from the calling
//! coroutine, and each answer is read, parsed and handed to its future by the loop's thread
//! when the socket becomes readable. No runtime thread is involved after the greeting, so a
//! request costs no thread switch beyond the loop's own wake-up. Its protocol state is the
//! same `Session` the blocking client drives; its waiters are the futures.
//!
//! Each request has a timer (`call_later`) for the tracker's deadline plus a margin, and a
//! done-callback: a request whose future is cancelled, or that times out, sends `CANCEL`.
//!
//! When the tracker goes away the client reconnects as every node does (`crate::live`):
//! the connection is made again on the runtime, and handed back to the loop's thread
//! through an awaitable. Meanwhile new requests wait with their timers, and each request
//! cut off by the loss is sent again, once, under its own id, on the new connection.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyTuple};

use super::aio::awaitable;
use super::args::{self, Int, Seconds};
use super::errors::to_py;
use super::happenings;
use super::nodes::{opening, Joining, Opening, Reach};
use crate::connection::{self, Endpoint, Stream, TlsStream};
use crate::error::Error;
use crate::live;
use crate::node::{self, Registered};
use crate::protocol::{Message, Name, Token};
use crate::session::{self, Session, Settled};
use crate::shutdown::Shutdown;
use crate::transcript::Transcript;

/// A request as the asyncio client keeps it: its id and number (to send it again after a
/// lost connection, once), its future, and the timer that gives up on it.
struct Waiter {
    id: u64,
    number: u8,
    future: Py<PyAny>,
    timer: Py<PyAny>,
    /// Sent again already after a lost connection: a second loss fails it.
    resent: bool,
}

/// A future and what to settle it with.
type Outcome = (Py<PyAny>, Result<Arc<[Name]>, Error>);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// `Client` for asyncio: `await AsyncClient.connect(...)`, `await client.find_match(5)`.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct AsyncClient {
    name: String,
    /// How its happenings are told apart (`matchtracker.watch`), and where they go.
    key: u64,
    tell: live::Tell,
    state: Mutex<State>,
    /// How to find a tracker again; `None` with `reconnect=False`.
    redial: Option<Redial>,
}

/// Where the client's connection stands. Changed on the loop's thread only.
enum State {
    /// Registered: requests go out on this connection (boxed: it is most of the state's
    /// size, and the other states are small).
    Up(Box<Conn>),
    /// The connection was lost and is being made again: requests wait here, each with its
    /// own timer, and go out once it is back.
    Down { waiting: Vec<Waiter>, next_id: u64, patience: f64 },
    /// Closed by its owner, or lost for good: every call fails with this.
    Closed(Error),
}

/// What the client needs to register again.
struct Redial {
    name: Name,
    token: Option<Token>,
    reach: Arc<tokio::sync::Mutex<live::Reach>>,
    /// Stops a reconnection under way when the client is closed.
    closing: Shutdown,
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

/// A connection made again on the runtime, on its way to the loop's thread.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Redialed(Mutex<Option<Result<Conn, Error>>>);

/// Registers as `name` at `to`, as a client.
async fn register(to: Endpoint, name: Name, token: Option<Token>) -> crate::error::Result<Registered> {
    let greeting = Message::Hi { name: name.clone(), token };
    node::register(&to, &name, greeting, &Transcript::off(), || {}).await
}

impl Conn {
    /// The loop's side of a registered connection: the socket taken out of tokio (and out of
    /// its TLS stream), non-blocking; its requests take ids from `next_id` on.
    fn of(registered: Registered, next_id: u64) -> Result<Conn, Error> {
        let Registered { reader, write, deadline, .. } = registered;
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
        Ok(Conn {
            stream,
            tls,
            session: Session::starting_at(next_id),
            inbuf,
            outbuf: Vec::new(),
            patience: session::patience(deadline).as_secs_f64(),
            watched_by: None,
        })
    }

    /// The tracker's address, as the socket has it.
    fn peer(&self) -> String {
        self.stream.peer_addr().map_or_else(|_| "the tracker".to_owned(), |addr| addr.to_string())
    }

    /// Starts the loop watching the socket, if it does not yet.
    fn watch(&mut self, event_loop: &Bound<'_, PyAny>, client: &Bound<'_, AsyncClient>) -> PyResult<()> {
        if self.watched_by.is_none() {
            event_loop.call_method1("add_reader", (self.stream.as_raw_fd(), client.getattr("_readable")?))?;
            self.watched_by = Some(event_loop.clone().unbind());
        }
        Ok(())
    }

    /// Stops the loop watching the socket (a loop that is closed already watches nothing).
    fn unwatch(&mut self, py: Python<'_>) {
        if let Some(event_loop) = self.watched_by.take() {
            let fd = self.stream.as_raw_fd();
            let _ = event_loop.bind(py).call_method1("remove_reader", (fd,));
            let _ = event_loop.bind(py).call_method1("remove_writer", (fd,));
        }
    }

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
    /// with their futures. `Some` when the connection has failed (or the tracker left), with
    /// why and, if the session let them go, the requests it had open.
    fn read_answers(&mut self, py: Python<'_>, settled: &mut Vec<Outcome>) -> Option<(Error, Vec<Waiter>)> {
        let closed = self.read_in();
        if self.tls.as_ref().is_some_and(|tls| tls.wants_write()) {
            // rustls has something to say back (an alert, a key update): it goes now, or with
            // the next request.
            let _ = self.push();
        }
        while let Some(next) = self.session.next_settled(&mut self.inbuf) {
            match next {
                Settled::One(waiter, outcome) => {
                    let _ = waiter.timer.bind(py).call_method0("cancel");
                    settled.push((waiter.future, outcome.map(|(_, servers)| servers)));
                }
                // The connection is lost: its requests go to whoever decides what becomes
                // of them (sent again, or failed).
                Settled::All(waiters, e) => return Some((e, waiters)),
            }
        }
        closed.map(|e| (e, Vec::new()))
    }
}

#[pymethods]
impl AsyncClient {
    /// Registers with the tracker; an awaitable of the connected client.
    #[staticmethod]
    #[pyo3(signature = (name, tracker_address, *, token = None, tls = false, tls_ca = None, reconnect = true, reconnect_for = None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        token: Option<&str>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        reconnect: bool,
        reconnect_for: Option<Seconds>,
    ) -> PyResult<Opening> {
        let reach = Reach { address: tracker_address, token, tls, tls_ca };
        let Joining { name, targets, token, again } = reach.joining(py, name, reconnect, reconnect_for)?;
        opening(py, async move {
            let mut reach = live::Reach::new(targets, name.clone(), Transcript::off(), again.patience())?;
            let registered = reach.first(|to| register(to, name.clone(), token.clone())).await?;
            reach.registered();
            let conn = Conn::of(registered, 1)?;
            let redial = again.reconnect.then(|| Redial {
                name: name.clone(),
                token,
                reach: Arc::new(tokio::sync::Mutex::new(reach)),
                closing: Shutdown::new(),
            });
            let key = happenings::new_key();
            let tell = happenings::teller(key, name.clone());
            Ok(AsyncClient {
                name: name.to_string(),
                key,
                tell,
                state: Mutex::new(State::Up(Box::new(conn))),
                redial,
            })
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How this node's happenings are told apart, for `matchtracker.watch`.
    #[getter]
    fn _key(&self) -> u64 {
        self.key
    }

    /// An awaitable of the servers holding `number`. Any number may be in flight at once;
    /// cancelling one frees its request on the tracker.
    fn find_match<'py>(slf: &Bound<'py, Self>, number: Int) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let number = args::number(number)?;
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let future = event_loop.call_method0("create_future")?;
        let mut state = slf.get().state.lock();
        let (id, patience) = match &mut *state {
            State::Up(conn) => {
                conn.watch(&event_loop, slf)?;
                (conn.session.next_id(), conn.patience)
            }
            State::Down { next_id, patience, .. } => {
                *next_id += 1;
                (*next_id - 1, *patience)
            }
            State::Closed(e) => {
                future.call_method1("set_exception", (to_py(e.same_failure()).into_value(py),))?;
                return Ok(future);
            }
        };
        let client = slf.clone().unbind();
        let on_timeout = PyCFunction::new_closure(py, None, None, move |args: &Bound<'_, PyTuple>, _| {
            client.get().give_up(args.py(), id, true);
        })?;
        let timer = event_loop.call_method1("call_later", (patience, on_timeout))?;
        let waiter = Waiter {
            id,
            number,
            future: future.clone().unbind(),
            timer: timer.clone().unbind(),
            resent: false,
        };
        let sent = match &mut *state {
            State::Up(conn) => {
                let mut line = Vec::with_capacity(24);
                match conn.session.ask(number, waiter, &mut line) {
                    Ok(_) => conn.send(py, &line, slf),
                    Err(e) => Err(e),
                }
            }
            State::Down { waiting, .. } => {
                waiting.push(waiter);
                Ok(())
            }
            State::Closed(_) => Ok(()),
        };
        drop(state);
        if let Err(e) = sent {
            Self::lose(slf, e, Vec::new());
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
        if let Some(redial) = &self.redial {
            redial.closing.request();
        }
        let waiters = match std::mem::replace(&mut *self.state.lock(), State::Closed(Error::NodeClosed)) {
            State::Up(mut conn) => {
                conn.unwatch(py);
                match conn.session.fail(Error::NodeClosed) {
                    Settled::All(waiters, _) => waiters,
                    Settled::One(..) => Vec::new(),
                }
            }
            State::Down { waiting, .. } => waiting,
            State::Closed(_) => Vec::new(),
        };
        fail_each(py, waiters, &Error::NodeClosed);
        let done = py.import("asyncio")?.call_method0("get_running_loop")?.call_method0("create_future")?;
        done.call_method1("set_result", (py.None(),))?;
        Ok(done)
    }

    /// The loop's callback when the socket is readable: hands every complete answer over.
    fn _readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut settled: Vec<Outcome> = Vec::new();
        let failed = {
            let mut state = slf.get().state.lock();
            let State::Up(conn) = &mut *state else { return Ok(()) };
            conn.read_answers(py, &mut settled)
        };
        for (future, outcome) in settled {
            settle(py, future.bind(py), outcome)?;
        }
        if let Some((e, cut_off)) = failed {
            Self::lose(slf, e, cut_off);
        }
        Ok(())
    }

    /// The loop's callback when the socket can take the bytes that did not fit.
    fn _writable(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let sent = {
            let mut state = slf.get().state.lock();
            let State::Up(conn) = &mut *state else { return };
            conn.send(py, &[], slf)
        };
        if let Err(e) = sent {
            Self::lose(slf, e, Vec::new());
        }
    }

    /// The loop's callback when a connection made again is ready (or could not be made):
    /// the requests waiting go out on it, each once.
    fn _redialed(slf: &Bound<'_, Self>, made: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if made.call_method0("cancelled")?.is_truthy()? {
            return Ok(());
        }
        let made = made.call_method0("result")?;
        let Some(outcome) = made.cast::<Redialed>()?.get().0.lock().take() else { return Ok(()) };
        let mut state = slf.get().state.lock();
        // Closed meanwhile: the new connection is dropped unused.
        let State::Down { waiting, .. } = &mut *state else { return Ok(()) };
        let waiting = std::mem::take(waiting);
        let mut conn = match outcome {
            Ok(conn) => conn,
            Err(e) => {
                *state = State::Closed(e.same_failure());
                drop(state);
                if !matches!(e, Error::NodeClosed) {
                    (slf.get().tell)(live::Happened::Ended(e.to_string()));
                }
                fail_each(py, waiting, &e);
                return Ok(());
            }
        };
        (slf.get().tell)(live::Happened::Back(conn.peer()));
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        conn.watch(&event_loop, slf)?;
        let mut out = Vec::new();
        for waiter in waiting {
            let (id, number) = (waiter.id, waiter.number);
            // A fresh session is never broken.
            let _ = conn.session.reopen(id, number, waiter, &mut out);
        }
        *state = State::Up(Box::new(conn));
        let sent = match &mut *state {
            State::Up(conn) if !out.is_empty() => conn.send(py, &out, slf),
            _ => Ok(()),
        };
        drop(state);
        if let Err(e) = sent {
            Self::lose(slf, e, Vec::new());
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("AsyncClient(name={:?})", self.name)
    }
}

impl AsyncClient {
    /// Request `id` is given up (its time ran out, or its future was cancelled): the tracker
    /// is told to free it.
    fn give_up(&self, py: Python<'_>, id: u64, timed_out: bool) {
        let waiter = {
            let mut state = self.state.lock();
            match &mut *state {
                State::Up(conn) => {
                    let Some(waiter) = conn.session.give_up(id) else { return };
                    // A CANCEL that cannot be written now goes with the next write; a failing
                    // socket shows itself on the next read.
                    let owed = conn.session.take_owed();
                    let _ = conn.queue(&owed).and_then(|()| conn.push());
                    waiter
                }
                State::Down { waiting, .. } => {
                    let Some(at) = waiting.iter().position(|w| w.id == id) else { return };
                    waiting.swap_remove(at)
                }
                State::Closed(_) => return,
            }
        };
        if timed_out {
            let e = Error::Timeout(format!("waiting for the answer to request {id}"));
            let _ = settle(py, waiter.future.bind(py), Err(e));
        } else {
            let _ = waiter.timer.bind(py).call_method0("cancel");
        }
    }

    /// The connection failed with `e` (`cut_off`: the requests it had open, if they were
    /// taken out of its session already). If the tracker is gone and the client
    /// reconnects, its requests wait for the new connection (each sent again once) and the
    /// connection is made again on the runtime; otherwise every request fails with `e`.
    fn lose(slf: &Bound<'_, Self>, e: Error, mut cut_off: Vec<Waiter>) {
        let py = slf.py();
        let client = slf.get();
        let mut state = client.state.lock();
        let State::Up(conn) = &mut *state else { return };
        conn.unwatch(py);
        if let Settled::All(waiters, _) = conn.session.fail(e.same_failure()) {
            cut_off.extend(waiters);
        }
        let (next_id, patience) = (conn.session.next_id(), conn.patience);
        let lost = live::lost_tracker(&e);
        if lost {
            (client.tell)(live::Happened::Lost(e.to_string()));
        }
        let redial = client.redial.as_ref().filter(|_| lost);
        let Some(redial) = redial else {
            // Refused (say, dropped as a slow consumer), or not reconnecting: the end.
            (client.tell)(live::Happened::Ended(e.to_string()));
            *state = State::Closed(e.same_failure());
            drop(state);
            fail_each(py, cut_off, &e);
            return;
        };
        let (again, failed): (Vec<Waiter>, Vec<Waiter>) = cut_off.into_iter().partition(|w| !w.resent);
        let again = again.into_iter().map(|w| Waiter { resent: true, ..w }).collect();
        *state = State::Down { waiting: again, next_id, patience };
        drop(state);
        fail_each(py, failed, &e);
        let (name, token, reach) = (redial.name.clone(), redial.token.clone(), redial.reach.clone());
        let mut stop = redial.closing.signal();
        let remade = awaitable(py, async move {
            let mut reach = reach.lock().await;
            let attempt = |to| register(to, name.clone(), token.clone());
            let outcome = match reach.connect(&mut stop, attempt).await {
                Ok(Some(registered)) => {
                    reach.registered();
                    Conn::of(registered, next_id)
                }
                Ok(None) => Err(Error::NodeClosed),
                Err(e) => Err(e),
            };
            Ok(Redialed(Mutex::new(Some(outcome))))
        });
        let watched =
            remade.and_then(|remade| remade.call_method1("add_done_callback", (slf.getattr("_redialed")?,)));
        if let Err(e) = watched {
            // No loop to come back to: the requests fail now.
            let message = e.to_string();
            let waiting = match std::mem::replace(&mut *client.state.lock(), State::Closed(Error::Closed)) {
                State::Down { waiting, .. } => waiting,
                _ => Vec::new(),
            };
            fail_each(py, waiting, &Error::Unexpected(message));
        }
    }
}

/// Fails each of `waiters` with `e`.
fn fail_each(py: Python<'_>, waiters: Vec<Waiter>, e: &Error) {
    for waiter in waiters {
        let _ = waiter.timer.bind(py).call_method0("cancel");
        let _ = settle(py, waiter.future.bind(py), Err(e.same_failure()));
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
