//! The Python boundary, and the only module that knows about Python: the `_core` module's
//! functions, classes and exceptions.
//!
//! Every blocking call extracts its arguments while attached, runs the Rust work on the one
//! shared runtime while detached, and comes back every [`POLL`] to check for signals, so
//! Ctrl-C stops it promptly. Rust errors become Python exceptions in [`to_py`] and nowhere
//! else; a panic in a task comes back as an error, never as a crash.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::client::ClientNode;
use crate::error::Error;
use crate::protocol::{End, Name, ReplyMode, Token, NUMBERS};
use crate::roles::{self, Target};
use crate::server::ServerNode;
use crate::simulation::{self, SimulationConfig};
use crate::tracker::{Tracker as RustTracker, TrackerConfig};
use crate::transcript::{Event, Stamped, Transcript, Value};

/// How often a blocking call looks up from its work to check for Ctrl-C and print lines.
const POLL: Duration = Duration::from_millis(100);

/// How long a stopped role gets to finish cleanly (say BYE, close) after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A run shows progress on a terminal once it has taken this long.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// How long `Tracker.close()` waits for the tracker's tasks to end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

create_exception!(_core, MatchTrackerError, PyException, "Base class of every matchtracker error.");
create_exception!(
    _core,
    NetworkError,
    MatchTrackerError,
    "The tracker could not be reached, or the connection to it failed or closed."
);
create_exception!(
    _core,
    RefusedError,
    MatchTrackerError,
    "The tracker refused the request with an ERROR line."
);
create_exception!(_core, ResponseTimeout, MatchTrackerError, "No answer came in time.");

/// The one place Rust errors become Python exceptions.
fn to_py(e: Error) -> PyErr {
    let text = e.to_string();
    match e {
        Error::InvalidArgument(_) | Error::TooManyFiles { .. } | Error::TooFewPorts { .. } => {
            PyValueError::new_err(text)
        }
        Error::Io(_) | Error::Closed => NetworkError::new_err(text),
        Error::Refused { .. } => RefusedError::new_err(text),
        Error::Timeout(_) => ResponseTimeout::new_err(text),
        Error::Protocol(_) | Error::Unexpected(_) | Error::Panic(_) | Error::NodeClosed => {
            MatchTrackerError::new_err(text)
        }
    }
}

/// The runtime every call shares, made on first use (never before a `fork()`).
fn runtime() -> PyResult<&'static Runtime> {
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
fn wait<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let rt = runtime()?;
    // Spawned rather than run on this thread, so that a panic comes back as a JoinError.
    let mut task = AbortOnDrop(rt.spawn(work));
    loop {
        let polled = py.detach(|| rt.block_on(async { tokio::time::timeout(POLL, &mut task.0).await }));
        match polled {
            Ok(joined) => return joined.map_err(Error::from).and_then(|r| r).map_err(to_py),
            Err(_still_running) => py.check_signals()?,
        }
    }
}

/// A task that is cancelled if the call waiting for it returns early (Ctrl-C, an error while
/// printing): what the task owns is dropped, which closes its sockets and stops its nodes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn invalid(text: impl Into<String>) -> PyErr {
    PyValueError::new_err(text.into())
}

fn parse_name(name: &str, what: &str) -> PyResult<Name> {
    Name::new(name).map_err(|_| {
        invalid(format!("{what} must be 1 to 32 characters from A-Z a-z 0-9 _ - (got {name:?})"))
    })
}

fn parse_token(token: Option<&str>) -> PyResult<Option<Token>> {
    token
        .map(|t| {
            Token::new(t)
                .map_err(|_| invalid("token must be 1 to 128 printable ASCII characters without spaces"))
        })
        .transpose()
}

fn parse_number(number: i64) -> PyResult<u8> {
    match u8::try_from(number) {
        Ok(n) if NUMBERS.contains(&n) => Ok(n),
        _ => Err(invalid(format!("number must be from 1 to 10 (got {number})"))),
    }
}

/// `"host:port"`, `"[v6]:port"` or `(host, port)` into a host and a port.
fn parse_address(address: &Bound<'_, PyAny>, what: &str) -> PyResult<(String, u16)> {
    let usage = || invalid(format!("{what} must be \"host:port\" or a (host, port) tuple (got {address})"));
    if let Ok(text) = address.extract::<String>() {
        let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().map_err(|_| usage())?;
        if host.is_empty() {
            return Err(usage());
        }
        return Ok((host.to_owned(), port));
    }
    if let Ok(tuple) = address.cast::<PyTuple>() {
        if let Ok((host, port)) = tuple.extract::<(String, u16)>() {
            return Ok((host, port));
        }
    }
    Err(usage())
}

/// One request of a simulation.
#[pyclass(module = "matchtracker._core", frozen, get_all)]
pub struct RequestRecord {
    /// Round, from 1.
    round: usize,
    /// The asking client's name.
    client: String,
    /// The number asked for.
    number: u8,
    /// Matching servers in index order; empty for no match.
    servers: Vec<String>,
    /// How the request ended: "replied", "deadline" or "noservers".
    end: &'static str,
    /// Whether the deadline ended it (some queried server had not replied).
    deadline: bool,
    /// Seconds from the client's request to its answer.
    elapsed: f64,
}

#[pymethods]
impl RequestRecord {
    fn __repr__(&self) -> String {
        format!(
            "RequestRecord(round={}, client={:?}, number={}, servers={:?}, end={:?}, elapsed={:.3})",
            self.round, self.client, self.number, self.servers, self.end, self.elapsed
        )
    }
}

/// What a simulation decided, and what it printed.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Report {
    inner: simulation::Report,
    /// Every event, with its time in seconds from the start of the run.
    events: Vec<(f64, Event)>,
}

#[pymethods]
impl Report {
    #[getter]
    fn n(&self) -> usize {
        self.inner.config.n
    }

    #[getter]
    fn rounds(&self) -> usize {
        self.inner.config.rounds
    }

    #[getter]
    fn timeout(&self) -> f64 {
        self.inner.config.deadline.as_secs_f64()
    }

    #[getter]
    fn early(&self) -> bool {
        self.inner.config.replies == ReplyMode::All
    }

    #[getter]
    fn seed(&self) -> Option<u64> {
        self.inner.config.seed
    }

    /// Seconds the whole run took.
    #[getter]
    fn duration(&self) -> f64 {
        self.inner.duration.as_secs_f64()
    }

    /// Seconds from the start until every node was connected and registered.
    #[getter]
    fn startup(&self) -> f64 {
        self.inner.startup.as_secs_f64()
    }

    /// Seconds from the last answer until every socket was closed.
    #[getter]
    fn closing(&self) -> f64 {
        self.inner.closing.as_secs_f64()
    }

    #[getter]
    fn late_replies(&self) -> u64 {
        self.inner.late_replies
    }

    /// Open file descriptors of the process once every node was connected.
    #[getter]
    fn open_files(&self) -> u64 {
        self.inner.open_files
    }

    /// Each server's number, by name, in index order.
    #[getter]
    fn numbers(&self) -> HashMap<String, u8> {
        self.inner.servers.iter().map(|s| (s.name.to_string(), s.number)).collect()
    }

    #[getter]
    fn requests(&self) -> Vec<RequestRecord> {
        self.inner
            .requests
            .iter()
            .map(|r| RequestRecord {
                round: r.round,
                client: r.client.to_string(),
                number: r.number,
                servers: r.servers.iter().map(Name::to_string).collect(),
                end: r.end.as_str(),
                deadline: r.end == End::Deadline,
                elapsed: r.elapsed.as_secs_f64(),
            })
            .collect()
    }

    /// The printed lines, in order (empty for a quiet run).
    #[getter]
    fn transcript(&self) -> Vec<String> {
        self.events.iter().map(|(_, e)| e.to_string()).collect()
    }

    /// Every event: dicts of time (seconds from the start), from, to, kind and fields, in
    /// order (empty for a quiet run).
    #[getter]
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.events.iter().map(|(time, event)| event_dict(py, *time, event)).collect()
    }

    /// `to_dict()` as JSON text.
    fn to_json(&self, py: Python<'_>) -> PyResult<String> {
        py.import("json")?.call_method1("dumps", (self.to_dict(py)?,))?.extract()
    }

    /// A summary for people: per client, per server, totals, latency, wall time.
    fn summary(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py().import("matchtracker._summary")?.call_method1("summary", (slf,))?.extract()
    }

    /// The run as a message-sequence chart, in SVG.
    fn sequence_diagram(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py().import("matchtracker._diagram")?.call_method1("sequence_diagram", (slf,))?.extract()
    }

    /// The report as plain dicts, lists, numbers and strings, ready for `json.dumps`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("n", self.n())?;
        out.set_item("rounds", self.rounds())?;
        out.set_item("timeout", self.timeout())?;
        out.set_item("early", self.early())?;
        out.set_item("seed", self.seed())?;
        out.set_item("duration", self.duration())?;
        out.set_item("startup", self.startup())?;
        out.set_item("closing", self.closing())?;
        out.set_item("late_replies", self.late_replies())?;
        let servers = PyDict::new(py);
        for s in &self.inner.servers {
            servers.set_item(s.name.as_str(), s.number)?;
        }
        out.set_item("numbers", servers)?;
        let mut requests = Vec::with_capacity(self.inner.requests.len());
        for r in self.requests() {
            let d = PyDict::new(py);
            d.set_item("round", r.round)?;
            d.set_item("client", r.client)?;
            d.set_item("number", r.number)?;
            d.set_item("servers", r.servers)?;
            d.set_item("end", r.end)?;
            d.set_item("deadline", r.deadline)?;
            d.set_item("elapsed", r.elapsed)?;
            requests.push(d);
        }
        out.set_item("requests", requests)?;
        out.set_item("transcript", self.transcript())?;
        out.set_item("events", self.events(py)?)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "Report(n={}, rounds={}, requests={}, duration={:.3})",
            self.n(),
            self.rounds(),
            self.inner.requests.len(),
            self.duration()
        )
    }
}

/// Runs the assignment: a tracker, n servers, n clients, `rounds` rounds.
#[pyfunction]
#[pyo3(signature = (n, rounds = 5, *, timeout = 2.0, seed = None, early = false, quiet = false, json = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn run_simulation(
    py: Python<'_>,
    n: i64,
    rounds: i64,
    timeout: f64,
    seed: Option<&Bound<'_, PyAny>>,
    early: bool,
    quiet: bool,
    json: bool,
    progress: Option<bool>,
) -> PyResult<Report> {
    let seed = match seed {
        None => None,
        Some(seed) => Some(
            seed.extract::<u64>()
                .map_err(|_| invalid(format!("seed must be an integer from 0 to 2**64-1 (got {seed})")))?,
        ),
    };
    let config = SimulationConfig::new(n, rounds, timeout, seed, early).map_err(to_py)?;
    let (transcript, events) = if quiet {
        let (_, events) = Transcript::channel();
        (Transcript::off(), events)
    } else {
        Transcript::channel()
    };
    let total = config.n * config.rounds;
    let (n, rounds) = (config.n, config.rounds);
    let progress = match progress {
        Some(on) => on,
        None => py
            .import("sys")?
            .getattr("stderr")?
            .call_method0("isatty")
            .and_then(|t| t.extract())
            .unwrap_or(false),
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let show = move || {
        let done = counter.load(Ordering::Relaxed);
        let round = (done / n + 1).min(rounds);
        format!("round {round} of {rounds}, {done} of {total} requests answered")
    };
    let task = runtime()?.spawn(simulation::run(config, transcript, answered));
    let (inner, events) =
        drive(py, task, events, Output { json, progress: progress.then_some(&show), stop: None })?;
    Ok(Report { inner, events })
}

/// How a driven task's events are shown, and how it is stopped.
struct Output<'a> {
    /// Print JSON objects instead of lines.
    json: bool,
    /// What to show on stderr while the task runs for more than a second.
    progress: Option<&'a dyn Fn() -> String>,
    /// Flipped on Ctrl-C so the task can end cleanly; without it the task is cancelled.
    stop: Option<&'a watch::Sender<bool>>,
}

/// Waits for `task` on the runtime, detached, printing its events through Python as they
/// come and checking for signals between batches. On Ctrl-C (or SIGTERM turned into an
/// exception by the caller), a task with a stop signal gets [`STOP_GRACE`] to finish
/// cleanly and is cancelled after; the signal's exception is raised once it is done.
fn drive<T: Send + 'static>(
    py: Python<'_>,
    task: tokio::task::JoinHandle<Result<T, Error>>,
    mut events: mpsc::UnboundedReceiver<Stamped>,
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
                while let Ok(event) = events.try_recv() {
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
        if !batch.is_empty() {
            let first = recorded.len();
            recorded.extend(batch.into_iter().map(|s| (s.at.duration_since(started).as_secs_f64(), s.event)));
            let fresh = &recorded[first..];
            let lines: Vec<String> = if output.json {
                fresh.iter().map(|(time, event)| event_json(*time, event)).collect()
            } else {
                fresh.iter().map(|(_, event)| event.to_string()).collect()
            };
            let mut text = lines.join("\n");
            text.push('\n');
            write_to(py, "stdout", &text)?;
        }
        if let Some(joined) = finished {
            if let Some((interrupt, _)) = interrupted {
                return Err(interrupt);
            }
            let value = joined.map_err(Error::from).and_then(|r| r).map_err(to_py)?;
            return Ok((value, recorded));
        }
        if let Some((_, since)) = &interrupted {
            if since.elapsed() <= STOP_GRACE {
                continue;
            }
            // The task did not end in time: give up on it (dropping it cancels it).
            if let Some((interrupt, _)) = interrupted {
                return Err(interrupt);
            }
        }
        if let Some(show) = output.progress.filter(|_| started.elapsed() > PROGRESS_AFTER) {
            write_to(py, "stderr", &format!("\r\x1b[K{}", show()))?;
            shown = true;
        }
        if let Err(interrupt) = py.check_signals() {
            match output.stop {
                Some(stop) => {
                    stop.send_replace(true);
                    interrupted = Some((interrupt, tokio::time::Instant::now()));
                }
                None => return Err(interrupt),
            }
        }
    }
}

/// Runs a tracker on its own, printing its lines, until Ctrl-C; then it says BYE to its
/// nodes, closes, and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (listen, *, timeout = 2.0, early = false, token = None, insecure_no_token = false, json = false))]
fn serve_tracker(
    py: Python<'_>,
    listen: &Bound<'_, PyAny>,
    timeout: f64,
    early: bool,
    token: Option<&str>,
    insecure_no_token: bool,
    json: bool,
) -> PyResult<()> {
    let (host, port) = parse_address(listen, "listen address")?;
    let config = tracker_config(timeout, early, token, insecure_no_token)?;
    let (transcript, events) = Transcript::channel();
    let (stop, stopped) = watch::channel(false);
    let task = runtime()?.spawn(roles::run_tracker(Target { host, port }, config, transcript, stopped));
    drive(py, task, events, Output { json, progress: None, stop: Some(&stop) })?;
    Ok(())
}

/// Runs a server on its own, printing its lines, registering again whenever the tracker goes
/// away, until Ctrl-C; then it closes and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (name, tracker_address, number = None, *, token = None, json = false))]
fn serve_server(
    py: Python<'_>,
    name: &str,
    tracker_address: &Bound<'_, PyAny>,
    number: Option<i64>,
    token: Option<&str>,
    json: bool,
) -> PyResult<()> {
    let name = parse_name(name, "name")?;
    let number = match number {
        Some(number) => parse_number(number)?,
        None => rand::random_range(NUMBERS),
    };
    let token = parse_token(token)?;
    let (host, port) = parse_address(tracker_address, "tracker address")?;
    let (transcript, events) = Transcript::channel();
    let (stop, stopped) = watch::channel(false);
    let task =
        runtime()?.spawn(roles::run_server(Target { host, port }, name, number, token, transcript, stopped));
    drive(py, task, events, Output { json, progress: None, stop: Some(&stop) })?;
    Ok(())
}

/// Runs a client on its own for `rounds` requests, printing its lines, reconnecting if the
/// tracker goes away (a request cut off is retried once); returns each answer's servers.
#[pyfunction]
#[pyo3(signature = (name, tracker_address, rounds = 5, number = None, *, token = None, seed = None, json = false))]
#[allow(clippy::too_many_arguments)]
fn run_client(
    py: Python<'_>,
    name: &str,
    tracker_address: &Bound<'_, PyAny>,
    rounds: i64,
    number: Option<i64>,
    token: Option<&str>,
    seed: Option<u64>,
    json: bool,
) -> PyResult<Vec<Vec<String>>> {
    let name = parse_name(name, "name")?;
    let number = number.map(parse_number).transpose()?;
    let rounds = usize::try_from(rounds)
        .ok()
        .filter(|r| (1..=simulation::MAX_ROUNDS as usize).contains(r))
        .ok_or_else(|| {
        invalid(format!("rounds must be from 1 to {} (got {rounds})", simulation::MAX_ROUNDS))
    })?;
    let token = parse_token(token)?;
    let (host, port) = parse_address(tracker_address, "tracker address")?;
    let (transcript, events) = Transcript::channel();
    let (stop, stopped) = watch::channel(false);
    let target = Target { host, port };
    let task =
        runtime()?.spawn(roles::run_client(target, name, rounds, number, seed, token, transcript, stopped));
    let (answers, _) = drive(py, task, events, Output { json, progress: None, stop: Some(&stop) })?;
    Ok(answers.into_iter().map(|a| a.servers.iter().map(Name::to_string).collect()).collect())
}

/// A duration in seconds, more than 0 and at most an hour; `what` names it in the error.
/// A tracker's settings from the arguments the Python functions and class take.
fn tracker_config(
    timeout: f64,
    early: bool,
    token: Option<&str>,
    insecure_no_token: bool,
) -> PyResult<TrackerConfig> {
    Ok(TrackerConfig {
        deadline: parse_seconds(timeout, "timeout")?,
        replies: ReplyMode::early(early),
        token: parse_token(token)?,
        insecure_no_token,
        ..TrackerConfig::default()
    })
}

fn parse_seconds(seconds: f64, what: &str) -> PyResult<Duration> {
    if seconds > 0.0 && seconds <= simulation::MAX_TIMEOUT {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(invalid(format!("{what} must be more than 0 and at most 3600 seconds (got {seconds})")))
    }
}

/// Runs a closed-loop load (each client asks again as soon as it is answered) and returns
/// its measurements: requests, elapsed and rate, and latency quantiles in seconds.
#[pyfunction]
#[pyo3(signature = (servers, clients, duration, *, timeout = 2.0, early = true))]
fn run_load(
    py: Python<'_>,
    servers: usize,
    clients: usize,
    duration: f64,
    timeout: f64,
    early: bool,
) -> PyResult<HashMap<&'static str, f64>> {
    let config = crate::bench::LoadConfig {
        servers,
        clients,
        duration: parse_seconds(duration, "duration")?,
        deadline: parse_seconds(timeout, "timeout")?,
        replies: ReplyMode::early(early),
    };
    let report = wait(py, crate::bench::closed_loop(config))?;
    Ok(HashMap::from([
        ("requests", report.requests as f64),
        ("elapsed", report.elapsed.as_secs_f64()),
        ("rate", report.rate()),
        ("p50", report.quantile(0.50).as_secs_f64()),
        ("p90", report.quantile(0.90).as_secs_f64()),
        ("p99", report.quantile(0.99).as_secs_f64()),
        ("max", report.quantile(1.0).as_secs_f64()),
    ]))
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

/// One event as a dict: time, from, to, kind, fields.
fn event_dict<'py>(py: Python<'py>, time: f64, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("time", time)?;
    out.set_item("from", event.from())?;
    out.set_item("to", event.to())?;
    out.set_item("kind", event.kind())?;
    let fields = PyDict::new(py);
    for (key, value) in event.fields() {
        match value {
            Value::Int(v) => fields.set_item(key, v)?,
            Value::Bool(v) => fields.set_item(key, v)?,
            Value::Text(v) => fields.set_item(key, v)?,
            Value::Names(v) => fields.set_item(key, v.iter().map(Name::as_str).collect::<Vec<_>>())?,
        }
    }
    out.set_item("fields", fields)?;
    Ok(out)
}

/// One event as a line of JSON, with the same content as [`event_dict`].
fn event_json(time: f64, event: &Event) -> String {
    fn text(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let mut out = format!("{{\"time\": {time:.6}, \"from\": ");
    text(&mut out, event.from());
    out.push_str(", \"to\": ");
    match event.to() {
        Some(to) => text(&mut out, to),
        None => out.push_str("null"),
    }
    out.push_str(", \"kind\": ");
    text(&mut out, event.kind());
    out.push_str(", \"fields\": {");
    for (i, (key, value)) in event.fields().into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        text(&mut out, key);
        out.push_str(": ");
        match value {
            Value::Int(v) => out.push_str(&v.to_string()),
            Value::Bool(v) => out.push_str(if v { "true" } else { "false" }),
            Value::Text(v) => text(&mut out, v),
            Value::Names(names) => {
                out.push('[');
                for (j, name) in names.iter().enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    text(&mut out, name.as_str());
                }
                out.push(']');
            }
        }
    }
    out.push_str("}}");
    out
}

/// A central tracker listening for servers and clients.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Tracker {
    inner: Mutex<Option<RustTracker>>,
    address: SocketAddr,
}

#[pymethods]
impl Tracker {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1".to_owned(), port = 0, timeout = 2.0, *, early = false, token = None, insecure_no_token = false))]
    fn new(
        py: Python<'_>,
        host: String,
        port: i64,
        timeout: f64,
        early: bool,
        token: Option<&str>,
        insecure_no_token: bool,
    ) -> PyResult<Self> {
        let port =
            u16::try_from(port).map_err(|_| invalid(format!("port must be from 0 to 65535 (got {port})")))?;
        let config = tracker_config(timeout, early, token, insecure_no_token)?;
        let tracker = wait(py, async move {
            let addr = crate::connection::resolve(&host, port).await?;
            RustTracker::bind(addr, config, Transcript::off()).await
        })?;
        let address = tracker.local_addr();
        Ok(Tracker { inner: Mutex::new(Some(tracker)), address })
    }

    /// "host:port", ready to give to `Server` and `Client`.
    #[getter]
    fn address(&self) -> String {
        self.address.to_string()
    }

    #[getter]
    fn host(&self) -> String {
        self.address.ip().to_string()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.address.port()
    }

    /// Counters: servers and clients registered now, requests so far, late replies dropped.
    fn stats(&self) -> PyResult<HashMap<&'static str, u64>> {
        let guard = self.inner.lock();
        let tracker = guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?;
        let s = tracker.stats();
        Ok(HashMap::from([
            ("servers", s.servers as u64),
            ("clients", s.clients as u64),
            ("requests", s.requests),
            ("late_replies", s.late_replies),
        ]))
    }

    /// Waits until exactly `servers` servers and `clients` clients are registered.
    #[pyo3(signature = (servers, clients = 0, timeout = 10.0))]
    fn wait_for_nodes(&self, py: Python<'_>, servers: usize, clients: usize, timeout: f64) -> PyResult<()> {
        let timeout = parse_seconds(timeout, "timeout")?;
        let mut counts = {
            let guard = self.inner.lock();
            guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?.subscribe_counts()
        };
        wait(py, async move {
            let want = (servers, clients);
            tokio::time::timeout(timeout, counts.wait_for(|&c| c == want))
                .await
                .map_err(|_| Error::Timeout(format!("waiting for {servers} servers and {clients} clients")))?
                .map_err(|_| Error::NodeClosed)?;
            Ok(())
        })
    }

    /// Says BYE to every node, closes every connection and stops. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(tracker) = self.inner.lock().take() else { return Ok(()) };
        wait(py, async move {
            tracker.shutdown(CLOSE_GRACE).await;
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Tracker(address={:?})", self.address.to_string())
    }
}

/// A server node holding a number, answering the tracker's queries in the background.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Server {
    name: String,
    number: u8,
    inner: Mutex<Option<ServerNode>>,
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (name, tracker_address, number = None, *, token = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        number: Option<i64>,
        token: Option<&str>,
    ) -> PyResult<Self> {
        let token = parse_token(token)?;
        let name = parse_name(name, "name")?;
        let number = match number {
            Some(number) => parse_number(number)?,
            None => rand::random_range(NUMBERS),
        };
        let (host, port) = parse_address(tracker_address, "tracker address")?;
        let node_name = name.clone();
        let node = wait(py, async move {
            let addr = crate::connection::resolve(&host, port).await?;
            ServerNode::start(addr, node_name, number, token, Transcript::off()).await
        })?;
        Ok(Server { name: name.to_string(), number, inner: Mutex::new(Some(node)) })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn number(&self) -> u8 {
        self.number
    }

    /// Stops answering and closes the connection. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(node) = self.inner.lock().take() else { return Ok(()) };
        // How the serving ended (say, the tracker left first) is no reason to fail a close.
        wait(py, async move {
            let _ = node.close().await;
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Server(name={:?}, number={})", self.name, self.number)
    }
}

/// A client node that asks the tracker which servers hold a number.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Client {
    name: String,
    inner: Arc<tokio::sync::Mutex<Option<ClientNode>>>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (name, tracker_address, *, token = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        token: Option<&str>,
    ) -> PyResult<Self> {
        let token = parse_token(token)?;
        let name = parse_name(name, "name")?;
        let (host, port) = parse_address(tracker_address, "tracker address")?;
        let node_name = name.clone();
        let node = wait(py, async move {
            let addr = crate::connection::resolve(&host, port).await?;
            ClientNode::connect(addr, node_name, token, Transcript::off()).await
        })?;
        Ok(Client { name: name.to_string(), inner: Arc::new(tokio::sync::Mutex::new(Some(node))) })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The names of the servers holding `number`, in index order; empty if none.
    fn find_match(&self, py: Python<'_>, number: i64) -> PyResult<Vec<String>> {
        let number = parse_number(number)?;
        let inner = self.inner.clone();
        wait(py, async move {
            let mut guard = inner.lock_owned().await;
            let client = guard.as_mut().ok_or(Error::NodeClosed)?;
            let answer = client.find_match(number).await?;
            Ok(answer.servers.iter().map(Name::to_string).collect())
        })
    }

    /// Closes the connection. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        wait(py, async move {
            inner.lock_owned().await.take();
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Client(name={:?})", self.name)
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run_simulation, m)?)?;
    m.add_function(wrap_pyfunction!(run_load, m)?)?;
    m.add_function(wrap_pyfunction!(serve_tracker, m)?)?;
    m.add_function(wrap_pyfunction!(serve_server, m)?)?;
    m.add_function(wrap_pyfunction!(run_client, m)?)?;
    m.add_class::<Tracker>()?;
    m.add_class::<Server>()?;
    m.add_class::<Client>()?;
    m.add_class::<Report>()?;
    m.add_class::<RequestRecord>()?;
    m.add("MatchTrackerError", py.get_type::<MatchTrackerError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ResponseTimeout", py.get_type::<ResponseTimeout>())?;
    Ok(())
}
