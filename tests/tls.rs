//! Nodes and the tracker over TLS, with certificates made here: answers exactly right, the
//! token checked, each way a handshake can fail told in one line, nothing readable on the
//! wire, and handshakes that stall or are garbage cut off and counted.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{tracker_with, wait_event, Honest, Peer, PATIENCE, SHORT};
use matchtracker::client::ClientNode;
use matchtracker::connection::Endpoint;
use matchtracker::protocol::{ErrorCode, Name, ReplyMode, Token};
use matchtracker::server::ServerNode;
use matchtracker::tls::{self, Dial};
use matchtracker::tracker::TrackerConfig;
use matchtracker::transcript::{Event, Transcript};
use matchtracker::Error;
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A CA and certificates it signed, as PEM files in a directory of the test's own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("matchtracker-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("matchtracker test CA {n}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki { dir, ca };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A certificate for `names`, valid `years` from now (negative: expired), written as
    /// `<file>.pem` and its key as `<file>.key`.
    fn issue(&self, file: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (self.path(&format!("{file}.pem")), self.path(&format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// The tracker's side, for `names`.
    fn tracker(&self, names: &[&str], expired: bool) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue("tracker", names, expired);
        tls::tracker_config(&cert, &key).unwrap()
    }

    /// How a node reaches `addr` by `host`, trusting this CA.
    fn dial(&self, addr: SocketAddr, host: &str) -> Endpoint {
        let config = tls::node_config(Some(&self.path("ca.pem"))).unwrap();
        Endpoint { addr, tls: Some(Dial::new(config, host).unwrap()) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(tls: Arc<rustls::ServerConfig>) -> TrackerConfig {
    TrackerConfig { deadline: SHORT, replies: ReplyMode::All, tls: Some(tls), ..TrackerConfig::default() }
}

/// A TLS tracker for `localhost` that wants `token`.
async fn tracker_wanting(pki: &Pki, token: &Token) -> matchtracker::tracker::Tracker {
    let tls = pki.tracker(&["localhost"], false);
    tracker_with(TrackerConfig { token: Some(token.clone()), ..config(tls) }).await.0
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

#[tokio::test]
async fn every_answer_is_exactly_right_over_tls() {
    let pki = Pki::new();
    let (tracker, _events) = tracker_with(config(pki.tracker(&["localhost", "127.0.0.1"], false))).await;
    // Reached by name and by address: the certificate carries both.
    for host in ["localhost", "127.0.0.1"] {
        let mut honest = Honest::start(pki.dial(tracker.local_addr(), host)).await;
        honest.check().await;
        for server in honest.servers {
            server.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_token_is_checked_inside_tls() {
    let pki = Pki::new();
    let token = Token::new("s3cret-Token").unwrap();
    let tracker = tracker_wanting(&pki, &token).await;
    let to = pki.dial(tracker.local_addr(), "localhost");
    let server =
        ServerNode::start(to.clone(), name("S1"), 4, Some(token.clone()), Transcript::off()).await.unwrap();
    let client = ClientNode::connect(to.clone(), name("C1"), Some(token), Transcript::off()).await.unwrap();
    let answer = client.find_match(4).await.unwrap();
    assert_eq!(answer.servers.iter().map(Name::as_str).collect::<Vec<_>>(), ["S1"]);
    let wrong = Token::new("not-the-token").unwrap();
    for token in [None, Some(wrong)] {
        match ClientNode::connect(to.clone(), name("C2"), token, Transcript::off()).await {
            Err(Error::Refused { code: ErrorCode::Unauthorized, .. }) => {}
            other => panic!("expected unauthorized, got {:?}", other.err()),
        }
    }
    server.close().await.unwrap();
}

/// The one line a node gets when it reaches `to`.
async fn refusal(to: Endpoint) -> String {
    match ClientNode::connect(to, name("C1"), None, Transcript::off()).await {
        Ok(_) => panic!("the connection should have failed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn each_failed_handshake_says_what_to_do() {
    let pki = Pki::new();
    let (good, mut events) = tracker_with(config(pki.tracker(&["localhost"], false))).await;
    let addr = good.local_addr();

    let stranger = Pki::new();
    let untrusted = refusal(stranger.dial(addr, "localhost")).await;
    assert!(
        untrusted.contains("not signed by a CA this node trusts") && untrusted.contains("--tls-ca"),
        "{untrusted}"
    );

    let wrong_name = refusal(pki.dial(addr, "127.0.0.1")).await;
    assert!(wrong_name.contains("not valid for the name 127.0.0.1"), "{wrong_name}");

    let plain_node = refusal(Endpoint::from(addr)).await;
    assert!(plain_node.contains("tls-required") && plain_node.contains("speaks TLS"), "{plain_node}");

    let (expired, _events) = tracker_with(config(pki.tracker(&["localhost"], true))).await;
    let too_old = refusal(pki.dial(expired.local_addr(), "localhost")).await;
    assert!(too_old.contains("certificate has expired"), "{too_old}");

    let (plain, _events) = tracker_with(TrackerConfig { deadline: SHORT, ..TrackerConfig::default() }).await;
    let plain_tracker = refusal(pki.dial(plain.local_addr(), "localhost")).await;
    assert!(plain_tracker.contains("answered in plain text: it does not offer TLS"), "{plain_tracker}");

    for line in [untrusted, wrong_name, plain_node, too_old, plain_tracker] {
        assert!(!line.contains('\n'), "one line: {line:?}");
    }
    // Untrusted and wrong name end in the tracker's transcript; plain text is an ERROR line.
    for _ in 0..2 {
        wait_event(&mut events, |e| matches!(e, Event::TlsFailed { .. })).await;
    }
    assert_eq!(good.stats().tls_failed, 3, "untrusted, wrong name and plain text are counted");
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let pki = Pki::new();
    let (cert, _) = pki.issue("one", &["localhost"], false);
    let (_, other_key) = pki.issue("two", &["localhost"], false);
    let e = tls::tracker_config(&cert, &other_key).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(e.to_string().contains("does not match the certificate"), "{e}");
    let missing = tls::tracker_config(&pki.path("none.pem"), &other_key).unwrap_err();
    assert!(missing.to_string().contains("none.pem"), "{missing}");
    let not_ca = tls::node_config(Some(&other_key)).unwrap_err();
    assert!(not_ca.to_string().contains("two.key"), "{not_ca}");
}

/// Forwards every connection to `to`, keeping a copy of every byte that passes either way.
async fn recording_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((near, _)) = listener.accept().await {
            let far = TcpStream::connect(to).await.unwrap();
            let (near_read, near_write) = near.into_split();
            let (far_read, far_write) = far.into_split();
            tokio::spawn(pump(near_read, far_write, record.clone()));
            tokio::spawn(pump(far_read, near_write, record.clone()));
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        seen.lock().extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn nothing_readable_crosses_the_wire() {
    let pki = Pki::new();
    let token = Token::new("Sesame-7f3a9").unwrap();
    let tracker = tracker_wanting(&pki, &token).await;
    let (proxy, seen) = recording_proxy(tracker.local_addr()).await;
    let to = pki.dial(proxy, "localhost");
    let server = ServerNode::start(to.clone(), name("Zanzibar"), 6, Some(token.clone()), Transcript::off())
        .await
        .unwrap();
    let client = ClientNode::connect(to, name("Quetzal"), Some(token), Transcript::off()).await.unwrap();
    let answer = client.find_match(6).await.unwrap();
    assert_eq!(answer.servers.iter().map(Name::as_str).collect::<Vec<_>>(), ["Zanzibar"]);
    drop(client);
    server.close().await.unwrap();
    let seen = seen.lock().clone();
    assert!(seen.len() > 1000, "the capture holds the handshakes and the lines ({} bytes)", seen.len());
    for secret in ["Sesame-7f3a9", "Zanzibar", "Quetzal", "HELLO", "FIND", "QUERY", "ANSWER"] {
        let found = seen.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{secret} is readable on the wire");
    }
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_are_cut_off_and_counted() {
    let pki = Pki::new();
    let tls = pki.tracker(&["localhost"], false);
    let (tracker, mut events) = tracker_with(TrackerConfig { handshake_timeout: SHORT, ..config(tls) }).await;
    let addr = tracker.local_addr();
    let honest = pki.dial(addr, "localhost");

    // Opens a TLS record and stalls inside it: cut off by the handshake timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut rest)).await.expect("not cut off");
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty(), "closed without a word");
    wait_event(&mut events, |e| matches!(e, Event::TlsFailed { reason, .. } if reason.contains("in time")))
        .await;

    // A TLS record type followed by garbage: refused as a bad handshake.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, garbage.read_to_end(&mut rest)).await.expect("not cut off");
    wait_event(&mut events, |e| matches!(e, Event::TlsFailed { .. })).await;

    // Plain garbage: told, in plain text, that this tracker speaks TLS.
    let mut peer = Peer::connect(addr).await;
    peer.write.write_all(b"\x00\x01 what is this\n").await.unwrap();
    assert!(peer.recv().await.starts_with("ERROR tls-required "));

    assert_eq!(tracker.stats().tls_failed, 3);
    // And an honest node still gets in and gets right answers.
    Honest::start(honest).await.check().await;
}

#[tokio::test]
async fn tls_and_a_token_may_listen_beyond_loopback() {
    use matchtracker::tracker::Tracker;
    let pki = Pki::new();
    let token = Some(Token::new("t0ken").unwrap());
    let config = TrackerConfig { token, ..config(pki.tracker(&["localhost"], false)) };
    let tracker = Tracker::bind("0.0.0.0:0".parse().unwrap(), config, Transcript::off()).await.unwrap();
    tracker.shutdown(PATIENCE).await;
}
