//! The module's functions: the assignment's run, the command line's roles (a tracker, a
//! server or a client on its own, printing its lines until stopped) and the load benchmark.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args::{self, Int, Seconds};
use super::bridge::{drive, runtime, wait, Output, STOP_GRACE};
use super::errors::{invalid, to_py};
use super::nodes::Reach;
use super::report::Report;
use crate::protocol::{Name, ReplyMode};
use crate::roles::{self, Target};
use crate::shutdown::{Shutdown, StopSignal};
use crate::simulation::{self, SimulationConfig};
use crate::transcript::Transcript;

/// Lines a role holds for printing when its output falls behind; past it they are counted
/// and dropped, so a role that runs for weeks never buffers without bound.
const ROLE_LINES: usize = 16_384;

/// Runs the assignment: a tracker, n servers, n clients, `rounds` rounds.
#[pyfunction]
#[pyo3(
    signature = (n, rounds = Int::from(5), *, timeout = Seconds::from(2.0), seed = None, early = false, quiet = false, json = false, progress = None),
    text_signature = "(n, rounds=5, *, timeout=2.0, seed=None, early=False, quiet=False, json=False, progress=None)"
)]
#[allow(clippy::too_many_arguments)]
pub fn run_simulation(
    py: Python<'_>,
    n: Int,
    rounds: Int,
    timeout: Seconds,
    seed: Option<Int>,
    early: bool,
    quiet: bool,
    json: bool,
    progress: Option<bool>,
) -> PyResult<Report> {
    let seed = seed.map(args::seed).transpose()?;
    let n = n.count("n", 2, crate::args::MAX_N)?;
    let rounds = rounds.count("rounds", 1, crate::args::MAX_ROUNDS)?;
    let config = SimulationConfig::new(n as i128, rounds as i128, timeout.value("timeout")?, seed, early)
        .map_err(to_py)?;
    let (transcript, events) = if quiet {
        let (_, events) = Transcript::every();
        (Transcript::off(), events)
    } else {
        Transcript::every()
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
    let (inner, events) = drive(
        py,
        task,
        events,
        Output { json, progress: progress.then_some(&show), stop: None, grace: STOP_GRACE, record: true },
    )?;
    Ok(Report::new(inner, events))
}

/// Runs a tracker on its own, printing its lines, until Ctrl-C; then it answers every open
/// request, says BYE to its nodes, closes, and raises `KeyboardInterrupt` (a second Ctrl-C
/// stops at once).
#[pyfunction]
#[pyo3(
    signature = (listen, *, timeout = Seconds::from(2.0), json = false, drain_timeout = None, **options),
    text_signature = "(listen, *, timeout=2.0, json=False, drain_timeout=None, **options)"
)]
pub fn serve_tracker(
    py: Python<'_>,
    listen: &Bound<'_, PyAny>,
    timeout: Seconds,
    json: bool,
    drain_timeout: Option<Seconds>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let (host, port) = args::address(listen, "listen address")?;
    let mut config = args::TrackerOptions::from_kwargs(options, "serve_tracker")?.config(timeout)?;
    config.drain_timeout = drain_timeout.map(|t| args::seconds(t, "drain_timeout")).transpose()?;
    // A stopping tracker first answers its open requests.
    let grace = config.drain_bound() + STOP_GRACE;
    run_role(py, json, grace, |transcript, stop| {
        roles::run_tracker(Target::plain(host, port), config, transcript, stop)
    })
}

/// Runs the role `start` makes until it ends or Ctrl-C stops it, printing its lines (as
/// JSON objects with `json`) and keeping none: the way of every command-line role.
fn run_role<T, F>(
    py: Python<'_>,
    json: bool,
    grace: Duration,
    start: impl FnOnce(Transcript, StopSignal) -> F,
) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = crate::Result<T>> + Send + 'static,
{
    let (transcript, events) = Transcript::bounded(ROLE_LINES);
    let stop = Shutdown::new();
    let task = runtime()?.spawn(start(transcript, stop.signal()));
    let (value, _) =
        drive(py, task, events, Output { json, progress: None, stop: Some(&stop), grace, record: false })?;
    Ok(value)
}

/// Runs a server on its own, printing its lines, registering again whenever the tracker goes
/// away, until Ctrl-C; then it closes and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(
    signature = (name, tracker_address, number = None, *, token = None, json = false, wait = Seconds::from(30.0), reconnect_for = None, tls = false, tls_ca = None),
    text_signature = "(name, tracker_address, number=None, *, token=None, json=False, wait=30.0, reconnect_for=None, tls=False, tls_ca=None)"
)]
#[allow(clippy::too_many_arguments)]
pub fn serve_server(
    py: Python<'_>,
    name: &str,
    tracker_address: &Bound<'_, PyAny>,
    number: Option<Int>,
    token: Option<&str>,
    json: bool,
    wait: Seconds,
    reconnect_for: Option<Seconds>,
    tls: bool,
    tls_ca: Option<PathBuf>,
) -> PyResult<()> {
    let name = args::name(name, "name")?;
    let number = args::number_or_random(number)?;
    let patience = args::patience(wait, reconnect_for)?;
    let (target, token) = Reach { address: tracker_address, token, tls, tls_ca }.checked()?;
    run_role(py, json, STOP_GRACE, |transcript, stop| {
        roles::run_server(target, name, number, token, patience, transcript, stop)
    })
}

/// Runs a client on its own for `rounds` requests, printing its lines, reconnecting if the
/// tracker goes away (a request cut off is retried once); returns each answer's servers.
#[pyfunction]
#[pyo3(
    signature = (name, tracker_address, rounds = Int::from(5), number = None, *, token = None, seed = None, json = false, wait = Seconds::from(30.0), reconnect_for = None, tls = false, tls_ca = None),
    text_signature = "(name, tracker_address, rounds=5, number=None, *, token=None, seed=None, json=False, wait=30.0, reconnect_for=None, tls=False, tls_ca=None)"
)]
#[allow(clippy::too_many_arguments)]
pub fn run_client(
    py: Python<'_>,
    name: &str,
    tracker_address: &Bound<'_, PyAny>,
    rounds: Int,
    number: Option<Int>,
    token: Option<&str>,
    seed: Option<Int>,
    json: bool,
    wait: Seconds,
    reconnect_for: Option<Seconds>,
    tls: bool,
    tls_ca: Option<PathBuf>,
) -> PyResult<Vec<Vec<String>>> {
    let patience = args::patience(wait, reconnect_for)?;
    let seed = seed.map(args::seed).transpose()?;
    let name = args::name(name, "name")?;
    let number = number.map(args::number).transpose()?;
    let rounds = rounds.count("rounds", 1, crate::args::MAX_ROUNDS)?;
    let (target, token) = Reach { address: tracker_address, token, tls, tls_ca }.checked()?;
    let answers = run_role(py, json, STOP_GRACE, |transcript, stop| {
        roles::run_client(target, name, rounds, number, seed, token, patience, transcript, stop)
    })?;
    Ok(answers.into_iter().map(|a| a.servers.iter().map(Name::to_string).collect()).collect())
}

/// Runs a closed-loop load (each client asks again as soon as it is answered) and returns
/// its measurements: requests (an int), elapsed and rate, and latency quantiles in seconds.
/// With `tracker`, the load goes to that tracker (its deadline and mode apply) instead of
/// one of its own. Over TLS: with `tls_cert` and `tls_key`, its own tracker speaks TLS and
/// its nodes trust `tls_ca`, connecting by the name `localhost`; with `tracker`, `tls` and
/// `tls_ca` say how to reach it, as for a node.
#[pyfunction]
#[pyo3(
    signature = (servers, clients, duration, *, timeout = Seconds::from(2.0), early = true, tracker = None, token = None, tls = false, tls_cert = None, tls_key = None, tls_ca = None),
    text_signature = "(servers, clients, duration, *, timeout=2.0, early=True, tracker=None, token=None, tls=False, tls_cert=None, tls_key=None, tls_ca=None)"
)]
#[allow(clippy::too_many_arguments)]
pub fn run_load<'py>(
    py: Python<'py>,
    servers: Int,
    clients: Int,
    duration: Seconds,
    timeout: Seconds,
    early: bool,
    tracker: Option<&Bound<'_, PyAny>>,
    token: Option<&str>,
    tls: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let own_tls = match args::tracker_tls(tls_cert, tls_key)? {
        Some(_) if tracker.is_some() => {
            return Err(invalid(
                "tls_cert and tls_key are for a tracker of the load's own; give tracker or them",
            ))
        }
        Some(config) => {
            let nodes = crate::tls::node_config(tls_ca.as_deref()).map_err(to_py)?;
            Some((config, crate::tls::Dial::new(nodes, "localhost").map_err(to_py)?))
        }
        None => None,
    };
    let trackers = match tracker {
        Some(address) => Reach { address, token: None, tls, tls_ca }.checked()?.0,
        None => Vec::new(),
    };
    let config = crate::bench::LoadConfig {
        servers: servers.count("servers", 1, crate::args::MAX_N)?,
        clients: clients.count("clients", 1, crate::args::MAX_N)?,
        duration: args::seconds(duration, "duration")?,
        deadline: args::seconds(timeout, "timeout")?,
        replies: ReplyMode::early(early),
        trackers,
        token: args::token(token)?,
        tls: own_tls,
    };
    let report = wait(py, crate::bench::closed_loop(config))?;
    let out = PyDict::new(py);
    out.set_item("requests", report.requests)?;
    out.set_item("elapsed", report.elapsed.as_secs_f64())?;
    out.set_item("rate", report.rate())?;
    for (key, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
        out.set_item(key, report.quantile(q).as_secs_f64())?;
    }
    Ok(out)
}
