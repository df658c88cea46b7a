//! Protocol v1 frames, tested without any sockets: every frame survives
//! encode → decode, partial input asks for more, and no input whatsoever can
//! make `decode` panic, over-read, or hand back a frame that is not exactly
//! what the bytes say.

use peerconn::net::frame::{
    self, decode, kind, ByeCode, Frame, FrameError, HEADER_LEN, MAGIC, MAX_CHAT, MAX_FRAME, MAX_NAME, MAX_REASON,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ----- strategies -------------------------------------------------------------

/// Appends chars from `chars` while the text stays within `max` bytes.
fn fill(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

/// Any char, weighted towards the multi-byte and odd ones that trip up
/// length and boundary arithmetic.
/// A folder entry any encoder can carry: 1 to 32 components of 1 to 255
/// bytes, a file's size or none.
fn tree_entry() -> impl Strategy<Value = frame::TreeEntry> {
    (vec(vec(any_char(), 1..40), 1..=frame::MAX_DEPTH), proptest::option::of(any::<u64>())).prop_map(|(path, size)| {
        frame::TreeEntry { path: path.into_iter().map(|c| fill(c, frame::MAX_FILE_NAME)).collect(), size }
    })
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        1 => prop::char::range('\u{0}', '\u{7f}'),
        1 => prop::sample::select(vec!['é', '€', '😀', '\u{202e}', '\u{feff}', ' ', '\t', '\0']),
    ]
}

/// A display name `check_name` accepts: 1..=64 bytes, no control chars, not
/// only white space.
fn valid_name() -> impl Strategy<Value = String> {
    vec(any_char(), 1..=MAX_NAME)
        .prop_map(|chars| {
            let chars = chars.into_iter().map(|c| if c.is_control() { 'x' } else { c }).collect();
            fill(chars, MAX_NAME)
        })
        .prop_filter("check_name accepts it", |s| frame::check_name(s).is_ok())
}

/// A chat text `check_chat` accepts, including ones right at the limit.
fn valid_chat() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(any_char(), 1..200).prop_map(|c| fill(c, MAX_CHAT)),
        1 => vec(any_char(), 4000..=MAX_CHAT).prop_map(|c| fill(c, MAX_CHAT)),
        1 => (MAX_CHAT - 8..=MAX_CHAT).prop_map(|n| "a".repeat(n)),
    ]
    .prop_filter("check_chat accepts it", |s| frame::check_chat(s).is_ok())
}

/// Every bye code (also used by `session_props.rs`).
pub(crate) fn any_bye_code() -> impl Strategy<Value = ByeCode> {
    prop::sample::select(vec![
        ByeCode::Normal,
        ByeCode::Busy,
        ByeCode::ProtocolError,
        ByeCode::Unsupported,
        ByeCode::Untrusted,
        ByeCode::Pairing,
        ByeCode::Limit,
    ])
}

/// A reason a bye can carry: 0..=200 bytes of any text.
fn valid_reason() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any_char(), 0..80).prop_map(|c| fill(c, MAX_REASON)),
        1 => vec(any_char(), 150..=MAX_REASON).prop_map(|c| fill(c, MAX_REASON)),
    ]
}

/// Short text, or text that runs up to and over `max` bytes, with odd and
/// multi-byte chars where the limit falls.
fn text_around(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any_char(), 1..64).prop_map(|c| c.into_iter().collect::<String>()),
        (0..8usize, any_char(), 0..8usize).prop_map(move |(short, c, tail)| format!(
            "{}{c}{}",
            "a".repeat(max - short),
            "b".repeat(tail)
        )),
        (0..40usize, vec(any_char(), 1..40)).prop_map(move |(short, chars)| {
            let mut s = "a".repeat(max - short);
            s.extend(chars);
            s
        }),
    ]
}

/// Every variant of `Frame`, each with fields its decoder accepts.
fn valid_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), any::<bool>(), valid_name()).prop_map(|(version, pairing, name)| Frame::Hello {
            version,
            pairing,
            name
        }),
        vec(any::<u8>(), 1..=frame::MAX_PAIR).prop_map(Frame::Pair),
        any::<[u8; 32]>().prop_map(Frame::Confirm),
        valid_chat().prop_map(Frame::Chat),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        (any_bye_code(), valid_reason()).prop_map(|(code, reason)| Frame::Bye { code, reason }),
        // File transfer frames.
        (any::<u32>(), any::<u64>(), vec(any_char(), 1..120)).prop_map(|(transfer, size, name)| Frame::Offer {
            transfer,
            size,
            name: fill(name, frame::MAX_FILE_NAME)
        }),
        any::<u32>().prop_map(|transfer| Frame::Accept { transfer }),
        (any::<u32>(), valid_reason()).prop_map(|(transfer, reason)| Frame::Decline { transfer, reason }),
        (any::<u32>(), prop_oneof![vec(any::<u8>(), 1..300), vec(any::<u8>(), frame::MAX_DATA - 4..=frame::MAX_DATA)])
            .prop_map(|(transfer, bytes)| Frame::Data { transfer, bytes }),
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(transfer, hash)| Frame::Done { transfer, hash }),
        (any::<u32>(), any::<bool>(), valid_reason()).prop_map(|(transfer, mine, reason)| Frame::Cancel {
            transfer,
            mine,
            reason
        }),
        any::<u32>().prop_map(|transfer| Frame::Received { transfer }),
        (any::<u32>(), any::<u64>()).prop_map(|(transfer, granted)| Frame::Window { transfer, granted }),
        (any::<u32>(), any::<u64>()).prop_map(|(transfer, have)| Frame::Resume { transfer, have }),
        (any::<u32>(), vec(any::<[u8; 32]>(), 0..=frame::MAX_PROOF_BLOCKS as usize))
            .prop_map(|(transfer, hashes)| Frame::Proof { transfer, hashes }),
        (any::<u32>(), any::<u64>()).prop_map(|(transfer, offset)| Frame::AcceptFrom { transfer, offset }),
        (any::<u32>(), any::<u64>(), any::<u32>(), vec(any_char(), 1..60)).prop_map(
            |(transfer, size, entries, name)| {
                Frame::OfferFolder { transfer, size, entries, name: fill(name, frame::MAX_FILE_NAME) }
            }
        ),
        // (At most 8 × 32 × 39 × 4 bytes: always one frame.)
        (any::<u32>(), vec(tree_entry(), 1..=8)).prop_map(|(transfer, entries)| Frame::Entries { transfer, entries }),
        (any::<u32>(), any::<u32>(), any::<[u8; 32]>()).prop_map(|(transfer, index, hash)| Frame::FileDone {
            transfer,
            index,
            hash
        }),
    ]
}

/// A header whose length is one `decode` will wait for (1..=MAX_FRAME - 4),
/// or anything at all.
fn plausible_length() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0..=(MAX_FRAME as u32 - 4),
        1 => 0..=32u32,
        1 => any::<u32>(),
    ]
}

/// Byte strings that look like the start of a frame: a sane length, a known
/// type byte (often), a hello magic (sometimes), then anything.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        plausible_length(),
        prop_oneof![4 => kind::HELLO..=kind::BYE, 1 => 0x10..=0x1fu8, 1 => any::<u8>()],
        any::<bool>(),
        prop_oneof![
            3 => vec(any::<u8>(), 0..64),
            2 => vec(any::<u8>(), 0..2_000),
            1 => vec(any::<u8>(), 0..70_000),
        ],
    )
        .prop_map(|(len, kind, magic, body)| {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(kind);
            if magic {
                bytes.extend_from_slice(&MAGIC);
            }
            bytes.extend_from_slice(&body);
            bytes
        })
}

/// A valid frame (or a few in a row) with some bytes overwritten, some cut
/// off, or some added: close enough to valid to reach the deep checks.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(valid_frame(), 1..4),
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(frames, flips, cut, do_cut, tail)| {
            let mut bytes = Vec::new();
            for f in &frames {
                f.encode(&mut bytes);
            }
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if do_cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            bytes
        })
}

/// Anything: uniform noise, plausible frames, and damaged real frames.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..70_000), plausible_bytes(), mutated_frames(),]
}

// ----- helpers ------------------------------------------------------------------

fn header(len: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.push(kind);
    bytes.extend_from_slice(payload);
    bytes
}

/// A frame of type `kind` whose length field matches `payload`.
fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    header(payload.len() as u32 + 1, kind, payload)
}

fn hello_payload(magic: &[u8], version: u16, name_len: u8, name: &[u8]) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&version.to_be_bytes());
    p.push(0); // flags: no pairing
    p.push(name_len);
    p.extend_from_slice(name);
    p
}

fn malformed(result: Result<Option<(Frame, usize)>, FrameError>, what: &str, why: &str) {
    match result {
        Err(FrameError::Malformed(w, reason)) => {
            assert_eq!(w, what, "wrong subject in {reason:?}");
            assert!(reason.contains(why), "expected the reason to mention {why:?}, got {reason:?}");
        }
        other => panic!("expected Malformed({what:?}, ..{why}..), got {other:?}"),
    }
}

// ----- properties ---------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_frame_round_trips_using_exactly_its_bytes(frame in valid_frame()) {
        let bytes = frame.to_bytes();
        prop_assert!(bytes.len() >= HEADER_LEN);
        prop_assert!(bytes.len() <= MAX_FRAME);
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, bytes.len() - 4, "the length field counts type and payload");
        prop_assert_eq!(decode(&bytes), Ok(Some((frame, bytes.len()))));
    }

    #[test]
    fn a_frame_followed_by_more_bytes_decodes_alone(
        frame in valid_frame(),
        extra in prop_oneof![vec(any::<u8>(), 1..64), vec(any::<u8>(), 1..70_000)],
    ) {
        let mut bytes = frame.to_bytes();
        let used = bytes.len();
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(decode(&bytes), Ok(Some((frame, used))));
    }

    #[test]
    fn every_strict_prefix_of_a_frame_asks_for_more(frame in valid_frame()) {
        let bytes = frame.to_bytes();
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {} of {}", cut, bytes.len());
        }
    }

    #[test]
    fn back_to_back_frames_decode_in_order(frames in vec(valid_frame(), 1..6)) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let mut rest = &bytes[..];
        let mut got = Vec::new();
        while let Some((f, used)) = decode(rest).expect("valid frames decode") {
            got.push(f);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty(), "{} bytes left over", rest.len());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn encode_clips_over_long_text_at_a_char_boundary(
        text in text_around(MAX_CHAT),
        reason in text_around(MAX_REASON),
        name in text_around(MAX_NAME)
            .prop_map(|s| s.chars().map(|c| if c.is_control() { 'x' } else { c }).collect::<String>()),
    ) {
        // `fill` keeps the longest prefix that fits, which is what clipping
        // at a char boundary must give.
        let chat = Frame::Chat(text.clone()).to_bytes();
        let want = fill(text.chars().collect(), MAX_CHAT);
        prop_assert_eq!(decode(&chat), Ok(Some((Frame::Chat(want), chat.len()))));

        let bye = Frame::Bye { code: ByeCode::Busy, reason: reason.clone() }.to_bytes();
        let want = fill(reason.chars().collect(), MAX_REASON);
        prop_assert_eq!(
            decode(&bye),
            Ok(Some((Frame::Bye { code: ByeCode::Busy, reason: want }, bye.len())))
        );

        let hello = Frame::Hello { version: frame::VERSION, pairing: false, name: name.clone() }.to_bytes();
        let want = fill(name.chars().collect(), MAX_NAME);
        if frame::check_name(&want).is_ok() {
            prop_assert_eq!(
                decode(&hello),
                Ok(Some((Frame::Hello { version: frame::VERSION, pairing: false, name: want }, hello.len())))
            );
        } else {
            // Clipped to nothing but white space: refused, not mangled.
            prop_assert!(matches!(decode(&hello), Err(FrameError::Malformed("hello", _))));
        }
    }

    #[test]
    fn arbitrary_bytes_never_over_read_or_mis_decode(bytes in hostile_bytes()) {
        match decode(&bytes) {
            Ok(Some((frame, used))) => {
                prop_assert!(used <= bytes.len(), "used {} of {} bytes", used, bytes.len());
                prop_assert!(used >= HEADER_LEN);
                prop_assert!(used <= MAX_FRAME);
                prop_assert_eq!(
                    frame.to_bytes(),
                    bytes[..used].to_vec(),
                    "{:?} re-encodes differently from the bytes it came from",
                    frame
                );
            }
            Ok(None) => {
                // Only ever for a header or frame that is not all there.
                if bytes.len() >= 4 {
                    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                    prop_assert!(bytes.len() < 4 + len, "{} bytes hold the whole frame of {}", bytes.len(), 4 + len);
                }
            }
            Err(e) => {
                // Every error reads as a sentence.
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// A decoder that reads a stream piece by piece must never change its
    /// mind: a prefix either asks for more, or already gives the answer the
    /// whole buffer gives.
    #[test]
    fn a_prefix_either_asks_for_more_or_agrees_with_the_whole(
        bytes in hostile_bytes(),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = decode(&bytes);
        let cut = cut.index(bytes.len() + 1);
        let part = decode(&bytes[..cut]);
        prop_assert!(
            part == Ok(None) || part == whole,
            "first {} bytes: {:?}; all {} bytes: {:?}",
            cut,
            part,
            bytes.len(),
            whole
        );
        if let Ok(Some((_, used))) = whole {
            prop_assert_eq!(decode(&bytes[..used]), whole.clone(), "the frame alone decodes the same");
        }
    }

    #[test]
    fn lengths_over_the_limit_are_refused_from_the_header_alone(
        len in (MAX_FRAME as u32 - 3)..=u32::MAX,
        tail in vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        prop_assert_eq!(decode(&bytes), Err(FrameError::Oversized(len as u64 + 4)));
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode(&bytes), Err(FrameError::Oversized(len as u64 + 4)));
    }

    #[test]
    fn lengths_within_the_limit_wait_for_the_body(
        len in 1..=(MAX_FRAME as u32 - 4),
        kind in kind::HELLO..=kind::BYE,
    ) {
        let bytes = len.to_be_bytes();
        prop_assert_eq!(decode(&bytes), Ok(None));
        if len > 1 {
            prop_assert_eq!(decode(&header(len, kind, &[])), Ok(None));
        }
    }
}

// ----- exact errors -------------------------------------------------------------

#[test]
fn a_zero_length_is_empty() {
    assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
    assert_eq!(decode(&[0, 0, 0, 0, kind::CHAT, b'h']), Err(FrameError::Empty));
}

#[test]
fn an_unknown_type_byte_is_refused_as_soon_as_it_arrives() {
    // 0x10..=0x1f are reserved for file transfer, so not used here.
    for t in [0x00, 0x08, 0x0f, 0x20, 0x7f, 0xff] {
        assert_eq!(decode(&raw_frame(t, b"")), Err(FrameError::UnknownType(t)));
        assert_eq!(decode(&raw_frame(t, b"12345678")), Err(FrameError::UnknownType(t)));
        // The body of 1 000 bytes has not arrived; the type alone is enough.
        assert_eq!(decode(&header(1_000, t, b"")), Err(FrameError::UnknownType(t)));
    }
}

#[test]
fn the_boundary_length_is_accepted_and_one_more_is_oversized() {
    let at_limit = MAX_FRAME as u32 - 4;
    assert_eq!(decode(&at_limit.to_be_bytes()), Ok(None));
    assert_eq!(decode(&(at_limit + 1).to_be_bytes()), Err(FrameError::Oversized(MAX_FRAME as u64 + 1)));
    assert_eq!(decode(&[0xff; 4]), Err(FrameError::Oversized(u32::MAX as u64 + 4)));
    // A whole frame of exactly MAX_FRAME bytes is read to the end (and then
    // refused for its content, a chat can only be MAX_CHAT bytes).
    let big = raw_frame(kind::CHAT, &vec![b'a'; MAX_FRAME - HEADER_LEN]);
    assert_eq!(big.len(), MAX_FRAME);
    assert_eq!(decode(&big[..MAX_FRAME - 1]), Ok(None));
    malformed(decode(&big), "chat message", "limit");
}

#[test]
fn a_hello_with_the_wrong_magic_is_bad_magic() {
    let p = hello_payload(b"PEERCONX", 1, 2, b"Al");
    assert_eq!(decode(&raw_frame(kind::HELLO, &p)), Err(FrameError::BadMagic));
    let p = hello_payload(b"peerconn", 1, 2, b"Al");
    assert_eq!(decode(&raw_frame(kind::HELLO, &p)), Err(FrameError::BadMagic));
    // Too short to even hold the magic.
    assert_eq!(decode(&raw_frame(kind::HELLO, b"PEER")), Err(FrameError::BadMagic));
    assert_eq!(decode(&raw_frame(kind::HELLO, b"")), Err(FrameError::BadMagic));
}

#[test]
fn a_hello_with_a_wrong_name_length_is_malformed() {
    let too_few = hello_payload(&MAGIC, 1, 5, b"Al");
    malformed(decode(&raw_frame(kind::HELLO, &too_few)), "hello", "should be 5 bytes but 2 follow");
    let too_many = hello_payload(&MAGIC, 1, 1, b"Al");
    malformed(decode(&raw_frame(kind::HELLO, &too_many)), "hello", "should be 1 bytes but 2 follow");
    let no_length = hello_payload(&MAGIC, 1, 0, b"");
    malformed(decode(&raw_frame(kind::HELLO, &no_length[..11])), "hello", "too short");
    let empty = hello_payload(&MAGIC, 1, 0, b"");
    malformed(decode(&raw_frame(kind::HELLO, &empty)), "hello", "empty");
    let long = "n".repeat(MAX_NAME + 1);
    let too_long = hello_payload(&MAGIC, 1, long.len() as u8, long.as_bytes());
    malformed(decode(&raw_frame(kind::HELLO, &too_long)), "hello", "limit");
    // The longest name is fine.
    let longest = "n".repeat(MAX_NAME);
    let ok = hello_payload(&MAGIC, frame::VERSION, longest.len() as u8, longest.as_bytes());
    let ok = raw_frame(kind::HELLO, &ok);
    assert_eq!(
        decode(&ok),
        Ok(Some((Frame::Hello { version: frame::VERSION, pairing: false, name: longest }, ok.len())))
    );
}

#[test]
fn a_hello_name_with_control_chars_or_only_spaces_is_malformed() {
    for name in ["a\nb", "\u{1b}[31mred", "tab\t", "\0", "del\u{7f}", "c1\u{85}"] {
        let p = hello_payload(&MAGIC, 1, name.len() as u8, name.as_bytes());
        malformed(decode(&raw_frame(kind::HELLO, &p)), "hello", "control characters");
    }
    let p = hello_payload(&MAGIC, 1, 3, b"   ");
    malformed(decode(&raw_frame(kind::HELLO, &p)), "hello", "empty");
    let p = hello_payload(&MAGIC, 1, 2, &[0xc3, 0x28]);
    assert_eq!(decode(&raw_frame(kind::HELLO, &p)), Err(FrameError::BadUtf8("name")));
}

#[test]
fn a_hello_decodes_any_version() {
    // Refusing other versions is the engine's job (with a bye that says
    // so), not the decoder's.
    for version in [0, 1, 2, u16::MAX] {
        let p = hello_payload(&MAGIC, version, 2, b"Al");
        let bytes = raw_frame(kind::HELLO, &p);
        assert_eq!(
            decode(&bytes),
            Ok(Some((Frame::Hello { version, pairing: false, name: "Al".into() }, bytes.len())))
        );
    }
}

#[test]
fn a_chat_that_is_not_utf8_is_bad_utf8() {
    for bad in [&[0xc3, 0x28][..], &[0xff], &[b'o', b'k', 0xe2, 0x82], &[0xed, 0xa0, 0x80]] {
        assert_eq!(decode(&raw_frame(kind::CHAT, bad)), Err(FrameError::BadUtf8("chat message")), "{bad:?}");
    }
}

#[test]
fn a_chat_over_max_chat_or_empty_is_malformed() {
    let over = raw_frame(kind::CHAT, &vec![b'a'; MAX_CHAT + 1]);
    malformed(decode(&over), "chat message", &format!("{} bytes long", MAX_CHAT + 1));
    malformed(decode(&raw_frame(kind::CHAT, b"")), "chat message", "empty");
    let max = raw_frame(kind::CHAT, &vec![b'a'; MAX_CHAT]);
    assert_eq!(decode(&max), Ok(Some((Frame::Chat("a".repeat(MAX_CHAT)), max.len()))));
}

#[test]
fn a_ping_or_pong_that_is_not_eight_bytes_is_malformed() {
    malformed(decode(&raw_frame(kind::PING, &[0; 7])), "ping", "7 bytes instead of 8");
    malformed(decode(&raw_frame(kind::PING, &[0; 9])), "ping", "9 bytes instead of 8");
    malformed(decode(&raw_frame(kind::PING, &[])), "ping", "0 bytes instead of 8");
    malformed(decode(&raw_frame(kind::PONG, &[0; 7])), "pong", "7 bytes instead of 8");
    let ping = raw_frame(kind::PING, &[0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(decode(&ping), Ok(Some((Frame::Ping(0x0102), ping.len()))));
}

#[test]
fn a_bye_with_an_unknown_code_or_bad_reason_is_refused() {
    for code in [8u8, 9, 0xff] {
        malformed(decode(&raw_frame(kind::BYE, &[code, b'x'])), "bye", &format!("unknown reason code {code}"));
    }
    malformed(decode(&raw_frame(kind::BYE, &[])), "bye", "no reason code");
    let mut long = vec![0u8];
    long.extend_from_slice(&[b'r'; MAX_REASON + 1]);
    malformed(decode(&raw_frame(kind::BYE, &long)), "bye", "over 200 bytes");
    assert_eq!(decode(&raw_frame(kind::BYE, &[2, 0xc3, 0x28])), Err(FrameError::BadUtf8("bye reason")));
    // All eight known codes.
    for (byte, code) in [
        (0, ByeCode::Normal),
        (1, ByeCode::Busy),
        (2, ByeCode::ProtocolError),
        (3, ByeCode::Unsupported),
        (4, ByeCode::Untrusted),
        (5, ByeCode::Pairing),
        (6, ByeCode::Limit),
        (7, ByeCode::Leaving),
    ] {
        let bytes = raw_frame(kind::BYE, &[byte]);
        assert_eq!(decode(&bytes), Ok(Some((Frame::Bye { code, reason: String::new() }, bytes.len()))));
    }
}

#[test]
fn a_long_folder_listing_is_cut_into_whole_frames_that_decode_to_it() {
    let entries: Vec<frame::TreeEntry> = (0..5000)
        .map(|i| frame::TreeEntry {
            path: vec![format!("folder {}", i / 100), format!("{}-{i}", "photo ✓".repeat(20))],
            size: (i % 7 != 0).then_some(i as u64 * 1000),
        })
        .collect();
    let frames = frame::entries_frames(9, &entries);
    assert!(frames.len() > 10, "{} frames", frames.len());
    let mut back = Vec::new();
    for f in &frames {
        let bytes = f.to_bytes();
        assert!(bytes.len() <= MAX_FRAME, "a frame of {} bytes", bytes.len());
        match decode(&bytes) {
            Ok(Some((Frame::Entries { transfer: 9, entries }, used))) if used == bytes.len() => back.extend(entries),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back, entries);
}
