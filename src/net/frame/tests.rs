use super::*;

#[test]
fn hello_bytes_match_the_spec() {
    let bytes = Frame::Hello { version: 2, pairing: true, name: "Al".into() }.to_bytes();
    let mut want = vec![0, 0, 0, 15, kind::HELLO];
    want.extend_from_slice(b"PEERCONN");
    want.extend_from_slice(&[0, 2, 1, 2, b'A', b'l']);
    assert_eq!(bytes, want);
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), Err(FrameError::Oversized(0xffff_ffff + 4)));
}

#[test]
fn the_data_fast_path_agrees_with_decode() {
    let frame = Frame::Data { transfer: 7, bytes: vec![1, 2, 3] };
    let mut bytes = frame.to_bytes();
    bytes.extend_from_slice(b"next frame");
    assert_eq!(decode_data(&bytes), Some((7, &[1u8, 2, 3][..], 12)));
    assert_eq!(decode(&bytes), Ok(Some((frame, 12))));
    for cut in 0..12 {
        assert_eq!(decode_data(&bytes[..cut]), None);
    }
    assert_eq!(decode_data(&Frame::Chat("x".into()).to_bytes()), None);
    // The header made on its own is the frame's own header.
    let mut joined = data_header(7, 3).to_vec();
    joined.extend_from_slice(&[1, 2, 3]);
    assert_eq!(joined, Frame::Data { transfer: 7, bytes: vec![1, 2, 3] }.to_bytes());
    let big = vec![9u8; MAX_DATA];
    let mut made = Vec::new();
    encode_data(&mut made, u32::MAX, &big);
    assert_eq!(&made[..DATA_HEADER_LEN], &data_header(u32::MAX, MAX_DATA));
    assert_eq!(decode_data(&made), Some((u32::MAX, &big[..], made.len())));
    // No data: not for the fast path; decode explains why.
    let empty = [0, 0, 0, 5, kind::DATA, 0, 0, 0, 7];
    assert_eq!(decode_data(&empty), None);
    assert!(decode(&empty).is_err());
}

#[test]
fn partial_frames_ask_for_more() {
    let bytes = Frame::Chat("hello".into()).to_bytes();
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
}
