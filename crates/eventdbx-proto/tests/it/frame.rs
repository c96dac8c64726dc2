//! Frame codec limits and the v1 request-size check.

use eventdbx_proto::frame::{
    self, NOISE_MAX_PLAINTEXT, V1_MAX_NOISE_FRAME, V1_MAX_PLAINTEXT_FRAME,
};
use eventdbx_proto::noise::v1;
use eventdbx_proto::ProtoError;

#[test]
fn oversized_frames_are_refused_both_ways() {
    let err = frame::encode(
        &vec![0u8; V1_MAX_PLAINTEXT_FRAME + 1],
        V1_MAX_PLAINTEXT_FRAME,
    )
    .expect_err("too large to send");
    assert!(matches!(
        err,
        ProtoError::FrameTooLarge {
            len: 65_536,
            limit: 65_535
        }
    ));

    let header = u32::try_from(V1_MAX_NOISE_FRAME + 1)
        .expect("fits")
        .to_be_bytes();
    let err = frame::split(&header, V1_MAX_NOISE_FRAME).expect_err("announced too large");
    assert!(matches!(
        err,
        ProtoError::FrameTooLarge {
            len: 65_552,
            limit: 65_551
        }
    ));
    // An absurd announcement is refused from the header alone, before any payload arrives.
    assert!(frame::payload_len([0xff; 4], V1_MAX_NOISE_FRAME).is_err());
}

#[test]
fn truncated_frames_are_typed() {
    let framed = frame::encode(b"payload", 100).expect("fits");
    assert!(matches!(
        frame::decode_exact(&framed[..2], 100),
        Err(ProtoError::Truncated("frame header"))
    ));
    assert!(matches!(
        frame::decode_exact(&framed[..6], 100),
        Err(ProtoError::Truncated("frame payload"))
    ));
    let mut extra = framed.clone();
    extra.push(0);
    assert!(matches!(
        frame::decode_exact(&extra, 100),
        Err(ProtoError::Malformed(_))
    ));
    assert_eq!(
        frame::decode_exact(&framed, 100).expect("exact"),
        b"payload"
    );
}

#[test]
fn zero_length_frame_is_legal() {
    let framed = frame::encode(&[], 10).expect("fits");
    assert_eq!(framed, [0, 0, 0, 0]);
    assert_eq!(frame::split(&framed, 10).expect("ok"), Some((&[][..], 4)));
}

#[test]
fn v1_request_of_65520_bytes_is_refused_before_sending() {
    let mut client = v1::Initiator::new("tok").expect("initiator");
    let mut server = v1::Responder::new("tok").expect("responder");
    server
        .read_message1(&client.write_message1().expect("msg1"))
        .expect("msg1");
    let (msg2, mut server_session) = server.write_message2().expect("msg2");
    let mut session = client.read_message2(&msg2).expect("msg2");

    let err = session
        .sealer
        .seal(&vec![7u8; 65_520])
        .expect_err("too large");
    assert!(
        matches!(
            err,
            ProtoError::RequestTooLarge {
                len: 65_520,
                limit: 65_519
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "request too large (65520 > 65519 bytes)");

    // The refusal consumed no nonce: the next message still decrypts on the other side.
    let largest = vec![9u8; NOISE_MAX_PLAINTEXT];
    let sealed = session.sealer.seal(&largest).expect("largest fits");
    assert_eq!(sealed.len(), 65_535);
    let framed = frame::encode(&sealed, V1_MAX_NOISE_FRAME).expect("frame fits");
    let (payload, _) = frame::split(&framed, V1_MAX_NOISE_FRAME)
        .expect("ok")
        .expect("whole");
    assert_eq!(
        server_session.opener.open(payload).expect("decrypts"),
        largest
    );
}

#[test]
fn garbage_ciphertext_is_a_typed_error() {
    let mut client = v1::Initiator::new("tok").expect("initiator");
    let mut server = v1::Responder::new("tok").expect("responder");
    server
        .read_message1(&client.write_message1().expect("msg1"))
        .expect("msg1");
    let (_, mut session) = server.write_message2().expect("msg2");
    for garbage in [
        &[][..],
        &[1u8; 15][..],
        &[0u8; 64][..],
        &vec![3u8; 70_000][..],
    ] {
        assert!(matches!(
            session.opener.open(garbage),
            Err(ProtoError::Decrypt)
        ));
    }
}

#[test]
fn empty_token_is_refused_locally() {
    assert!(matches!(
        v1::Initiator::new("  \n"),
        Err(ProtoError::InvalidUse(_))
    ));
}
