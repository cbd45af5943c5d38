//! The package's exceptions, and the one place Rust errors become Python exceptions.
//!
//! Every exception raised for a protocol code (a refusal by the tracker, a malformed line)
//! carries that code as `.code`, a string from docs/PROTOCOL.md, so callers branch on it
//! rather than on the message; the others have `.code = None`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

create_exception!(matchtracker, MatchTrackerError, PyException, "Base class of every matchtracker error.");
create_exception!(
    matchtracker,
    NetworkError,
    MatchTrackerError,
    "The tracker could not be reached, or the connection to it failed or closed."
);
create_exception!(
    matchtracker,
    RefusedError,
    MatchTrackerError,
    "The tracker refused the request with an ERROR line."
);
create_exception!(matchtracker, ResponseTimeout, MatchTrackerError, "No answer came in time.");

/// Adds the exceptions to the module, each with `code = None` as its class default.
pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    py.get_type::<MatchTrackerError>().setattr("code", py.None())?;
    m.add("MatchTrackerError", py.get_type::<MatchTrackerError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ResponseTimeout", py.get_type::<ResponseTimeout>())?;
    Ok(())
}

/// The one place Rust errors become Python exceptions. Takes the error by value to be used
/// as `map_err(to_py)`.
#[allow(clippy::needless_pass_by_value)]
pub fn to_py(e: Error) -> PyErr {
    let text = e.to_string();
    let code = e.code();
    let err = match e {
        Error::InvalidArgument(_) | Error::TooManyFiles { .. } | Error::TooFewPorts { .. } => {
            return PyValueError::new_err(text)
        }
        Error::Io(_) | Error::Tls(_) | Error::Cluster(_) | Error::Closed | Error::GaveUp(_) => {
            NetworkError::new_err(text)
        }
        Error::Refused { .. } => RefusedError::new_err(text),
        Error::Timeout(_) => ResponseTimeout::new_err(text),
        Error::Protocol(_) | Error::Unexpected(_) | Error::Panic(_) | Error::NodeClosed => {
            MatchTrackerError::new_err(text)
        }
    };
    if let Some(code) = code {
        Python::attach(|py| {
            // Setting an attribute on a fresh exception instance only fails out of memory, and
            // then the exception without its code is still the right one to raise.
            let _ = err.value(py).setattr("code", code.as_str());
        });
    }
    err
}

/// A `ValueError` for an argument a caller got wrong.
pub fn invalid(text: impl Into<String>) -> PyErr {
    PyValueError::new_err(text.into())
}
