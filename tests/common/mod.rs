//! Helpers shared by the integration tests: a raw line-speaking peer, a tracker on port 0
//! with its transcript, and waiting on events with an upper bound.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use matchtracker::protocol::ReplyMode;
use matchtracker::tracker::{Tracker, TrackerConfig};
use matchtracker::transcript::{Event, Stamped, Transcript};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

/// Upper bound on any single wait, so a broken tracker fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A short deadline keeps the suite fast.
pub const SHORT: Duration = Duration::from_millis(200);

pub struct Peer {
    pub lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    pub write: OwnedWriteHalf,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        Peer { lines: BufReader::new(read).lines(), write }
    }

    /// Connects and greets with `greeting` (e.g. "HELLO S1"), checking the WELCOME.
    pub async fn join(addr: SocketAddr, greeting: &str) -> Peer {
        let mut peer = Peer::connect(addr).await;
        peer.send(greeting).await;
        let welcome = peer.recv().await;
        let name = greeting.split(' ').nth(1).unwrap();
        assert!(welcome.starts_with(&format!("WELCOME {name} ")), "got {welcome:?}");
        peer
    }

    pub async fn send(&mut self, line: &str) {
        self.write.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    }

    pub async fn recv(&mut self) -> String {
        self.recv_or_eof().await.expect("connection closed while a line was expected")
    }

    pub async fn recv_or_eof(&mut self) -> Option<String> {
        tokio::time::timeout(PATIENCE, self.lines.next_line()).await.expect("no line in time").unwrap()
    }

    /// Receives a QUERY and returns its id, client and number.
    pub async fn query(&mut self) -> (u64, String, u8) {
        let line = self.recv().await;
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "not a query: {line:?}");
        assert_eq!(f[0], "QUERY");
        (f[1].parse().unwrap(), f[2].to_owned(), f[3].parse().unwrap())
    }
}

pub async fn tracker(deadline: Duration, replies: ReplyMode) -> (Tracker, UnboundedReceiver<Stamped>) {
    tracker_with(TrackerConfig { deadline, replies, ..TrackerConfig::default() }).await
}

pub async fn tracker_with(config: TrackerConfig) -> (Tracker, UnboundedReceiver<Stamped>) {
    let (transcript, events) = Transcript::channel();
    let tracker = Tracker::bind("127.0.0.1:0".parse().unwrap(), config, transcript).await.unwrap();
    (tracker, events)
}

/// Waits for the first event `want` accepts, skipping others.
pub async fn wait_event(events: &mut UnboundedReceiver<Stamped>, want: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("transcript closed").event;
            if want(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event did not come")
}

/// Honest nodes beside the hostile ones: servers S1..S4 holding 3, 7, 3, 9 and a client C1.
pub struct Honest {
    pub servers: Vec<matchtracker::server::ServerNode>,
    pub client: matchtracker::client::ClientNode,
}

impl Honest {
    pub async fn start(to: impl Into<matchtracker::connection::Endpoint>) -> Honest {
        use matchtracker::protocol::Name;
        let to = to.into();
        let mut servers = Vec::new();
        for (i, number) in [3, 7, 3, 9].into_iter().enumerate() {
            let name = Name::new(&format!("S{}", i + 1)).unwrap();
            servers.push(
                matchtracker::server::ServerNode::start(to.clone(), name, number, None, Transcript::off())
                    .await
                    .unwrap(),
            );
        }
        let name = Name::new("C1").unwrap();
        let client =
            matchtracker::client::ClientNode::connect(to, name, None, Transcript::off()).await.unwrap();
        Honest { servers, client }
    }

    /// Asks for 3, 7 and 5 and checks each answer is exactly right.
    pub async fn check(&mut self) {
        for (number, want) in [(3, vec!["S1", "S3"]), (7, vec!["S2"]), (5, vec![])] {
            let answer = self.client.find_match(number).await.unwrap();
            let got: Vec<&str> = answer.servers.iter().map(|s| s.as_str()).collect();
            assert_eq!(got, want, "honest answer for {number}");
        }
    }
}

/// A raw connection whose receive buffer is as small as the kernel allows, so that a peer
/// that stops reading fills it quickly.
pub async fn tiny_buffer_stream(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Waits until `condition` holds, checking every few milliseconds; fails after [`PATIENCE`]. For state
/// that has no event of its own to wait on.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            ticks.tick().await;
        }
    })
    .await
    .expect("condition did not come true in time");
}
