//! Names of nodes and the shared token: checked once when made, cheap to copy after.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::words::ProtocolError;

/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// The tracker's own name: every transcript calls the tracker so, and no node may take it.
pub const CENTRAL: &str = "Central";

use super::decimal;

/// A node's name: 1 to [`MAX_NAME_LEN`] characters from `A-Z a-z 0-9 _ -`.
///
/// The charset keeps names safe to print, to put in a space-separated line, and to use in a
/// file name. A name is a plain value held inline: making one allocates nothing and cloning
/// it is a copy, which matters because a client at scale reads millions of names in its
/// answers and the tracker copies names into every answer.
#[derive(Clone)]
pub struct Name {
    /// The name's bytes, then zeros: the charset has no zero byte.
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
    /// Length of the name without its trailing digits.
    stem: u8,
    /// The number the trailing digits make (0 if none; `u64::MAX` for that or more, when
    /// the digits themselves decide).
    index: u64,
    /// The stem's first eight bytes as a number that orders like them (zero-padded), so that
    /// sorting an answer mostly compares numbers.
    head: u64,
}

impl Name {
    /// Checks `text` against the allowed charset and length.
    ///
    /// # Errors
    /// [`ProtocolError::BadName`] if it is empty, too long, or has another character.
    pub fn new(text: &str) -> Result<Name, ProtocolError> {
        Name::from_bytes(text.as_bytes())
    }

    /// As [`Name::new`], from bytes.
    ///
    /// # Errors
    /// [`ProtocolError::BadName`] if they are not a name.
    pub fn from_bytes(text: &[u8]) -> Result<Name, ProtocolError> {
        if text.is_empty() || text.len() > MAX_NAME_LEN || !text.iter().all(|&b| is_name_byte(b)) {
            return Err(ProtocolError::BadName);
        }
        let stem = text.iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |last| last + 1);
        let digits = &text[stem..];
        let index = if digits.is_empty() { 0 } else { decimal(digits).unwrap_or(u64::MAX) };
        let mut head = [0; 8];
        head[..stem.min(8)].copy_from_slice(&text[..stem.min(8)]);
        let mut bytes = [0; MAX_NAME_LEN];
        bytes[..text.len()].copy_from_slice(text);
        // Both are at most MAX_NAME_LEN (32), checked above.
        #[allow(clippy::cast_possible_truncation)]
        let (len, stem) = (text.len() as u8, stem as u8);
        Ok(Name { bytes, len, stem, index, head: u64::from_be_bytes(head) })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII from the name charset is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The "index order" answers are listed in: by the name without its trailing digits, then
    /// by the number those digits make (`S2` before `S10`), then by the whole name.
    pub fn index_order(&self, other: &Name) -> Ordering {
        // Most comparisons are settled by the stems' first eight bytes and the number.
        let stems = self.head.cmp(&other.head).then_with(|| {
            if self.stem.max(other.stem) > 8 {
                self.bytes[..usize::from(self.stem)].cmp(&other.bytes[..usize::from(other.stem)])
            } else {
                Ordering::Equal
            }
        });
        stems
            .then(self.index.cmp(&other.index))
            .then_with(|| {
                if self.index == u64::MAX {
                    self.big_index().cmp(&other.big_index())
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| self.cmp(other))
    }

    /// The trailing digits as a number of any size, in a form that orders like the number:
    /// how many digits without leading zeros, then those digits.
    fn big_index(&self) -> (usize, &[u8]) {
        let digits = &self.as_bytes()[usize::from(self.stem)..];
        let start = digits.iter().position(|&b| b != b'0').unwrap_or(digits.len());
        (digits.len() - start, &digits[start..])
    }
}

/// Whether `b` may appear in a name.
pub(crate) fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// The bytes of the name charset, as a table: names are checked by the million.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        // b < 256.
        #[allow(clippy::cast_possible_truncation)]
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    /// Plain text order; see [`Name::index_order`] for the order of answers.
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Longest shared token, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// A shared secret a node presents in its greeting: 1 to [`MAX_TOKEN_LEN`] printable ASCII
/// characters without spaces. Its `Debug` hides it, so it never reaches a log or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// Checks `text` against the allowed characters and length.
    ///
    /// # Errors
    /// [`ProtocolError::BadToken`] if it is empty, too long, or has another character.
    pub fn new(text: &str) -> Result<Token, ProtocolError> {
        let ok =
            !text.is_empty() && text.len() <= MAX_TOKEN_LEN && text.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Token(Arc::from(text)))
        } else {
            Err(ProtocolError::BadToken)
        }
    }

    /// The secret itself, for the greeting line; never for a log.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `other` is the same secret. Takes the same time wherever they differ, so the
    /// time it takes tells an attacker nothing about how much of a guess was right.
    pub fn matches(&self, other: &Token) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let token = Token::new("abc").unwrap();
        assert!(token.matches(&Token::new("abc").unwrap()));
        for other in ["abd", "ab", "abcd", "x"] {
            assert!(!token.matches(&Token::new(other).unwrap()), "{other}");
        }
        assert_eq!(format!("{token:?}"), "Token(..)");
        let hello = Message::Hello { name: name("S1"), token: Some(token) };
        assert!(!format!("{hello:?}").contains("abc"));
        assert_eq!(Token::new("a b"), Err(ProtocolError::BadToken));
        assert_eq!(Token::new(""), Err(ProtocolError::BadToken));
        assert_eq!(Token::new(&"x".repeat(129)), Err(ProtocolError::BadToken));
    }

    #[test]
    fn index_order_sorts_by_trailing_number() {
        let mut names = [name("S10"), name("S2"), name("S1"), name("X")];
        names.sort_by(Name::index_order);
        let names: Vec<_> = names.iter().map(Name::as_str).collect();
        assert_eq!(names, ["S1", "S2", "S10", "X"]);
    }

    #[test]
    fn index_order_agrees_with_the_plain_definition() {
        // Stems of every length around the eight bytes compared at once.
        let texts = [
            "S",
            "S1",
            "S01",
            "S2",
            "S10",
            "SA1",
            "ABCDEFGH1",
            "ABCDEFGH2",
            "ABCDEFGHI1",
            "ABCDEFG",
            "ABCDEFG9",
            "ABCDEFGHIJKLMNOP3",
            "ABCDEFGHIJKLMNOQ1",
            "7",
            "_",
            "-x",
            "a-b_c99",
            "Z2",
            "Z18446744073709551615",
            "Z18446744073709551616",
            "Z018446744073709551616",
            "Z99999999999999999999999",
        ];
        // The number as digits without leading zeros, ordered by length then digits: a
        // number of any size.
        let plain = |n: &Name| {
            let text = n.as_str();
            let stem = text.trim_end_matches(|c: char| c.is_ascii_digit());
            let digits = text[stem.len()..].trim_start_matches('0');
            (stem.to_owned(), digits.len(), digits.to_owned(), text.to_owned())
        };
        for a in texts.map(name) {
            for b in texts.map(name) {
                assert_eq!(a.index_order(&b), plain(&a).cmp(&plain(&b)), "{a} vs {b}");
            }
        }
    }
}
