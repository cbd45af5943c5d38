//! Arguments as Python hands them over, turned into the core's types. The ranges and their
//! messages are the core's (`crate::args`); this file only deals with Python's types.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::errors::{invalid, to_py};
use crate::args;
use crate::protocol::{Name, ReplyMode, Token};
use crate::tracker::TrackerConfig;

pub fn name(name: &str, what: &str) -> PyResult<Name> {
    args::name(name, what).map_err(to_py)
}

pub fn token(token: Option<&str>) -> PyResult<Option<Token>> {
    token.map(args::token).transpose().map_err(to_py)
}

pub fn number(number: i64) -> PyResult<u8> {
    args::number(number.into()).map_err(to_py)
}

pub fn seconds(seconds: f64, what: &str) -> PyResult<Duration> {
    args::seconds(seconds, what).map_err(to_py)
}

/// A node's number: the one given, or one drawn at random.
pub fn number_or_random(number: Option<i64>) -> PyResult<u8> {
    match number {
        Some(number) => self::number(number),
        None => Ok(rand::random_range(crate::protocol::NUMBERS)),
    }
}

/// `"host:port"`, `"[v6]:port"` or `(host, port)` into a host and a port.
pub fn address(address: &Bound<'_, PyAny>, what: &str) -> PyResult<(String, u16)> {
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

/// A tracker's settings from the arguments the Python functions and class take.
pub fn tracker_config(
    timeout: f64,
    early: bool,
    token: Option<&str>,
    insecure_no_token: bool,
) -> PyResult<TrackerConfig> {
    Ok(TrackerConfig {
        deadline: seconds(timeout, "timeout")?,
        replies: ReplyMode::early(early),
        token: self::token(token)?,
        insecure_no_token,
        ..TrackerConfig::default()
    })
}
