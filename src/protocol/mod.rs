//! The wire protocol: one message per newline-terminated UTF-8 text line, verb first.
//!
//! This module turns bytes into [`Message`]s and back. It never touches a socket, never
//! allocates more than the line it is given, and never panics on any input; that is what lets
//! the tracker, the servers and the clients share one definition of every message, and lets
//! the codec be tested on its own. `docs/PROTOCOL.md` is the same protocol written for people.
//!
//! Over 600 lines: the code is about 390 of them; the rest are the codec's tests, kept beside
//! what they test (names and tokens live in `name`, the fixed words in `words`).

mod cluster;
mod name;
mod words;

pub use cluster::{Ask, Beat, Told};
pub use name::{Name, Token, CENTRAL, MAX_NAME_LEN, MAX_TOKEN_LEN};
pub use words::{End, ErrorCode, ProtocolError, ReplyMode, NAME_RULE, NUMBER_RULE, TOKEN_RULE};

use name::is_name_byte;

/// Longest line a peer may send to the tracker, newline included. Every message a node sends
/// fits in well under 100 bytes; the rest is room for future fields.
pub const MAX_REQUEST_LINE: usize = 1024;

/// Longest line the tracker may send. An `ANSWER` lists every matching server, so it grows
/// with the number of servers: 1 MiB holds 30,000 names of the maximum length.
pub const MAX_LINE: usize = 1 << 20;

/// The numbers servers hold and clients ask for.
pub const NUMBERS: std::ops::RangeInclusive<u8> = 1..=10;

/// Every message of the protocol. The direction is in each variant's doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// server → tracker: `HELLO <name> [<token>]`, the first line of a server.
    Hello { name: Name, token: Option<Token> },
    /// client → tracker: `HI <name> [<token>]`, the first line of a client.
    Hi { name: Name, token: Option<Token> },
    /// tracker → node: `WELCOME <name> <deadline_ms> <replies>`, registration accepted.
    Welcome { name: Name, deadline_ms: u64, replies: ReplyMode },
    /// client → tracker: `FIND <id> <number>`; the id is the client's, echoed in the answer.
    Find { id: u64, number: u8 },
    /// client → tracker: `CANCEL <id>`, the client no longer wants the answer to its
    /// request `id`; the tracker frees the request and sends no answer.
    Cancel { id: u64 },
    /// tracker → server: `QUERY <id> <client> <number>`; the id is the tracker's.
    Query { id: u64, client: Name, number: u8 },
    /// server → tracker: `MATCH <id>`, the server holds the number asked for.
    Match { id: u64 },
    /// server → tracker: `MISS <id>`, it does not (only when told `replies` = `all`).
    Miss { id: u64 },
    /// tracker → client: `ANSWER <id> <end> [<server> ...]`; no servers means no match.
    Answer { id: u64, end: End, servers: Vec<Name> },
    /// tracker → node: `ERROR <code> <text>`; the code is one word from docs/PROTOCOL.md.
    Error { code: ErrorCode, text: String },
    /// either way: `BYE`, the sender is leaving; the connection closes after it.
    Bye,
}

/// Finds the first complete line in `buf`.
///
/// Returns the line without its `\n` (and without a `\r` before it, for people typing into a
/// terminal) and how many bytes it used, or `None` if no newline has arrived yet.
///
/// # Errors
/// [`ProtocolError::LineTooLong`] if `max_line` bytes have arrived with no newline among them,
/// so a peer cannot make the reader buffer without bound.
pub fn split_line(buf: &[u8], max_line: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &buf[..buf.len().min(max_line)];
    match find_newline(window) {
        Some(end) => {
            let line = &buf[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, end + 1)))
        }
        None if buf.len() >= max_line => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

/// The position of the first `\n` in `bytes`. Looks at eight bytes at a time (a zero-byte
/// test on the bytes xor-ed with newlines): lines are short and split by the million.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    for (i, word) in (&mut words).enumerate() {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ NEWLINES;
        // The lowest set high bit marks the first zero byte, i.e. the first newline.
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(i * 8 + zeros.trailing_zeros() as usize / 8);
        }
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b'\n').map(|at| bytes.len() - tail.len() + at)
}

/// Parses one line (without its newline) into a message.
///
/// Fields are separated by runs of spaces or tabs; the verb is matched case-insensitively.
///
/// # Errors
/// A [`ProtocolError`] naming what is wrong; the caller decides whether to go on.
pub fn parse(line: &[u8]) -> Result<Message, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
    let mut fields = Words(text);
    let verb = fields.next().ok_or(ProtocolError::Empty)?;
    let verb = Verb::from_word(verb).ok_or(ProtocolError::UnknownVerb)?;
    let mut fields = Fields(fields);
    let message = match verb {
        Verb::Hello => Message::Hello { name: fields.name()?, token: fields.token()? },
        Verb::Hi => Message::Hi { name: fields.name()?, token: fields.token()? },
        Verb::Welcome => Message::Welcome {
            name: fields.name()?,
            deadline_ms: fields.id()?,
            replies: ReplyMode::from_word(fields.word()?.as_bytes()).ok_or(ProtocolError::BadWord)?,
        },
        Verb::Find => Message::Find { id: fields.id()?, number: fields.number()? },
        Verb::Cancel => Message::Cancel { id: fields.id()? },
        Verb::Query => Message::Query { id: fields.id()?, client: fields.name()?, number: fields.number()? },
        Verb::Match => Message::Match { id: fields.id()? },
        Verb::Miss => Message::Miss { id: fields.id()? },
        Verb::Answer => {
            let id = fields.id()?;
            let end = End::from_word(fields.word()?.as_bytes()).ok_or(ProtocolError::BadWord)?;
            let servers = fields.0.by_ref().map(Name::new).collect::<Result<_, _>>()?;
            return Ok(Message::Answer { id, end, servers });
        }
        Verb::Error => {
            let code = ErrorCode::from_word(fields.word()?.as_bytes()).ok_or(ProtocolError::BadWord)?;
            // The text is free-form: keep it as sent, after the code.
            let rest = fields.0.collect::<Vec<_>>().join(" ");
            return Ok(Message::Error { code, text: rest });
        }
        Verb::Bye => Message::Bye,
    };
    fields.end()?;
    Ok(message)
}

/// Who sent a line to the tracker, for [`parse_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A connection's first line: `HELLO` or `HI`.
    Greeting,
    /// A registered server: `MATCH`, `MISS`, `BYE`.
    Server,
    /// A registered client: `FIND`, `CANCEL`, `BYE`.
    Client,
}

impl Sender {
    fn may_send(self, verb: Verb) -> bool {
        match self {
            Sender::Greeting => matches!(verb, Verb::Hello | Verb::Hi),
            Sender::Server => matches!(verb, Verb::Match | Verb::Miss | Verb::Bye),
            Sender::Client => matches!(verb, Verb::Find | Verb::Cancel | Verb::Bye),
        }
    }
}

/// As [`parse`], for a line the tracker reads from `sender`.
///
/// # Errors
/// `None` for a verb of the protocol that `sender` may not send, whatever its fields (an
/// `ERROR` from a node is out of place, not a malformed `ERROR`); the [`ProtocolError`] of
/// [`parse`] for any other line that does not parse.
pub fn parse_from(line: &[u8], sender: Sender) -> Result<Message, Option<ProtocolError>> {
    let verb = std::str::from_utf8(line).ok().and_then(|text| Words(text).next()).and_then(Verb::from_word);
    match verb {
        Some(verb) if !sender.may_send(verb) => Err(None),
        _ => parse(line).map_err(Some),
    }
}

/// A fast path for the line a server receives most: `QUERY <id> <client> <number>`, parsed
/// without allocating, the client's name as bytes already checked against the name charset.
/// Returns `None` for anything else, including a malformed query, which the caller then
/// hands to [`parse`] for the full answer.
pub fn parse_query(line: &[u8]) -> Option<(u64, &[u8], u8)> {
    let rest = line.strip_prefix(b"QUERY ")?;
    let digits = rest.iter().position(|b| !b.is_ascii_digit())?;
    let id = decimal(&rest[..digits])?;
    let rest = rest[digits..].strip_prefix(b" ")?;
    let (client, number) = match rest {
        [client @ .., b' ', d @ b'1'..=b'9'] => (client, d - b'0'),
        [client @ .., b' ', b'1', b'0'] => (client, 10),
        _ => return None,
    };
    let name_ok =
        !client.is_empty() && client.len() <= MAX_NAME_LEN && client.iter().all(|&b| is_name_byte(b));
    name_ok.then_some((id, client, number))
}

/// The fast path for what the tracker receives most: `MATCH <id>` (true) or `MISS <id>`
/// (false). `None` for anything else, which the caller hands to [`parse`].
pub fn parse_reply(line: &[u8]) -> Option<(u64, bool)> {
    if let Some(id) = line.strip_prefix(b"MATCH ") {
        return Some((decimal(id)?, true));
    }
    Some((decimal(line.strip_prefix(b"MISS ")?)?, false))
}

/// A decimal integer below 2^64, digits only.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Appends `message` to `out` as one line, newline included.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = match message {
        Message::Hello { name, token: None } => writeln!(out, "HELLO {name}"),
        Message::Hello { name, token: Some(token) } => writeln!(out, "HELLO {name} {}", token.expose()),
        Message::Hi { name, token: None } => writeln!(out, "HI {name}"),
        Message::Hi { name, token: Some(token) } => writeln!(out, "HI {name} {}", token.expose()),
        Message::Welcome { name, deadline_ms, replies } => {
            writeln!(out, "WELCOME {name} {deadline_ms} {}", replies.as_str())
        }
        Message::Find { id, number } => writeln!(out, "FIND {id} {number}"),
        Message::Cancel { id } => writeln!(out, "CANCEL {id}"),
        // The lines sent by the million are put together without the formatting machinery.
        Message::Query { id, client, number } => {
            out.extend_from_slice(b"QUERY ");
            push_decimal(*id, out);
            out.push(b' ');
            out.extend_from_slice(client.as_bytes());
            out.push(b' ');
            push_decimal(u64::from(*number), out);
            writeln!(out)
        }
        Message::Match { id } => {
            out.extend_from_slice(b"MATCH ");
            push_decimal(*id, out);
            writeln!(out)
        }
        Message::Miss { id } => {
            out.extend_from_slice(b"MISS ");
            push_decimal(*id, out);
            writeln!(out)
        }
        Message::Answer { id, end, servers } => {
            let mut listed = Vec::new();
            list_names(servers, &mut listed);
            encode_answer(*id, *end, &listed, out);
            Ok(())
        }
        Message::Error { code, text } => {
            // Keep the error one line whatever the text holds.
            let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            writeln!(out, "ERROR {code} {text}")
        }
        Message::Bye => writeln!(out, "BYE"),
    };
}

/// Appends each of `names` with a space before it: the server list of an `ANSWER`, in the
/// form [`encode_answer`] takes. Many requests share one answer, so the tracker lists it once.
pub fn list_names(names: &[Name], out: &mut Vec<u8>) {
    for name in names {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
    }
}

/// Appends the line `ANSWER <id> <end>` followed by `listed` (from [`list_names`]).
pub fn encode_answer(id: u64, end: End, listed: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"ANSWER ");
    push_decimal(id, out);
    out.push(b' ');
    out.extend_from_slice(end.as_str().as_bytes());
    out.extend_from_slice(listed);
    out.push(b'\n');
}

/// The fast path for what a client receives: an `ANSWER` line as written by
/// [`encode_answer`], split into its id, its end and the bytes of its server list (each
/// name preceded by a space), unchecked. A client that has parsed the same list before can
/// reuse what it found; the list alone decides how it parses, whatever comes before it.
/// `None` for anything else, which the caller hands to [`parse`].
pub fn split_answer(line: &[u8]) -> Option<(u64, End, &[u8])> {
    let rest = line.strip_prefix(b"ANSWER ")?;
    let digits = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    let id = decimal(&rest[..digits])?;
    let rest = rest[digits..].strip_prefix(b" ")?;
    let word = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let end = End::from_word(&rest[..word])?;
    Some((id, end, &rest[word..]))
}

/// Appends `value` in decimal.
fn push_decimal(mut value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// `message` as one encoded line, newline included.
pub fn to_line(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode(message, &mut out);
    out
}

#[derive(Clone, Copy)]
enum Verb {
    Hello,
    Hi,
    Welcome,
    Find,
    Cancel,
    Query,
    Match,
    Miss,
    Answer,
    Error,
    Bye,
}

impl Verb {
    fn from_word(word: &str) -> Option<Verb> {
        const VERBS: [(&str, Verb); 11] = [
            ("HELLO", Verb::Hello),
            ("HI", Verb::Hi),
            ("WELCOME", Verb::Welcome),
            ("FIND", Verb::Find),
            ("CANCEL", Verb::Cancel),
            ("QUERY", Verb::Query),
            ("MATCH", Verb::Match),
            ("MISS", Verb::Miss),
            ("ANSWER", Verb::Answer),
            ("ERROR", Verb::Error),
            ("BYE", Verb::Bye),
        ];
        VERBS.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|&(_, v)| v)
    }
}

/// The words of a line: what runs of spaces and tabs separate. (Not any ASCII whitespace:
/// a `\r` or a form feed inside a line is part of the word it touches, as PROTOCOL.md says.)
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let gap = |c: char| c == ' ' || c == '\t';
        let rest = self.0.trim_start_matches(gap);
        if rest.is_empty() {
            self.0 = rest;
            return None;
        }
        let end = rest.find(gap).unwrap_or(rest.len());
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

/// The fields after the verb, taken one at a time with their checks.
struct Fields<'a>(Words<'a>);

impl<'a> Fields<'a> {
    fn word(&mut self) -> Result<&'a str, ProtocolError> {
        self.0.next().ok_or(ProtocolError::BadFields)
    }

    fn name(&mut self) -> Result<Name, ProtocolError> {
        Name::new(self.word()?)
    }

    fn id(&mut self) -> Result<u64, ProtocolError> {
        let word = self.word()?;
        // `parse` accepts a leading '+'; the protocol does not.
        if !word.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProtocolError::BadId);
        }
        word.parse().map_err(|_| ProtocolError::BadId)
    }

    /// An optional last field: a token, if there is one.
    fn token(&mut self) -> Result<Option<Token>, ProtocolError> {
        self.0.next().map(Token::new).transpose()
    }

    fn number(&mut self) -> Result<u8, ProtocolError> {
        let word = self.word()?;
        match word.parse::<u8>() {
            Ok(n) if NUMBERS.contains(&n) && !word.starts_with('+') => Ok(n),
            _ => Err(ProtocolError::BadNumber),
        }
    }

    fn end(mut self) -> Result<(), ProtocolError> {
        match self.0.next() {
            None => Ok(()),
            Some(_) => Err(ProtocolError::BadFields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { name: name("S1"), token: None },
            Message::Hi { name: name("C12"), token: None },
            Message::Hello { name: name("S2"), token: Some(Token::new("s3cr#t!").unwrap()) },
            Message::Welcome { name: name("S1"), deadline_ms: 2000, replies: ReplyMode::Matches },
            Message::Welcome { name: name("C1"), deadline_ms: 200, replies: ReplyMode::All },
            Message::Find { id: 0, number: 1 },
            Message::Find { id: u64::MAX, number: 10 },
            Message::Cancel { id: 12 },
            Message::Query { id: 7, client: name("C1"), number: 5 },
            Message::Match { id: 7 },
            Message::Miss { id: 8 },
            Message::Answer { id: 3, end: End::Deadline, servers: vec![] },
            Message::Answer { id: 3, end: End::Replied, servers: vec![name("S1"), name("S3")] },
            Message::Answer { id: 4, end: End::NoServers, servers: vec![] },
            Message::Error { code: ErrorCode::BadNumber, text: "number must be 1..10".into() },
            Message::Bye,
        ]
    }

    /// Every sample, encoded, without its newline, then the `extra` lines.
    fn sample_lines_and(extra: &[&str]) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = samples().iter().map(to_line).collect();
        for line in &mut lines {
            line.pop();
        }
        lines.extend(extra.iter().map(|line| line.as_bytes().to_vec()));
        lines
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            let line = to_line(&message);
            assert_eq!(line.last(), Some(&b'\n'));
            let (body, used) = split_line(&line, MAX_LINE).unwrap().unwrap();
            assert_eq!(used, line.len());
            assert_eq!(parse(body).unwrap(), message, "line {:?}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn a_message_split_at_every_offset_decodes_only_when_complete() {
        let mut stream = Vec::new();
        for message in samples() {
            encode(&message, &mut stream);
        }
        for cut in 0..=stream.len() {
            // Feed the first `cut` bytes, take every complete line, then feed the rest.
            fn take(buf: &mut Vec<u8>, got: &mut Vec<Message>) {
                while let Some((line, used)) = split_line(buf, MAX_LINE).unwrap() {
                    got.push(parse(line).unwrap());
                    buf.drain(..used);
                }
            }
            let mut buf = stream[..cut].to_vec();
            let mut got = Vec::new();
            take(&mut buf, &mut got);
            let complete = stream[..cut].iter().filter(|&&b| b == b'\n').count();
            assert_eq!(got.len(), complete, "cut at {cut}");
            buf.extend_from_slice(&stream[cut..]);
            take(&mut buf, &mut got);
            assert_eq!(got, samples());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn the_query_fast_path_agrees_with_the_parser() {
        let lines = sample_lines_and(&[
            "QUERY 1 C1 0",
            "QUERY 1 C1 11",
            "QUERY x C1 5",
            "QUERY 1 C! 5",
            "QUERY 1 C1 5 6",
            "QUERY  1 C1 5",
            "QUERY 1 C1 05",
        ]);
        for line in lines {
            let fast = parse_query(&line);
            match parse(&line) {
                Ok(Message::Query { id, client, number }) if fast.is_some() => {
                    assert_eq!(fast, Some((id, client.as_str().as_bytes(), number)));
                }
                // The fast path may decline a line the parser accepts (odd spacing); it must
                // never accept one the parser refuses or reads differently.
                _ => assert_eq!(fast, None, "{:?}", String::from_utf8_lossy(&line)),
            }
        }
    }

    #[test]
    fn the_reply_fast_path_agrees_with_the_parser() {
        let lines = sample_lines_and(&[
            "MATCH",
            "MATCH ",
            "MATCH x",
            "MISS 18446744073709551616",
            "MISS 1 2",
            "MATCH  3",
            "MISS +1",
        ]);
        for line in lines {
            let fast = parse_reply(&line);
            match parse(&line) {
                Ok(Message::Match { id }) if fast.is_some() => assert_eq!(fast, Some((id, true))),
                Ok(Message::Miss { id }) if fast.is_some() => assert_eq!(fast, Some((id, false))),
                _ => assert_eq!(fast, None, "{:?}", String::from_utf8_lossy(&line)),
            }
        }
    }

    #[test]
    fn the_answer_split_agrees_with_the_parser() {
        let lines = sample_lines_and(&[
            "ANSWER 1 replied  S1",
            "ANSWER 1 replied S1\tS2",
            "ANSWER 1 replied\tS1",
            "ANSWER 1 later S1",
            "ANSWER x replied S1",
            "ANSWER 1 deadline S1 S!",
            "ANSWER 18446744073709551616 replied",
            "ANSWER 7 noservers",
        ]);
        for line in lines {
            let Some((id, end, listed)) = split_answer(&line) else {
                continue;
            };
            // The parser reads the same id and end, and the list alone decides the servers:
            // the same list after any other id and end parses to the same names.
            let alone = parse(&[b"ANSWER 1 replied".as_slice(), listed].concat());
            match parse(&line) {
                Ok(Message::Answer { id: i, end: e, servers }) => {
                    assert_eq!((id, end), (i, e));
                    assert_eq!(alone, Ok(Message::Answer { id: 1, end: End::Replied, servers }));
                }
                refused => {
                    assert!(refused.is_err() && alone.is_err(), "{:?}", String::from_utf8_lossy(&line))
                }
            }
        }
        let servers = [name("S1"), name("S22")];
        let mut listed = Vec::new();
        list_names(&servers, &mut listed);
        let line = to_line(&Message::Answer { id: 9, end: End::Deadline, servers: servers.to_vec() });
        assert_eq!(split_answer(&line[..line.len() - 1]), Some((9, End::Deadline, listed.as_slice())));
        assert_eq!(split_answer(b"ANSWER 1 replied\tS1"), None);
    }

    #[test]
    fn typed_lines_are_accepted() {
        assert_eq!(parse(b"hello   S1").unwrap(), Message::Hello { name: name("S1"), token: None });
        assert_eq!(split_line(b"FIND 1 5\r\n", 64).unwrap().unwrap().0, b"FIND 1 5");
        assert_eq!(parse(b"FIND\t007 05").unwrap(), Message::Find { id: 7, number: 5 }, "leading zeros");
    }

    #[test]
    fn malformed_lines_say_why() {
        let cases: [(&[u8], ProtocolError); 18] = [
            (b"", ProtocolError::Empty),
            (b"   ", ProtocolError::Empty),
            (b"\xff\xfe", ProtocolError::NotUtf8),
            (b"JUMP 1", ProtocolError::UnknownVerb),
            (b"HELLO", ProtocolError::BadFields),
            (b"HELLO S1 S2 S3", ProtocolError::BadFields),
            (b"HELLO S1!", ProtocolError::BadName),
            (b"HELLO abcdefghijklmnopqrstuvwxyz0123456", ProtocolError::BadName),
            (b"FIND 1 0", ProtocolError::BadNumber),
            (b"FIND 1 11", ProtocolError::BadNumber),
            (b"FIND 1 +5", ProtocolError::BadNumber),
            (b"FIND x 5", ProtocolError::BadId),
            (b"FIND -1 5", ProtocolError::BadId),
            (b"MATCH 18446744073709551616", ProtocolError::BadId),
            (b"WELCOME S1 10 some", ProtocolError::BadWord),
            (b"ANSWER 1 deadline S1 ??", ProtocolError::BadName),
            // Only spaces and tabs separate fields.
            (b"FIND 1\r5", ProtocolError::BadId),
            (b"HELLO S1\x0cS2", ProtocolError::BadName),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(want), "line {:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn an_endless_line_is_refused_at_the_limit() {
        assert_eq!(split_line(&[b'a'; 9], 10), Ok(None));
        assert_eq!(split_line(&[b'a'; 10], 10), Err(ProtocolError::LineTooLong));
        assert_eq!(split_line(b"aaaaaaaaa\n", 10).unwrap().unwrap().1, 10);
    }

    #[test]
    fn no_input_panics() {
        // Every line of up to three bytes drawn from an alphabet that reaches every branch,
        // plus every sample with each byte replaced by each interesting byte.
        let alphabet: &[u8] = b" \n\r\t0159AHEFMQWBYaz-_!\xff\xc3";
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for &a in alphabet {
            for &b in alphabet {
                for &c in alphabet {
                    inputs.push(vec![a, b, c]);
                }
            }
        }
        for message in samples() {
            let line = to_line(&message);
            for i in 0..line.len() {
                for &x in alphabet {
                    let mut mutated = line.clone();
                    mutated[i] = x;
                    inputs.push(mutated);
                }
            }
        }
        for input in inputs {
            let _ = parse(&input);
            let _ = split_line(&input, 4);
        }
    }

    #[test]
    fn find_newline_agrees_with_a_plain_search() {
        for len in 0..40 {
            for at in 0..=len {
                for filler in [b'a', 0x0a ^ 0x80, 0x09, 0x0b, 0xff] {
                    let mut bytes = vec![filler; len];
                    if at < len {
                        bytes[at] = b'\n';
                        // A second newline later must not be found first.
                        if at + 3 < len {
                            bytes[at + 3] = b'\n';
                        }
                    }
                    let plain = bytes.iter().position(|&b| b == b'\n');
                    assert_eq!(find_newline(&bytes), plain, "{bytes:?}");
                }
            }
        }
    }
}
