//! Property tests of the codec: every message round-trips, arbitrary bytes never panic, and a
//! stream of messages cut at arbitrary points decodes to the same messages.

use matchtracker::protocol::{
    self, End, ErrorCode, Message, Name, ReplyMode, Token, MAX_LINE, MAX_REQUEST_LINE,
};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_-]{1,32}".prop_map(|s| Name::new(&s).unwrap())
}

fn number() -> impl Strategy<Value = u8> {
    1u8..=10
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (name(), proptest::option::of("[!-~]{1,128}"))
            .prop_map(|(name, token)| Message::Hello { name, token: token.map(|t| Token::new(&t).unwrap()) }),
        (name(), proptest::option::of("[!-~]{1,128}"))
            .prop_map(|(name, token)| Message::Hi { name, token: token.map(|t| Token::new(&t).unwrap()) }),
        (name(), any::<u64>(), any::<bool>()).prop_map(|(name, deadline_ms, all)| Message::Welcome {
            name,
            deadline_ms,
            replies: if all { ReplyMode::All } else { ReplyMode::Matches },
        }),
        (any::<u64>(), number()).prop_map(|(id, number)| Message::Find { id, number }),
        any::<u64>().prop_map(|id| Message::Cancel { id }),
        (any::<u64>(), name(), number()).prop_map(|(id, client, number)| Message::Query {
            id,
            client,
            number
        }),
        any::<u64>().prop_map(|id| Message::Match { id }),
        any::<u64>().prop_map(|id| Message::Miss { id }),
        (any::<u64>(), 0..3usize, proptest::collection::vec(name(), 0..20)).prop_map(|(id, end, servers)| {
            let end = [End::Replied, End::Deadline, End::NoServers][end];
            Message::Answer { id, end, servers }
        }),
        (0..ErrorCode::WORDS.len(), "[ -~]{0,40}").prop_map(|(code, text)| {
            let code = ErrorCode::WORDS[code].0;
            // The text is stored as parsed: words joined by single spaces.
            let text = text.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
            Message::Error { code, text }
        }),
        Just(Message::Bye),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in message()) {
        let line = protocol::to_line(&message);
        let (body, used) = protocol::split_line(&line, MAX_LINE).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        prop_assert_eq!(protocol::parse(body).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut rest = &bytes[..];
        while let Ok(Some((line, used))) = protocol::split_line(rest, MAX_REQUEST_LINE) {
            let _ = protocol::parse(line);
            rest = &rest[used..];
        }
    }

    #[test]
    fn arbitrary_text_lines_never_panic(line in "[ -~\t]{0,200}") {
        let _ = protocol::parse(line.as_bytes());
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_the_same(
        messages in proptest::collection::vec(message(), 1..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            protocol::encode(m, &mut stream);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let (mut buf, mut fed, mut got) = (Vec::new(), 0, Vec::new());
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            while let Some((line, used)) = protocol::split_line(&buf, MAX_LINE).unwrap() {
                got.push(protocol::parse(line).unwrap());
                buf.drain(..used);
            }
        }
        prop_assert_eq!(got, messages);
    }
}
