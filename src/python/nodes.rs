//! The node classes: `Tracker`, `Server` and `Client`, each owning its Rust node. Every
//! blocking method runs on the shared runtime through the bridge; `close()` is idempotent,
//! and every class is a context manager.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::args::{self, Int};
use super::bridge::wait;
use super::errors::to_py;
use crate::client::ClientNode;
use crate::error::Error;
use crate::protocol::Name;
use crate::server::ServerNode;
use crate::tracker::Tracker as RustTracker;
use crate::transcript::Transcript;

/// How long `Tracker.close()` waits for the tracker's tasks to end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A central tracker listening for servers and clients.
#[pyclass(module = "matchtracker._core", frozen)]
pub struct Tracker {
    inner: Mutex<Option<RustTracker>>,
    address: SocketAddr,
}

#[pymethods]
impl Tracker {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1".to_owned(), port = Int::from(0), timeout = 2.0, *, early = false, token = None, insecure_no_token = false, keepalive = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: String,
        port: Int,
        timeout: f64,
        early: bool,
        token: Option<&str>,
        insecure_no_token: bool,
        keepalive: f64,
    ) -> PyResult<Self> {
        // At most 65535, so the cast keeps every bit.
        #[allow(clippy::cast_possible_truncation)]
        let port = port.count("port", 0, u64::from(u16::MAX))? as u16;
        let config = args::tracker_config(timeout, early, token, insecure_no_token, keepalive)?;
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

    /// Waits until at least `servers` servers and `clients` clients are registered, for at
    /// most `timeout` seconds (10 by default).
    #[pyo3(signature = (servers, clients = 0, timeout = 10.0))]
    fn wait_for_nodes(&self, py: Python<'_>, servers: usize, clients: usize, timeout: f64) -> PyResult<()> {
        let timeout = args::seconds(timeout, "timeout")?;
        let mut counts = {
            let guard = self.inner.lock();
            guard.as_ref().ok_or_else(|| to_py(Error::NodeClosed))?.subscribe_counts()
        };
        wait(py, async move {
            tokio::time::timeout(timeout, counts.wait_for(|&(s, c)| s >= servers && c >= clients))
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
        number: Option<Int>,
        token: Option<&str>,
    ) -> PyResult<Self> {
        let token = args::token(token)?;
        let name = args::name(name, "name")?;
        let number = args::number_or_random(number)?;
        let (host, port) = args::address(tracker_address, "tracker address")?;
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
        let token = args::token(token)?;
        let name = args::name(name, "name")?;
        let (host, port) = args::address(tracker_address, "tracker address")?;
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
    fn find_match(&self, py: Python<'_>, number: Int) -> PyResult<Vec<String>> {
        let number = args::number(number)?;
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
