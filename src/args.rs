//! The values callers pass in (from Python, the command line or Rust), each checked in one
//! place against its range, with the one message that names the range.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::{Name, Token, NAME_RULE, NUMBERS, NUMBER_RULE, TOKEN_RULE};

/// Longest deadline (and any other time a caller sets), in seconds: an hour.
pub const MAX_SECONDS: f64 = 3600.0;

/// Largest n of a simulation; the open-files limit usually binds well before it.
pub const MAX_N: u64 = 100_000;

/// Most rounds of a simulation or requests of a client.
pub const MAX_ROUNDS: u64 = 100_000;

fn invalid<T>(text: String) -> Result<T> {
    Err(Error::InvalidArgument(text))
}

/// A number servers hold and clients ask for.
///
/// # Errors
/// [`Error::InvalidArgument`] outside 1..=10.
pub fn number(value: i128) -> Result<u8> {
    match u8::try_from(value) {
        Ok(n) if NUMBERS.contains(&n) => Ok(n),
        _ => invalid(format!("number must be {NUMBER_RULE} (got {value})")),
    }
}

/// A node's name; `what` says which argument it was.
///
/// # Errors
/// [`Error::InvalidArgument`] outside the charset or length, or for the tracker's own name,
/// which no tracker would register.
pub fn name(text: &str, what: &str) -> Result<Name> {
    if text == crate::protocol::CENTRAL {
        return invalid(format!("{what} {text:?} is the tracker's own: a node needs another"));
    }
    Name::new(text).or_else(|_| invalid(format!("{what} must be {NAME_RULE} (got {text:?})")))
}

/// A shared token.
///
/// # Errors
/// [`Error::InvalidArgument`] outside the allowed characters or length (the token itself
/// is not repeated in the message).
pub fn token(text: &str) -> Result<Token> {
    Token::new(text).or_else(|_| invalid(format!("token must be {TOKEN_RULE}")))
}

/// Longest a node keeps trying to reach its tracker, in seconds: a year.
pub const MAX_PATIENCE: f64 = 365.0 * 24.0 * 3600.0;

/// A time in seconds, more than 0 and at most [`MAX_SECONDS`]; `what` names it.
///
/// # Errors
/// [`Error::InvalidArgument`] outside that range, or not a number.
pub fn seconds(value: f64, what: &str) -> Result<Duration> {
    seconds_up_to(value, what, MAX_SECONDS)
}

/// A time in seconds, more than 0 and at most `most`; `what` names it.
///
/// # Errors
/// [`Error::InvalidArgument`] outside that range, or not a number.
pub fn seconds_up_to(value: f64, what: &str, most: f64) -> Result<Duration> {
    if value > 0.0 && value <= most {
        // Below a nanosecond rounds to zero, which is no deadline at all.
        let duration = Duration::from_secs_f64(value);
        if !duration.is_zero() {
            return Ok(duration);
        }
    }
    invalid(format!("{what} must be more than 0 and at most {most} seconds (got {value})"))
}

/// A count from `low` to `high`; `what` names it.
///
/// # Errors
/// [`Error::InvalidArgument`] outside that range.
pub fn count(value: i128, what: &str, low: u64, high: u64) -> Result<usize> {
    match u64::try_from(value) {
        Ok(v) if (low..=high).contains(&v) => {
            usize::try_from(v).or_else(|_| invalid(format!("{what} is too large here")))
        }
        _ if value < i128::from(low) => invalid(format!("{what} must be at least {low} (got {value})")),
        _ => invalid(format!("{what} must be at most {high} (got {value})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_its_range_and_the_value() {
        assert_eq!(number(10).unwrap(), 10);
        let text = |r: Result<_>| match r {
            Err(Error::InvalidArgument(text)) => text,
            _ => panic!("accepted"),
        };
        assert_eq!(text(number(11).map(drop)), "number must be from 1 to 10 (got 11)");
        assert_eq!(
            text(number(1 << 70).map(drop)),
            format!("number must be from 1 to 10 (got {})", 1i128 << 70)
        );
        assert!(text(name("S!", "name").map(drop)).contains("A-Z a-z 0-9 _ -"));
        assert_eq!(
            text(seconds(1e-10, "timeout").map(drop)),
            "timeout must be more than 0 and at most 3600 seconds (got 0.0000000001)"
        );
        assert!(seconds(f64::NAN, "timeout").is_err());
        assert_eq!(text(count(1, "n", 2, 5).map(drop)), "n must be at least 2 (got 1)");
        assert_eq!(text(count(6, "n", 2, 5).map(drop)), "n must be at most 5 (got 6)");
        assert!(!text(token("a b").map(drop)).contains("a b"));
    }
}
