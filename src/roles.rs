//! The roles a process can play on its own, for running the system across processes and
//! hosts: a tracker that runs until stopped, a server that keeps itself registered, a client
//! that makes its rounds. Servers and clients whose tracker goes away reconnect with capped
//! exponential backoff and register again; the tracker's registry is soft state rebuilt from
//! them.
//!
//! Each role runs until its work is done or its owner asks it to stop.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::client::{Answer, ClientNode};
use crate::connection;
use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, Name, Token, NUMBERS};
use crate::server::ServerNode;
use crate::shutdown::StopSignal;
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::{Event, Transcript};

/// First pause before reconnecting; it doubles after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between attempts: a restarted tracker has its nodes back within about this
/// long (plus the attempt itself).
const MAX_RETRY: Duration = Duration::from_secs(2);
/// How long a stopping tracker gives its connections to say `BYE` and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where a node finds its tracker.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Runs a tracker on `host:port` until `stop`; records where it listens first.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad config (or listening beyond loopback without a
/// token); [`Error::Io`] if the address cannot be bound.
pub async fn run_tracker(
    listen: Target,
    config: TrackerConfig,
    transcript: Transcript,
    mut stop: StopSignal,
) -> Result<()> {
    let addr = connection::resolve(&listen.host, listen.port).await?;
    let tracker = Tracker::bind(addr, config, transcript.clone()).await?;
    transcript.record(Event::Listening { address: tracker.local_addr().to_string() });
    stop.requested().await;
    tracker.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

/// Runs a server until `stop`, registering again whenever the tracker goes away.
///
/// # Errors
/// Only what retrying cannot mend: a refused token, a bad name or number.
pub async fn run_server(
    target: Target,
    name: Name,
    number: u8,
    token: Option<Token>,
    transcript: Transcript,
    mut stop: StopSignal,
) -> Result<()> {
    loop {
        let attempt = |addr| ServerNode::start(addr, name.clone(), number, token.clone(), transcript.clone());
        let Some(mut node) = connect(&target, &name, &transcript, &mut stop, attempt).await? else {
            return Ok(());
        };
        tokio::select! {
            ended = node.finished() => transcript.record(Event::TrackerLost { node: name.clone(), reason: lost(ended) }),
            () = stop.requested() => {
                // Stopped by its owner: how the serving ended before that is no failure.
                let _ = node.close().await;
                return Ok(());
            }
        }
    }
}

/// Runs a client for `rounds` requests, each for `number` or a number drawn from `seed`'s
/// generator, and returns the answers. A request cut off by a lost tracker is retried once,
/// on a new connection: the tracker that lost it kept no record of it.
///
/// # Errors
/// What retrying cannot mend, or a request that fails again after its retry. `Ok` with
/// fewer answers than `rounds` if stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    target: Target,
    name: Name,
    rounds: usize,
    number: Option<u8>,
    seed: Option<u64>,
    token: Option<Token>,
    transcript: Transcript,
    mut stop: StopSignal,
) -> Result<Vec<Answer>> {
    let mut rng = match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };
    let attempt = |addr| ClientNode::connect(addr, name.clone(), token.clone(), transcript.clone());
    let mut answers = Vec::with_capacity(rounds);
    let Some(mut client) = connect(&target, &name, &transcript, &mut stop, attempt).await? else {
        return Ok(answers);
    };
    for _ in 0..rounds {
        let number = number.unwrap_or_else(|| rng.random_range(NUMBERS));
        let first = tokio::select! {
            answer = client.find_match(number) => answer,
            () = stop.requested() => return Ok(answers),
        };
        let answer = match first {
            Err(e) if retryable(&e) => {
                transcript.record(Event::TrackerLost { node: name.clone(), reason: e.to_string() });
                let Some(again) = connect(&target, &name, &transcript, &mut stop, attempt).await? else {
                    return Ok(answers);
                };
                client = again;
                client.find_match(number).await?
            }
            other => other?,
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// Connects with `attempt` until it succeeds, pausing with capped exponential backoff after
/// each failure; `None` if stopped first.
async fn connect<T, F, Fut>(
    target: &Target,
    name: &Name,
    transcript: &Transcript,
    stop: &mut StopSignal,
    attempt: F,
) -> Result<Option<T>>
where
    F: Fn(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = FIRST_RETRY;
    loop {
        let tried = async { attempt(connection::resolve(&target.host, target.port).await?).await };
        let result = tokio::select! {
            result = tried => result,
            () = stop.requested() => return Ok(None),
        };
        match result {
            Ok(node) => return Ok(Some(node)),
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => {
                transcript.record(Event::Retrying { node: name.clone(), reason: e.to_string(), pause });
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.requested() => return Ok(None),
                }
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Whether trying again may succeed: the tracker is down or restarting, or it still holds
/// our name from a connection it has not yet seen close. A refused token or a bad argument
/// will fail the same way every time.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Io(_) | Error::Closed | Error::Timeout(_) => true,
        Error::Refused { code, .. } => *code == ErrorCode::NameTaken,
        _ => false,
    }
}

fn lost(ended: Result<()>) -> String {
    match ended {
        Ok(()) => "it said goodbye".to_owned(),
        Err(e) => e.to_string(),
    }
}
