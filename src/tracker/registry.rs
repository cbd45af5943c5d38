//! Who is registered: every live node's name (unique across servers and clients), the
//! servers' slots, their index order, and the encoded server lists of recent answers.
//!
//! Pure state with no I/O; the tracker holds it under one short lock.

use std::cmp::Ordering::Less;
use std::collections::HashSet;
use std::sync::Arc;

use crate::hash::FastMap;
use crate::protocol::{self, Name, CENTRAL};

/// Most bytes of server lists kept encoded (see [`Registry::listed`]; their names take up to
/// about 25 times as much).
const LISTED_BYTES: usize = 1 << 20;

/// A set of server slots, one bit each, that knows its size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Slots {
    words: Vec<u64>,
    len: usize,
}

impl Slots {
    /// Adds `slot`; false if it was there already.
    pub fn insert(&mut self, slot: usize) -> bool {
        let word = slot / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1 << (slot % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += usize::from(fresh);
        fresh
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: usize) -> bool {
        self.words.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    /// Removes `slot`; false if it was not there.
    pub fn remove(&mut self, slot: usize) -> bool {
        let bit = 1 << (slot % 64);
        match self.words.get_mut(slot / 64) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// How many slots are in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The servers of an answer, as names and as they go on the wire.
#[derive(Clone, Default)]
pub struct Listed {
    pub names: Arc<[Name]>,
    pub encoded: Arc<[u8]>,
}

impl Listed {
    pub(super) fn new(names: Vec<Name>) -> Listed {
        let mut encoded = Vec::with_capacity(names.len() * 8);
        protocol::list_names(&names, &mut encoded);
        Listed { names: names.into(), encoded: encoded.into() }
    }
}

/// The registered nodes.
#[derive(Default)]
pub struct Registry {
    /// Every live node's name: names are unique across servers and clients.
    names: HashSet<Name>,
    /// Server slots; a slot is a small index a request's bitset can use. Freed slots are
    /// reused, which is safe because a leaving server's bits are cleared from every request
    /// (see `Requests::server_left`).
    servers: Vec<Option<Name>>,
    free: Vec<usize>,
    /// The slots of live servers: what a new request asks.
    live: Slots,
    /// The slots of live servers in the index order of their names, the order of answers.
    ordered: Vec<usize>,
    clients: usize,
    /// Answers' server lists, named and encoded, by the set of servers that matched: at
    /// scale thousands of requests a round end with the same few lists of hundreds of names
    /// each. Emptied whenever a server comes or goes, since that changes whose a slot is.
    answers: FastMap<Slots, Listed>,
    /// Encoded bytes in `answers`; past [`LISTED_BYTES`] it starts over.
    listed_bytes: usize,
}

impl Registry {
    /// (servers, clients) registered.
    pub fn counts(&self) -> (usize, usize) {
        (self.ordered.len(), self.clients)
    }

    /// The slots of the live servers: whom a request opened now asks.
    pub fn live(&self) -> &Slots {
        &self.live
    }

    /// The live servers' names, in slot order.
    pub fn servers(&self) -> impl Iterator<Item = &Name> {
        self.servers.iter().flatten()
    }

    /// Registers a server and returns its slot; `None` if its name is taken.
    pub fn add_server(&mut self, name: &Name) -> Option<usize> {
        if !self.take_name(name) {
            return None;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.servers.push(None);
            self.servers.len() - 1
        });
        self.servers[slot] = Some(name.clone());
        self.forget_answers();
        self.live.insert(slot);
        if let Err(at) = self.position(name) {
            self.ordered.insert(at, slot);
        }
        Some(slot)
    }

    /// Unregisters the server in `slot`, freeing the slot for the next one.
    pub fn remove_server(&mut self, slot: usize, name: &Name) {
        if let Ok(at) = self.position(name) {
            self.ordered.remove(at);
        }
        self.servers[slot] = None;
        self.forget_answers();
        self.live.remove(slot);
        self.free.push(slot);
        self.names.remove(name);
    }

    /// Registers a client; false if its name is taken.
    pub fn add_client(&mut self, name: &Name) -> bool {
        let fresh = self.take_name(name);
        self.clients += usize::from(fresh);
        fresh
    }

    /// Takes `name` for a node; false if a live node has it, or it is the tracker's own
    /// (which would make every transcript ambiguous).
    fn take_name(&mut self, name: &Name) -> bool {
        name.as_str() != CENTRAL && self.names.insert(name.clone())
    }

    /// Unregisters a client.
    pub fn remove_client(&mut self, name: &Name) {
        if self.names.remove(name) {
            self.clients -= 1;
        }
    }

    /// The servers in `matched` (all live) and `departed` (matched, then left), named in
    /// index order and encoded. Listed once per distinct set of live servers and kept, so the
    /// thousands of answers a round that share a list share its bytes.
    pub fn listed(&mut self, matched: &Slots, departed: &[Name]) -> Listed {
        if !departed.is_empty() {
            let mut names = self.names_of(matched);
            names.extend_from_slice(departed);
            names.sort_unstable_by(Name::index_order);
            return Listed::new(names);
        }
        if let Some(listed) = self.answers.get(matched) {
            return listed.clone();
        }
        let listed = Listed::new(self.names_of(matched));
        if self.listed_bytes + listed.encoded.len() > LISTED_BYTES {
            self.forget_answers();
        }
        self.listed_bytes += listed.encoded.len();
        self.answers.insert(matched.clone(), listed.clone());
        listed
    }

    /// The names of the servers in `slots`, in index order. Walking the registry's order
    /// costs a bit test per server, less than sorting hundreds of names per answer.
    pub(super) fn names_of(&self, slots: &Slots) -> Vec<Name> {
        let listed = self.ordered.iter().filter(|&&slot| slots.contains(slot));
        listed.filter_map(|&slot| self.servers[slot].clone()).collect()
    }

    /// Forgets every answer's list: a slot is about to change hands.
    fn forget_answers(&mut self) {
        self.answers = FastMap::default();
        self.listed_bytes = 0;
    }

    /// Where `name` stands, or would stand, in `ordered`.
    fn position(&self, name: &Name) -> Result<usize, usize> {
        let servers = &self.servers;
        self.ordered.binary_search_by(|&slot| servers[slot].as_ref().map_or(Less, |s| s.index_order(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    fn listed(reg: &mut Registry, slots: &[usize]) -> Vec<String> {
        let mut set = Slots::default();
        for &slot in slots {
            set.insert(slot);
        }
        reg.listed(&set, &[]).names.iter().map(Name::to_string).collect()
    }

    #[test]
    fn slots_count_what_they_hold() {
        let mut slots = Slots::default();
        assert!(slots.insert(3) && slots.insert(130));
        assert!(!slots.insert(3), "a second insert is no change");
        assert_eq!(slots.len(), 2);
        assert!(slots.contains(130) && !slots.contains(4));
        assert!(slots.remove(3) && !slots.remove(3) && !slots.remove(1000));
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn names_are_unique_across_servers_and_clients() {
        let mut reg = Registry::default();
        assert_eq!(reg.add_server(&name("S1")), Some(0));
        assert_eq!(reg.add_server(&name("S1")), None);
        assert!(!reg.add_client(&name("S1")));
        assert!(reg.add_client(&name("C1")));
        assert_eq!(reg.add_server(&name("C1")), None);
        assert_eq!(reg.counts(), (1, 1));
        reg.remove_client(&name("C1"));
        reg.remove_client(&name("C1"));
        assert_eq!(reg.counts(), (1, 0), "removing twice counts once");
        assert_eq!(reg.add_server(&name("C1")), Some(1), "a freed name can be taken again");
        assert_eq!(reg.add_server(&name("Central")), None, "the tracker's name is reserved");
        assert!(!reg.add_client(&name("Central")));
    }

    #[test]
    fn answers_list_servers_in_index_order_whatever_their_slots() {
        let mut reg = Registry::default();
        for text in ["S10", "S2", "S1", "X"] {
            reg.add_server(&name(text));
        }
        assert_eq!(listed(&mut reg, &[0, 1, 2, 3]), ["S1", "S2", "S10", "X"]);
        assert_eq!(listed(&mut reg, &[0, 3]), ["S10", "X"]);
        assert_eq!(listed(&mut reg, &[]), Vec::<String>::new());
    }

    #[test]
    fn a_freed_slot_goes_to_the_next_server_and_old_lists_are_forgotten() {
        let mut reg = Registry::default();
        let s1 = reg.add_server(&name("S1")).unwrap();
        let s2 = reg.add_server(&name("S2")).unwrap();
        assert_eq!(listed(&mut reg, &[s1]), ["S1"]);
        reg.remove_server(s1, &name("S1"));
        assert_eq!(reg.live().len(), 1);
        assert!(!reg.live().contains(s1));
        let s9 = reg.add_server(&name("S9")).unwrap();
        assert_eq!(s9, s1, "the slot is reused");
        // The cached list for that slot named S1; it must now name S9.
        assert_eq!(listed(&mut reg, &[s9]), ["S9"]);
        assert_eq!(listed(&mut reg, &[s2, s9]), ["S2", "S9"]);
        assert_eq!(reg.servers().count(), 2);
    }

    #[test]
    fn a_departed_server_that_matched_stays_in_its_place() {
        let mut reg = Registry::default();
        let s1 = reg.add_server(&name("S1")).unwrap();
        reg.add_server(&name("S3")).unwrap();
        let mut matched = Slots::default();
        matched.insert(s1);
        matched.insert(1);
        reg.remove_server(s1, &name("S1"));
        matched.remove(s1);
        let names = reg.listed(&matched, &[name("S1")]).names;
        assert_eq!(names.iter().map(Name::as_str).collect::<Vec<_>>(), ["S1", "S3"]);
    }

    #[test]
    fn the_list_cache_is_shared_and_bounded() {
        let mut reg = Registry::default();
        let slots: Vec<usize> = (1..=3).map(|i| reg.add_server(&name(&format!("S{i}"))).unwrap()).collect();
        let mut set = Slots::default();
        set.insert(slots[0]);
        let (a, b) = (reg.listed(&set, &[]), reg.listed(&set, &[]));
        assert!(Arc::ptr_eq(&a.encoded, &b.encoded), "one list per distinct set");
        assert_eq!(&a.encoded[..], b" S1");
        // Past the bound the cache starts over rather than grow.
        reg.listed_bytes = LISTED_BYTES;
        set.insert(slots[1]);
        reg.listed(&set, &[]);
        assert!(reg.listed_bytes <= LISTED_BYTES);
        assert_eq!(reg.answers.len(), 1);
    }
}
