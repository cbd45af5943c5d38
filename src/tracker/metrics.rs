//! The tracker's figures for Prometheus, in its text format: counted where they happen, and
//! the gauges read from the tracker's own state when scraped, so nothing is kept twice.
//!
//! Names follow Prometheus' conventions: one `matchtracker_` prefix, base units (seconds),
//! `_total` on counters (added by `prometheus-client`, which panics in debug builds if the
//! name has it already), labels only from small fixed sets (how a request ended, a protocol
//! error code, a role), never a node's name or a request's id. The request path pays one
//! atomic add per request and one short lock for its duration; the series it touches are
//! made once, at start, so no label lookup happens per request.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::{End, ErrorCode};

/// The content type of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Bucket bounds for answers that come early (every server replied), in seconds: from half a
/// millisecond, each 2.5 times the last, below half the deadline.
const EARLY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Bounds around the deadline, as seconds after it: most requests in the default mode end
/// exactly at it, a few milliseconds after (the timer, writing the answer); these tell an
/// answer on time from one that was held up.
const AFTER_DEADLINE: [f64; 4] = [0.005, 0.025, 0.1, 0.5];

/// A label set: pairs of a label and its value, both from fixed sets.
type Labels = Vec<(&'static str, &'static str)>;

/// Why a node's connection was closed by the tracker, as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It stopped reading, and its lines piled up.
    SlowConsumer,
    /// Its socket failed or TCP keepalive found it gone.
    ConnectionLost,
    /// It sent a line it may not, or left one half-sent.
    ProtocolError,
    /// This tracker lost its place in its cluster and let its nodes go.
    CutOff,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow-consumer",
            DropReason::ConnectionLost => "connection-lost",
            DropReason::ProtocolError => "protocol-error",
            DropReason::CutOff => "cut-off",
        }
    }
}

/// The gauges, read from the tracker when scraped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Now {
    pub servers: usize,
    pub clients: usize,
    pub open_requests: usize,
    pub connections: usize,
    /// In a cluster: the other trackers heard from lately, and whether this one may write
    /// names (holds its lease).
    pub cluster: Option<(usize, bool)>,
    pub draining: bool,
}

/// Every metric of one tracker.
pub struct Metrics {
    registry: Registry,
    /// By how the request ended, then by whether anything matched.
    requests: [[Counter; 2]; 3],
    durations: [Histogram; 3],
    peer_requests: Counter,
    cancels: Counter,
    late_replies: Counter,
    errors_sent: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    tls_failed: Counter,
    refused_at_limit: Counter,
    nodes: Family<Labels, Gauge>,
    reloads: Family<Labels, Counter>,
    open_requests: Gauge,
    connections: Gauge,
    draining: Gauge,
    cluster_peers: Gauge,
    cluster_standing: Gauge,
}

const ENDS: [End; 3] = [End::Replied, End::Deadline, End::NoServers];

fn end_index(end: End) -> usize {
    match end {
        End::Replied => 0,
        End::Deadline => 1,
        End::NoServers => 2,
    }
}

/// The histogram's bounds for a tracker with `deadline`.
fn buckets(deadline: Duration) -> Vec<f64> {
    let deadline = deadline.as_secs_f64();
    let mut bounds: Vec<f64> = EARLY_BUCKETS.iter().copied().filter(|&b| b < deadline * 0.9).collect();
    bounds.push(deadline * 0.9);
    bounds.push(deadline);
    bounds.extend(AFTER_DEADLINE.iter().map(|after| deadline + after));
    // To the microsecond, so that 0.2 + 0.005 reads 0.205 in the `le` label.
    bounds.iter().map(|b| (b * 1e6).round() / 1e6).collect()
}

impl Metrics {
    /// The metrics of a tracker with `deadline`, in a cluster if `cluster`.
    pub fn new(deadline: Duration, cluster: bool) -> Metrics {
        let mut registry = Registry::with_prefix("matchtracker");
        let requests_family = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests clients asked of this tracker, by how they ended and whether any server matched",
            requests_family.clone(),
        );
        let requests = ENDS.map(|end| {
            ["no", "yes"].map(|matched| {
                if end == End::NoServers && matched == "yes" {
                    // Nobody was asked, so nothing matched: a series that would always be 0.
                    return Counter::default();
                }
                requests_family.get_or_create(&vec![("end", end.as_str()), ("matched", matched)]).clone()
            })
        });
        let bounds = buckets(deadline);
        let durations_family =
            Family::<Labels, Histogram, _>::new_with_constructor(move || Histogram::new(bounds.clone()));
        registry.register_with_unit(
            "request_duration",
            "From reading a client's request to writing its answer, by how it ended",
            Unit::Seconds,
            durations_family.clone(),
        );
        let durations = ENDS.map(|end| durations_family.get_or_create(&vec![("end", end.as_str())]).clone());
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let peer_requests = counter(
            &mut registry,
            "peer_requests",
            "Requests other trackers of the cluster passed on to this tracker's servers",
        );
        let cancels = counter(&mut registry, "cancels", "Requests their client cancelled before the answer");
        let late_replies =
            counter(&mut registry, "late_replies", "Replies that came after their request was answered");
        let errors_sent = Family::<Labels, Counter>::default();
        registry.register("errors_sent", "ERROR lines sent to nodes, by code", errors_sent.clone());
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "nodes_dropped",
            "Nodes whose connection the tracker closed, by reason",
            dropped.clone(),
        );
        let tls_failed = counter(
            &mut registry,
            "tls_handshakes_failed",
            "Connections closed because their TLS handshake failed or took too long",
        );
        let refused_at_limit = counter(
            &mut registry,
            "connections_refused",
            "Connections refused because the tracker had as many as it takes",
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of the TLS certificate and the token, by result",
            reloads.clone(),
        );
        let nodes = Family::<Labels, Gauge>::default();
        registry.register("nodes", "Nodes registered now, by role", nodes.clone());
        let open_requests = gauge(&mut registry, "open_requests", "Requests waiting for replies now");
        let connections = gauge(&mut registry, "connections", "Connections open now, greeted or not");
        let draining =
            gauge(&mut registry, "draining", "1 while the tracker is stopping and answers what is open");
        let (cluster_peers, cluster_standing) = (Gauge::default(), Gauge::default());
        if cluster {
            registry.register(
                "cluster_peers",
                "Other trackers of the cluster heard from lately",
                cluster_peers.clone(),
            );
            registry.register(
                "cluster_standing",
                "1 while this tracker holds its lease in the cluster and may give out names",
                cluster_standing.clone(),
            );
        }
        // Every series of a fixed label set exists from the start at 0, so that a rate over
        // it is defined before the first event.
        for (code, _) in ErrorCode::WORDS {
            let _ = errors_sent.get_or_create(&vec![("code", code.as_str())]);
        }
        for reason in [
            DropReason::SlowConsumer,
            DropReason::ConnectionLost,
            DropReason::ProtocolError,
            DropReason::CutOff,
        ] {
            let _ = dropped.get_or_create(&vec![("reason", reason.as_str())]);
        }
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&vec![("result", result)]);
        }
        let build = Family::<Labels, Gauge>::default();
        registry.register("build_info", "The version of matchtracker, as a label; always 1", build.clone());
        build.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
        Metrics {
            registry,
            requests,
            durations,
            peer_requests,
            cancels,
            late_replies,
            errors_sent,
            dropped,
            tls_failed,
            refused_at_limit,
            nodes,
            reloads,
            open_requests,
            connections,
            draining,
            cluster_peers,
            cluster_standing,
        }
    }

    /// A client's request answered after `took`.
    pub fn answered(&self, end: End, matched: bool, took: Duration) {
        let end = end_index(end);
        self.requests[end][usize::from(matched)].inc();
        self.durations[end].observe(took.as_secs_f64());
    }

    pub fn peer_request(&self) {
        self.peer_requests.inc();
    }

    pub fn cancelled(&self) {
        self.cancels.inc();
    }

    pub fn late_reply(&self) {
        self.late_replies.inc();
    }

    pub fn error_sent(&self, code: ErrorCode) {
        self.errors_sent.get_or_create(&vec![("code", code.as_str())]).inc();
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&vec![("reason", reason.as_str())]).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads.get_or_create(&vec![("result", if ok { "ok" } else { "failed" })]).inc();
    }

    pub fn tls_failed(&self) {
        self.tls_failed.inc();
    }

    /// Replies dropped as late so far.
    pub fn late_replies(&self) -> u64 {
        self.late_replies.get()
    }

    /// TLS handshakes failed so far.
    pub fn tls_failures(&self) -> u64 {
        self.tls_failed.get()
    }

    pub fn refused_at_limit(&self) {
        self.refused_at_limit.inc();
    }

    /// The metrics in Prometheus' text format, with the gauges set to `now`.
    pub fn encode(&self, now: Now) -> String {
        let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.nodes.get_or_create(&vec![("role", "server")]).set(gauge(now.servers));
        self.nodes.get_or_create(&vec![("role", "client")]).set(gauge(now.clients));
        self.open_requests.set(gauge(now.open_requests));
        self.connections.set(gauge(now.connections));
        self.draining.set(i64::from(now.draining));
        if let Some((peers, standing)) = now.cluster {
            self.cluster_peers.set(gauge(peers));
            self.cluster_standing.set(i64::from(standing));
        }
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buckets_resolve_early_answers_and_the_deadline() {
        let bounds = buckets(Duration::from_secs(2));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert!(bounds.contains(&2.0) && bounds.contains(&2.005) && bounds[0] == 0.0005, "{bounds:?}");
        // A short deadline keeps only the early bounds below it.
        let short = buckets(Duration::from_millis(200));
        assert!(short.windows(2).all(|w| w[0] < w[1]), "{short:?}");
        assert!(short.contains(&0.2) && short.contains(&0.205) && !short.contains(&0.25), "{short:?}");
    }

    #[test]
    fn counted_figures_come_out_under_their_names() {
        let metrics = Metrics::new(Duration::from_secs(2), false);
        metrics.answered(End::Deadline, true, Duration::from_millis(2001));
        metrics.answered(End::NoServers, false, Duration::ZERO);
        metrics.error_sent(ErrorCode::NameTaken);
        metrics.dropped(DropReason::SlowConsumer);
        let text = metrics.encode(Now { servers: 3, clients: 2, ..Now::default() });
        for line in [
            "matchtracker_requests_total{end=\"deadline\",matched=\"yes\"} 1",
            "matchtracker_requests_total{end=\"noservers\",matched=\"no\"} 1",
            "matchtracker_requests_total{end=\"replied\",matched=\"no\"} 0",
            "matchtracker_request_duration_seconds_bucket{end=\"deadline\",le=\"2.005\"} 1",
            "matchtracker_request_duration_seconds_bucket{end=\"deadline\",le=\"2\"} 0",
            "matchtracker_errors_sent_total{code=\"name-taken\"} 1",
            "matchtracker_nodes_dropped_total{reason=\"slow-consumer\"} 1",
            "matchtracker_nodes{role=\"server\"} 3",
            "matchtracker_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("matchtracker_cluster_"), "a lone tracker has no cluster figures");
    }
}
