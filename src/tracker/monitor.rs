//! The monitoring port: read-only HTTP/1.1 (hyper) beside the node port, on the tracker's
//! runtime, for Prometheus, load balancers and operators.
//!
//! - `GET /metrics`: the figures in Prometheus' text format ([`super::metrics`]);
//! - `GET /healthz`: 200 while the tracker serves;
//! - `GET /readyz`: 200 while it takes nodes, 503 while it drains or is cut off from its
//!   cluster, with a short JSON body saying why;
//! - `GET /stats`: the counters of [`super::Stats`] as JSON (what `Tracker.stats()` gives);
//! - `GET /connections`: every registered node's connection and the last closed ones
//!   ([`super::connections`]).
//!
//! What it shows includes node names, so beyond loopback it asks for the tracker's token as
//! `Authorization: Bearer <token>` (or runs open when the operator accepted the risk). It
//! never holds up the node port: its connections are few (a bound), each request is
//! answered from counters and short locks, and a client that sends half a request is cut
//! off. It closes when the tracker stops, after the drain, so that `/readyz` says 503 while
//! the tracker drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics::{self, Now};
use super::Shared;
use crate::protocol::Token;
use crate::shutdown::StopSignal;

/// Most monitoring connections open at once: a scraper, a probe and an operator or two.
/// More wait in the listen queue; they never take descriptors from the node port.
const MAX_CONNECTIONS: usize = 32;

/// How long a monitoring client has to send its request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const JSON: &str = "application/json";

/// Where the monitoring port listens, and whether it may show its figures beyond loopback
/// without asking for the tracker's token.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub addr: SocketAddr,
    /// Beyond loopback, answer without the token (a trusted network). Off, such a monitor
    /// needs the tracker to have a token, which it then asks for.
    pub insecure: bool,
}

/// Serves the monitoring port until `stop`.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: StopSignal) {
    // Only a port reachable from elsewhere asks for the token (the one in force: a reload
    // changes it here too).
    let guarded = !listener.local_addr().is_ok_and(|addr| addr.ip().is_loopback());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first: at the bound, connections wait in the listen queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.requested() => return,
        };
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.requested() => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors: the node port needs them more. Try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, mut stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let token = if guarded { shared.keys.read().token.clone() } else { None };
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(shared, token.as_ref(), &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.requested() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
            drop(slot);
        });
    }
}

/// The answer to one request.
async fn respond(
    shared: Arc<Shared>,
    guard: Option<&Token>,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = guard {
        if !presents(request, token) {
            let mut refused = reply(
                StatusCode::UNAUTHORIZED,
                JSON,
                json!({"error": "this monitor wants the tracker's token: Authorization: Bearer <token>"})
                    .to_string(),
            );
            refused.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return refused;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, JSON, json!({"error": "only GET"}).to_string());
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, metrics::CONTENT_TYPE, shared.metrics.encode(now(&shared))),
        "/healthz" => reply(StatusCode::OK, JSON, json!({"status": "serving"}).to_string()),
        "/readyz" => match not_ready(&shared) {
            None => reply(StatusCode::OK, JSON, json!({"ready": true}).to_string()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                JSON,
                json!({"ready": false, "reason": why}).to_string(),
            ),
        },
        "/stats" => reply(StatusCode::OK, JSON, shared.stats().to_json()),
        // Milliseconds of work with thousands of nodes: off the threads that serve them.
        "/connections" => match tokio::task::spawn_blocking(move || shared.connections.to_json()).await {
            Ok(listed) => reply(StatusCode::OK, JSON, listed),
            Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, JSON, json!({"error": "the listing failed"}).to_string()),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            JSON,
            json!({"error": "no such page", "pages": ["/metrics", "/healthz", "/readyz", "/stats", "/connections"]})
                .to_string(),
        ),
    }
}

/// Whether `request` carries `Authorization: Bearer <token>` with the tracker's token,
/// compared in constant time.
fn presents(request: &Request<Incoming>, token: &Token) -> bool {
    let Some(value) = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else { return false };
    Token::new(given.trim()).is_ok_and(|given| token.matches(&given))
}

/// Why the tracker should not be sent nodes now; `None` when it should.
fn not_ready(shared: &Shared) -> Option<&'static str> {
    if shared.is_draining() {
        return Some("draining: the tracker is stopping");
    }
    match shared.peers.standing() {
        Some((_, false)) => Some("cut off from its cluster: it cannot renew its lease on names"),
        _ => None,
    }
}

/// The gauges as they are now.
fn now(shared: &Shared) -> Now {
    let (servers, clients) = *shared.counts.borrow();
    Now {
        servers,
        clients,
        open_requests: shared.requests.lock().len(),
        connections: shared.config.max_connections - shared.limit.available_permits(),
        cluster: shared.peers.standing(),
        draining: shared.is_draining(),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
