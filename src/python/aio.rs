//! Rust futures as asyncio awaitables, on the package's one runtime.
//!
//! Each awaitable is an `asyncio.Future` of the running loop. The Rust work runs as a task
//! on the runtime; when it ends, the task hands its result to the loop
//! (`call_soon_threadsafe`), the one moment it touches Python. Cancelling the asyncio future
//! aborts the task, which drops the Rust work (a `find_match` then cancels its request).
//!
//! Written here rather than taken from a bridge crate for one reason: a runtime thread that
//! calls into Python while the interpreter is shutting down is killed in the middle of Rust
//! code, which crashes the process. So every task that will still call into Python is
//! counted, and an `atexit` hook waits for the count to reach zero before Python finalizes
//! (with `pyo3-async-runtimes`, 2 to 6 exits in 20 crashed, since its tasks call into Python
//! after the awaiting coroutine has already resumed).

use std::future::Future;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyTuple};
use pyo3::IntoPyObjectExt;

use super::bridge::runtime;
use super::errors::to_py;
use crate::error::Result;

/// How long the exit hook waits for tasks still handing over a result.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Tasks that will still call into Python, and a signal for when there are none.
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static NONE_IN_FLIGHT: Condvar = Condvar::new();

/// Counts one task in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        *IN_FLIGHT.lock() += 1;
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut count = IN_FLIGHT.lock();
        *count -= 1;
        if *count == 0 {
            NONE_IN_FLIGHT.notify_all();
        }
    }
}

/// Registers the exit hook that waits for every task in flight (see the module's doc).
///
/// # Errors
/// If `atexit` cannot be reached.
pub fn register_exit_hook(py: Python<'_>) -> PyResult<()> {
    let hook =
        PyCFunction::new_closure(py, Some(c"_wait_for_tasks"), None, |args: &Bound<'_, PyTuple>, _| {
            args.py().detach(|| {
                let mut count = IN_FLIGHT.lock();
                if *count > 0 {
                    NONE_IN_FLIGHT.wait_for(&mut count, EXIT_GRACE);
                }
            });
        })?;
    py.import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
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
    let rt = runtime()?;
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (target, event_loop) = (future.clone().unbind(), event_loop.unbind());
    let in_flight = InFlight::start();
    let task = rt.spawn(async move {
        let result = work.await;
        Python::attach(|py| {
            let target = target.bind(py);
            let outcome = match result {
                Ok(value) => value.into_py_any(py).map(|v| (true, v)),
                Err(e) => Ok((false, to_py(e).into_value(py).into_any())),
            };
            let handed = outcome.and_then(|(ok, value)| {
                let settle = PyCFunction::new_closure(py, None, None, settle)?;
                event_loop.bind(py).call_method1("call_soon_threadsafe", (settle, target, ok, value))
            });
            // The loop is closed, or the value would not convert: nobody can be told any more.
            drop(handed);
        });
        drop(in_flight);
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

/// On the loop's thread: settles the future `(future, ok, value)` unless it was cancelled
/// meanwhile.
fn settle(args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<()> {
    let future = args.get_item(0)?;
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let method = if args.get_item(1)?.is_truthy()? { "set_result" } else { "set_exception" };
    future.call_method1(method, (args.get_item(2)?,))?;
    Ok(())
}
