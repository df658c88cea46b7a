//! The frame decoder against arbitrary bytes.
//!
//! `frame::decode` is the first code that touches what a peer sends after
//! decryption, so it must never panic, never read past a frame, and never
//! return a frame that does not stand for exactly the bytes it came from.
//! Checked on every input:
//!
//! * `decode` does not panic, and neither does `decode_data`;
//! * a decoded frame used at most the input, at least a header, at most
//!   `MAX_FRAME` bytes, and re-encodes to exactly those bytes; decoding the
//!   re-encoding (alone, or as the exact prefix) gives the same frame;
//! * `Ok(None)` only for a header or frame that is not all there;
//! * an error is final: the same bytes followed by more give the same error;
//! * the `decode_data` fast path agrees with `decode`: it returns the same
//!   DATA frame when `decode` returns one, and `None` otherwise.
//!
//! Small inputs would never reach the large frames (a DATA frame of 65 510
//! bytes), so each input is also "stretched": its header is kept and its
//! payload repeated until the frame the header announces is complete.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peerconn::net::frame::{self, Frame, HEADER_LEN, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(stretched) = stretch(data) {
        check(&stretched);
    }
    // Back to back: every frame in the input, in order, as a reader would.
    let mut rest = data;
    while let Ok(Some((_, used))) = frame::decode(rest) {
        rest = &rest[used..];
    }
});

fn check(data: &[u8]) {
    let decoded = frame::decode(data);
    let fast = frame::decode_data(data);
    match &decoded {
        Ok(Some((frame, used))) => {
            let used = *used;
            assert!(used >= HEADER_LEN && used <= data.len() && used <= MAX_FRAME, "used {used} of {}", data.len());
            let bytes = frame.to_bytes();
            assert_eq!(bytes, &data[..used], "{frame:?} re-encodes to other bytes");
            assert_eq!(frame::decode(&bytes), Ok(Some((frame.clone(), used))), "the re-encoding decodes differently");
            // The frame does not depend on what follows it.
            assert_eq!(frame::decode(&data[..used]).as_ref(), Ok(&Some((frame.clone(), used))));
            match frame {
                Frame::Data { transfer, bytes } => {
                    assert_eq!(fast, Some((*transfer, &bytes[..], used)), "decode_data disagrees with decode");
                }
                _ => assert_eq!(fast, None, "decode_data took a {}", frame.kind_name()),
            }
        }
        Ok(None) => {
            assert_eq!(fast, None, "decode_data found a frame where decode asks for more");
            if data.len() >= 4 {
                let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                assert!(data.len() < 4 + len, "{} bytes hold the whole frame of {} but decode asks for more", data.len(), 4 + len);
            }
        }
        Err(e) => {
            assert_eq!(fast, None, "decode_data took bytes decode refuses ({e})");
            // An error is final: it is reported as soon as it is known (from
            // the header alone for a bad length or type) and more bytes
            // never change it.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0u8; 8]);
            assert_eq!(frame::decode(&longer), Err(e.clone()), "the error changed when more bytes arrived");
        }
    }
}

/// The input's header with its payload repeated to the length the header
/// announces, or `None` when there is nothing to stretch (no payload, a
/// complete frame already, or a length the header alone refuses).
fn stretch(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() <= HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let total = 4 + len;
    if total <= data.len() || total > MAX_FRAME {
        return None;
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&data[..HEADER_LEN]);
    let payload = &data[HEADER_LEN..];
    while out.len() < total {
        let n = payload.len().min(total - out.len());
        out.extend_from_slice(&payload[..n]);
    }
    Some(out)
}
