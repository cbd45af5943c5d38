//! Nodes that outlive their tracker: a server that registers again when its tracker goes
//! away (a `BYE`, a reset, keepalive finding it gone), and a client whose calls wait for the
//! connection to come back and send a request cut off by the loss again, once. One
//! implementation of the rules for the command line's roles and the library's classes:
//! capped exponential backoff across every tracker given (a list moves to the next at once),
//! registering under the same name (a server with the same number), a refusal that trying
//! again cannot mend (a wrong token, a name another live node holds) ending the node.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Answer, ClientNode};
use crate::connection::Endpoint;
use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, Name, Token};
use crate::roles::{Patience, Target};
use crate::server::{Number, ServerNode};
use crate::shutdown::{Shutdown, StopSignal};
use crate::transcript::{Event, Transcript};

/// First pause before reconnecting; it doubles after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between attempts: a restarted tracker has its nodes back within about this
/// long (plus the attempt itself).
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// How long a caller's last attempt at reaching the tracker again may take past the caller's
/// own time: a refused connection answers in a moment, so this is for a host that is silent.
const LAST_ATTEMPT: Duration = Duration::from_millis(250);

/// What a node that outlives its tracker tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// It lost its tracker, and why.
    Lost(String),
    /// It is registered again, with the tracker at this address.
    Back(String),
    /// It has ended on its own (a refusal after reconnecting, or its patience ran out), and
    /// why.
    Ended(String),
}

/// Where a node tells what happened to it. Called on a runtime thread: it must not block
/// (the library's queues it for Python, which is woken without the runtime taking the GIL).
pub type Tell = Arc<dyn Fn(Happened) + Send + Sync>;

/// One node's way to its tracker, or to one of several trackers of a cluster.
pub struct Reach {
    targets: Arc<[Target]>,
    /// The target to try next.
    next: usize,
    /// The target reached last.
    at: usize,
    name: Name,
    transcript: Transcript,
    patience: Patience,
    /// Whether the node was registered before: then the tracker may still hold its name from
    /// the connection it has not yet seen close, and a taken name is worth another try.
    registered: bool,
}

impl Reach {
    /// The way to the first of `targets` for the node `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if no target is given.
    pub fn new(
        targets: Vec<Target>,
        name: Name,
        transcript: Transcript,
        patience: Patience,
    ) -> Result<Reach> {
        if targets.is_empty() {
            return Err(Error::InvalidArgument("no tracker address given".into()));
        }
        Ok(Reach { targets: targets.into(), next: 0, at: 0, name, transcript, patience, registered: false })
    }

    /// The node is registered with the target it reached last. When it loses that tracker,
    /// it tries the next one first.
    pub fn registered(&mut self) {
        self.registered = true;
        self.next += 1;
    }

    /// `host:port` of the target reached last.
    pub fn reached(&self) -> String {
        let target = &self.targets[self.at % self.targets.len()];
        format!("{}:{}", target.host, target.port)
    }

    /// `host:port` of every target.
    fn places(&self) -> String {
        self.targets.iter().map(|t| format!("{}:{}", t.host, t.port)).collect::<Vec<_>>().join(", ")
    }

    /// Tries each target once, in order, and takes the first that answers.
    ///
    /// # Errors
    /// A refusal at once; the last target's error if none could be reached.
    pub async fn first<T, F, Fut>(&mut self, attempt: F) -> Result<T>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = Error::Closed;
        for (i, target) in self.targets.iter().enumerate() {
            match async { attempt(target.resolve().await?).await }.await {
                Ok(made) => {
                    (self.next, self.at) = (i, i);
                    return Ok(made);
                }
                Err(e) if lost_tracker(&e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Connects with `attempt` until it succeeds, trying each target in turn and pausing with
    /// capped exponential backoff after each round of them, for as long as the node's
    /// patience lasts; `None` if stopped first.
    ///
    /// # Errors
    /// A refusal that trying again cannot mend; [`Error::GaveUp`] once patience runs out.
    pub async fn connect<T, F, Fut>(&mut self, stop: &mut StopSignal, attempt: F) -> Result<Option<T>>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.connect_until(stop, attempt, None).await
    }

    /// As [`Reach::connect`], giving up at `until` at the latest (a caller's own time).
    ///
    /// # Errors
    /// As [`Reach::connect`].
    pub async fn connect_until<T, F, Fut>(
        &mut self,
        stop: &mut StopSignal,
        attempt: F,
        until: Option<Instant>,
    ) -> Result<Option<T>>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let limit = if self.registered { self.patience.again } else { Some(self.patience.first) };
        let give_up = match (limit.map(|limit| started + limit), until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
                    self.at = self.next;
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
            let Some(pause_now) = next_pause(Instant::now(), give_up, pause) else {
                // To a tenth of a second: 2 s reads "2", the rest of a caller's time "1.3".
                let waited = give_up.map_or(0.0, |at| ((at - started).as_secs_f64() * 10.0).round() / 10.0);
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

/// Whether `e` means the tracker is gone or cannot be reached (rather than refusing us).
pub fn lost_tracker(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::Closed | Error::Timeout(_))
}

/// How a server's serving ended, in words.
fn lost(ended: Result<()>) -> String {
    match ended {
        Ok(()) => "it said goodbye".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// A server that keeps itself registered: serves until stopped, registering again whenever
/// its tracker goes away.
pub struct LiveServer {
    shutdown: Shutdown,
    task: JoinHandle<Result<()>>,
}

impl LiveServer {
    /// Serves with `node`, registered through `reach`; after losing its tracker it registers
    /// again as `reach` allows when `reconnect` is set, and ends otherwise.
    /// `tell` hears when it loses its tracker, is back, or ends on its own.
    pub fn serve(
        mut reach: Reach,
        node: ServerNode,
        number: Number,
        token: Option<Token>,
        reconnect: bool,
        tell: Option<Tell>,
    ) -> LiveServer {
        let tell = move |happened| {
            if let Some(tell) = &tell {
                tell(happened);
            }
        };
        let shutdown = Shutdown::new();
        let mut stop = shutdown.signal();
        reach.registered();
        let task = tokio::spawn(async move {
            let mut node = node;
            loop {
                let ended = tokio::select! {
                    ended = node.finished() => ended,
                    () = stop.requested() => {
                        // Stopped by its owner: how the serving ended before that is no failure.
                        let _ = node.close().await;
                        return Ok(());
                    }
                };
                let (name, transcript) = (reach.name.clone(), reach.transcript.clone());
                let reason = lost(ended);
                transcript.record(Event::TrackerLost { node: name.clone(), reason: reason.clone() });
                tell(Happened::Lost(reason.clone()));
                if !reconnect {
                    let e = Error::GaveUp(format!("lost the tracker ({reason})"));
                    tell(Happened::Ended(e.to_string()));
                    return Err(e);
                }
                let attempt =
                    |to| ServerNode::start(to, name.clone(), number, token.clone(), transcript.clone());
                match reach.connect(&mut stop, attempt).await {
                    Ok(Some(again)) => node = again,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        tell(Happened::Ended(e.to_string()));
                        return Err(e);
                    }
                }
                tell(Happened::Back(reach.reached()));
                reach.registered();
            }
        });
        LiveServer { shutdown, task }
    }

    /// Resolves when the server has ended on its own: a refusal after a reconnection, or
    /// patience run out (or, without reconnecting, the tracker lost).
    ///
    /// # Errors
    /// Why it ended.
    pub async fn finished(&mut self) -> Result<()> {
        (&mut self.task).await.unwrap_or_else(|e| Err(Error::Panic(e.to_string())))
    }

    /// Stops serving, closes the connection, and waits for it.
    ///
    /// # Errors
    /// How the server had ended on its own, if it had.
    pub async fn close(self) -> Result<()> {
        self.shutdown.stop(Duration::from_secs(2)).await;
        self.task.await.unwrap_or_else(|e| Err(Error::Panic(e.to_string())))
    }
}

/// A client whose calls outlive its tracker: a call made while the connection is down waits
/// for it to come back (trying as the client's patience allows); a request cut off by the
/// tracker going away is sent again, once, on the new connection (the tracker that lost it
/// kept no record of it).
pub struct LiveClient {
    token: Option<Token>,
    reconnect: bool,
    /// Whether a call gives up within a request's own patience (the library's calls) or
    /// waits for the tracker as long as the client's patience allows (a role's rounds).
    bounded: bool,
    /// A request's patience on the last connection, which bounds a call while the next is
    /// being made.
    within: RwLock<Duration>,
    /// The connection in use, read without waiting by every call.
    current: RwLock<Option<Arc<ClientNode>>>,
    /// The way back to a tracker: one call at a time reconnects, the others wait for it.
    reach: tokio::sync::Mutex<Reach>,
    /// Stops a reconnection under way when the client is closed.
    closing: Shutdown,
    /// Hears when the client loses its tracker and when it is back.
    tell: Option<Tell>,
}

impl LiveClient {
    /// A client connected with `node`, through `reach`; it reconnects when its tracker goes
    /// away if `reconnect` is set, and fails every later call otherwise.
    /// With `bounded`, a call gives up (`Error::Timeout`) once a request's patience has
    /// passed, reconnecting included.
    /// `tell` hears when it loses its tracker and when it is back.
    pub fn new(
        mut reach: Reach,
        node: ClientNode,
        token: Option<Token>,
        reconnect: bool,
        bounded: bool,
        tell: Option<Tell>,
    ) -> LiveClient {
        reach.registered();
        LiveClient {
            token,
            reconnect,
            bounded,
            within: RwLock::new(node.patience()),
            current: RwLock::new(Some(Arc::new(node))),
            reach: tokio::sync::Mutex::new(reach),
            closing: Shutdown::new(),
            tell,
        }
    }

    fn tell(&self, happened: Happened) {
        if let Some(tell) = &self.tell {
            tell(happened);
        }
    }

    /// Asks which servers hold `number`. A request cut off by a lost tracker is sent again
    /// once, after reconnecting; a call made while reconnecting waits for it.
    ///
    /// # Errors
    /// As [`ClientNode::find_match`]; [`Error::GaveUp`] if the tracker could not be reached
    /// again within the client's patience; a refusal of the name after reconnecting.
    pub async fn find_match(&self, number: u8) -> Result<Answer> {
        // A library call keeps within a request's own time, reconnecting included.
        let until = self.bounded.then(|| Instant::now() + *self.within.read());
        let node = self.connected(until).await?;
        match node.find_match(number).await {
            Err(e) if self.reconnect && lost_tracker(&e) => {
                self.forget(&node, &e);
                let again = self.connected(until).await?;
                match until {
                    Some(until) => {
                        tokio::time::timeout_at(until, again.find_match(number)).await.unwrap_or_else(|_| {
                            Err(Error::Timeout("waiting for the answer after reconnecting".into()))
                        })
                    }
                    None => again.find_match(number).await,
                }
            }
            other => other,
        }
    }

    /// Fails every call in flight at once, and every later one.
    pub fn close(&self) {
        if let Some(node) = self.current.write().take() {
            node.close();
        }
        // Wakes a reconnection under way.
        self.closing.request();
    }

    /// The connection in use, or a new one once the tracker is back.
    async fn connected(&self, until: Option<Instant>) -> Result<Arc<ClientNode>> {
        if let Some(node) = self.current.read().clone() {
            return Ok(node);
        }
        let mut stop = self.closing.signal();
        if stop.is_requested() {
            return Err(Error::NodeClosed);
        }
        let mut reach = self.reach.lock().await;
        // Another call may have reconnected while this one waited for its turn.
        if let Some(node) = self.current.read().clone() {
            return Ok(node);
        }
        if !self.reconnect {
            return Err(Error::Closed);
        }
        let (name, transcript, token) = (reach.name.clone(), reach.transcript.clone(), self.token.clone());
        let attempt = |to| ClientNode::connect(to, name.clone(), token.clone(), transcript.clone());
        let connecting = reach.connect_until(&mut stop, attempt, until);
        // The last attempt comes at the caller's time; one that hangs (a host that does not
        // answer) is given a moment, then not waited for.
        let connected = match until {
            Some(until) => tokio::time::timeout_at(until + LAST_ATTEMPT, connecting)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout("reaching the tracker again".into()))),
            None => connecting.await,
        };
        let Some(node) = connected? else { return Err(Error::NodeClosed) };
        self.tell(Happened::Back(reach.reached()));
        reach.registered();
        *self.within.write() = node.patience();
        let node = Arc::new(node);
        *self.current.write() = Some(node.clone());
        Ok(node)
    }

    /// `node` has lost its tracker: the next call reconnects.
    fn forget(&self, node: &Arc<ClientNode>, e: &Error) {
        let mut current = self.current.write();
        if current.as_ref().is_some_and(|now| Arc::ptr_eq(now, node)) {
            *current = None;
            drop(current);
            self.tell(Happened::Lost(e.to_string()));
            if let Ok(reach) = self.reach.try_lock() {
                reach
                    .transcript
                    .record(Event::TrackerLost { node: reach.name.clone(), reason: e.to_string() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
