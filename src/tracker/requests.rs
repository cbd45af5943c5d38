//! The open requests: for each, whom it still waits for and who has matched. A request is
//! opened before its query goes out, so no reply however fast can find nothing, and closed
//! when its answer goes out, which is what makes any later reply late.
//!
//! Pure state with no I/O; the tracker holds it under one short lock.

use tokio::sync::mpsc;

use super::registry::Slots;
use crate::hash::FastMap;
use crate::protocol::Name;

/// One open request.
pub struct Pending {
    /// The asking client.
    pub client: Name,
    /// The servers asked that have not replied yet.
    waiting: Slots,
    /// The servers that replied `MATCH`, while they are registered.
    pub matched: Slots,
    /// The servers that replied `MATCH` and have left since.
    pub departed: Vec<Name>,
    /// Fired when the last server asked has replied, to end the wait before the deadline.
    done: Option<Done>,
}

/// Which part of a client's request has heard from everyone it asked: this tracker's
/// servers, or the other trackers of its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Local,
    Peers,
}

/// Where to say that one part of a request is complete: the channel of the connection that
/// waits for it, and the request's key there. Fired at most once.
pub struct Done {
    to: mpsc::UnboundedSender<(u64, Part)>,
    key: u64,
    part: Part,
}

impl Done {
    /// Says part `part` of request `key` is complete on `to`, when fired.
    pub fn new(to: mpsc::UnboundedSender<(u64, Part)>, key: u64, part: Part) -> Done {
        Done { to, key, part }
    }

    /// Tells the waiting connection. It may have gone (its client left): nobody is told.
    pub fn fire(self) {
        let _ = self.to.send((self.key, self.part));
    }
}

impl Pending {
    /// Whether every server asked has replied (or left).
    pub fn all_replied(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Marks `slot` as replied; false if it was not asked or has replied already.
    fn take(&mut self, slot: usize) -> bool {
        if !self.waiting.remove(slot) {
            return false;
        }
        if self.waiting.is_empty() {
            if let Some(done) = self.done.take() {
                done.fire();
            }
        }
        true
    }
}

/// What became of one reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Counted for the request of this client.
    Counted { client: Name },
    /// Its request was answered already: dropped, and counted as late.
    Late,
    /// This server was not asked, or has replied already.
    NotAsked,
    /// No request ever had this id.
    Unknown,
}

/// The table of open requests, by the tracker's query id.
pub struct Requests {
    open: FastMap<u64, Pending>,
    /// Ids are unique for the tracker's lifetime, so a late reply can never be taken for a
    /// reply to a newer request.
    next_id: u64,
}

impl Default for Requests {
    fn default() -> Self {
        Requests { open: FastMap::default(), next_id: 1 }
    }
}

impl Requests {
    /// Opens a request of `client` that asks the servers in `asked`, and returns its id;
    /// `done` fires once all of them have replied. `asked` must not be empty.
    pub fn open(&mut self, client: Name, asked: Slots, done: Done) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let pending = Pending {
            client,
            waiting: asked,
            matched: Slots::default(),
            departed: Vec::new(),
            done: Some(done),
        };
        self.open.insert(id, pending);
        id
    }

    /// The id the next request will have: a server that registers now is asked every request
    /// from this one on, and none before it.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Counts a reply from the server in `slot`, which has been asked every request since
    /// `asked_from`, to request `id`.
    pub fn reply(&mut self, id: u64, slot: usize, asked_from: u64, matched: bool) -> Reply {
        match self.open.get_mut(&id) {
            Some(request) => {
                if !request.take(slot) {
                    return Reply::NotAsked;
                }
                if matched {
                    request.matched.insert(slot);
                }
                Reply::Counted { client: request.client.clone() }
            }
            None if id >= asked_from && id < self.next_id => Reply::Late,
            None if id > 0 && id < asked_from => Reply::NotAsked,
            None => Reply::Unknown,
        }
    }

    /// The server in `slot` has left: no request waits for it any longer, and a request it
    /// matched keeps its name (the slot may change hands before the answer goes out).
    pub fn server_left(&mut self, slot: usize, name: &Name) {
        for request in self.open.values_mut() {
            request.take(slot);
            if request.matched.remove(slot) {
                request.departed.push(name.clone());
            }
        }
    }

    /// Closes request `id` and returns it, or `None` if it was closed already.
    pub fn close(&mut self, id: u64) -> Option<Pending> {
        self.open.remove(&id)
    }

    /// Request `id`, while it is open.
    pub fn get(&self, id: u64) -> Option<&Pending> {
        self.open.get(&id)
    }

    /// How many requests are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    /// A `Done` and the receiver it fires on.
    fn done() -> (Done, mpsc::UnboundedReceiver<(u64, Part)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Done::new(tx, 9, Part::Local), rx)
    }

    fn slots(list: &[usize]) -> Slots {
        let mut set = Slots::default();
        for &slot in list {
            set.insert(slot);
        }
        set
    }

    #[test]
    fn a_request_is_done_when_every_server_asked_has_replied() {
        let mut requests = Requests::default();
        let (fire, mut done) = done();
        let id = requests.open(name("C1"), slots(&[0, 1]), fire);
        assert_eq!(requests.reply(id, 0, 1, true), Reply::Counted { client: name("C1") });
        assert!(done.try_recv().is_err(), "one server still to reply");
        assert_eq!(requests.reply(id, 0, 1, true), Reply::NotAsked, "a second reply");
        assert_eq!(requests.reply(id, 7, 1, true), Reply::NotAsked, "never asked");
        assert_eq!(requests.reply(id, 1, 1, false), Reply::Counted { client: name("C1") });
        assert_eq!(done.try_recv().ok(), Some((9, Part::Local)));
        let closed = requests.close(id).unwrap();
        assert!(closed.all_replied());
        assert_eq!(closed.matched, slots(&[0]));
        assert_eq!(requests.len(), 0);
    }

    #[test]
    fn ids_are_never_reused_and_replies_after_the_answer_are_late() {
        let mut requests = Requests::default();
        let first = requests.open(name("C1"), slots(&[0]), done().0);
        requests.close(first);
        let second = requests.open(name("C1"), slots(&[0]), done().0);
        assert!(second > first);
        assert_eq!(requests.reply(first, 0, 1, true), Reply::Late);
        assert_eq!(requests.reply(second + 1, 0, 1, true), Reply::Unknown);
        assert_eq!(requests.reply(0, 0, 1, true), Reply::Unknown);
        assert_eq!(requests.len(), 1);
        // A server that came after the first request was not asked it: not late, not asked.
        assert_eq!(requests.reply(first, 3, second, true), Reply::NotAsked);
        assert_eq!(requests.reply(second, 3, second, true), Reply::NotAsked, "still open, not asked");
    }

    #[test]
    fn a_server_that_leaves_is_no_longer_waited_for_and_keeps_its_match() {
        let mut requests = Requests::default();
        let (fire, mut done) = done();
        let id = requests.open(name("C1"), slots(&[0, 1]), fire);
        requests.reply(id, 0, 1, true);
        requests.server_left(0, &name("S1"));
        assert!(done.try_recv().is_err());
        requests.server_left(1, &name("S2"));
        assert!(done.try_recv().is_ok(), "nobody left to wait for");
        assert!(done.try_recv().is_err(), "told once");
        let closed = requests.close(id).unwrap();
        assert!(closed.matched.is_empty(), "the slot may change hands");
        assert_eq!(closed.departed, [name("S1")]);
    }
}
