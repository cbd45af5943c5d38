//! What a run says: one [`Event`] per message sent or received, and its printed line.
//!
//! Nodes never print. They hand events to a [`Transcript`], a channel with a single reader
//! (the Python caller's loop, or a test), which writes whole lines; so lines from concurrent
//! nodes are never glued together and a full stdout pipe never blocks a runtime thread.
//! A sender records its event before the bytes go out and a receiver after they came in, so
//! the order of events in the channel respects cause and effect.
//!
//! A run's transcript keeps every event, for its report. A role that runs for weeks uses a
//! bounded one instead: when its reader falls behind, events are counted and dropped, never
//! buffered without limit, and recording one never waits.
//!
//! All wording lives here. The lines that the assignment shows are reproduced exactly.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use crate::protocol::CENTRAL;
use crate::protocol::{ErrorCode, Name};

/// Where events go; `off` drops them without formatting anything (a quiet run of thousands
/// of nodes must not pay for millions of lines nobody reads).
#[derive(Clone, Debug, Default)]
pub struct Transcript(Option<Sink>);

#[derive(Clone, Debug)]
enum Sink {
    Every(mpsc::UnboundedSender<Stamped>),
    /// Full: the event is counted in `dropped` instead.
    Bounded {
        tx: mpsc::Sender<Stamped>,
        dropped: Arc<AtomicU64>,
    },
}

/// The reading end of a transcript.
#[derive(Debug)]
pub struct Events {
    rx: Source,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug)]
enum Source {
    Every(mpsc::UnboundedReceiver<Stamped>),
    Bounded(mpsc::Receiver<Stamped>),
}

impl Events {
    /// The next event; `None` once every transcript that feeds it is gone.
    pub async fn recv(&mut self) -> Option<Stamped> {
        match &mut self.rx {
            Source::Every(rx) => rx.recv().await,
            Source::Bounded(rx) => rx.recv().await,
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Stamped> {
        match &mut self.rx {
            Source::Every(rx) => rx.try_recv().ok(),
            Source::Bounded(rx) => rx.try_recv().ok(),
        }
    }

    /// How many events were dropped since the last call, because the reader fell behind.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    pub at: Instant,
    pub event: Event,
}

impl Transcript {
    /// A transcript that records nothing.
    pub fn off() -> Transcript {
        Transcript(None)
    }

    /// A transcript and the receiver its events arrive on, in order.
    pub fn channel() -> (Transcript, mpsc::UnboundedReceiver<Stamped>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Transcript(Some(Sink::Every(tx))), rx)
    }

    /// A transcript that keeps every event, and its reading end.
    pub fn every() -> (Transcript, Events) {
        let (transcript, rx) = Transcript::channel();
        (transcript, Events { rx: Source::Every(rx), dropped: Arc::default() })
    }

    /// A transcript that holds at most `capacity` events for its reader, counting and
    /// dropping the rest, and its reading end.
    pub fn bounded(capacity: usize) -> (Transcript, Events) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Transcript(Some(Sink::Bounded { tx, dropped: dropped.clone() })),
            Events { rx: Source::Bounded(rx), dropped },
        )
    }

    /// Whether events are recorded; callers skip building costly events when not.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records `event`. A reader that went away is not an error: the run goes on unheard.
    pub fn record(&self, event: Event) {
        let stamped = Stamped { at: Instant::now(), event };
        match &self.0 {
            None => {}
            Some(Sink::Every(tx)) => {
                let _ = tx.send(stamped);
            }
            Some(Sink::Bounded { tx, dropped }) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(stamped) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Records the event `make` builds, building it only if the transcript is on.
    pub fn record_with(&self, make: impl FnOnce() -> Event) {
        if self.is_on() {
            self.record(make());
        }
    }
}

/// The kind of node a line speaks of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "Server",
            Role::Client => "Client",
        })
    }
}

/// One thing that happened in a run; its `Display` is the printed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A server sends `HELLO`.
    HelloSent { server: Name },
    /// A server tells the number it holds: drawn at random, or given to it.
    NumberSelected { server: Name, number: u8, drawn: bool },
    /// A client sends `HI`.
    HiSent { client: Name },
    /// The tracker receives `HELLO` or `HI`.
    GreetingReceived { role: Role, node: Name },
    /// The tracker sends `WELCOME`.
    WelcomeSent { role: Role, node: Name },
    /// A node receives `WELCOME`.
    WelcomeReceived { node: Name },
    /// A client sends `FIND`.
    FindSent { client: Name, number: u8 },
    /// The tracker receives `FIND`.
    FindReceived { client: Name },
    /// The tracker sends `QUERY` to one server.
    QuerySent { server: Name, client: Name, number: u8 },
    /// A server receives `QUERY`.
    QueryReceived { server: Name, client: Name, number: u8 },
    /// A server sends `MATCH` (`matched`) or `MISS`.
    ReplySent { server: Name, client: Name, matched: bool },
    /// The tracker receives `MATCH` or `MISS` for a request still open.
    ReplyReceived { server: Name, client: Name, matched: bool },
    /// The tracker receives a reply for a request already answered; it is dropped.
    LateReply { server: Name, id: u64 },
    /// A request's deadline passed before every queried server replied.
    DeadlineReached { client: Name },
    /// The tracker sends `ANSWER`.
    AnswerSent { client: Name, servers: Vec<Name> },
    /// A client receives `ANSWER`.
    AnswerReceived { client: Name, servers: Vec<Name> },
    /// The tracker sends `ERROR` to a peer (named, or its address before it has a name).
    ErrorSent { peer: String, code: ErrorCode },
    /// The tracker drops a node, saying why.
    Dropped { role: Role, node: Name, reason: String },
    /// A connection's TLS handshake failed or took too long, and the tracker closed it.
    TlsFailed { peer: String, reason: String },
    /// Other trackers of the cluster did not report on a client's request in time: its
    /// answer may lack their servers.
    TrackersSilent { client: Name, trackers: usize },
    /// This tracker lost its lease in the cluster (it could not renew it in time) and drops
    /// its nodes, or holds it again.
    Standing { standing: bool },
    /// Another tracker of the cluster was heard from for the first time: requests wait for it.
    TrackerJoined { tracker: String },
    /// Another tracker of the cluster has not been heard from for a while: requests no
    /// longer wait for it.
    TrackerLeft { tracker: String },
    /// A tracker started on its own is listening, over TLS or plain TCP.
    Listening { address: String, tls: bool },
    /// A tracker's monitoring port is listening.
    Monitoring { address: String },
    /// A tracker read its certificate and key (`tls`) and its token file (`token`) again.
    Reloaded { tls: bool, token: bool },
    /// A reload could not read or use its files; the old certificate and token stay.
    ReloadFailed { reason: String },
    /// The tracker is stopping: it takes no new requests and answers the open ones first.
    Draining { open: usize },
    /// A node could not reach or register with the tracker and will try again.
    Retrying { node: Name, reason: String, pause: std::time::Duration },
    /// A node lost its tracker (it left, or the connection broke).
    TrackerLost { node: Name, reason: String },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::HelloSent { server } => write!(f, "{server}: sending “Hello” to {CENTRAL}."),
            Event::NumberSelected { server, number, drawn: true } => {
                write!(f, "{server}: selected random number is {number}.")
            }
            Event::NumberSelected { server, number, drawn: false } => {
                write!(f, "{server}: holds the number it was given, {number}.")
            }
            Event::HiSent { client } => write!(f, "{client}: sending “Hi” to {CENTRAL}."),
            Event::GreetingReceived { role, node } => {
                let word = if *role == Role::Server { "Hello" } else { "Hi" };
                write!(f, "{CENTRAL}: received “{word}” from {role} {node}.")
            }
            Event::WelcomeSent { role, node } => {
                write!(f, "{CENTRAL}: sending “Welcome” to {role} {node}.")
            }
            Event::WelcomeReceived { node } => {
                write!(f, "{node}: received “Welcome” from {CENTRAL}.")
            }
            Event::FindSent { client, number } => write!(f, "{client}: find match of {number}"),
            Event::FindReceived { client } => {
                write!(f, "{CENTRAL}: process match request from {client}")
            }
            Event::QuerySent { server, client, number } => {
                write!(f, "{CENTRAL}: forward match request of {number} from {client} to {server}")
            }
            Event::QueryReceived { server, client, number } => {
                write!(f, "{server}: received match request of {number} from {client}")
            }
            Event::ReplySent { server, client, matched } => {
                let kind = if *matched { "match" } else { "no-match" };
                write!(f, "{server}: sending {kind} reply for {client} to {CENTRAL}")
            }
            Event::ReplyReceived { server, client, matched } => {
                let kind = if *matched { "match" } else { "no-match" };
                write!(f, "{CENTRAL}: received {kind} reply from {server} for {client}")
            }
            Event::LateReply { server, id } => {
                write!(f, "{CENTRAL}: late reply from {server} to request {id} dropped (already answered)")
            }
            Event::DeadlineReached { client } => {
                write!(f, "{CENTRAL}: deadline reached for match request from {client}")
            }
            Event::AnswerSent { client, .. } => write!(f, "{CENTRAL}: send match reply to {client}"),
            Event::AnswerReceived { client, servers } => {
                write!(f, "{client}: ")?;
                write_answer(f, servers)
            }
            Event::ErrorSent { peer, code } => {
                write!(f, "{CENTRAL}: sending “Error {code}” to {peer}.")
            }
            Event::Dropped { role, node, reason } => {
                write!(f, "{CENTRAL}: dropping {role} {node}: {reason}.")
            }
            Event::TlsFailed { peer, reason } => {
                write!(f, "{CENTRAL}: closing {peer}: its TLS handshake failed: {reason}.")
            }
            Event::Standing { standing: true } => write!(f, "{CENTRAL}: holding its place in the cluster again."),
            Event::Standing { standing: false } => write!(
                f,
                "{CENTRAL}: cannot renew its place in the cluster; dropping its nodes so that none keeps a name another tracker may give out."
            ),
            Event::TrackerJoined { tracker } => write!(f, "{CENTRAL}: tracker {tracker} of the cluster is heard from."),
            Event::TrackerLeft { tracker } => write!(f, "{CENTRAL}: tracker {tracker} of the cluster is no longer heard from."),
            Event::TrackersSilent { client, trackers } => write!(
                f,
                "{CENTRAL}: {trackers} other tracker(s) did not report on the request from {client} in time; \
                 its answer may be incomplete."
            ),
            Event::Listening { address, tls: false } => write!(f, "{CENTRAL}: listening on {address}."),
            Event::Listening { address, tls: true } => write!(f, "{CENTRAL}: listening on {address}, over TLS."),
            Event::Reloaded { tls, token } => {
                let what = match (tls, token) {
                    (true, true) => "the TLS certificate and key, and the token",
                    (true, false) => "the TLS certificate and key",
                    (false, true) => "the token",
                    (false, false) => "nothing (no certificate or token file to read)",
                };
                write!(f, "{CENTRAL}: reloaded {what}; live nodes stay connected.")
            }
            Event::ReloadFailed { reason } => {
                write!(f, "{CENTRAL}: reload failed, keeping the old certificate and token: {reason}")
            }
            Event::Monitoring { address } => {
                write!(f, "{CENTRAL}: monitoring on http://{address} (/metrics, /healthz, /readyz, /stats, /connections).")
            }
            Event::Draining { open: 0 } => write!(f, "{CENTRAL}: stopping."),
            Event::Draining { open } => {
                let requests = if *open == 1 { "request" } else { "requests" };
                write!(f, "{CENTRAL}: stopping; answering {open} open {requests} first.")
            }
            Event::Retrying { node, reason, pause } => write!(
                f,
                "{node}: cannot reach {CENTRAL} ({reason}); trying again in {:.1} s.",
                pause.as_secs_f64()
            ),
            Event::TrackerLost { node, reason } => write!(f, "{node}: lost {CENTRAL} ({reason})."),
        }
    }
}

/// A field of an event, for machine-readable output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(u64),
    Bool(bool),
    Text(&'a str),
    Names(&'a [Name]),
}

impl Event {
    /// What the event is, in one place for every variant: its kind, who it comes from, who
    /// it goes to, and its fields. [`kind`](Self::kind), [`from`](Self::from),
    /// [`to`](Self::to) and [`fields`](Self::fields) read from it.
    #[allow(clippy::too_many_lines)] // one short arm per variant
    pub fn describe(&self) -> Described<'_> {
        use Value::{Bool, Int, Names, Text};
        let central = Some(CENTRAL);
        let (kind, from, to, fields): (&'static str, &str, Option<&str>, Vec<(&'static str, Value<'_>)>) =
            match self {
                Event::HelloSent { server } => ("hello.sent", server.as_str(), central, vec![]),
                Event::NumberSelected { server, number, drawn } => (
                    "number.selected",
                    server.as_str(),
                    None,
                    vec![("number", Int(u64::from(*number))), ("drawn", Bool(*drawn))],
                ),
                Event::HiSent { client } => ("hi.sent", client.as_str(), central, vec![]),
                Event::GreetingReceived { role, node } => {
                    let kind = if *role == Role::Server { "hello.received" } else { "hi.received" };
                    (kind, node.as_str(), central, vec![])
                }
                Event::WelcomeSent { node, .. } => ("welcome.sent", CENTRAL, Some(node.as_str()), vec![]),
                Event::WelcomeReceived { node } => ("welcome.received", CENTRAL, Some(node.as_str()), vec![]),
                Event::FindSent { client, number } => {
                    ("find.sent", client.as_str(), central, vec![("number", Int(u64::from(*number)))])
                }
                Event::FindReceived { client } => ("find.received", client.as_str(), central, vec![]),
                Event::QuerySent { server, client, number } => (
                    "query.sent",
                    CENTRAL,
                    Some(server.as_str()),
                    vec![("client", Text(client.as_str())), ("number", Int(u64::from(*number)))],
                ),
                Event::QueryReceived { server, client, number } => (
                    "query.received",
                    CENTRAL,
                    Some(server.as_str()),
                    vec![("client", Text(client.as_str())), ("number", Int(u64::from(*number)))],
                ),
                Event::ReplySent { server, client, matched } => (
                    "reply.sent",
                    server.as_str(),
                    central,
                    vec![("client", Text(client.as_str())), ("matched", Bool(*matched))],
                ),
                Event::ReplyReceived { server, client, matched } => (
                    "reply.received",
                    server.as_str(),
                    central,
                    vec![("client", Text(client.as_str())), ("matched", Bool(*matched))],
                ),
                Event::LateReply { server, id } => {
                    ("reply.late", server.as_str(), central, vec![("id", Int(*id))])
                }
                Event::DeadlineReached { client } => {
                    ("deadline.reached", CENTRAL, None, vec![("client", Text(client.as_str()))])
                }
                Event::AnswerSent { client, servers } => {
                    ("answer.sent", CENTRAL, Some(client.as_str()), vec![("servers", Names(servers))])
                }
                Event::AnswerReceived { client, servers } => {
                    ("answer.received", CENTRAL, Some(client.as_str()), vec![("servers", Names(servers))])
                }
                Event::ErrorSent { peer, code } => {
                    ("error.sent", CENTRAL, Some(peer), vec![("code", Text(code.as_str()))])
                }
                Event::Dropped { role, node, reason } => (
                    "node.dropped",
                    CENTRAL,
                    None,
                    vec![
                        ("node", Text(node.as_str())),
                        ("role", Text(if *role == Role::Server { "server" } else { "client" })),
                        ("reason", Text(reason)),
                    ],
                ),
                Event::TlsFailed { peer, reason } => {
                    ("tls.failed", CENTRAL, None, vec![("peer", Text(peer)), ("reason", Text(reason))])
                }
                Event::TrackersSilent { client, trackers } => (
                    "cluster.silent",
                    CENTRAL,
                    None,
                    vec![("client", Text(client.as_str())), ("trackers", Int(*trackers as u64))],
                ),
                Event::Standing { standing } => {
                    ("cluster.standing", CENTRAL, None, vec![("standing", Bool(*standing))])
                }
                Event::TrackerJoined { tracker } => {
                    ("cluster.joined", CENTRAL, None, vec![("tracker", Text(tracker))])
                }
                Event::TrackerLeft { tracker } => {
                    ("cluster.left", CENTRAL, None, vec![("tracker", Text(tracker))])
                }
                Event::Listening { address, tls } => (
                    "tracker.listening",
                    CENTRAL,
                    None,
                    vec![("address", Text(address)), ("tls", Bool(*tls))],
                ),
                Event::Monitoring { address } => {
                    ("tracker.monitoring", CENTRAL, None, vec![("address", Text(address))])
                }
                Event::Reloaded { tls, token } => {
                    ("tracker.reloaded", CENTRAL, None, vec![("tls", Bool(*tls)), ("token", Bool(*token))])
                }
                Event::ReloadFailed { reason } => {
                    ("tracker.reload_failed", CENTRAL, None, vec![("reason", Text(reason))])
                }
                Event::Draining { open } => (
                    "tracker.draining",
                    CENTRAL,
                    None,
                    vec![("open", Int(u64::try_from(*open).unwrap_or(u64::MAX)))],
                ),
                Event::Retrying { node, reason, pause } => (
                    "node.retrying",
                    node.as_str(),
                    None,
                    vec![
                        ("reason", Text(reason)),
                        ("pause_ms", Int(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX))),
                    ],
                ),
                Event::TrackerLost { node, reason } => {
                    ("node.lost-tracker", node.as_str(), None, vec![("reason", Text(reason))])
                }
            };
        Described { kind, from, to, fields }
    }

    /// A stable name for the kind of event: `<message>.sent`, `<message>.received`, or a note
    /// such as `number.selected`. A `.sent` and its `.received` (or `reply.late`) share the
    /// same `from` and `to`; TCP keeps them in order, so the k-th of each pair up.
    pub fn kind(&self) -> &'static str {
        self.describe().kind
    }

    /// The node the message comes from, or the node a note is about.
    pub fn from(&self) -> &str {
        self.describe().from
    }

    /// The node the message goes to; `None` for a note.
    pub fn to(&self) -> Option<&str> {
        self.describe().to
    }

    /// The event as one line of JSON: time (seconds from the start of the run), from, to,
    /// kind and fields, as `--json` prints them. The Python package builds its dicts from
    /// the same `kind`, `from`, `to` and `fields`.
    pub fn to_json(&self, time: f64) -> String {
        let Described { kind, from, to, fields } = self.describe();
        let mut out = format!("{{\"time\": {time:.6}, \"from\": ");
        json_text(&mut out, from);
        out.push_str(", \"to\": ");
        match to {
            Some(to) => json_text(&mut out, to),
            None => out.push_str("null"),
        }
        out.push_str(", \"kind\": ");
        json_text(&mut out, kind);
        out.push_str(", \"fields\": {");
        for (i, (key, value)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            json_text(&mut out, key);
            out.push_str(": ");
            match value {
                Value::Int(v) => out.push_str(&v.to_string()),
                Value::Bool(v) => out.push_str(if v { "true" } else { "false" }),
                Value::Text(v) => json_text(&mut out, v),
                Value::Names(names) => {
                    out.push('[');
                    for (j, name) in names.iter().enumerate() {
                        if j > 0 {
                            out.push_str(", ");
                        }
                        json_text(&mut out, name.as_str());
                    }
                    out.push(']');
                }
            }
        }
        out.push_str("}}");
        out
    }

    /// The event's data beyond its kind, sender and receiver.
    pub fn fields(&self) -> Vec<(&'static str, Value<'_>)> {
        self.describe().fields
    }
}

/// An event's kind, ends and fields, as [`Event::describe`] gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described<'a> {
    pub kind: &'static str,
    pub from: &'a str,
    pub to: Option<&'a str>,
    pub fields: Vec<(&'static str, Value<'a>)>,
}

/// `text` as a JSON string.
fn json_text(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Writing to a String cannot fail.
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// "No match has been found", "Match found on server S2", "Match found on servers S1 and
/// S3", "Match found on servers S1, S2 and S4".
fn write_answer(f: &mut fmt::Formatter<'_>, servers: &[Name]) -> fmt::Result {
    match servers {
        [] => f.write_str("No match has been found"),
        [one] => write!(f, "Match found on server {one}"),
        [init @ .., last] => {
            f.write_str("Match found on servers ")?;
            for (i, server) in init.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{server}")?;
            }
            write!(f, " and {last}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Name> {
        list.iter().map(|s| Name::new(s).unwrap()).collect()
    }

    fn answer(list: &[&str]) -> String {
        Event::AnswerReceived { client: Name::new("C2").unwrap(), servers: names(list) }.to_string()
    }

    #[test]
    fn answers_read_as_english() {
        assert_eq!(answer(&[]), "C2: No match has been found");
        assert_eq!(answer(&["S2"]), "C2: Match found on server S2");
        assert_eq!(answer(&["S1", "S3"]), "C2: Match found on servers S1 and S3");
        assert_eq!(answer(&["S1", "S2", "S4"]), "C2: Match found on servers S1, S2 and S4");
    }

    #[test]
    fn a_send_and_its_receive_name_the_same_ends() {
        let (s1, c1) = (Name::new("S1").unwrap(), Name::new("C1").unwrap());
        let pairs = [
            (
                Event::HelloSent { server: s1.clone() },
                Event::GreetingReceived { role: Role::Server, node: s1.clone() },
            ),
            (
                Event::HiSent { client: c1.clone() },
                Event::GreetingReceived { role: Role::Client, node: c1.clone() },
            ),
            (
                Event::WelcomeSent { role: Role::Server, node: s1.clone() },
                Event::WelcomeReceived { node: s1.clone() },
            ),
            (Event::FindSent { client: c1.clone(), number: 2 }, Event::FindReceived { client: c1.clone() }),
            (
                Event::QuerySent { server: s1.clone(), client: c1.clone(), number: 2 },
                Event::QueryReceived { server: s1.clone(), client: c1.clone(), number: 2 },
            ),
            (
                Event::ReplySent { server: s1.clone(), client: c1.clone(), matched: true },
                Event::ReplyReceived { server: s1.clone(), client: c1.clone(), matched: true },
            ),
            (
                Event::ReplySent { server: s1.clone(), client: c1.clone(), matched: true },
                Event::LateReply { server: s1.clone(), id: 4 },
            ),
            (
                Event::AnswerSent { client: c1.clone(), servers: vec![s1.clone()] },
                Event::AnswerReceived { client: c1.clone(), servers: vec![s1.clone()] },
            ),
        ];
        for (sent, received) in pairs {
            let (kind, phase) = sent.kind().split_once('.').unwrap();
            assert_eq!(phase, "sent");
            assert!(received.kind() == format!("{kind}.received") || received.kind() == "reply.late");
            assert_eq!((sent.from(), sent.to()), (received.from(), received.to()), "{sent:?}");
            assert_ne!(sent.from(), sent.to().unwrap());
        }
    }

    #[test]
    fn the_sample_lines_are_exact() {
        let s1 = Name::new("S1").unwrap();
        let c1 = Name::new("C1").unwrap();
        let lines = [
            Event::HelloSent { server: s1.clone() },
            Event::NumberSelected { server: s1.clone(), number: 3, drawn: true },
            Event::GreetingReceived { role: Role::Server, node: s1.clone() },
            Event::HiSent { client: c1.clone() },
            Event::GreetingReceived { role: Role::Client, node: c1.clone() },
            Event::FindSent { client: c1.clone(), number: 5 },
            Event::FindReceived { client: c1.clone() },
            Event::AnswerSent { client: c1.clone(), servers: Vec::new() },
            Event::NumberSelected { server: s1.clone(), number: 4, drawn: false },
            Event::Draining { open: 0 },
            Event::Draining { open: 1 },
        ]
        .map(|e| e.to_string());
        assert_eq!(
            lines,
            [
                "S1: sending “Hello” to Central.",
                "S1: selected random number is 3.",
                "Central: received “Hello” from Server S1.",
                "C1: sending “Hi” to Central.",
                "Central: received “Hi” from Client C1.",
                "C1: find match of 5",
                "Central: process match request from C1",
                "Central: send match reply to C1",
                "S1: holds the number it was given, 4.",
                "Central: stopping.",
                "Central: stopping; answering 1 open request first.",
            ]
        );
    }
}
