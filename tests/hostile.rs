//! A tracker under hostile input and faults, with honest nodes beside the hostile ones: every
//! misbehaviour gets its documented ERROR line (or the connection ends), and every honest
//! answer stays exactly right.

mod common;

use std::time::Duration;

use common::{
    eventually, tiny_buffer_stream, tracker, tracker_with, wait_event, Honest, Peer, PATIENCE, SHORT,
};
use matchtracker::protocol::{Name, ReplyMode};
use matchtracker::tracker::TrackerConfig;
use matchtracker::transcript::{Event, Role};
use matchtracker::Error;
use tokio::io::AsyncWriteExt;

fn config() -> TrackerConfig {
    TrackerConfig { deadline: SHORT, ..TrackerConfig::default() }
}

#[tokio::test]
async fn megabytes_without_a_newline_are_cut_off() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    for greeted in [false, true] {
        let Peer { mut lines, mut write } =
            if greeted { Peer::join(addr, "HI X1").await } else { Peer::connect(addr).await };
        let flood = tokio::spawn(async move {
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..64 {
                if write.write_all(&chunk).await.is_err() {
                    break; // the tracker hung up, as it should
                }
            }
        });
        let last = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("no answer in time");
        // Closing with unread bytes makes the kernel reset the connection, which may overtake
        // the last line; the connection ending is what matters.
        if let Ok(Some(line)) = last {
            assert!(line.starts_with("ERROR line-too-long "), "got {line:?}");
        }
        flood.await.unwrap();
    }
    honest.check().await;
}

#[tokio::test]
async fn malformed_and_misplaced_lines_get_error_lines() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    let mut client = Peer::join(addr, "HI X1").await;
    let mut server = Peer::join(addr, "HELLO X2").await;
    client.write.write_all(b"\xff\xfe FIND\n").await.unwrap();
    assert!(client.recv().await.starts_with("ERROR not-utf8 "));
    for (to_server, line, code) in [
        (false, "HELLO X9", "unexpected"),
        (false, "HI X1", "unexpected"),
        (false, "MISS 1", "unexpected"),
        (false, "FIND 1 2 3", "bad-fields"),
        (false, "FIND 18446744073709551616 2", "bad-id"),
        (true, "FIND 1 1", "unexpected"),
        (true, "HELLO X2", "unexpected"),
        (true, "MATCH x", "bad-id"),
        (true, "MATCH 999999", "unknown-request"),
    ] {
        let peer = if to_server { &mut server } else { &mut client };
        peer.send(line).await;
        let error = peer.recv().await;
        assert!(error.starts_with(&format!("ERROR {code} ")), "{line:?} got {error:?}");
    }
    // Both connections are still open and usable.
    client.send("FIND 1 9").await;
    let (id, ..) = server.query().await;
    server.send(&format!("MISS {id}")).await;
    honest.check().await;
}

#[tokio::test]
async fn a_bad_greeting_is_refused_and_the_connection_closed() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    let long = format!("HI {}", "x".repeat(33));
    for (line, code) in [
        ("HELLO S!", "bad-name"),
        ("HELLO", "bad-fields"),
        (long.as_str(), "bad-name"),
        ("MATCH 1", "not-registered"),
        ("HELLO S1", "name-taken"),
        ("HI C1", "name-taken"),
    ] {
        let mut peer = Peer::connect(addr).await;
        peer.send(line).await;
        let error = peer.recv().await;
        assert!(error.starts_with(&format!("ERROR {code} ")), "{line:?} got {error:?}");
        assert_eq!(peer.recv_or_eof().await, None, "{line:?} left the connection open");
    }
    honest.check().await;
}

#[tokio::test]
async fn replies_from_servers_that_were_not_asked_are_refused() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    let mut asked = Peer::join(addr, "HELLO X1").await;
    let mut c2 = Peer::join(addr, "HI C2").await;
    c2.send("FIND 1 3").await;
    let (id, ..) = asked.query().await;
    // A server that joined after the query went out was not asked.
    let mut newcomer = Peer::join(addr, "HELLO X2").await;
    newcomer.send(&format!("MATCH {id}")).await;
    assert!(newcomer.recv().await.starts_with("ERROR not-asked "));
    // A second reply from the same server counts once.
    asked.send(&format!("MATCH {id}")).await;
    asked.send(&format!("MATCH {id}")).await;
    assert!(asked.recv().await.starts_with("ERROR not-asked "));
    assert_eq!(c2.recv().await, "ANSWER 1 deadline S1 S3 X1");
    honest.check().await;
}

#[tokio::test]
async fn silent_and_stalled_peers_are_timed_out() {
    let quick = Duration::from_millis(200);
    let (tracker, _events) =
        tracker_with(TrackerConfig { handshake_timeout: quick, stall_timeout: quick, ..config() }).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    let mut silent = Peer::connect(addr).await;
    assert!(silent.recv().await.starts_with("ERROR handshake-timeout "));
    assert_eq!(silent.recv_or_eof().await, None);
    let mut stalled = Peer::join(addr, "HI X1").await;
    stalled.write.write_all(b"FIND 1").await.unwrap();
    assert!(stalled.recv().await.starts_with("ERROR line-timeout "));
    assert_eq!(stalled.recv_or_eof().await, None);
    honest.check().await;
}

#[tokio::test]
async fn a_server_that_stops_reading_is_dropped_and_nobody_waits_for_it() {
    let stall = Duration::from_millis(300);
    let config = TrackerConfig { stall_timeout: stall, send_buffer: 8 * 1024, ..config() };
    let (tracker, mut events) = tracker_with(config).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    // A server whose receive buffer is tiny, and which never reads after its WELCOME.
    let mut slow = tiny_buffer_stream(addr).await;
    slow.write_all(b"HELLO X9\n").await.unwrap();
    tracker.wait_for_nodes(5, 1).await;
    // A client sends requests (for a number nobody holds) in batches, reading each batch's
    // answers before the next, until the tracker gives up on the server that reads nothing.
    let mut flood = Peer::join(addr, "HI X1").await;
    let flooding = tokio::spawn(async move {
        let batch: String = (0..256).map(|i| format!("FIND {i} 10\n")).collect();
        loop {
            flood.write.write_all(batch.as_bytes()).await.unwrap();
            for _ in 0..256 {
                assert!(flood.recv().await.starts_with("ANSWER "));
            }
        }
    });
    let dropped = wait_event(&mut events, |e| matches!(e, Event::Dropped { .. })).await;
    assert!(dropped.to_string().starts_with("Central: dropping Server X9: "), "{dropped}");
    assert!(dropped.to_string().contains("slow consumer"), "{dropped}");
    assert!(!flooding.is_finished(), "the flooding client failed");
    flooding.abort();
    honest.check().await;
}
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    // No servers: every request is answered at once, so answers pile up fast.
    let stall = Duration::from_millis(300);
    let (tracker, mut events) = tracker_with(TrackerConfig { stall_timeout: stall, ..config() }).await;
    let addr = tracker.local_addr();
    let mut slow = tiny_buffer_stream(addr).await;
    slow.write_all(b"HI X1\n").await.unwrap();
    let batch: String = (0..2000).map(|i| format!("FIND {i} 1\n")).collect();
    let sender = tokio::spawn(async move {
        for _ in 0..1000 {
            if slow.write_all(batch.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let dropped = wait_event(&mut events, |e| matches!(e, Event::Dropped { role: Role::Client, .. })).await;
    assert!(dropped.to_string().contains("slow consumer"), "{dropped}");
    sender.abort();
    let mut honest = Honest::start(addr).await;
    honest.check().await;
}

#[tokio::test]
async fn a_connection_flood_is_capped() {
    // Room for the five honest nodes and three more.
    let (tracker, _events) = tracker_with(TrackerConfig { max_connections: 8, ..config() }).await;
    let addr = tracker.local_addr();
    let mut honest = Honest::start(addr).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(Peer::join(addr, &format!("HI X{i}")).await);
    }
    let mut refused = Peer::connect(addr).await;
    assert!(refused.recv().await.starts_with("ERROR too-many-connections "));
    assert_eq!(refused.recv_or_eof().await, None);
    honest.check().await;
}

#[tokio::test]
async fn a_server_killed_mid_request_leaves_the_right_answer_from_the_others() {
    let (tracker, _events) = tracker_with(config()).await;
    let addr = tracker.local_addr();
    let honest = Honest::start(addr).await;
    let mut doomed = Peer::join(addr, "HELLO S9").await;
    let asking = tokio::spawn(async move {
        let answer = honest.client.find_match(3).await.unwrap();
        (honest, answer)
    });
    doomed.query().await;
    drop(doomed);
    let (mut honest, answer) = asking.await.unwrap();
    let names: Vec<&str> = answer.servers.iter().map(Name::as_str).collect();
    assert_eq!(names, ["S1", "S3"]);
    honest.check().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_holds_nothing_past_its_deadline() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let _server = Peer::join(addr, "HELLO S1").await;
    let mut client = Peer::join(addr, "HI C1").await;
    client.send("FIND 1 10").await;
    eventually(|| tracker.stats().open_requests == 1).await;
    // A close and a half-close look the same from here: the request is answered at its
    // deadline, the answer finds nobody, and the connection and its name are freed.
    drop(client);
    eventually(|| tracker.stats().open_requests == 0 && tracker.stats().clients == 0).await;
    let _again = Peer::join(addr, "HI C1").await;
}

#[tokio::test]
async fn after_a_half_close_or_bye_every_open_request_is_answered() {
    let (tracker, _events) = tracker(SHORT, ReplyMode::Matches).await;
    let addr = tracker.local_addr();
    let mut server = Peer::join(addr, "HELLO S1").await;
    for goodbye in ["half-close", "BYE"] {
        let mut client = Peer::join(addr, "HI C9").await;
        client.send("FIND 1 5").await;
        client.send("FIND 2 6").await;
        if goodbye == "BYE" {
            client.send("BYE").await;
        } else {
            client.write.shutdown().await.unwrap();
        }
        let (id, ..) = server.query().await;
        server.query().await;
        server.send(&format!("MATCH {id}")).await;
        assert_eq!(client.recv().await, "ANSWER 1 replied S1", "{goodbye}");
        assert_eq!(client.recv().await, "ANSWER 2 deadline", "{goodbye}");
        assert_eq!(client.recv_or_eof().await, None, "{goodbye}: closed once every answer is out");
        eventually(|| tracker.stats().clients == 0).await;
    }
}

#[tokio::test]
async fn nodes_see_the_tracker_leave() {
    let (tracker, _events) = tracker_with(config()).await;
    let honest = Honest::start(tracker.local_addr()).await;
    tracker.shutdown(PATIENCE).await;
    assert!(matches!(honest.client.find_match(3).await, Err(Error::Closed | Error::Io(_))));
    for server in honest.servers {
        // Each server heard BYE and ended cleanly.
        server.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_tracker_with_a_token_admits_only_nodes_that_present_it() {
    let token = matchtracker::protocol::Token::new("open-sesame").unwrap();
    let (tracker, _events) = tracker_with(TrackerConfig { token: Some(token), ..config() }).await;
    let addr = tracker.local_addr();
    for (greeting, code) in [
        ("HELLO S1", "unauthorized"),
        ("HELLO S1 open-sesamE", "unauthorized"),
        ("HI C1 open", "unauthorized"),
        ("HI C1 open sesame", "bad-fields"),
    ] {
        let mut peer = Peer::connect(addr).await;
        peer.send(greeting).await;
        let error = peer.recv().await;
        assert!(error.starts_with(&format!("ERROR {code} ")), "{greeting:?} got {error:?}");
        assert!(!error.contains("sesame"), "the token must never be echoed");
        assert_eq!(peer.recv_or_eof().await, None);
    }
    let mut server = Peer::join(addr, "HELLO S1 open-sesame").await;
    let mut client = Peer::join(addr, "HI C1 open-sesame").await;
    client.send("FIND 1 3").await;
    let (id, ..) = server.query().await;
    server.send(&format!("MATCH {id}")).await;
    assert_eq!(client.recv().await, "ANSWER 1 replied S1");
}

#[tokio::test]
async fn listening_beyond_loopback_needs_tls_and_a_token_or_an_explicit_risk() {
    use matchtracker::tracker::Tracker;
    use matchtracker::transcript::Transcript;
    let any = "0.0.0.0:0".parse().unwrap();
    let token = Some(matchtracker::protocol::Token::new("t").unwrap());
    let refused = |config: TrackerConfig, wanted: &'static [&'static str], unwanted: &'static str| async move {
        match Tracker::bind(any, config, Transcript::off()).await {
            Err(Error::InvalidArgument(text)) => {
                assert!(wanted.iter().all(|w| text.contains(w)) && !text.contains(unwanted), "{text}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("bound 0.0.0.0 without {wanted:?}"),
        }
    };
    refused(config(), &["needs TLS", "and a token"], "\n").await;
    refused(TrackerConfig { token: token.clone(), ..config() }, &["needs TLS"], "a token").await;
    refused(TrackerConfig { insecure_plaintext: true, ..config() }, &["needs a token"], "TLS").await;
    for accepted in [
        TrackerConfig { token, insecure_plaintext: true, ..config() },
        TrackerConfig { insecure_no_token: true, insecure_plaintext: true, ..config() },
    ] {
        Tracker::bind(any, accepted, Transcript::off()).await.unwrap().shutdown(PATIENCE).await;
    }
}
