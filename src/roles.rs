//! The roles a process can play on its own, for running the system across processes and
//! hosts: a tracker that runs until stopped, a server that keeps itself registered, a client
//! that makes its rounds. Servers and clients whose tracker goes away reconnect with capped
//! exponential backoff and register again; the tracker's registry is soft state rebuilt from
//! them.
//!
//! Each role runs until its work is done or its owner asks it to stop.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::client::{Answer, ClientNode};
use crate::connection::{self, Endpoint};
use crate::error::Result;
use crate::live::{LiveClient, LiveServer, Reach};
use crate::protocol::{Name, Token, NUMBERS};
use crate::server::{Number, ServerNode};
use crate::shutdown::StopSignal;
use crate::tls::Dial;
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::{Event, Transcript};

/// How long a stopping tracker gives its connections to say `BYE` and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where a node finds its tracker, and how it checks the tracker over TLS (`None`: plain
/// TCP).
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: Option<Dial>,
}

impl Target {
    /// `host:port` over plain TCP.
    pub fn plain(host: String, port: u16) -> Target {
        Target { host, port, tls: None }
    }

    /// `host:port`, over TLS trusting `tls` if given; the tracker's certificate must name
    /// `host`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `host` is no name or address TLS can check.
    pub fn new(host: String, port: u16, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Target> {
        let tls = tls.map(|config| Dial::new(config, &host)).transpose()?;
        Ok(Target { host, port, tls })
    }

    /// The tracker's address, looked up now (a name may move between attempts).
    ///
    /// # Errors
    /// [`Error::Io`] if the name does not resolve.
    pub async fn resolve(&self) -> Result<Endpoint> {
        let addr = connection::resolve(&self.host, self.port).await?;
        Ok(Endpoint { addr, tls: self.tls.clone() })
    }
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
    let tls = config.tls.is_some();
    let tracker = Tracker::bind(addr, config, transcript.clone()).await?;
    transcript.record(Event::Listening { address: tracker.local_addr().to_string(), tls });
    if let Some(monitor) = tracker.monitor_addr() {
        transcript.record(Event::Monitoring { address: monitor.to_string() });
    }
    // SIGHUP reads the certificate, key and token file again, as daemons do. Without a
    // handler (it cannot be installed) the signal keeps its default effect.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            () = stop.requested() => break,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                // A few small files: read here rather than hand them to another thread.
                match tracker.reload() {
                    Ok(done) => transcript.record(Event::Reloaded { tls: done.tls, token: done.token }),
                    Err(e) => transcript.record(Event::ReloadFailed { reason: e.to_string() }),
                }
            }
        }
    }
    tracker.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

/// How long a node keeps trying to reach its tracker before it gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    /// At start, before it was ever registered: a wrong address or a tracker that is not
    /// up is reported after this long.
    pub first: Duration,
    /// After it was registered and lost the tracker; `None` is for as long as it runs, as a
    /// daemon should.
    pub again: Option<Duration>,
}

impl Default for Patience {
    fn default() -> Self {
        Patience { first: Duration::from_secs(30), again: None }
    }
}

/// Runs a server until `stop`, registering again whenever the tracker goes away (with the
/// next of `targets`, the trackers of one cluster, if there are several).
///
/// # Errors
/// A refusal (a wrong token, a name that is taken or not allowed); a tracker that could
/// not be reached within `patience`.
pub async fn run_server(
    targets: Vec<Target>,
    name: Name,
    number: Number,
    token: Option<Token>,
    patience: Patience,
    transcript: Transcript,
    mut stop: StopSignal,
) -> Result<()> {
    let mut reach = Reach::new(targets, name.clone(), transcript.clone(), patience)?;
    let attempt = |addr| ServerNode::start(addr, name.clone(), number, token.clone(), transcript.clone());
    let Some(node) = reach.connect(&mut stop, attempt).await? else {
        return Ok(());
    };
    let mut server = LiveServer::serve(reach, node, number, token, true, None);
    tokio::select! {
        ended = server.finished() => ended,
        () = stop.requested() => server.close().await,
    }
}

/// Runs a client for `rounds` requests, each for `number` or a number drawn from `seed`'s
/// generator, and returns the answers. A request cut off by a lost tracker is retried once,
/// on a new connection: the tracker that lost it kept no record of it.
///
/// # Errors
/// A refusal; a tracker that could not be reached within `patience`; a request that fails
/// again after its retry. `Ok` with fewer answers than `rounds` if stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    targets: Vec<Target>,
    name: Name,
    rounds: usize,
    number: Option<u8>,
    seed: Option<u64>,
    token: Option<Token>,
    patience: Patience,
    transcript: Transcript,
    mut stop: StopSignal,
) -> Result<Vec<Answer>> {
    let mut rng = match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };
    let attempt = |addr| ClientNode::connect(addr, name.clone(), token.clone(), transcript.clone());
    let mut answers = Vec::with_capacity(rounds);
    let mut reach = Reach::new(targets, name.clone(), transcript.clone(), patience)?;
    let Some(client) = reach.connect(&mut stop, attempt).await? else {
        return Ok(answers);
    };
    let client = LiveClient::new(reach, client, token.clone(), true, false, None);
    for _ in 0..rounds {
        let number = number.unwrap_or_else(|| rng.random_range(NUMBERS));
        let answer = tokio::select! {
            answer = client.find_match(number) => answer?,
            () = stop.requested() => return Ok(answers),
        };
        answers.push(answer);
    }
    Ok(answers)
}
