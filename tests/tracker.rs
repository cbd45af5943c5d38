//! The tracker spoken to with raw lines over real sockets, as a hand-written node would.
//! Every tracker binds 127.0.0.1:0; tests wait on messages and events, never on sleeps.

mod common;

use std::time::Duration;

use common::{tracker, wait_event, Peer, PATIENCE, SHORT};
use matchtracker::protocol::ReplyMode;
use matchtracker::simulation::{self, SimulationConfig};
use matchtracker::transcript::{Event, Transcript};
use tokio::net::TcpStream;

#[tokio::test]
async fn registration_welcomes_with_deadline_and_mode() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let mut s1 = Peer::connect(tracker.local_addr()).await;
    s1.send("HELLO S1").await;
    assert_eq!(s1.recv().await, "WELCOME S1 200 matches");
    let _c1 = Peer::join(tracker.local_addr(), "HI C1").await;
    tracker.wait_for_nodes(1, 1).await;
    assert_eq!((tracker.stats().servers, tracker.stats().clients), (1, 1));
}

#[tokio::test]
async fn a_request_goes_to_every_server_and_the_matches_come_back_in_index_order() {
    let (tracker, _events) = tracker(Duration::from_secs(10), ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut s10 = Peer::join(addr, "HELLO S10").await;
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut s3 = Peer::join(addr, "HELLO S3").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 41 7").await;
    let (id10, client, number) = s10.query().await;
    assert_eq!((client.as_str(), number), ("C1", 7));
    let (id2, ..) = s2.query().await;
    let (id3, ..) = s3.query().await;
    assert!(id10 == id2 && id2 == id3, "one request, one id");
    s10.send(&format!("MATCH {id10}")).await;
    s2.send(&format!("MATCH {id2}")).await;
    // S3 does not match and, as the assignment says, does not reply: the deadline ends it.
    // Close S3 instead of waiting 10 s: a departed server is no longer waited for.
    drop(s3);
    assert_eq!(c1.recv().await, "ANSWER 41 replied S2 S10");
}

#[tokio::test]
async fn the_deadline_ends_a_request_with_the_replies_so_far() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::join(addr, "HELLO S1").await;
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    let started = tokio::time::Instant::now();
    c1.send("FIND 1 3").await;
    let (id, ..) = s1.query().await;
    s2.query().await;
    s1.send(&format!("MATCH {id}")).await;
    assert_eq!(c1.recv().await, "ANSWER 1 deadline S1");
    assert!(started.elapsed() >= SHORT, "answered before the deadline");
    // With nobody matching, the answer is the empty one.
    c1.send("FIND 2 4").await;
    assert_eq!(c1.recv().await, "ANSWER 2 deadline");
}

#[tokio::test]
async fn a_late_reply_is_dropped_and_reported() {
    let (tracker, mut events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::join(addr, "HELLO S1").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 9 5").await;
    let (id, ..) = s1.query().await;
    assert_eq!(c1.recv().await, "ANSWER 9 deadline");
    s1.send(&format!("MATCH {id}")).await;
    let late = wait_event(&mut events, |e| matches!(e, Event::LateReply { .. })).await;
    assert_eq!(
        late.to_string(),
        format!("Central: late reply from S1 to request {id} dropped (already answered)")
    );
    assert_eq!(tracker.stats().late_replies, 1);
    // The late reply did not leak into the next request.
    c1.send("FIND 10 5").await;
    let (next, ..) = s1.query().await;
    assert!(next > id, "query ids are never reused");
    assert_eq!(c1.recv().await, "ANSWER 10 deadline");
}

#[tokio::test]
async fn early_mode_answers_as_soon_as_every_server_replied() {
    // A deadline far longer than the test: the answer can only come from the replies.
    let (tracker, _events) = tracker(Duration::from_secs(60), ReplyMode::All).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::connect(addr).await;
    s1.send("HELLO S1").await;
    assert_eq!(s1.recv().await, "WELCOME S1 60000 all");
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 5 6").await;
    let (id, ..) = s1.query().await;
    s2.query().await;
    s1.send(&format!("MISS {id}")).await;
    s2.send(&format!("MATCH {id}")).await;
    assert_eq!(c1.recv().await, "ANSWER 5 replied S2");
}

#[tokio::test]
async fn a_server_leaving_mid_request_is_no_longer_waited_for() {
    let (tracker, _events) = tracker(Duration::from_secs(60), ReplyMode::All).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::join(addr, "HELLO S1").await;
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 1 2").await;
    let (id, ..) = s1.query().await;
    s2.query().await;
    s1.send(&format!("MATCH {id}")).await;
    drop(s2);
    assert_eq!(c1.recv().await, "ANSWER 1 replied S1");
}

#[tokio::test]
async fn a_server_that_matched_and_left_stays_in_the_answer() {
    let (tracker, _events) = tracker(Duration::from_secs(60), ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut s10 = Peer::join(addr, "HELLO S10").await;
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut s3 = Peer::join(addr, "HELLO S3").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 1 4").await;
    let (id, ..) = s10.query().await;
    s2.query().await;
    s3.query().await;
    s10.send(&format!("MATCH {id}")).await;
    s2.send(&format!("MATCH {id}")).await;
    // S10 leaves once its reply is counted, and a newcomer takes its place in the registry;
    // the newcomer was not asked and must not appear in the answer.
    s10.send("BYE").await;
    tracker.wait_for_nodes(2, 1).await;
    let _s4 = Peer::join(addr, "HELLO S4").await;
    drop(s3);
    assert_eq!(c1.recv().await, "ANSWER 1 replied S2 S10");
}

#[tokio::test]
async fn an_answer_names_whoever_holds_a_slot_now() {
    // Answers with the same matches are listed once; a slot that changes hands must not
    // bring back the name of the server that held it before.
    let (tracker, _events) = tracker(Duration::from_secs(60), ReplyMode::All).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::join(addr, "HELLO S1").await;
    let mut s2 = Peer::join(addr, "HELLO S2").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    for request in 1..=2 {
        c1.send(&format!("FIND {request} 3")).await;
        let (id, ..) = s1.query().await;
        s2.query().await;
        s1.send(&format!("MATCH {id}")).await;
        s2.send(&format!("MISS {id}")).await;
        assert_eq!(c1.recv().await, format!("ANSWER {request} replied S1"));
    }
    s1.send("BYE").await;
    tracker.wait_for_nodes(1, 1).await;
    let mut s5 = Peer::join(addr, "HELLO S5").await;
    c1.send("FIND 3 3").await;
    let (id, ..) = s5.query().await;
    s2.query().await;
    s5.send(&format!("MATCH {id}")).await;
    s2.send(&format!("MISS {id}")).await;
    assert_eq!(c1.recv().await, "ANSWER 3 replied S5");
}

#[tokio::test]
async fn with_no_servers_the_answer_is_immediate() {
    let (tracker, _events) = tracker(Duration::from_secs(60), ReplyMode::Matches).await;
    let mut c1 = Peer::join(tracker.local_addr(), "HI C1").await;
    c1.send("FIND 3 3").await;
    assert_eq!(c1.recv().await, "ANSWER 3 noservers");
}

#[tokio::test]
async fn bad_lines_get_error_lines_and_the_connection_goes_on() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut c1 = Peer::join(addr, "HI C1").await;
    for (line, code) in [
        ("JUMP", "unknown-verb"),
        ("FIND 1 11", "bad-number"),
        ("FIND x 1", "bad-id"),
        ("FIND 1", "bad-fields"),
        ("MATCH 1", "unexpected"),
        ("", "empty-line"),
    ] {
        c1.send(line).await;
        let error = c1.recv().await;
        assert!(error.starts_with(&format!("ERROR {code} ")), "{line:?} got {error:?}");
    }
    c1.send("FIND 2 1").await;
    assert_eq!(c1.recv().await, "ANSWER 2 noservers");
}

#[tokio::test]
async fn a_node_must_greet_first_and_names_are_unique() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut stranger = Peer::connect(addr).await;
    stranger.send("FIND 1 1").await;
    assert!(stranger.recv().await.starts_with("ERROR not-registered "));
    assert_eq!(stranger.recv_or_eof().await, None, "closed after the error");

    let mut first = Peer::join(addr, "HELLO S1").await;
    let mut second = Peer::connect(addr).await;
    second.send("HI S1").await;
    assert!(second.recv().await.starts_with("ERROR name-taken "));
    assert_eq!(second.recv_or_eof().await, None);
    // The first holder of the name is unaffected.
    let mut c1 = Peer::join(addr, "HI C1").await;
    c1.send("FIND 1 4").await;
    let (id, ..) = first.query().await;
    first.send(&format!("MATCH {id}")).await;
    assert_eq!(c1.recv().await, "ANSWER 1 replied S1");
}

#[tokio::test]
async fn shutdown_says_bye_to_every_node() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut s1 = Peer::join(addr, "HELLO S1").await;
    let mut c1 = Peer::join(addr, "HI C1").await;
    tracker.shutdown(PATIENCE).await;
    assert_eq!(s1.recv().await, "BYE");
    assert_eq!(c1.recv().await, "BYE");
    assert_eq!(s1.recv_or_eof().await, None);
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn every_simulated_answer_is_right() {
    for (n, early) in [(2, false), (7, false), (7, true)] {
        let config = SimulationConfig::new(n, 3, 0.2, Some(11), early).unwrap();
        let report = simulation::run(config, Transcript::off(), Default::default()).await.unwrap();
        assert_eq!(report.requests.len(), n as usize * 3);
        for request in &report.requests {
            let want: Vec<_> = report
                .servers
                .iter()
                .filter(|s| s.number == request.number)
                .map(|s| s.name.clone())
                .collect();
            assert_eq!(*request.servers, want[..], "{request:?}");
        }
    }
}

#[tokio::test]
async fn a_seed_makes_a_run_repeatable() {
    let run = || async {
        let config = SimulationConfig::new(4, 2, 0.2, Some(99), true).unwrap();
        simulation::run(config, Transcript::off(), Default::default()).await.unwrap()
    };
    let (a, b) = (run().await, run().await);
    assert_eq!(a.servers, b.servers);
    let picks = |r: &simulation::Report| {
        r.requests.iter().map(|q| (q.client.clone(), q.number, q.servers.clone())).collect::<Vec<_>>()
    };
    assert_eq!(picks(&a), picks(&b));
}
