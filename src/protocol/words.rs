//! The protocol's fixed words, each defined once with its table: the reply modes a `WELCOME`
//! announces, the ways a request ends, and the codes of `ERROR` lines. Parsing, encoding, the
//! fast paths, the reports and the Python exceptions all read the same tables.

use std::fmt;

/// Which query replies the tracker wants from its servers, told to each in its `WELCOME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Reply `MATCH` only when the number matches (the assignment's behaviour).
    Matches,
    /// Reply `MATCH` or `MISS` to every query, so a request can finish before its deadline.
    All,
}

impl ReplyMode {
    const WORDS: [(ReplyMode, &'static str); 2] = [(ReplyMode::Matches, "matches"), (ReplyMode::All, "all")];

    /// `All` when servers should reply early (to every query), else `Matches`.
    pub fn early(early: bool) -> ReplyMode {
        if early {
            ReplyMode::All
        } else {
            ReplyMode::Matches
        }
    }

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        word_of(&Self::WORDS, self)
    }

    /// The mode a wire word names.
    pub fn from_word(word: &[u8]) -> Option<ReplyMode> {
        value_of(&Self::WORDS, word)
    }
}

/// How a request ended, as told to the client in its `ANSWER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every server that was queried replied before the deadline.
    Replied,
    /// The deadline passed first; servers that had not replied count as no match.
    Deadline,
    /// No server was registered, so nobody was asked: answered at once.
    NoServers,
}

impl End {
    const WORDS: [(End, &'static str); 3] =
        [(End::Replied, "replied"), (End::Deadline, "deadline"), (End::NoServers, "noservers")];

    /// The word used on the wire and in reports.
    pub fn as_str(self) -> &'static str {
        word_of(&Self::WORDS, self)
    }

    /// The end a wire word names.
    pub fn from_word(word: &[u8]) -> Option<End> {
        value_of(&Self::WORDS, word)
    }
}

/// The code of an `ERROR` line: what went wrong, as one stable word that programs branch on
/// (the text beside it is for people). docs/PROTOCOL.md lists when each is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    LineTooLong,
    NotUtf8,
    EmptyLine,
    UnknownVerb,
    BadFields,
    BadNumber,
    BadId,
    BadName,
    BadWord,
    BadToken,
    NotRegistered,
    Unauthorized,
    NameTaken,
    Unexpected,
    NotAsked,
    UnknownRequest,
    HandshakeTimeout,
    TlsRequired,
    LineTimeout,
    SlowConsumer,
    TooManyConnections,
    Internal,
}

impl ErrorCode {
    /// Every code with its word, in the order docs/PROTOCOL.md lists them.
    pub const WORDS: [(ErrorCode, &'static str); 22] = [
        (ErrorCode::LineTooLong, "line-too-long"),
        (ErrorCode::NotUtf8, "not-utf8"),
        (ErrorCode::EmptyLine, "empty-line"),
        (ErrorCode::UnknownVerb, "unknown-verb"),
        (ErrorCode::BadFields, "bad-fields"),
        (ErrorCode::BadNumber, "bad-number"),
        (ErrorCode::BadId, "bad-id"),
        (ErrorCode::BadName, "bad-name"),
        (ErrorCode::BadWord, "bad-word"),
        (ErrorCode::BadToken, "bad-token"),
        (ErrorCode::NotRegistered, "not-registered"),
        (ErrorCode::Unauthorized, "unauthorized"),
        (ErrorCode::NameTaken, "name-taken"),
        (ErrorCode::Unexpected, "unexpected"),
        (ErrorCode::NotAsked, "not-asked"),
        (ErrorCode::UnknownRequest, "unknown-request"),
        (ErrorCode::HandshakeTimeout, "handshake-timeout"),
        (ErrorCode::TlsRequired, "tls-required"),
        (ErrorCode::LineTimeout, "line-timeout"),
        (ErrorCode::SlowConsumer, "slow-consumer"),
        (ErrorCode::TooManyConnections, "too-many-connections"),
        (ErrorCode::Internal, "internal"),
    ];

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        word_of(&Self::WORDS, self)
    }

    /// The code a wire word names; `None` for a word this version does not know.
    pub fn from_word(word: &[u8]) -> Option<ErrorCode> {
        value_of(&Self::WORDS, word)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn word_of<T: Copy + PartialEq>(table: &[(T, &'static str)], value: T) -> &'static str {
    table.iter().find(|(v, _)| *v == value).map_or("", |&(_, word)| word)
}

fn value_of<T: Copy>(table: &[(T, &'static str)], word: &[u8]) -> Option<T> {
    table.iter().find(|(_, w)| w.as_bytes() == word).map(|&(v, _)| v)
}

/// The charset and length of a name, as every message about a bad name says it.
pub const NAME_RULE: &str = "1 to 32 characters from A-Z a-z 0-9 _ -";

/// The range of numbers, as every message about a bad number says it.
pub const NUMBER_RULE: &str = "from 1 to 10";

/// The characters and length of a token, as every message about a bad token says it.
pub const TOKEN_RULE: &str = "1 to 128 printable ASCII characters without spaces";

/// Why a line is not a valid message. Each has a stable [`ErrorCode`] for `ERROR` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The line is longer than the limit (or no newline came within it).
    LineTooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// The line is empty or only spaces.
    Empty,
    /// The first word is not a verb of the protocol.
    UnknownVerb,
    /// Too few or too many fields for the verb.
    BadFields,
    /// A number outside 1..=10.
    BadNumber,
    /// An id that is not a decimal integer below 2^64.
    BadId,
    /// A name outside the charset or length.
    BadName,
    /// A field that must be one of a few words is not.
    BadWord,
    /// A token outside the allowed characters or length.
    BadToken,
}

impl ProtocolError {
    /// The code sent in an `ERROR` line.
    pub fn code(self) -> ErrorCode {
        match self {
            ProtocolError::LineTooLong => ErrorCode::LineTooLong,
            ProtocolError::NotUtf8 => ErrorCode::NotUtf8,
            ProtocolError::Empty => ErrorCode::EmptyLine,
            ProtocolError::UnknownVerb => ErrorCode::UnknownVerb,
            ProtocolError::BadFields => ErrorCode::BadFields,
            ProtocolError::BadNumber => ErrorCode::BadNumber,
            ProtocolError::BadId => ErrorCode::BadId,
            ProtocolError::BadName => ErrorCode::BadName,
            ProtocolError::BadWord => ErrorCode::BadWord,
            ProtocolError::BadToken => ErrorCode::BadToken,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::LineTooLong => f.write_str("line is longer than the limit"),
            ProtocolError::NotUtf8 => f.write_str("line is not valid UTF-8"),
            ProtocolError::Empty => f.write_str("line is empty"),
            ProtocolError::UnknownVerb => f.write_str("unknown verb"),
            ProtocolError::BadFields => f.write_str("wrong number of fields for this verb"),
            ProtocolError::BadNumber => write!(f, "number must be an integer {NUMBER_RULE}"),
            ProtocolError::BadId => f.write_str("id must be a decimal integer from 0 to 2^64-1"),
            ProtocolError::BadName => write!(f, "name must be {NAME_RULE}"),
            ProtocolError::BadWord => f.write_str("field is not one of its allowed words"),
            ProtocolError::BadToken => write!(f, "token must be {TOKEN_RULE}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value() {
        for (code, word) in ErrorCode::WORDS {
            assert_eq!(ErrorCode::from_word(word.as_bytes()), Some(code));
            assert_eq!(code.as_str(), word);
        }
        for (end, word) in End::WORDS {
            assert_eq!(End::from_word(word.as_bytes()), Some(end));
        }
        for (mode, word) in ReplyMode::WORDS {
            assert_eq!(ReplyMode::from_word(word.as_bytes()), Some(mode));
        }
        assert_eq!(ErrorCode::from_word(b"no-such-code"), None);
        // The table of codes in docs/PROTOCOL.md lists exactly these.
        let doc = include_str!("../../docs/PROTOCOL.md");
        let table = doc.split("| code | when | closes |").nth(1).unwrap().split("\n\n").next().unwrap();
        let mut documented: Vec<&str> =
            table.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next()).collect();
        let mut words: Vec<&str> = ErrorCode::WORDS.iter().map(|&(_, word)| word).collect();
        documented.sort_unstable();
        words.sort_unstable();
        assert_eq!(documented, words);
        assert_eq!(End::from_word(b"Replied"), None);
    }
}
