//! A client's side of the protocol as state, with no I/O in it (as rustls and quinn-proto
//! keep theirs): the ids of its requests, each open request's waiter, the `CANCEL`s owed to
//! the tracker, whether the connection is broken and why, and the tracker's bytes split into
//! lines and routed to the requests they settle. The bytes stay in their driver's buffer
//! (one per connection, where its reads land), and the session takes whole lines from it.
//!
//! Two drivers move the bytes: the blocking client ([`crate::client`], on the runtime) and
//! the asyncio client (`src/python/aio_client.rs`, on the event loop's thread). A waiter is
//! whatever its driver wakes: a oneshot for the one, a future and its timer for the other.
//! The rules live here once and are tested without a socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use crate::client::{AnswerCache, Received};
use crate::error::Error;
use crate::hash::FastMap;
use crate::protocol::{self, End, Message, Name, MAX_LINE};

/// How much longer than the tracker's deadline a client waits for an answer before giving
/// up on its own, so that it hears the tracker's answer rather than racing it.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// How long a caller waits for an answer when the tracker's deadline is `deadline`: half as
/// long again (the tracker may be busy), plus [`ANSWER_MARGIN`].
pub fn patience(deadline: Duration) -> Duration {
    deadline + deadline / 2 + ANSWER_MARGIN
}

/// What the tracker's lines did to the open requests.
pub enum Settled<W> {
    /// One request's answer (how it ended, and the servers), for its waiter.
    One(W, Result<(End, Arc<[Name]>), Error>),
    /// The connection cannot go on: every waiter, and why.
    All(Vec<W>, Error),
}

/// One connection's protocol state, for a client.
pub struct Session<W> {
    next_id: u64,
    /// Each open request's waiter, by id: registered before its line is written, so that no
    /// answer, however fast, finds nothing.
    open: FastMap<u64, W>,
    /// `CANCEL` lines for requests given up, not yet written.
    owed: Vec<u8>,
    /// Set once the connection cannot carry another request: why.
    broken: Option<Error>,
    /// Server lists parsed already, shared with other clients.
    answers: Option<Arc<AnswerCache>>,
}

impl<W> Default for Session<W> {
    fn default() -> Self {
        Session::new()
    }
}

impl<W> Session<W> {
    /// A session on a newly registered connection.
    pub fn new() -> Session<W> {
        Session::starting_at(1)
    }

    /// A session on a connection made again, whose new requests take ids from `next_id` on
    /// (so that a caller's id stays its own across connections).
    pub fn starting_at(next_id: u64) -> Session<W> {
        Session { next_id, open: FastMap::default(), owed: Vec::new(), broken: None, answers: None }
    }

    /// Shares `answers` with other clients, so that a server list any of them has parsed is
    /// not parsed again.
    pub fn share_answers(&mut self, answers: Arc<AnswerCache>) {
        self.answers = Some(answers);
    }

    /// Opens a request for `number`, with the waiter its answer goes to. Appends to `out`
    /// what to write: the `CANCEL`s owed, then its `FIND`.
    ///
    /// # Errors
    /// Why the connection is broken, if it is (nothing is opened then).
    pub fn ask(&mut self, number: u8, waiter: W, out: &mut Vec<u8>) -> Result<u64, Error> {
        if let Some(broken) = &self.broken {
            return Err(broken.same_failure());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, waiter);
        out.append(&mut self.owed);
        protocol::encode(&Message::Find { id, number }, out);
        Ok(id)
    }

    /// Opens again, on this connection, request `id` for `number` that a lost connection
    /// cut off (an id below [`Session::next_id`], never used on this connection). Appends
    /// its `FIND` to `out`.
    ///
    /// # Errors
    /// Why the connection is broken, if it is.
    pub fn reopen(&mut self, id: u64, number: u8, waiter: W, out: &mut Vec<u8>) -> Result<(), Error> {
        if let Some(broken) = &self.broken {
            return Err(broken.same_failure());
        }
        self.open.insert(id, waiter);
        protocol::encode(&Message::Find { id, number }, out);
        Ok(())
    }

    /// The caller of request `id` gave up (its time ran out, it was cancelled): its waiter,
    /// if it was still waiting, and a `CANCEL` is owed to the tracker so that it frees the
    /// request. A request already answered (its answer raced the giving up) owes nothing.
    pub fn give_up(&mut self, id: u64) -> Option<W> {
        let waiter = self.open.remove(&id)?;
        if self.broken.is_none() {
            protocol::encode(&Message::Cancel { id }, &mut self.owed);
        }
        Some(waiter)
    }

    /// The `CANCEL` lines owed, to be written now; [`Session::owe`] takes back what could not
    /// be.
    pub fn take_owed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.owed)
    }

    /// Lines that could not be written now: they go before the next request's.
    pub fn owe(&mut self, mut lines: Vec<u8>) {
        lines.append(&mut self.owed);
        self.owed = lines;
    }

    /// The id the next request will take.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether request `id` still waits for its answer.
    pub fn is_open(&self, id: u64) -> bool {
        self.open.contains_key(&id)
    }

    /// Requests waiting now.
    pub fn open_requests(&self) -> usize {
        self.open.len()
    }

    /// Why the connection cannot carry requests, if it cannot.
    pub fn broken(&self) -> Option<Error> {
        self.broken.as_ref().map(Error::same_failure)
    }

    /// The next request settled by the tracker's bytes in `inbuf` (read and not yet taken
    /// as lines; the line taken is consumed); `None` when it holds no more whole line. An answer to a request given up is dropped. A line that is not an answer (an
    /// `ERROR`, `BYE`, anything malformed) ends the connection for every request.
    pub fn next_settled(&mut self, inbuf: &mut BytesMut) -> Option<Settled<W>> {
        loop {
            if self.broken.is_some() {
                return None;
            }
            let (received, used) = match protocol::split_line(inbuf, MAX_LINE) {
                Ok(Some((line, used))) => {
                    let received = match &self.answers {
                        Some(cache) => cache.read(line),
                        None => protocol::parse(line).map(Received::from),
                    };
                    (received, used)
                }
                Ok(None) => {
                    if inbuf.is_empty() {
                        // Nothing left over: give the memory back while the connection
                        // waits (thousands of clients each hold a buffer otherwise).
                        *inbuf = BytesMut::new();
                    }
                    return None;
                }
                Err(e) => return Some(self.fail(Error::Protocol(e))),
            };
            inbuf.advance(used);
            match received {
                Ok(Received::Answer { id, end, servers }) => {
                    if let Some(waiter) = self.open.remove(&id) {
                        return Some(Settled::One(waiter, Ok((end, servers))));
                    }
                }
                // The tracker never refuses a request on its own (it reads more slowly
                // instead), so an error is about the connection.
                Ok(Received::Other(Message::Error { code, text })) => {
                    return Some(self.fail(Error::Refused { code, text }));
                }
                Ok(Received::Other(Message::Bye)) => return Some(self.fail(Error::Closed)),
                Ok(Received::Other(other)) => {
                    return Some(self.fail(Error::Unexpected(format!("{other:?} instead of ANSWER"))));
                }
                Err(e) => return Some(self.fail(Error::Protocol(e))),
            }
        }
    }

    /// The connection has failed (or its owner closed it) with `e`: every open request
    /// settles with it, and so does every later one.
    pub fn fail(&mut self, e: Error) -> Settled<W> {
        let waiters = std::mem::take(&mut self.open).into_values().collect();
        self.owed.clear();
        let failure = e.same_failure();
        self.broken.get_or_insert(e);
        Settled::All(waiters, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    type Test = Session<&'static str>;

    fn ask(session: &mut Test, number: u8, waiter: &'static str) -> (u64, String) {
        let mut out = Vec::new();
        let id = session.ask(number, waiter, &mut out).expect("open");
        (id, String::from_utf8(out).expect("text"))
    }

    fn one(settled: Option<Settled<&'static str>>) -> (&'static str, Vec<String>) {
        match settled {
            Some(Settled::One(waiter, Ok((_, servers)))) => {
                (waiter, servers.iter().map(|s| s.as_str().to_owned()).collect())
            }
            _ => panic!("not one answer"),
        }
    }

    #[test]
    fn answers_out_of_order_reach_their_own_callers() {
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        let (a, line) = ask(&mut session, 4, "a");
        assert_eq!(line, format!("FIND {a} 4\n"));
        let (b, _) = ask(&mut session, 7, "b");
        inbuf.extend_from_slice(format!("ANSWER {b} replied S2\nANSWER {a} deadline\n").as_bytes());
        assert_eq!(one(session.next_settled(&mut inbuf)), ("b", vec!["S2".to_owned()]));
        assert_eq!(one(session.next_settled(&mut inbuf)), ("a", vec![]));
        assert!(session.next_settled(&mut inbuf).is_none() && session.open_requests() == 0);
    }

    #[test]
    fn a_line_split_across_reads_is_taken_only_when_whole() {
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        let (id, _) = ask(&mut session, 3, "a");
        let line = format!("ANSWER {id} replied S1 S10\n");
        for (i, byte) in line.bytes().enumerate() {
            inbuf.extend_from_slice(&[byte]);
            let settled = session.next_settled(&mut inbuf);
            if i + 1 < line.len() {
                assert!(settled.is_none(), "settled after {} of {} bytes", i + 1, line.len());
            } else {
                assert_eq!(one(settled), ("a", vec!["S1".to_owned(), "S10".to_owned()]));
            }
        }
    }

    #[test]
    fn a_cancel_racing_its_answer_owes_nothing_and_a_late_answer_is_dropped() {
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        let (answered, _) = ask(&mut session, 1, "answered");
        let (given_up, _) = ask(&mut session, 2, "given up");
        inbuf.extend_from_slice(format!("ANSWER {answered} replied S1\n").as_bytes());
        assert_eq!(one(session.next_settled(&mut inbuf)).0, "answered");
        // Its answer came first: giving up now has no request to free.
        assert_eq!(session.give_up(answered), None);
        assert!(session.take_owed().is_empty());
        // Given up before its answer: the tracker is told, and the answer that comes anyway
        // goes nowhere.
        assert_eq!(session.give_up(given_up), Some("given up"));
        let owed = session.take_owed();
        assert_eq!(owed, format!("CANCEL {given_up}\n").into_bytes());
        inbuf.extend_from_slice(format!("ANSWER {given_up} deadline\n").as_bytes());
        assert!(session.next_settled(&mut inbuf).is_none());
        // What could not be written goes before the next request's line.
        session.owe(owed);
        let (next, line) = ask(&mut session, 5, "next");
        assert_eq!(line, format!("CANCEL {given_up}\nFIND {next} 5\n"));
    }

    #[test]
    fn a_connection_that_breaks_settles_every_open_request_and_refuses_new_ones() {
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        ask(&mut session, 1, "a");
        ask(&mut session, 2, "b");
        inbuf.extend_from_slice(b"ERROR slow-consumer you read nothing for 10s\nANSWER 1 replied S1\n");
        match session.next_settled(&mut inbuf) {
            Some(Settled::All(mut waiters, Error::Refused { code, .. })) => {
                waiters.sort_unstable();
                assert_eq!((waiters, code), (vec!["a", "b"], ErrorCode::SlowConsumer));
            }
            _ => panic!("not a failure of all"),
        }
        // Nothing after the error counts, and nothing new opens.
        assert!(session.next_settled(&mut inbuf).is_none());
        assert!(matches!(session.broken(), Some(Error::Refused { .. })));
        assert!(session.ask(3, "c", &mut Vec::new()).is_err());
        // A BYE or a closed socket ends it the same way.
        let (mut session, mut inbuf) = (Test::new(), BytesMut::from(&b"BYE\n"[..]));
        ask(&mut session, 1, "a");
        assert!(
            matches!(session.next_settled(&mut inbuf), Some(Settled::All(w, Error::Closed)) if w == vec!["a"])
        );
        let mut session = Test::new();
        ask(&mut session, 1, "a");
        assert!(matches!(session.fail(Error::Closed), Settled::All(w, Error::Closed) if w == vec!["a"]));
    }

    #[test]
    fn a_line_too_long_or_malformed_breaks_the_connection() {
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        ask(&mut session, 1, "a");
        inbuf.extend_from_slice(&vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(session.next_settled(&mut inbuf), Some(Settled::All(_, Error::Protocol(_)))));
        let (mut session, mut inbuf) = (Test::new(), BytesMut::new());
        ask(&mut session, 1, "a");
        inbuf.extend_from_slice(b"WELCOME C1 2000 matches\n");
        assert!(matches!(session.next_settled(&mut inbuf), Some(Settled::All(_, Error::Unexpected(_)))));
    }

    #[test]
    fn a_request_cut_off_is_opened_again_under_its_id_on_the_next_connection() {
        let (mut lost, mut inbuf) = (Test::new(), BytesMut::new());
        let (id, _) = ask(&mut lost, 6, "a");
        let Settled::All(waiters, _) = lost.fail(Error::Closed) else { panic!("not all") };
        let mut again = Test::starting_at(lost.next_id());
        let mut out = Vec::new();
        for waiter in waiters {
            again.reopen(id, 6, waiter, &mut out).expect("open");
        }
        assert_eq!(out, format!("FIND {id} 6\n").into_bytes());
        let (next, _) = ask(&mut again, 2, "b");
        assert!(next > id, "new requests take new ids");
        inbuf.extend_from_slice(format!("ANSWER {id} replied S6\n").as_bytes());
        assert_eq!(one(again.next_settled(&mut inbuf)), ("a", vec!["S6".to_owned()]));
    }

    #[test]
    fn the_wait_is_the_deadline_and_a_half_plus_the_margin() {
        assert_eq!(patience(Duration::from_secs(2)), Duration::from_secs(4));
        assert_eq!(patience(Duration::from_millis(200)), Duration::from_millis(1300));
    }
}
