//! The Python boundary, and the only module that knows about Python: the `_core` module.
//!
//! - [`bridge`]: running Rust work from a Python call (the shared runtime, Ctrl-C, printing);
//! - [`aio`]: Rust work as asyncio awaitables; [`aio_client`]: the asyncio client, on the
//!   event loop's own thread;
//! - [`args`]: Python's arguments into the core's types;
//! - [`errors`]: the exceptions, and the one place Rust errors become them;
//! - [`report`]: a simulation's report, built into Python objects only when asked;
//! - [`nodes`]: the `Tracker`, `Server` and `Client` classes, and their asyncio twins;
//! - [`functions`]: `run_simulation`, the command line's roles, `run_load`.
//!
//! Every blocking call extracts its arguments while attached, runs the Rust work on the one
//! shared runtime while detached, and polls for signals; a panic in a task comes back as an
//! error, never as a crash.

mod aio;
mod aio_client;
mod args;
mod bridge;
mod errors;
mod functions;
mod happenings;
mod nodes;
mod report;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The limits the errors state, for the command line's --help to state them too.
    m.add("MAX_N", crate::args::MAX_N)?;
    m.add("MAX_ROUNDS", crate::args::MAX_ROUNDS)?;
    m.add("MAX_SECONDS", crate::args::MAX_SECONDS)?;
    m.add_function(wrap_pyfunction!(functions::run_simulation, m)?)?;
    m.add_function(wrap_pyfunction!(functions::run_load, m)?)?;
    m.add_function(wrap_pyfunction!(functions::serve_tracker, m)?)?;
    m.add_function(wrap_pyfunction!(functions::serve_server, m)?)?;
    m.add_function(wrap_pyfunction!(functions::run_client, m)?)?;
    m.add_function(wrap_pyfunction!(happenings::_watch_with, m)?)?;
    m.add_function(wrap_pyfunction!(happenings::_take_happenings, m)?)?;
    m.add_class::<nodes::Tracker>()?;
    m.add_class::<nodes::Server>()?;
    m.add_class::<nodes::Client>()?;
    m.add_class::<nodes::AsyncTracker>()?;
    m.add_class::<nodes::AsyncServer>()?;
    m.add_class::<aio_client::AsyncClient>()?;
    m.add_class::<nodes::Opening>()?;
    m.add_class::<report::Report>()?;
    m.add_class::<report::RequestRecord>()?;
    errors::add(m)
}
