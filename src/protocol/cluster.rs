//! The lines trackers of one cluster send each other over NATS (docs/CLUSTER.md), with the
//! same field rules as the node protocol: `ASK`, `SOME` and `TOLD` about one request, and
//! `ALIVE` / `LEAVING` as a tracker's heartbeat. A line that does not parse is `None`: it
//! comes from another tracker, and is dropped.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{Fields, Name, Words};

/// One request asked of the other trackers:
/// `ASK <origin> <request> <client> <number> <deadline ms>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Ask {
    pub origin: String,
    pub request: u64,
    pub client: Name,
    pub number: u8,
    pub deadline_ms: u64,
}

/// One tracker's matches for a request: some as they come (`SOME <request> <tracker>
/// <lease ms> [names...]`, `last` false), then its last word (`TOLD <request> <tracker>
/// <lease ms> <complete 0|1> <servers asked> [names...]`, `last` true) with the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct Told {
    pub request: u64,
    pub tracker: String,
    /// How long after it received the `ASK` its lease is sure to hold, so that the names it
    /// told cannot be another node's: the asking tracker counts this from when it asked (no
    /// later than the receipt), and leaves the names out of an answer sent after that.
    pub lease_ms: u64,
    pub last: bool,
    /// Every server it asked has replied (in its last word).
    pub complete: bool,
    pub asked: usize,
    pub names: Vec<Name>,
}

/// A tracker's heartbeat: `ALIVE <tracker>` every half second, `LEAVING <tracker>` once when
/// it stops.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Alive(String),
    Leaving(String),
}

/// The fields of `line` after its verb, if the verb is `verb`.
fn fields<'a>(line: &'a [u8], verb: &str) -> Option<Fields<'a>> {
    let mut words = Words(std::str::from_utf8(line).ok()?);
    (words.next()? == verb).then_some(Fields(words))
}

impl Ask {
    pub fn encode(&self) -> Bytes {
        let Ask { origin, request, client, number, deadline_ms } = self;
        Bytes::from(format!("ASK {origin} {request} {client} {number} {deadline_ms}"))
    }

    pub fn decode(line: &[u8]) -> Option<Ask> {
        let mut f = fields(line, "ASK")?;
        let ask = Ask {
            origin: f.word().ok()?.to_owned(),
            request: f.id().ok()?,
            client: f.name().ok()?,
            number: f.number().ok()?,
            deadline_ms: f.id().ok()?,
        };
        f.end().ok()?;
        Some(ask)
    }
}

impl Told {
    pub fn encode(&self) -> Bytes {
        let mut line = if self.last {
            let Told { request, tracker, lease_ms, complete, asked, .. } = self;
            format!("TOLD {request} {tracker} {lease_ms} {} {asked}", u8::from(*complete))
        } else {
            format!("SOME {} {} {}", self.request, self.tracker, self.lease_ms)
        };
        for name in &self.names {
            let _ = write!(line, " {name}");
        }
        Bytes::from(line)
    }

    pub fn decode(line: &[u8]) -> Option<Told> {
        let (last, mut f) = match fields(line, "TOLD") {
            Some(f) => (true, f),
            None => (false, fields(line, "SOME")?),
        };
        let request = f.id().ok()?;
        let tracker = f.word().ok()?.to_owned();
        let lease_ms = f.id().ok()?;
        let (complete, asked) = if last {
            let complete = match f.word().ok()? {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            (complete, usize::try_from(f.id().ok()?).ok()?)
        } else {
            (false, 0)
        };
        let names = f.0.map(Name::new).collect::<Result<_, _>>().ok()?;
        Some(Told { request, tracker, lease_ms, last, complete, asked, names })
    }
}

impl Beat {
    pub fn encode(&self) -> Bytes {
        Bytes::from(match self {
            Beat::Alive(tracker) => format!("ALIVE {tracker}"),
            Beat::Leaving(tracker) => format!("LEAVING {tracker}"),
        })
    }

    pub fn decode(line: &[u8]) -> Option<Beat> {
        let (alive, mut f) = match fields(line, "ALIVE") {
            Some(f) => (true, f),
            None => (false, fields(line, "LEAVING")?),
        };
        let tracker = f.word().ok()?.to_owned();
        f.end().ok()?;
        Some(if alive { Beat::Alive(tracker) } else { Beat::Leaving(tracker) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trackers_lines_round_trip() {
        let ask = Ask {
            origin: "00ff".into(),
            request: 7,
            client: Name::new("C3").unwrap(),
            number: 4,
            deadline_ms: 1990,
        };
        assert_eq!(Ask::decode(&ask.encode()), Some(ask));
        let names = vec![Name::new("S2").unwrap(), Name::new("S10").unwrap()];
        let told = Told {
            request: 7,
            tracker: "abcd".into(),
            lease_ms: 1500,
            last: true,
            complete: true,
            asked: 12,
            names,
        };
        assert_eq!(Told::decode(&told.encode()), Some(told));
        let none = Told {
            request: 1,
            tracker: "x".into(),
            lease_ms: 1500,
            last: true,
            complete: false,
            asked: 0,
            names: vec![],
        };
        assert_eq!(Told::decode(&none.encode()), Some(none));
        let some = Told {
            request: 2,
            tracker: "y".into(),
            lease_ms: 800,
            last: false,
            complete: false,
            asked: 0,
            names: vec![Name::new("S4").unwrap()],
        };
        assert_eq!(Told::decode(&some.encode()), Some(some));
        for beat in [Beat::Alive("ab12".into()), Beat::Leaving("ab12".into())] {
            assert_eq!(Beat::decode(&beat.encode()), Some(beat));
        }
        for bad in [
            "ASK a 1 C1 4",
            "ASK a x C1 4 5",
            "ASK a 1 C1 11 5",
            "TOLD 1 a 900 2 0",
            "TOLD 1 a 900 1 0 bad!name",
            "TOLD 1 a 1 0",
            "SOME 1 a S1",
            "HELLO",
            "ALIVE",
            "ALIVE a b",
        ] {
            assert_eq!(Ask::decode(bad.as_bytes()), None, "{bad}");
            assert_eq!(Told::decode(bad.as_bytes()), None, "{bad}");
            assert_eq!(Beat::decode(bad.as_bytes()), None, "{bad}");
        }
    }
}
