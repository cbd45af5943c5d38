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
use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, Name, Token, NUMBERS};
use crate::server::{Number, ServerNode};
use crate::shutdown::StopSignal;
use crate::tls::Dial;
use crate::tracker::{Tracker, TrackerConfig};
use crate::transcript::{Event, Transcript};

/// First pause before reconnecting; it doubles after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between attempts: a restarted tracker has its nodes back within about this
/// long (plus the attempt itself).
const MAX_RETRY: Duration = Duration::from_secs(2);
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
    let mut reach = Reach::new(&targets, &name, &transcript, patience);
    loop {
        let attempt = |addr| ServerNode::start(addr, name.clone(), number, token.clone(), transcript.clone());
        let Some(mut node) = reach.connect(&mut stop, attempt).await? else {
            return Ok(());
        };
        reach.registered();
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
    let mut reach = Reach::new(&targets, &name, &transcript, patience);
    let Some(mut client) = reach.connect(&mut stop, attempt).await? else {
        return Ok(answers);
    };
    reach.registered();
    for _ in 0..rounds {
        let number = number.unwrap_or_else(|| rng.random_range(NUMBERS));
        let first = tokio::select! {
            answer = client.find_match(number) => answer,
            () = stop.requested() => return Ok(answers),
        };
        let answer = match first {
            Err(e) if lost_tracker(&e) => {
                transcript.record(Event::TrackerLost { node: name.clone(), reason: e.to_string() });
                let Some(again) = reach.connect(&mut stop, attempt).await? else {
                    return Ok(answers);
                };
                client = again;
                reach.registered();
                client.find_match(number).await?
            }
            other => other?,
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// One node's way to its tracker, or to one of several trackers of a cluster.
struct Reach<'a> {
    targets: &'a [Target],
    /// The target to try next.
    next: usize,
    name: &'a Name,
    transcript: &'a Transcript,
    patience: Patience,
    /// Whether the node was registered before: then the tracker may still hold its name from
    /// the connection it has not yet seen close, and a taken name is worth another try.
    registered: bool,
}

impl<'a> Reach<'a> {
    fn new(
        targets: &'a [Target],
        name: &'a Name,
        transcript: &'a Transcript,
        patience: Patience,
    ) -> Reach<'a> {
        assert!(!targets.is_empty(), "a node needs a tracker to reach");
        Reach { targets, next: 0, name, transcript, patience, registered: false }
    }

    /// The node is registered with the target it reached last. When it loses that tracker,
    /// it tries the next one first.
    fn registered(&mut self) {
        self.registered = true;
        self.next += 1;
    }

    /// `host:port` of every target.
    fn places(&self) -> String {
        self.targets.iter().map(|t| format!("{}:{}", t.host, t.port)).collect::<Vec<_>>().join(", ")
    }
    /// Connects with `attempt` until it succeeds, trying each target in turn and pausing with
    /// capped exponential backoff after each round of them; `None` if stopped first.
    ///
    /// # Errors
    /// A refusal that trying again cannot mend; [`Error::GaveUp`] once patience runs out.
    async fn connect<T, F, Fut>(&mut self, stop: &mut StopSignal, attempt: F) -> Result<Option<T>>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let limit = if self.registered { self.patience.again } else { Some(self.patience.first) };
        let give_up = limit.map(|limit| tokio::time::Instant::now() + limit);
        let mut pause = FIRST_RETRY;
        let mut this_round = 0;
        loop {
            let target = &self.targets[self.next % self.targets.len()];
            let tried = async { attempt(target.resolve().await?).await };
            let result = tokio::select! {
                result = tried => result,
                () = stop.requested() => return Ok(None),
            };
            let e = match result {
                Ok(node) => {
                    self.next %= self.targets.len();
                    return Ok(Some(node));
                }
                Err(e) if self.worth_retrying(&e) => e,
                Err(e) => return Err(e),
            };
            self.next += 1;
            this_round += 1;
            if this_round < self.targets.len() {
                continue; // the next tracker at once
            }
            this_round = 0;
            let Some(pause_now) = next_pause(tokio::time::Instant::now(), give_up, pause) else {
                let waited = limit.unwrap_or_default().as_secs_f64();
                let places = self.places();
                let which = if self.targets.len() == 1 { "the tracker" } else { "any of the trackers" };
                return Err(Error::GaveUp(format!(
                    "cannot reach {which} at {places} after trying for {waited} s ({e})"
                )));
            };
            self.transcript.record(Event::Retrying {
                node: self.name.clone(),
                reason: e.to_string(),
                pause: pause_now,
            });
            tokio::select! {
                () = tokio::time::sleep(pause_now) => {}
                () = stop.requested() => return Ok(None),
            }
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    /// Whether trying again may succeed: the tracker is down, restarting or unreachable for
    /// now, or (for a node registered before) it still holds the name from the connection
    /// it has not yet seen close. Any other refusal fails the same way every time.
    fn worth_retrying(&self, e: &Error) -> bool {
        match e {
            // `internal`: the tracker failed for now (say, its cluster's names were out of
            // reach), not because of anything this node said.
            Error::Refused { code, .. } => {
                (self.registered && *code == ErrorCode::NameTaken) || *code == ErrorCode::Internal
            }
            other => lost_tracker(other),
        }
    }
}

/// How long to pause before the next round of attempts: `pause`, cut short so that the last
/// attempt comes at `give_up` itself; `None` once `give_up` has come.
fn next_pause(
    now: tokio::time::Instant,
    give_up: Option<tokio::time::Instant>,
    pause: Duration,
) -> Option<Duration> {
    match give_up {
        None => Some(pause),
        Some(at) if now >= at => None,
        Some(at) => Some(pause.min(at - now)),
    }
}

/// What `attempt` makes with the first of `targets` that answers, trying each once, in
/// order.
///
/// # Errors
/// A refusal at once; the last target's error if none could be reached.
pub async fn first_of<T, F, Fut>(targets: &[Target], attempt: F) -> Result<T>
where
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = Error::InvalidArgument("no tracker address given".into());
    for target in targets {
        match async { attempt(target.resolve().await?).await }.await {
            Ok(made) => return Ok(made),
            Err(e) if lost_tracker(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Whether `e` means the tracker is gone or cannot be reached (rather than refusing us).
fn lost_tracker(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::Closed | Error::Timeout(_))
}

fn lost(ended: Result<()>) -> String {
    match ended {
        Ok(()) => "it said goodbye".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn the_last_attempt_comes_at_the_end_of_the_wait() {
        // Attempts themselves take no time here: the pauses alone add up to the wait.
        for wait_ms in [1000, 2000, 5000, 150] {
            let start = Instant::now();
            let give_up = start + Duration::from_millis(wait_ms);
            let (mut now, mut pause) = (start, FIRST_RETRY);
            while let Some(next) = next_pause(now, Some(give_up), pause) {
                assert!(next <= pause);
                now += next;
                pause = (pause * 2).min(MAX_RETRY);
            }
            assert_eq!(now, give_up, "a wait of {wait_ms} ms tried until its very end");
        }
        assert_eq!(next_pause(Instant::now(), None, MAX_RETRY), Some(MAX_RETRY), "no limit: the full pause");
    }
}
