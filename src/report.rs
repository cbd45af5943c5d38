//! What a simulation decided, and its summary for people: totals, latency, wall time, each
//! server's number, each client's requests and answers.
//!
//! The summary is computed here, from the compact report (answers that list the same servers
//! share one list), so that a run of thousands of nodes summarises in milliseconds; it stays
//! short at any n: long lists are cut, with a count of what was left out.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{End, Name, ReplyMode, NUMBERS};
use crate::simulation::SimulationConfig;

/// Servers and clients listed by name in a summary; past it, a count of the rest.
const LISTED_NODES: usize = 20;
/// Requests shown on one client's line of a summary.
const LISTED_REQUESTS: usize = 5;
/// Servers named in one answer of a summary.
const LISTED_MATCHES: usize = 4;

/// One server of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    pub name: Name,
    pub number: u8,
}

/// One request of the run, as the client saw it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// 1-based round.
    pub round: usize,
    pub client: Name,
    pub number: u8,
    /// The matching servers, in index order. Shared between requests with the same answer:
    /// a run of thousands of nodes has few distinct answers and millions of names in them.
    pub servers: Arc<[Name]>,
    pub end: End,
    pub elapsed: Duration,
}

/// Everything a run decided.
#[derive(Clone, Debug)]
pub struct Report {
    pub config: SimulationConfig,
    /// The servers, in index order.
    pub servers: Vec<ServerRecord>,
    /// The requests, round by round, each round in the clients' index order.
    pub requests: Vec<RequestRecord>,
    pub late_replies: u64,
    pub duration: Duration,
    /// From the start until every node was connected and registered.
    pub startup: Duration,
    /// From the last answer until every socket was closed and every task had ended.
    pub closing: Duration,
    /// Open file descriptors of the process once every node was connected.
    pub open_files: u64,
}

/// The figures a summary starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub requests: usize,
    pub matched: usize,
    pub no_match: usize,
    /// Answers that miss a server holding the number, or list one that does not.
    pub incomplete: usize,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
}

impl Report {
    /// The summary's first figures.
    pub fn totals(&self) -> Totals {
        let mut latencies: Vec<Duration> = self.requests.iter().map(|r| r.elapsed).collect();
        latencies.sort_unstable();
        let matched = self.requests.iter().filter(|r| !r.servers.is_empty()).count();
        Totals {
            requests: self.requests.len(),
            matched,
            no_match: self.requests.len() - matched,
            incomplete: self.incomplete_answers(),
            latency_p50: quantile(&latencies, 0.50),
            latency_p99: quantile(&latencies, 0.99),
        }
    }

    /// How many answers differ from the servers that hold the number asked for. Each
    /// distinct answer list is compared once.
    pub fn incomplete_answers(&self) -> usize {
        let mut holding: Vec<Vec<&Name>> = vec![Vec::new(); usize::from(*NUMBERS.end()) + 1];
        for server in &self.servers {
            holding[usize::from(server.number)].push(&server.name);
        }
        for list in &mut holding {
            list.sort_unstable_by(|a, b| a.index_order(b));
        }
        let mut checked: HashMap<(*const Name, u8), bool> = HashMap::new();
        let mut right = |r: &RequestRecord| {
            *checked
                .entry((r.servers.as_ptr(), r.number))
                .or_insert_with(|| r.servers.iter().eq(holding[usize::from(r.number)].iter().copied()))
        };
        self.requests.iter().filter(|r| !right(r)).count()
    }

    /// The summary text, as printed after a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> fmt::Result {
        let t = self.totals();
        let config = &self.config;
        let mode = if config.replies == ReplyMode::All { ", early" } else { "" };
        writeln!(
            out,
            "Summary: n={}, {}, {} requests: {} matched, {} no match, {}; {:.2} s",
            config.n,
            plural(config.rounds, "round"),
            t.requests,
            t.matched,
            t.no_match,
            plural_late(self.late_replies),
            self.duration.as_secs_f64()
        )?;
        write!(
            out,
            "  deadline {} s{mode}; latency p50 {:.1} ms, p99 {:.1} ms",
            config.deadline.as_secs_f64(),
            t.latency_p50.as_secs_f64() * 1e3,
            t.latency_p99.as_secs_f64() * 1e3
        )?;
        if t.incomplete > 0 {
            write!(out, "; {} answers incomplete", t.incomplete)?;
        }
        if self.servers.len() > LISTED_NODES {
            write!(out, "\n  servers holding each number:")?;
            for number in NUMBERS {
                let count = self.servers.iter().filter(|s| s.number == number).count();
                let sep = if number == *NUMBERS.start() { " " } else { ", " };
                write!(out, "{sep}{number}: {count}")?;
            }
        }
        self.write_servers(out)?;
        self.write_clients(out)
    }

    fn write_servers(&self, out: &mut String) -> fmt::Result {
        let shown = &self.servers[..self.servers.len().min(LISTED_NODES)];
        // Matches of the servers shown, counted once per distinct answer list.
        let mut lists: HashMap<*const Name, (&[Name], usize)> = HashMap::new();
        for r in &self.requests {
            lists.entry(r.servers.as_ptr()).or_insert((&r.servers, 0)).1 += 1;
        }
        let mut matches: HashMap<&Name, usize> = shown.iter().map(|s| (&s.name, 0)).collect();
        for (list, times) in lists.values() {
            for name in *list {
                if let Some(count) = matches.get_mut(name) {
                    *count += times;
                }
            }
        }
        write!(out, "\n  servers:")?;
        for server in shown {
            let count = plural(matches[&server.name], "request");
            write!(out, "\n    {:<6} number {:>2}, matched {count}", server.name.as_str(), server.number)?;
        }
        more(out, self.servers.len() - shown.len())
    }

    fn write_clients(&self, out: &mut String) -> fmt::Result {
        let n = self.config.n;
        write!(out, "\n  clients (number asked → servers that matched):")?;
        // Requests are kept round by round in the clients' index order: client i's requests
        // are every n-th from i.
        for i in 0..n.min(LISTED_NODES) {
            let asked: Vec<&RequestRecord> = self.requests.iter().skip(i).step_by(n).collect();
            let Some(first) = asked.first() else { continue };
            write!(out, "\n    {:<6} ", first.client.as_str())?;
            let shown = if asked.len() > LISTED_REQUESTS + 1 { LISTED_REQUESTS } else { asked.len() };
            for (k, r) in asked[..shown].iter().enumerate() {
                if k > 0 {
                    out.push_str("; ");
                }
                write!(out, "{} → ", r.number)?;
                write_names(out, &r.servers)?;
            }
            if asked.len() > shown {
                write!(out, "; … and {} more requests", asked.len() - shown)?;
            }
        }
        more(out, n.saturating_sub(LISTED_NODES))
    }
}

/// "none", or the first few names and how many more.
fn write_names(out: &mut String, servers: &[Name]) -> fmt::Result {
    if servers.is_empty() {
        out.push_str("none");
        return Ok(());
    }
    // "… and 1 more" would take the room of the name it hides.
    let shown = if servers.len() > LISTED_MATCHES + 1 { LISTED_MATCHES } else { servers.len() };
    for (k, name) in servers[..shown].iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        out.push_str(name.as_str());
    }
    if servers.len() > shown {
        write!(out, " … and {} more", servers.len() - shown)?;
    }
    Ok(())
}

fn more(out: &mut String, left: usize) -> fmt::Result {
    if left > 0 {
        write!(out, "\n    ... and {left} more")?;
    }
    Ok(())
}

fn plural_late(count: u64) -> String {
    format!("{count} late {}", if count == 1 { "reply" } else { "replies" })
}

fn plural(count: usize, word: &str) -> String {
    format!("{count} {word}{}", if count == 1 { "" } else { "s" })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Rounded to the nearest rank; the index is within the slice by construction.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    /// A report of `n` servers and clients: server i holds `i % 10 + 1`, and each request's
    /// answer lists exactly the servers holding its number.
    fn report(n: usize, rounds: usize) -> Report {
        let config = SimulationConfig::new(n as i128, rounds as i128, 2.0, None, false).unwrap();
        let servers: Vec<ServerRecord> = (1..=n)
            .map(|i| ServerRecord { name: name(&format!("S{i}")), number: (i % 10 + 1) as u8 })
            .collect();
        let lists: Vec<Arc<[Name]>> = (0..=10u8)
            .map(|k| servers.iter().filter(|s| s.number == k).map(|s| s.name.clone()).collect())
            .collect();
        let mut requests = Vec::new();
        for round in 1..=rounds {
            for c in 1..=n {
                let number = ((c + round) % 10 + 1) as u8;
                requests.push(RequestRecord {
                    round,
                    client: name(&format!("C{c}")),
                    number,
                    servers: lists[usize::from(number)].clone(),
                    end: End::Deadline,
                    elapsed: Duration::from_millis(2000 + c as u64),
                });
            }
        }
        Report {
            config,
            servers,
            requests,
            late_replies: 0,
            duration: Duration::from_secs_f64(10.5),
            startup: Duration::ZERO,
            closing: Duration::ZERO,
            open_files: 0,
        }
    }

    #[test]
    fn a_small_run_lists_every_server_and_answer() {
        let text = report(2, 1).summary();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Summary: n=2, 1 round, 2 requests: 1 matched, 1 no match, 0 late replies; 10.50 s"
        );
        assert_eq!(lines[1], "  deadline 2 s; latency p50 2002.0 ms, p99 2002.0 ms");
        assert_eq!(lines[2], "  servers:");
        assert_eq!(lines[3], "    S1     number  2, matched 0 requests");
        assert_eq!(lines[4], "    S2     number  3, matched 1 request");
        assert_eq!(lines[5], "  clients (number asked → servers that matched):");
        assert_eq!(lines[6], "    C1     3 → S2");
        assert_eq!(lines[7], "    C2     4 → none");
        assert_eq!(lines.len(), 8);
        assert_eq!(report(2, 1).totals().incomplete, 0);
    }

    #[test]
    fn a_large_run_stays_short_and_counts_what_it_leaves_out() {
        let big = report(4000, 30);
        let text = big.summary();
        assert!(text.lines().count() < 60, "{} lines", text.lines().count());
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        assert!(text.contains("servers holding each number: 1: 400, 2: 400,"));
        assert!(text.contains("    ... and 3980 more"));
        assert!(text.contains("S6, S16, S26, S36 … and 396 more"), "{text}");
        assert!(text.contains("; … and 25 more requests"));
        assert_eq!(big.totals().incomplete, 0);
    }

    #[test]
    fn one_late_reply_is_one_reply() {
        let mut run = report(2, 1);
        run.late_replies = 1;
        assert!(run.summary().lines().next().unwrap().contains(", 1 late reply; "));
        run.late_replies = 2;
        assert!(run.summary().lines().next().unwrap().contains(", 2 late replies; "));
    }

    #[test]
    fn an_answer_that_misses_a_server_is_counted() {
        let mut run = report(30, 2);
        let short: Arc<[Name]> = run.requests[0].servers[1..].into();
        run.requests[0].servers = short;
        assert_eq!(run.incomplete_answers(), 1);
        assert!(run.summary().contains("; 1 answers incomplete"));
    }

    #[test]
    fn matches_per_server_count_every_request_that_listed_it() {
        let run = report(20, 3);
        let s1 = &run.servers[0];
        let expected = run.requests.iter().filter(|r| r.servers.contains(&s1.name)).count();
        let line = format!("    S1     number {:>2}, matched {}", s1.number, plural(expected, "request"));
        assert!(run.summary().contains(&line), "{line}");
    }
}
