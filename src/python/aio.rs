//! Rust futures as asyncio awaitables, on the package's one runtime.
//!
//! Each awaitable is an `asyncio.Future` of the running loop, and its Rust work a task on
//! the runtime: the asyncio tracker and server wait on the runtime this way. (The asyncio
//! client does not: it lives on the loop's own thread, `aio_client`.) A finished task never touches Python: it puts its outcome on its loop's
//! queue and, if the queue was empty, writes one byte to a socket the loop watches
//! (`add_reader`). The loop's thread, woken by that byte, turns every queued outcome into a
//! result or an exception and settles the futures. Cancelling the asyncio future aborts the
//! task, which drops the Rust work (a `find_match` then cancels its request).
//!
//! Written here rather than taken from a bridge crate, for two reasons measured here: a
//! runtime thread that calls into Python while the interpreter is shutting down is killed in
//! the middle of Rust code (with `pyo3-async-runtimes`, whose tasks take the GIL to hand a
//! result over, 2 to 6 exits in 20 crashed), and taking the GIL on a runtime thread to call
//! `call_soon_threadsafe` costs two more thread switches per call than one byte on a socket.

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyTuple};
use pyo3::IntoPyObjectExt;

use super::bridge::runtime;
use super::errors::to_py;
use crate::error::Result;

/// A finished task's outcome, made into a Python object on the loop's thread.
type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// One event loop's queue of finished tasks, and the socket that wakes the loop for them.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct LoopWaker {
    shared: Arc<Finished>,
    /// The end the loop reads; registered with `add_reader`.
    wake_read: UnixStream,
}

struct Finished {
    queue: Mutex<Vec<(Py<PyAny>, Outcome)>>,
    /// A byte is on its way to the loop (or unread): no need to write another.
    signalled: AtomicBool,
    wake_write: UnixStream,
}

impl Finished {
    /// From a runtime thread: queues `future`'s outcome and wakes the loop if it is not
    /// already on its way.
    fn push(&self, future: Py<PyAny>, outcome: Outcome) {
        self.queue.lock().push((future, outcome));
        if !self.signalled.swap(true, Ordering::SeqCst) {
            // A full socket holds unread bytes, which wake the loop all the same.
            let _ = (&self.wake_write).write(&[1]);
        }
    }
}

#[pymethods]
impl LoopWaker {
    /// On the loop's thread, when the socket is readable: settles every finished future.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        // In this order: the bytes read, then the flag cleared, then the queue taken. A task
        // that finishes after the flag is cleared writes a byte that wakes the loop again; one
        // that saw the flag still set pushed before it was cleared, so before the queue is
        // taken. (Clearing the flag before reading could swallow the byte of a task whose
        // outcome comes after the take.)
        let mut bytes = [0u8; 64];
        while matches!((&self.wake_read).read(&mut bytes), Ok(n) if n > 0) {}
        self.shared.signalled.store(false, Ordering::SeqCst);
        let finished = std::mem::take(&mut *self.shared.queue.lock());
        for (future, outcome) in finished {
            let future = future.bind(py);
            // Cancelled meanwhile: nobody wants the outcome.
            if future.call_method0("done")?.is_truthy()? {
                continue;
            }
            match outcome(py) {
                Ok(value) => future.call_method1("set_result", (value,))?,
                Err(e) => future.call_method1("set_exception", (e.into_value(py),))?,
            };
        }
        Ok(())
    }
}

/// The waker of the running loop, made on its first awaitable and kept (weakly keyed) for
/// as long as the loop lives.
fn waker_of<'py>(py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, LoopWaker>> {
    static WAKERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let wakers = WAKERS
        .get_or_try_init(py, || {
            py.import("weakref")?.getattr("WeakKeyDictionary")?.call0().map(Bound::unbind)
        })?
        .bind(py);
    if let Ok(waker) = wakers.get_item(event_loop) {
        return Ok(waker.cast_into()?);
    }
    let (wake_read, wake_write) = UnixStream::pair()?;
    wake_read.set_nonblocking(true)?;
    wake_write.set_nonblocking(true)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&wake_read);
    let shared =
        Arc::new(Finished { queue: Mutex::default(), signalled: AtomicBool::new(false), wake_write });
    let waker = Bound::new(py, LoopWaker { shared, wake_read })?;
    event_loop.call_method1("add_reader", (fd, waker.getattr("drain")?))?;
    wakers.set_item(event_loop, &waker)?;
    Ok(waker)
}

/// `work` as an awaitable of the running asyncio loop; must be called from a coroutine (or
/// a callback) on the loop's thread.
///
/// # Errors
/// `RuntimeError` if no loop is running.
pub fn awaitable<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let rt = runtime()?;
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()?;
    let finished = waker_of(py, &event_loop)?.get().shared.clone();
    let future = event_loop.call_method0("create_future")?;
    let target = future.clone().unbind();
    let task = rt.spawn(async move {
        let result = work.await;
        let outcome: Outcome = Box::new(move |py| match result {
            Ok(value) => value.into_py_any(py),
            Err(e) => Err(to_py(e)),
        });
        finished.push(target, outcome);
    });
    let abort = task.abort_handle();
    let on_done =
        PyCFunction::new_closure(py, None, None, move |args: &Bound<'_, PyTuple>, _| -> PyResult<()> {
            if args.get_item(0)?.call_method0("cancelled")?.is_truthy()? {
                abort.abort();
            }
            Ok(())
        })?;
    future.call_method1("add_done_callback", (on_done,))?;
    Ok(future)
}
