//! A simulation's report as Python sees it. The Rust report stays compact (answers that list
//! the same servers share one list); Python objects are built only when asked for, and the
//! summary is computed in Rust, so a run of thousands of nodes costs Python nothing until
//! someone looks at its requests.

use std::collections::HashMap;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::protocol::{End, Name, ReplyMode};
use crate::report::{self, Totals};
use crate::transcript::{Described, Event, Value};

/// One request of a simulation.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct RequestRecord {
    inner: report::RequestRecord,
}

#[pymethods]
impl RequestRecord {
    /// Round, from 1.
    #[getter]
    fn round(&self) -> usize {
        self.inner.round
    }

    /// The asking client's name.
    #[getter]
    fn client(&self) -> &str {
        self.inner.client.as_str()
    }

    /// The number asked for.
    #[getter]
    fn number(&self) -> u8 {
        self.inner.number
    }

    /// Matching servers in index order; empty for no match. A new list at each access.
    #[getter]
    fn servers(&self) -> Vec<&str> {
        self.inner.servers.iter().map(Name::as_str).collect()
    }

    /// How the request ended: "replied", "deadline" or "noservers".
    #[getter]
    fn end(&self) -> &'static str {
        self.inner.end.as_str()
    }

    /// Whether the deadline ended it (some queried server had not replied).
    #[getter]
    fn deadline(&self) -> bool {
        self.inner.end == End::Deadline
    }

    /// Seconds from the client's request to its answer.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.inner.elapsed.as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!(
            "RequestRecord(round={}, client={:?}, number={}, servers={:?}, end={:?}, elapsed={:.3})",
            self.round(),
            self.client(),
            self.number(),
            self.servers(),
            self.end(),
            self.elapsed()
        )
    }
}

/// What a simulation decided, and what it printed.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Report {
    inner: report::Report,
    /// Every event, with its time in seconds from the start of the run.
    events: Vec<(f64, Event)>,
    /// `requests`, made on first access.
    requests: OnceLock<Py<PyList>>,
}

impl Report {
    pub fn new(inner: report::Report, events: Vec<(f64, Event)>) -> Report {
        Report { inner, events, requests: OnceLock::new() }
    }
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

    /// The tracker's deadline, in seconds.
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
    fn numbers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for s in &self.inner.servers {
            out.set_item(s.name.as_str(), s.number)?;
        }
        Ok(out)
    }

    /// Every request, round by round; made on first access and the same list after.
    #[getter]
    fn requests(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        if let Some(made) = self.requests.get() {
            return Ok(made.clone_ref(py));
        }
        let records = self.inner.requests.iter().map(|r| RequestRecord { inner: r.clone() });
        let list = PyList::new(py, records.map(|r| Py::new(py, r)).collect::<PyResult<Vec<_>>>()?)?.unbind();
        Ok(self.requests.get_or_init(|| list).clone_ref(py))
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

    /// A summary for people: totals, latency, wall time, per server, per client; long lists
    /// are cut, so it stays short at any n.
    fn summary(&self) -> String {
        self.inner.summary()
    }

    /// The summary's figures: `requests`, `matched`, `no_match`, `incomplete` (answers that
    /// differ from the servers holding the number), `late_replies`, `latency_p50` and
    /// `latency_p99` (in seconds), `duration`, `startup` and `closing`.
    fn totals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Totals { requests, matched, no_match, incomplete, latency_p50, latency_p99 } =
            self.inner.totals();
        let out = PyDict::new(py);
        out.set_item("requests", requests)?;
        out.set_item("matched", matched)?;
        out.set_item("no_match", no_match)?;
        out.set_item("incomplete", incomplete)?;
        out.set_item("late_replies", self.late_replies())?;
        out.set_item("latency_p50", latency_p50.as_secs_f64())?;
        out.set_item("latency_p99", latency_p99.as_secs_f64())?;
        out.set_item("duration", self.duration())?;
        out.set_item("startup", self.startup())?;
        out.set_item("closing", self.closing())?;
        Ok(out)
    }

    /// The run as a message-sequence chart, in SVG.
    fn sequence_diagram(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py().import("matchtracker._diagram")?.call_method1("sequence_diagram", (slf,))?.extract()
    }

    /// The report as plain dicts, lists, numbers and strings, ready for `json.dumps`.
    /// Requests with the same answer share one list object.
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
        out.set_item("numbers", self.numbers(py)?)?;
        let mut lists: HashMap<*const Name, Bound<'py, PyList>> = HashMap::new();
        let mut requests = Vec::with_capacity(self.inner.requests.len());
        for r in &self.inner.requests {
            let servers = match lists.get(&r.servers.as_ptr()) {
                Some(list) => list.clone(),
                None => {
                    let list = PyList::new(py, r.servers.iter().map(Name::as_str))?;
                    lists.insert(r.servers.as_ptr(), list.clone());
                    list
                }
            };
            let d = PyDict::new(py);
            d.set_item("round", r.round)?;
            d.set_item("client", r.client.as_str())?;
            d.set_item("number", r.number)?;
            d.set_item("servers", servers)?;
            d.set_item("end", r.end.as_str())?;
            d.set_item("deadline", r.end == End::Deadline)?;
            d.set_item("elapsed", r.elapsed.as_secs_f64())?;
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

/// One event as a dict: time, from, to, kind, fields (the same content as `Event::to_json`).
fn event_dict<'py>(py: Python<'py>, time: f64, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let Described { kind, from, to, fields: described } = event.describe();
    let out = PyDict::new(py);
    out.set_item("time", time)?;
    out.set_item("from", from)?;
    out.set_item("to", to)?;
    out.set_item("kind", kind)?;
    let fields = PyDict::new(py);
    for (key, value) in described {
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
