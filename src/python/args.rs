//! Arguments as Python hands them over, turned into the core's types. The ranges and their
//! messages are the core's (`crate::args`); this file only deals with Python's types.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyTuple};

use super::errors::{invalid, to_py};
use crate::args;
use crate::cluster::ClusterConfig;
use crate::protocol::{Name, ReplyMode, Token};
use crate::roles::Target;
use crate::tls;
use crate::tracker::{MonitorConfig, Reload, TrackerConfig};

pub fn name(name: &str, what: &str) -> PyResult<Name> {
    args::name(name, what).map_err(to_py)
}

pub fn token(token: Option<&str>) -> PyResult<Option<Token>> {
    token.map(args::token).transpose().map_err(to_py)
}

pub fn number(number: Int) -> PyResult<u8> {
    number.check("number", args::number)
}

/// A Python int of any size, as an argument: checked against its range when used, so that an
/// int too large for any Rust type is refused with the range's message like any other.
///
/// Extraction never fails: an argument of another type is kept as `Wrong` and refused when
/// checked, where its name is known, so the `TypeError` says which argument it was (PyO3's
/// own says only "'str' object cannot be interpreted as an integer").
#[derive(Clone, Debug)]
pub enum Int {
    Fits(i128),
    /// Beyond i128 either way: the int as Python prints it, and whether it is positive.
    Huge(String, bool),
    /// Not an int (a `bool` counts as not an int: `rounds=True` is a mistake, not 1), by the
    /// name of its type.
    Wrong(String),
}

impl From<i128> for Int {
    fn from(value: i128) -> Int {
        Int::Fits(value)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Int> {
        if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
            return Ok(Int::Wrong(type_name(&obj)));
        }
        match obj.extract::<i128>() {
            Ok(value) => Ok(Int::Fits(value)),
            Err(_) => Ok(Int::Huge(obj.to_string(), obj.gt(0)?)),
        }
    }
}

impl Int {
    /// The int, checked by `check` (which takes it as an i128); `what` names it. A huge one
    /// fails `check` as the nearest i128 would, and the message shows it as it was given.
    ///
    /// # Errors
    /// `TypeError` for an argument that is not an int, `ValueError` for one out of range.
    pub fn check<T>(self, what: &str, check: impl Fn(i128) -> crate::Result<T>) -> PyResult<T> {
        match self {
            Int::Fits(value) => check(value).map_err(to_py),
            Int::Wrong(type_name) => Err(wrong_type(what, "an int", &type_name)),
            Int::Huge(text, positive) => {
                let near = if positive { i128::MAX } else { i128::MIN };
                let refused = check(near).err().map_or_else(
                    || format!("{text} is too large"),
                    |e| e.to_string().replace(&near.to_string(), &text),
                );
                Err(invalid(refused))
            }
        }
    }

    /// The int as a count from `low` to `high`; `what` names it.
    pub fn count(self, what: &str, low: u64, high: u64) -> PyResult<usize> {
        self.check(what, |value| args::count(value, what, low, high))
    }
}

/// The `TypeError` for an argument of the wrong type, in the package's words: which argument,
/// what it must be, what it was.
pub fn wrong_type(what: &str, must_be: &str, type_name: &str) -> PyErr {
    PyTypeError::new_err(format!("{what} must be {must_be}, not {type_name}"))
}

/// The name of an object's type, as Python writes it (`str`, `float`, `bool`).
pub fn type_name(obj: &Borrowed<'_, '_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "an unknown type".to_owned(), |n| n.to_string())
}

/// A seed for the random draws: an int from 0 to 2**64-1.
pub fn seed(seed: Int) -> PyResult<u64> {
    seed.check("seed", |value| {
        u64::try_from(value).map_err(|_| {
            crate::Error::InvalidArgument(format!("seed must be an integer from 0 to 2**64-1 (got {value})"))
        })
    })
}

/// A server's number: the one given, or one drawn at random.
pub fn number_or_random(number: Option<Int>) -> PyResult<crate::server::Number> {
    use crate::server::Number;
    match number {
        Some(number) => self::number(number).map(Number::Given),
        None => Ok(Number::Drawn(rand::random_range(crate::protocol::NUMBERS))),
    }
}

pub fn seconds(seconds: Seconds, what: &str) -> PyResult<Duration> {
    args::seconds(seconds.value(what)?, what).map_err(to_py)
}

/// A time in seconds as an argument: an int or a float. As with [`Int`], extraction never
/// fails, so that a wrong type is refused where the argument's name is known; a `bool` is
/// a wrong type (`timeout=True` is a mistake, not one second).
#[derive(Clone, Debug)]
pub enum Seconds {
    Given(f64),
    /// Neither an int nor a float, by the name of its type.
    Wrong(String),
}

impl From<f64> for Seconds {
    fn from(value: f64) -> Seconds {
        Seconds::Given(value)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Seconds {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Seconds> {
        if obj.is_instance_of::<PyBool>() {
            return Ok(Seconds::Wrong("bool".to_owned()));
        }
        if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
            return obj.extract::<f64>().map(Seconds::Given);
        }
        Ok(Seconds::Wrong(type_name(&obj)))
    }
}

impl Seconds {
    /// The seconds as given; `what` names the argument.
    ///
    /// # Errors
    /// `TypeError` for an argument that is neither an int nor a float.
    pub fn value(self, what: &str) -> PyResult<f64> {
        match self {
            Seconds::Given(value) => Ok(value),
            Seconds::Wrong(type_name) => {
                Err(wrong_type(what, "a number of seconds (an int or a float)", &type_name))
            }
        }
    }
}

/// How long a node keeps trying to reach its tracker: `wait` seconds at start, and after
/// losing it `reconnect_for` seconds (`None`: as long as it runs).
pub fn patience(wait: Seconds, reconnect_for: Option<Seconds>) -> PyResult<crate::roles::Patience> {
    let within = |value: Seconds, what| {
        args::seconds_up_to(value.value(what)?, what, args::MAX_PATIENCE).map_err(to_py)
    };
    Ok(crate::roles::Patience {
        first: within(wait, "wait")?,
        again: reconnect_for.map(|r| within(r, "reconnect_for")).transpose()?,
    })
}

/// `"host:port"`, `"[v6]:port"` or `(host, port)` into a host and a port.
pub fn address(address: &Bound<'_, PyAny>, what: &str) -> PyResult<(String, u16)> {
    if let Ok(text) = address.extract::<String>() {
        return address_text(&text, what);
    }
    if let Ok(tuple) = address.cast::<PyTuple>() {
        if let Ok(pair) = tuple.extract::<(String, u16)>() {
            return Ok(pair);
        }
    }
    Err(address_usage(what, &address.to_string()))
}

/// `"host:port"` or `"[v6]:port"` into a host and a port.
fn address_text(text: &str, what: &str) -> PyResult<(String, u16)> {
    let usage = || invalid(format!("{what} must be \"host:port\", such as 127.0.0.1:7000 (got {text})"));
    let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match port.parse::<u16>() {
        Ok(port) => port,
        Err(_) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(invalid(format!(
                "the port in the {what} must be at most 65535 (got {port} in {text})"
            )));
        }
        Err(_) => return Err(usage()),
    };
    if host.is_empty() {
        return Err(usage());
    }
    Ok((host.to_owned(), port))
}

fn address_usage(what: &str, got: &str) -> PyErr {
    invalid(format!("{what} must be \"host:port\" or a (host, port) tuple (got {got})"))
}

/// The keyword options every tracker takes (`Tracker(...)`, `aio.Tracker.start(...)` and
/// `serve_tracker(...)`), defined once: their names, how each is checked, and the settings
/// they make. Adding one is one field, one arm and its use in [`TrackerOptions::config`]
/// (and one line of the stub's `_TrackerOptions`).
#[derive(Default)]
pub struct TrackerOptions {
    early: bool,
    token: Option<String>,
    insecure_no_token: bool,
    keepalive: Option<Seconds>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_plaintext: bool,
    /// NATS urls of a cluster of trackers to join, and the cluster's name.
    cluster: Option<Urls>,
    cluster_name: Option<String>,
    /// Where the monitoring port listens, and whether it may answer beyond loopback
    /// without the token.
    monitor: Option<(String, u16)>,
    monitor_insecure: bool,
    /// A file holding the token, read again by a reload.
    token_file: Option<PathBuf>,
}

/// The default keepalive, in seconds.
const KEEPALIVE: f64 = 5.0;

impl TrackerOptions {
    /// The options among `kwargs`, each checked; `function` names the caller in the
    /// `TypeError` for a keyword it does not take.
    ///
    /// # Errors
    /// `TypeError` for an unknown keyword or a value of the wrong type.
    pub fn from_kwargs(kwargs: Option<&Bound<'_, PyDict>>, function: &str) -> PyResult<TrackerOptions> {
        let mut options = TrackerOptions::default();
        let Some(kwargs) = kwargs else { return Ok(options) };
        for (key, value) in kwargs.iter() {
            let key: String = key.extract()?;
            let value = value.as_borrowed();
            match key.as_str() {
                "early" => options.early = flag(value, "early")?,
                "token" => options.token = text(value, "token")?,
                "insecure_no_token" => options.insecure_no_token = flag(value, "insecure_no_token")?,
                "keepalive" => options.keepalive = Some(value.extract()?),
                "tls_cert" => options.tls_cert = path(value, "tls_cert")?,
                "tls_key" => options.tls_key = path(value, "tls_key")?,
                "insecure_plaintext" => options.insecure_plaintext = flag(value, "insecure_plaintext")?,
                "cluster" => options.cluster = if value.is_none() { None } else { Some(value.extract()?) },
                "cluster_name" => options.cluster_name = text(value, "cluster_name")?,
                "monitor" => {
                    options.monitor = if value.is_none() {
                        None
                    } else {
                        Some(address(&value.to_owned(), "monitor address")?)
                    };
                }
                "monitor_insecure" => options.monitor_insecure = flag(value, "monitor_insecure")?,
                "token_file" => options.token_file = path(value, "token_file")?,
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "{function}() got an unexpected keyword argument '{other}'"
                    )))
                }
            }
        }
        Ok(options)
    }

    /// The tracker's settings, with `timeout` as its deadline.
    ///
    /// # Errors
    /// `ValueError` for a value out of range or options that do not go together.
    pub fn config(self, timeout: Seconds) -> PyResult<TrackerConfig> {
        let token = match (&self.token_file, self.token.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(invalid("token and token_file are two ways to give one token: give one"))
            }
            (Some(file), None) => Some(crate::tracker::read_token(file).map_err(to_py)?),
            (None, token) => self::token(token)?,
        };
        let reload = Reload {
            tls_files: self.tls_cert.clone().zip(self.tls_key.clone()),
            token_file: self.token_file.clone(),
        };
        Ok(TrackerConfig {
            reload,
            deadline: seconds(timeout, "timeout")?,
            keepalive: seconds(self.keepalive.unwrap_or(Seconds::Given(KEEPALIVE)), "keepalive")?,
            replies: ReplyMode::early(self.early),
            token,
            insecure_no_token: self.insecure_no_token,
            tls: tracker_tls(self.tls_cert, self.tls_key)?,
            insecure_plaintext: self.insecure_plaintext,
            cluster: match self.cluster {
                Some(Urls(urls)) => Some(
                    ClusterConfig::new(urls, self.cluster_name.as_deref().unwrap_or(DEFAULT_CLUSTER))
                        .map_err(to_py)?,
                ),
                None if self.cluster_name.is_some() => {
                    return Err(invalid("cluster_name needs cluster (the NATS urls)"))
                }
                None => None,
            },
            monitor: match self.monitor {
                Some((host, port)) => Some(MonitorConfig {
                    addr: resolve(&host, port, "monitor address")?,
                    insecure: self.monitor_insecure,
                }),
                None if self.monitor_insecure => {
                    return Err(invalid("monitor_insecure needs monitor (its address)"))
                }
                None => None,
            },
            ..TrackerConfig::default()
        })
    }
}

/// A `True` or `False` option (an int is not taken for one).
fn flag(value: Borrowed<'_, '_, PyAny>, what: &str) -> PyResult<bool> {
    match value.cast::<PyBool>() {
        Ok(flag) => Ok(flag.is_true()),
        Err(_) => Err(wrong_type(what, "True or False", &type_name(&value))),
    }
}

/// A text option, or `None`.
fn text(value: Borrowed<'_, '_, PyAny>, what: &str) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    value.extract::<String>().map(Some).map_err(|_| wrong_type(what, "a str or None", &type_name(&value)))
}

/// A file's path (a str or a path-like object), or `None`.
fn path(value: Borrowed<'_, '_, PyAny>, what: &str) -> PyResult<Option<PathBuf>> {
    if value.is_none() {
        return Ok(None);
    }
    value
        .extract::<PathBuf>()
        .map(Some)
        .map_err(|_| wrong_type(what, "a path (str or os.PathLike) or None", &type_name(&value)))
}

/// `host` and `port` as one socket address; a host name is looked up (once, here).
fn resolve(host: &str, port: u16, what: &str) -> PyResult<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("{what} {host}:{port} cannot be resolved: {e}")))?;
    let mut found = found.collect::<Vec<_>>();
    // IPv4 first, as the node port does.
    found.sort_by_key(std::net::SocketAddr::is_ipv6);
    found.into_iter().next().ok_or_else(|| invalid(format!("{what} {host}:{port} has no address")))
}

/// NATS urls as Python gives them: one string (several comma-separated) or a list.
pub struct Urls(pub Vec<String>);

impl<'a, 'py> FromPyObject<'a, 'py> for Urls {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Urls> {
        if let Ok(text) = obj.extract::<String>() {
            return Ok(Urls(
                text.split(',').map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()).collect(),
            ));
        }
        obj.extract::<Vec<String>>().map(Urls).map_err(|_| {
            invalid("cluster must be NATS urls: a string (comma-separated) or a list of strings")
        })
    }
}

/// The cluster name when none is given.
const DEFAULT_CLUSTER: &str = "matchtracker";

/// TLS for a tracker from its certificate and key files: both, or neither for plain TCP.
pub fn tracker_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> PyResult<Option<Arc<rustls::ServerConfig>>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => tls::tracker_config(&cert, &key).map(Some).map_err(to_py),
        _ => Err(invalid("tls_cert and tls_key go together: give both for TLS, or neither")),
    }
}

/// Where a node finds its tracker, or the trackers of a cluster: `address` as [`address`]
/// takes it, several of them comma-separated in one string, or a list of them; over TLS
/// when `tls` is set or `tls_ca` names the CA to trust (the system's roots otherwise).
pub fn targets(address: &Bound<'_, PyAny>, tls: bool, tls_ca: Option<&Path>) -> PyResult<Vec<Target>> {
    let what = "tracker address";
    let places = if let Ok(text) = address.extract::<String>() {
        text.split(',').map(|part| address_text(part.trim(), what)).collect::<PyResult<Vec<_>>>()?
    } else if let Ok(list) = address.cast::<pyo3::types::PyList>() {
        list.iter().map(|item| self::address(&item, what)).collect::<PyResult<Vec<_>>>()?
    } else {
        vec![self::address(address, what)?]
    };
    if places.is_empty() {
        return Err(invalid(format!("{what} must name at least one tracker")));
    }
    let config = if tls || tls_ca.is_some() { Some(tls::node_config(tls_ca).map_err(to_py)?) } else { None };
    places.into_iter().map(|(host, port)| Target::new(host, port, config.clone()).map_err(to_py)).collect()
}
