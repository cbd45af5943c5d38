//! Fuzzes the decoder: any bytes, cut into lines the way a connection does, must never panic,
//! every message that parses must survive an encode/parse round trip, and the fast paths for
//! queries, replies and answers must agree with the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchtracker::protocol::{self, Message, MAX_REQUEST_LINE};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match protocol::split_line(rest, MAX_REQUEST_LINE) {
            Ok(Some((line, used))) => {
                // The fast paths may decline a line, but never disagree with the parser.
                if let Some((id, client, number)) = protocol::parse_query(line) {
                    let Ok(Message::Query { id: i, client: c, number: n }) = protocol::parse(line) else {
                        panic!("fast query path accepted what the parser refuses");
                    };
                    assert_eq!((id, client, number), (i, c.as_str().as_bytes(), n));
                }
                if let Some((id, matched)) = protocol::parse_reply(line) {
                    let parsed = protocol::parse(line);
                    let want = if matched { Message::Match { id } } else { Message::Miss { id } };
                    assert_eq!(parsed, Ok(want));
                }
                // An answer's server list alone decides how it parses.
                if let Some((id, end, listed)) = protocol::split_answer(line) {
                    let alone = protocol::parse(&[b"ANSWER 1 replied".as_slice(), listed].concat());
                    match protocol::parse(line) {
                        Ok(Message::Answer { id: i, end: e, servers }) => {
                            assert_eq!((id, end), (i, e));
                            assert_eq!(
                                alone,
                                Ok(Message::Answer { id: 1, end: protocol::End::Replied, servers })
                            );
                        }
                        Ok(other) => panic!("answer split of a line that parses as {other:?}"),
                        Err(_) => assert!(alone.is_err(), "a list that parses alone but not in its line"),
                    }
                }
                if let Ok(message) = protocol::parse(line) {
                    let encoded = protocol::to_line(&message);
                    let (again, _) = protocol::split_line(&encoded, protocol::MAX_LINE)
                        .expect("an encoded message fits a line")
                        .expect("an encoded message ends with a newline");
                    let reparsed = protocol::parse(again).expect("an encoded message parses");
                    // Control characters in an ERROR text are blanked when encoding.
                    let blanked =
                        matches!(&message, Message::Error { text, .. } if text.chars().any(char::is_control));
                    if !blanked {
                        assert_eq!(reparsed, message);
                    }
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});
