//! Nothing lost at the tracker's edges: a client that pipelines is slowed down, never
//! refused, and gets every answer exactly once; a client that stops reading is dropped as a
//! slow consumer; a stop answers every open request before it says `BYE`.

mod common;

use std::time::Duration;

use common::{tiny_buffer_stream, tracker_with, wait_event, Peer, PATIENCE, SHORT};
use matchtracker::client::ClientNode;
use matchtracker::protocol::{End, Name, ReplyMode};
use matchtracker::server::ServerNode;
use matchtracker::tracker::TrackerConfig;
use matchtracker::transcript::{Event, Role, Transcript};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn config() -> TrackerConfig {
    TrackerConfig { deadline: SHORT, ..TrackerConfig::default() }
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// `count` requests `FIND i n` in one buffer, `n` going round 1..=10.
fn burst(count: u64) -> Vec<u8> {
    (1..=count).map(|i| format!("FIND {i} {}\n", i % 10 + 1)).collect::<String>().into_bytes()
}

/// Reads `count` lines from `peer` and checks each is the answer to a distinct id from 1 to
/// `count`, naming exactly the servers `expect(id)` says; returns the ids in the order read.
async fn every_answer_once(peer: &mut Peer, count: u64, expect: impl Fn(u64) -> Vec<String>) -> Vec<u64> {
    let mut seen = vec![false; usize::try_from(count).unwrap() + 1];
    let mut order = Vec::new();
    for _ in 0..count {
        let line = tokio::time::timeout(PATIENCE * 4, peer.lines.next_line())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("the connection stays open");
        let mut fields = line.split(' ');
        assert_eq!(fields.next(), Some("ANSWER"), "{line}");
        let id: u64 = fields.next().unwrap().parse().unwrap();
        let idx = usize::try_from(id).unwrap();
        assert!(!seen[idx], "id {id} answered twice");
        seen[idx] = true;
        fields.next();
        let servers: Vec<String> = fields.map(str::to_owned).collect();
        assert_eq!(servers, expect(id), "answer to {id}");
        order.push(id);
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pipelining_100000_requests_gets_each_answered_exactly_once() {
    let config = TrackerConfig { replies: ReplyMode::All, deadline: Duration::from_secs(10), ..config() };
    let (tracker, _events) = tracker_with(config).await;
    let addr = tracker.local_addr();
    let mut servers = Vec::new();
    for number in 1..=10u8 {
        let server = ServerNode::start(addr, name(&format!("S{number}")), number, None, Transcript::off());
        servers.push(server.await.unwrap());
    }
    let Peer { lines, mut write } = Peer::join(addr, "HI C1").await;
    let count = 100_000;
    // Written from a task of its own: the tracker reads only as fast as it answers, so the
    // write waits on TCP's flow control while the answers are read here.
    let writer = tokio::spawn(async move {
        write.write_all(&burst(count)).await.unwrap();
        write
    });
    let mut peer = Peer { lines, write: writer.await.unwrap() };
    every_answer_once(&mut peer, count, |id| vec![format!("S{}", id % 10 + 1)]).await;
    assert_eq!(tracker.stats().open_requests, 0);
}

#[tokio::test]
async fn answers_without_servers_come_in_the_order_asked_and_none_is_lost() {
    let (tracker, _events) = tracker_with(TrackerConfig { max_open_per_client: 16, ..config() }).await;
    let mut peer = Peer::join(tracker.local_addr(), "HI C1").await;
    let count = 10_000;
    let Peer { lines, mut write } = peer;
    let writer = tokio::spawn(async move {
        write.write_all(&burst(count)).await.unwrap();
        write
    });
    peer = Peer { lines, write: writer.await.unwrap() };
    let order = every_answer_once(&mut peer, count, |_| Vec::new()).await;
    assert_eq!(order, (1..=count).collect::<Vec<_>>());
}

#[tokio::test]
async fn requests_ending_at_the_same_deadline_are_answered_in_the_order_read() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    // A server that never replies: every request lasts its deadline.
    let _silent = Peer::join(addr, "HELLO S1").await;
    let mut peer = Peer::join(addr, "HI C1").await;
    let lines: String = (1..=50).map(|i| format!("FIND {i} 4\n")).collect();
    peer.write.write_all(lines.as_bytes()).await.unwrap();
    for i in 1..=50 {
        assert_eq!(peer.recv().await, format!("ANSWER {i} deadline"));
    }
}

#[tokio::test]
async fn a_pipelining_client_that_never_reads_is_dropped_as_a_slow_consumer() {
    let stall = Duration::from_millis(300);
    let config = TrackerConfig { stall_timeout: stall, send_buffer: 4096, ..config() };
    let (tracker, mut events) = tracker_with(config).await;
    let stream = tiny_buffer_stream(tracker.local_addr()).await;
    let (read, mut write) = stream.into_split();
    let mut greeting = BufReader::new(read);
    write.write_all(b"HI C1\n").await.unwrap();
    let mut welcome = String::new();
    greeting.read_line(&mut welcome).await.unwrap();
    assert!(welcome.starts_with("WELCOME C1 "), "{welcome}");
    // 20,000 requests, each answered at once (no servers), never read. The write may never
    // finish: the tracker stops reading once its answers fill the socket.
    let _writer = tokio::spawn(async move {
        let _ = write.write_all(&burst(20_000)).await;
        write
    });
    let dropped = wait_event(&mut events, |e| matches!(e, Event::Dropped { role: Role::Client, .. })).await;
    let Event::Dropped { reason, .. } = dropped else { unreachable!() };
    assert!(reason.contains("slow consumer"), "{reason}");
    drop(greeting);
}

#[tokio::test]
async fn an_error_line_from_a_node_is_out_of_place_not_malformed() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let mut client = Peer::join(addr, "HI C1").await;
    client.send("ERROR nonsense whatever").await;
    assert!(client.recv().await.starts_with("ERROR unexpected "));
    client.send("ANSWER 1 bogus").await;
    assert!(client.recv().await.starts_with("ERROR unexpected "));
    let mut server = Peer::join(addr, "HELLO S1").await;
    server.send("ERROR bad-word x").await;
    assert!(server.recv().await.starts_with("ERROR unexpected "));
    // Still served after it.
    client.send("FIND 1 4").await;
    let (id, ..) = server.query().await;
    server.send(&format!("MATCH {id}")).await;
    assert_eq!(client.recv().await, "ANSWER 1 replied S1");
    let mut first = Peer::connect(addr).await;
    first.send("ERROR nonsense").await;
    assert!(first.recv().await.starts_with("ERROR not-registered "));
}

#[tokio::test]
async fn a_stop_answers_every_open_request_before_it_says_bye() {
    let (tracker, mut events) =
        tracker_with(TrackerConfig { deadline: Duration::from_millis(400), ..config() }).await;
    let addr = tracker.local_addr();
    let server = ServerNode::start(addr, name("S1"), 4, None, Transcript::off()).await.unwrap();
    let mut raw = Peer::join(addr, "HI C1").await;
    let lines: String = (1..=1000).map(|i| format!("FIND {i} {}\n", i % 2 + 4)).collect();
    raw.write.write_all(lines.as_bytes()).await.unwrap();
    let node =
        std::sync::Arc::new(ClientNode::connect(addr, name("C2"), None, Transcript::off()).await.unwrap());
    let asking = tokio::spawn({
        let node = node.clone();
        async move { node.find_match(4).await }
    });
    // Every request read: 1000 from C1, then C2's.
    for _ in 0..1001 {
        wait_event(&mut events, |e| matches!(e, Event::FindReceived { .. })).await;
    }
    let stopping = tokio::spawn(tracker.shutdown(PATIENCE));
    let answer = asking.await.unwrap().expect("the answer, not the tracker going away");
    assert_eq!(
        (answer.end, answer.servers.iter().map(Name::as_str).collect::<Vec<_>>()),
        (End::Replied, vec!["S1"])
    );
    // The 500 asking for 4 end when S1 replies, the others at their deadline.
    every_answer_once(&mut raw, 1000, |id| if id % 2 == 0 { vec!["S1".into()] } else { vec![] }).await;
    assert_eq!(raw.recv().await, "BYE");
    assert_eq!(raw.recv_or_eof().await, None);
    assert!(stopping.await.unwrap(), "every open request answered in time");
    server.close().await.unwrap();
}

#[tokio::test]
async fn a_tracker_that_is_stopping_takes_no_new_requests_and_no_new_nodes() {
    let (tracker, mut events) =
        tracker_with(TrackerConfig { deadline: Duration::from_millis(400), ..config() }).await;
    let addr = tracker.local_addr();
    let _silent = Peer::join(addr, "HELLO S1").await;
    let mut client = Peer::join(addr, "HI C1").await;
    client.send("FIND 1 4").await;
    wait_event(&mut events, |e| matches!(e, Event::FindReceived { .. })).await;
    let stopping = tokio::spawn(tracker.shutdown(PATIENCE));
    // The request read is still answered, then BYE; the port closed when the stop began.
    assert_eq!(client.recv().await, "ANSWER 1 deadline");
    assert_eq!(client.recv().await, "BYE");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections");
    assert!(stopping.await.unwrap());
}
