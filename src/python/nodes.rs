//! The node classes: `Tracker`, `Server` and `Client`, blocking, and the asyncio
//! `AsyncTracker` and `AsyncServer` (`AsyncClient` lives on the event loop's thread, in
//! `aio_client`). The blocking and asyncio trackers and servers hold the same handles, so
//! each node's opening, counters and closing are written once; the blocking kind runs them
//! through the bridge (`wait`), the asyncio kind hands them to the running event loop
//! (`aio`). `close()` is idempotent, and every class is a context manager (`with`, or
//! `async with`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::aio::awaitable;
use super::args::{self, Int, Seconds};
use super::bridge::wait;
use super::errors::to_py;
use super::happenings;
use crate::client::ClientNode;
use crate::error::{Error, Result};
use crate::live::{self, LiveClient, LiveServer};
use crate::protocol::{Name, Token};
use crate::roles::{Patience, Target};
use crate::server::{Number, ServerNode};
use crate::tracker::{Tracker as RustTracker, TrackerConfig};
use crate::transcript::Transcript;

/// How long closing a tracker waits for its tasks to end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A running tracker as the Python classes hold it.
pub struct TrackerHandle {
    tracker: Mutex<Option<RustTracker>>,
    address: SocketAddr,
    monitor: Option<SocketAddr>,
}

impl TrackerHandle {
    async fn open(host: String, port: u16, config: TrackerConfig) -> Result<TrackerHandle> {
        let addr = crate::connection::resolve(&host, port).await?;
        let tracker = RustTracker::bind(addr, config, Transcript::off()).await?;
        Ok(TrackerHandle {
            address: tracker.local_addr(),
            monitor: tracker.monitor_addr(),
            tracker: Mutex::new(Some(tracker)),
        })
    }

    fn reload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let done = {
            let guard = self.tracker.lock();
            let tracker = guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?;
            // A few small files: read under the lock, without the GIL.
            py.detach(|| tracker.reload()).map_err(to_py)?
        };
        let out = PyDict::new(py);
        out.set_item("tls", done.tls)?;
        out.set_item("token", done.token)?;
        Ok(out)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self.tracker.lock();
        let s = guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?.stats();
        let out = PyDict::new(py);
        out.set_item("servers", s.servers)?;
        out.set_item("clients", s.clients)?;
        out.set_item("requests", s.requests)?;
        out.set_item("late_replies", s.late_replies)?;
        out.set_item("tls_failed", s.tls_failed)?;
        out.set_item("open_requests", s.open_requests)?;
        Ok(out)
    }

    /// Resolves once at least `servers` servers and `clients` clients are registered.
    fn registered(
        &self,
        servers: Int,
        clients: Int,
        timeout: Seconds,
    ) -> PyResult<impl Future<Output = Result<()>>> {
        let servers = servers.count("servers", 0, crate::args::MAX_N)?;
        let clients = clients.count("clients", 0, crate::args::MAX_N)?;
        let timeout = args::seconds(timeout, "timeout")?;
        let mut counts = {
            let guard = self.tracker.lock();
            guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?.subscribe_counts()
        };
        Ok(async move {
            tokio::time::timeout(timeout, counts.wait_for(|&(s, c)| s >= servers && c >= clients))
                .await
                .map_err(|_| Error::Timeout(format!("waiting for {}", nodes(servers, clients))))?
                .map_err(|_| Error::NodeClosed)?;
            Ok(())
        })
    }

    /// Says BYE to every node, closes every connection and stops (nothing if closed).
    fn closing(&self) -> impl Future<Output = Result<()>> {
        let tracker = self.tracker.lock().take();
        async move {
            if let Some(tracker) = tracker {
                tracker.shutdown(CLOSE_GRACE).await;
            }
            Ok(())
        }
    }
}

/// A registered server as the Python classes hold it: it registers again when its tracker
/// goes away, unless told not to.
pub struct ServerHandle {
    name: String,
    number: u8,
    /// How its happenings are told apart (`matchtracker.watch`).
    key: u64,
    node: Mutex<Option<LiveServer>>,
}

impl ServerHandle {
    async fn open(
        name: Name,
        targets: Vec<Target>,
        number: Number,
        token: Option<Token>,
        again: Again,
    ) -> Result<ServerHandle> {
        let mut reach = live::Reach::new(targets, name.clone(), Transcript::off(), again.patience())?;
        let start = |to| ServerNode::start(to, name.clone(), number, token.clone(), Transcript::off());
        let node = reach.first(start).await?;
        let key = happenings::new_key();
        let tell = happenings::teller(key, name.clone());
        let live = LiveServer::serve(reach, node, number, token, again.reconnect, Some(tell));
        Ok(ServerHandle { name: name.to_string(), number: number.value(), key, node: Mutex::new(Some(live)) })
    }

    /// Stops answering and closes the connection (nothing if closed).
    fn closing(&self) -> impl Future<Output = Result<()>> {
        let node = self.node.lock().take();
        async move {
            if let Some(node) = node {
                // How the serving ended (say, the tracker left first) is no reason to fail a close.
                let _ = node.close().await;
            }
            Ok(())
        }
    }
}

/// A connected client as the blocking `Client` holds it: shared by every call in flight,
/// until `close()`; it reconnects when its tracker goes away, unless told not to.
pub struct ClientHandle {
    name: String,
    /// How its happenings are told apart (`matchtracker.watch`).
    key: u64,
    node: RwLock<Option<Arc<LiveClient>>>,
}

impl ClientHandle {
    async fn open(
        name: Name,
        targets: Vec<Target>,
        token: Option<Token>,
        again: Again,
    ) -> Result<ClientHandle> {
        let mut reach = live::Reach::new(targets, name.clone(), Transcript::off(), again.patience())?;
        let connect = |to| ClientNode::connect(to, name.clone(), token.clone(), Transcript::off());
        let node = reach.first(connect).await?;
        let key = happenings::new_key();
        let tell = happenings::teller(key, name.clone());
        let live = LiveClient::new(reach, node, token, again.reconnect, true, Some(tell));
        Ok(ClientHandle { name: name.to_string(), key, node: RwLock::new(Some(Arc::new(live))) })
    }

    /// The answer to one request, as Python receives it.
    fn find_match(&self, number: Int) -> PyResult<impl Future<Output = Result<Vec<String>>>> {
        let number = args::number(number)?;
        let node = self.node.read().clone().ok_or_else(|| to_py(Error::NodeClosed))?;
        Ok(async move {
            let answer = node.find_match(number).await?;
            Ok(answer.servers.iter().map(Name::to_string).collect())
        })
    }

    /// Fails every call in flight at once; the connection closes as the last one returns.
    fn close(&self) {
        if let Some(node) = self.node.write().take() {
            node.close();
        }
    }
}

/// Whether a library node reconnects when its tracker goes away, and for how long it tries
/// each time (`None`: as long as it lives).
#[derive(Clone, Copy, Debug)]
pub struct Again {
    pub reconnect: bool,
    pub reconnect_for: Option<Duration>,
}

impl Again {
    /// From the keywords every node class takes.
    pub fn from_args(reconnect: bool, reconnect_for: Option<Seconds>) -> PyResult<Again> {
        let reconnect_for = reconnect_for
            .map(|r| {
                crate::args::seconds_up_to(
                    r.value("reconnect_for")?,
                    "reconnect_for",
                    crate::args::MAX_PATIENCE,
                )
                .map_err(to_py)
            })
            .transpose()?;
        Ok(Again { reconnect, reconnect_for })
    }

    /// The first registration tries each tracker once (a library call says at once that it
    /// cannot reach them); later ones as long as `reconnect_for` allows.
    pub fn patience(self) -> Patience {
        Patience { first: Duration::ZERO, again: self.reconnect_for }
    }
}

/// The arguments every tracker class takes, checked.
fn tracker_args(
    port: Int,
    timeout: Seconds,
    options: args::TrackerOptions,
) -> PyResult<(u16, TrackerConfig)> {
    // At most 65535, so the cast keeps every bit.
    #[allow(clippy::cast_possible_truncation)]
    let port = port.count("port", 0, u64::from(u16::MAX))? as u16;
    Ok((port, options.config(timeout)?))
}

/// How a node reaches its tracker, as every node class takes it: the address, the token,
/// and TLS.
pub struct Reach<'a, 'py> {
    pub address: &'a Bound<'py, PyAny>,
    pub token: Option<&'a str>,
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
}

impl Reach<'_, '_> {
    /// The trackers to reach (one, or several of a cluster) and the token to show them,
    /// checked.
    pub fn checked(self) -> PyResult<(Vec<Target>, Option<Token>)> {
        Ok((args::targets(self.address, self.tls, self.tls_ca.as_deref())?, args::token(self.token)?))
    }

    /// What a library node takes to join, checked: its `name`, these trackers and token,
    /// and whether it reconnects. Starts the watcher of what nodes tell their owners.
    pub fn joining(
        self,
        py: Python<'_>,
        name: &str,
        reconnect: bool,
        reconnect_for: Option<Seconds>,
    ) -> PyResult<Joining> {
        let name = args::name(name, "name")?;
        let (targets, token) = self.checked()?;
        let again = Again::from_args(reconnect, reconnect_for)?;
        happenings::start_watcher(py)?;
        Ok(Joining { name, targets, token, again })
    }
}

/// A library node's name, trackers, token and reconnection, checked.
pub struct Joining {
    pub name: Name,
    pub targets: Vec<Target>,
    pub token: Option<Token>,
    pub again: Again,
}

/// A node on its way, in asyncio: await it for the node, or enter it with `async with`,
/// which closes the node on the way out.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Opening {
    future: Py<PyAny>,
}

#[pymethods]
impl Opening {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.future.bind(py).call_method0("__await__")
    }

    fn __aenter__(&self, py: Python<'_>) -> Py<PyAny> {
        self.future.clone_ref(py)
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: Py<PyAny>,
        _exc_value: Py<PyAny>,
        _traceback: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Entered, so opened: the node is the future's result.
        self.future.bind(py).call_method0("result")?.call_method0("close")
    }
}

/// An `Opening` of the node that `work` makes.
pub fn opening<T, F>(py: Python<'_>, work: F) -> PyResult<Opening>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    Ok(Opening { future: awaitable(py, work)?.unbind() })
}

/// A central tracker listening for servers and clients.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Tracker(TrackerHandle);

#[pymethods]
impl Tracker {
    #[new]
    #[pyo3(
        signature = (host = "127.0.0.1".to_owned(), port = Int::from(0), timeout = Seconds::from(2.0), **options),
        text_signature = "(host='127.0.0.1', port=0, timeout=2.0, **options)"
    )]
    fn new(
        py: Python<'_>,
        host: String,
        port: Int,
        timeout: Seconds,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let options = args::TrackerOptions::from_kwargs(options, "Tracker")?;
        let (port, config) = tracker_args(port, timeout, options)?;
        Ok(Tracker(wait(py, TrackerHandle::open(host, port, config))?))
    }

    /// "host:port", ready to give to `Server` and `Client`.
    #[getter]
    fn address(&self) -> String {
        self.0.address.to_string()
    }

    #[getter]
    fn host(&self) -> String {
        self.0.address.ip().to_string()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.0.address.port()
    }

    /// "host:port" of the monitoring port (`/metrics`, `/healthz`, `/readyz`, `/stats`), or
    /// `None` without one.
    #[getter]
    fn monitor_address(&self) -> Option<String> {
        self.0.monitor.map(|addr| addr.to_string())
    }

    /// Reads the TLS certificate and key and the token file again (new handshakes and
    /// greetings use them; live nodes stay); which were read, as a dict.
    fn reload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.reload(py)
    }

    /// Counters: servers and clients registered now, requests so far, late replies dropped.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.stats(py)
    }

    /// Waits until at least `servers` servers and `clients` clients are registered, for at
    /// most `timeout` seconds (10 by default).
    #[pyo3(
        signature = (servers, clients = Int::from(0), timeout = Seconds::from(10.0)),
        text_signature = "($self, servers, clients=0, timeout=10.0)"
    )]
    fn wait_for_nodes(&self, py: Python<'_>, servers: Int, clients: Int, timeout: Seconds) -> PyResult<()> {
        wait(py, self.0.registered(servers, clients, timeout)?)
    }

    /// Says BYE to every node, closes every connection and stops. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.0.closing())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Py<PyAny>,
        _exc_value: Py<PyAny>,
        _traceback: Py<PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Tracker(address={:?})", self.0.address.to_string())
    }
}

/// A server node holding a number, answering the tracker's queries in the background.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Server(ServerHandle);

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (name, tracker_address, number = None, *, token = None, tls = false, tls_ca = None, reconnect = true, reconnect_for = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        number: Option<Int>,
        token: Option<&str>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        reconnect: bool,
        reconnect_for: Option<Seconds>,
    ) -> PyResult<Self> {
        let reach = Reach { address: tracker_address, token, tls, tls_ca };
        let Joining { name, targets, token, again } = reach.joining(py, name, reconnect, reconnect_for)?;
        let number = args::number_or_random(number)?;
        Ok(Server(wait(py, ServerHandle::open(name, targets, number, token, again))?))
    }

    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// How this node's happenings are told apart, for `matchtracker.watch`.
    #[getter]
    fn _key(&self) -> u64 {
        self.0.key
    }

    #[getter]
    fn number(&self) -> u8 {
        self.0.number
    }

    /// Stops answering and closes the connection. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.0.closing())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Py<PyAny>,
        _exc_value: Py<PyAny>,
        _traceback: Py<PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Server(name={:?}, number={})", self.0.name, self.0.number)
    }
}

/// A client node that asks the tracker which servers hold a number.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Client(ClientHandle);

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (name, tracker_address, *, token = None, tls = false, tls_ca = None, reconnect = true, reconnect_for = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        token: Option<&str>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        reconnect: bool,
        reconnect_for: Option<Seconds>,
    ) -> PyResult<Self> {
        let reach = Reach { address: tracker_address, token, tls, tls_ca };
        let Joining { name, targets, token, again } = reach.joining(py, name, reconnect, reconnect_for)?;
        Ok(Client(wait(py, ClientHandle::open(name, targets, token, again))?))
    }

    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// How this node's happenings are told apart, for `matchtracker.watch`.
    #[getter]
    fn _key(&self) -> u64 {
        self.0.key
    }

    /// The names of the servers holding `number`, in index order; empty if none. Calls
    /// from many threads share the connection and are all in flight at once.
    fn find_match(&self, py: Python<'_>, number: Int) -> PyResult<Vec<String>> {
        wait(py, self.0.find_match(number)?)
    }

    /// Closes the connection at once: every call still waiting raises `MatchTrackerError`.
    /// Safe to call twice.
    fn close(&self) {
        self.0.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _exc_type: Py<PyAny>, _exc_value: Py<PyAny>, _traceback: Py<PyAny>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!("Client(name={:?})", self.0.name)
    }
}

/// `Tracker` for asyncio: `await AsyncTracker.start(...)`, `await tracker.close()`.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct AsyncTracker(TrackerHandle);

#[pymethods]
impl AsyncTracker {
    /// Listens on `host:port`; an awaitable of the running tracker.
    #[staticmethod]
    #[pyo3(
        signature = (host = "127.0.0.1".to_owned(), port = Int::from(0), timeout = Seconds::from(2.0), **options),
        text_signature = "(host='127.0.0.1', port=0, timeout=2.0, **options)"
    )]
    fn start(
        py: Python<'_>,
        host: String,
        port: Int,
        timeout: Seconds,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Opening> {
        let options = args::TrackerOptions::from_kwargs(options, "Tracker.start")?;
        let (port, config) = tracker_args(port, timeout, options)?;
        opening(py, async move { Ok(AsyncTracker(TrackerHandle::open(host, port, config).await?)) })
    }

    #[getter]
    fn address(&self) -> String {
        self.0.address.to_string()
    }

    #[getter]
    fn host(&self) -> String {
        self.0.address.ip().to_string()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.0.address.port()
    }

    /// "host:port" of the monitoring port (`/metrics`, `/healthz`, `/readyz`, `/stats`), or
    /// `None` without one.
    #[getter]
    fn monitor_address(&self) -> Option<String> {
        self.0.monitor.map(|addr| addr.to_string())
    }

    /// Reads the TLS certificate and key and the token file again (new handshakes and
    /// greetings use them; live nodes stay); which were read, as a dict.
    fn reload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.reload(py)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.stats(py)
    }

    #[pyo3(
        signature = (servers, clients = Int::from(0), timeout = Seconds::from(10.0)),
        text_signature = "($self, servers, clients=0, timeout=10.0)"
    )]
    fn wait_for_nodes<'py>(
        &self,
        py: Python<'py>,
        servers: Int,
        clients: Int,
        timeout: Seconds,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.0.registered(servers, clients, timeout)?)
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.0.closing())
    }

    fn __repr__(&self) -> String {
        format!("AsyncTracker(address={:?})", self.0.address.to_string())
    }
}

/// `Server` for asyncio: `await AsyncServer.start(...)`, `await server.close()`.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct AsyncServer(ServerHandle);

#[pymethods]
impl AsyncServer {
    /// Registers with the tracker; an awaitable of the running server.
    #[staticmethod]
    #[pyo3(signature = (name, tracker_address, number = None, *, token = None, tls = false, tls_ca = None, reconnect = true, reconnect_for = None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        name: &str,
        tracker_address: &Bound<'_, PyAny>,
        number: Option<Int>,
        token: Option<&str>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        reconnect: bool,
        reconnect_for: Option<Seconds>,
    ) -> PyResult<Opening> {
        let reach = Reach { address: tracker_address, token, tls, tls_ca };
        let Joining { name, targets, token, again } = reach.joining(py, name, reconnect, reconnect_for)?;
        let number = args::number_or_random(number)?;
        opening(
            py,
            async move { Ok(AsyncServer(ServerHandle::open(name, targets, number, token, again).await?)) },
        )
    }

    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// How this node's happenings are told apart, for `matchtracker.watch`.
    #[getter]
    fn _key(&self) -> u64 {
        self.0.key
    }

    #[getter]
    fn number(&self) -> u8 {
        self.0.number
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.0.closing())
    }

    fn __repr__(&self) -> String {
        format!("AsyncServer(name={:?}, number={})", self.0.name, self.0.number)
    }
}

/// "1 server and 2 clients", said as a person would.
fn nodes(servers: usize, clients: usize) -> String {
    let count = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    format!("{} and {}", count(servers, "server"), count(clients, "client"))
}
