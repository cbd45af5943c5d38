//! The bridge between Python's calling thread and the tokio runtime: every blocking call runs
//! its work on the one shared runtime while detached from the interpreter, and comes back
//! every [`POLL`] to check for signals (so Ctrl-C stops it promptly) and, for runs and roles,
//! to print their lines through Python's `sys.stdout`.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use super::errors::{to_py, MatchTrackerError};
use crate::error::Error;
use crate::shutdown::Shutdown;
use crate::transcript::{Event, Events};

/// How often a blocking call looks up from its work to check for Ctrl-C and print lines.
const POLL: Duration = Duration::from_millis(100);

/// How long a stopped role gets to finish cleanly (say BYE, close) after Ctrl-C.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Most events printed in one go, so that a flood of them is printed as it comes rather
/// than gathered first.
const PRINT_BATCH: usize = 4096;

/// A run shows progress on a terminal once it has taken this long.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// The runtime every call shares, made on first use (never before a `fork()`).
pub fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("matchtracker")
        .build()
        .map_err(|e| MatchTrackerError::new_err(format!("cannot start the runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `work` on the runtime, detached, polling for signals. On Ctrl-C the work is
/// cancelled (what it owns is dropped and closed) and `KeyboardInterrupt` is raised.
pub fn wait<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let rt = runtime()?;
    // Run on this thread rather than spawned: the first write goes out at once, without
    // waking a runtime thread to make it, which is most of what a short call costs.
    let mut work = std::pin::pin!(work);
    loop {
        let polled = py.detach(|| {
            // A panic in the work comes back as an error, never across into Python.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(async { tokio::time::timeout(POLL, &mut work).await })
            }))
        });
        match polled {
            Ok(Ok(done)) => return done.map_err(to_py),
            Ok(Err(_still_running)) => py.check_signals()?,
            Err(panic) => return Err(to_py(Error::Panic(panic_text(panic.as_ref())))),
        }
    }
}

/// What a caught panic said.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned())
}

/// A task that is cancelled if the call waiting for it returns early (Ctrl-C, an error while
/// printing): what the task owns is dropped, which closes its sockets and stops its nodes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a driven task's events are shown, and how it is stopped.
#[derive(Clone, Copy)]
pub struct Output<'a> {
    /// Print JSON objects instead of lines.
    pub json: bool,
    /// What to show on stderr while the task runs for more than a second.
    pub progress: Option<&'a dyn Fn() -> String>,
    /// Flipped on Ctrl-C so the task can end cleanly; without it the task is cancelled.
    pub stop: Option<&'a Shutdown>,
    /// How long a stopping task may take after the first Ctrl-C before it is cancelled (a
    /// tracker drains its open requests first); a second Ctrl-C cancels it at once.
    pub grace: Duration,
    /// Keep every event and return them (a simulation's report needs them); a role that
    /// runs for weeks prints its events and keeps none.
    pub record: bool,
}

/// Waits for `task` on the runtime, detached, printing its events through Python as they
/// come and checking for signals between batches. On Ctrl-C (or SIGTERM turned into an
/// exception by the caller), a task with a stop signal gets its `grace` to finish cleanly
/// and is cancelled after, or at once on a second signal; the signal's exception is raised
/// once it is done.
pub fn drive<T: Send + 'static>(
    py: Python<'_>,
    task: tokio::task::JoinHandle<Result<T, Error>>,
    mut events: Events,
    output: Output<'_>,
) -> PyResult<(T, Vec<(f64, Event)>)> {
    let rt = runtime()?;
    let started = tokio::time::Instant::now();
    let mut task = AbortOnDrop(task);
    let mut recorded: Vec<(f64, Event)> = Vec::new();
    let mut shown = false;
    let mut interrupted: Option<(PyErr, tokio::time::Instant)> = None;
    loop {
        // Wait for events, the end of the task, or the next signal check, whichever is first.
        let (finished, batch) = py.detach(|| {
            rt.block_on(async {
                let mut batch = Vec::new();
                let finished = tokio::select! {
                    joined = &mut task.0 => Some(joined),
                    Some(event) = events.recv() => { batch.push(event); None }
                    () = tokio::time::sleep(POLL) => None,
                };
                while batch.len() < PRINT_BATCH {
                    let Some(event) = events.try_recv() else { break };
                    batch.push(event);
                }
                (finished, batch)
            })
        });
        if shown && (finished.is_some() || !batch.is_empty()) {
            // Take the progress line off the terminal before anything else is printed.
            write_to(py, "stderr", "\r\x1b[K")?;
            shown = false;
        }
        let dropped = events.take_dropped();
        if !batch.is_empty() || dropped > 0 {
            let fresh: Vec<(f64, Event)> =
                batch.into_iter().map(|s| (s.at.duration_since(started).as_secs_f64(), s.event)).collect();
            let mut text = String::new();
            for (time, event) in &fresh {
                text.push_str(&if output.json { event.to_json(*time) } else { event.to_string() });
                text.push('\n');
            }
            if dropped > 0 {
                let lines = if dropped == 1 { "line" } else { "lines" };
                let _ = writeln!(text, "… {dropped} {lines} not printed (the output fell behind)");
            }
            write_to(py, "stdout", &text)?;
            if output.record {
                recorded.extend(fresh);
            }
        }
        if let Some(joined) = finished {
            if let Some((interrupt, _)) = interrupted {
                return Err(interrupt);
            }
            let value = joined.map_err(Error::from).and_then(|r| r).map_err(to_py)?;
            return Ok((value, recorded));
        }
        if let Some((_, since)) = &interrupted {
            // A second signal, or a task that did not end in time: give up on it (dropping
            // it cancels it).
            let again = py.check_signals().is_err();
            if since.elapsed() <= output.grace && !again {
                continue;
            }
            if let Some((interrupt, _)) = interrupted {
                return Err(interrupt);
            }
        }
        if let Some(show) = output.progress.filter(|_| started.elapsed() > PROGRESS_AFTER) {
            write_to(py, "stderr", &format!("\r\x1b[K{}", show()))?;
            shown = true;
        }
        if let Err(interrupt) = py.check_signals() {
            if shown {
                // Whatever is printed about the interruption starts on a clean line.
                write_to(py, "stderr", "\r\x1b[K")?;
                shown = false;
            }
            match output.stop {
                Some(stop) => {
                    stop.request();
                    interrupted = Some((interrupt, tokio::time::Instant::now()));
                }
                None => return Err(interrupt),
            }
        }
    }
}

/// Writes to Python's `sys.stdout` or `sys.stderr`, which is what Jupyter and pytest
/// capture (Rust writing to the file descriptors would bypass them).
fn write_to(py: Python<'_>, stream: &str, text: &str) -> PyResult<()> {
    let stream = py.import("sys")?.getattr(stream)?;
    if !stream.is_none() {
        stream.call_method1("write", (text,))?;
        // Lines are written in batches already; a role's log read by another program (or a
        // person tailing a file) should not wait for a buffer to fill.
        stream.call_method0("flush")?;
    }
    Ok(())
}
