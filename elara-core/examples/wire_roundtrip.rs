//! Encodes a stream of state updates as wire frames, feeds the bytes back through the incremental
//! decoder in awkward chunk sizes, and prints what came out: the codec every ELARA node speaks.

use bytes::{Bytes, BytesMut};
use elara_core::wire::FrameDecoder;
use elara_core::{GroupId, Message, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind};

fn main() {
    let source = NodeId::from_u64(1);
    let mut stream = BytesMut::new();
    let mut sent = 0usize;
    for seq in 0..300u64 {
        let keyframe = seq % 60 == 0;
        let mut update = StateUpdate::new(StateId(1), source, seq, Time::from_millis(seq * 33))
            .with_group(GroupId(seq / 60))
            .with_kind(UpdateKind::Video)
            .with_priority(if keyframe {
                Priority::High
            } else {
                Priority::Normal
            })
            .with_payload(Bytes::from(vec![
                seq as u8;
                if keyframe { 8_000 } else { 1_200 }
            ]));
        if keyframe {
            update = update.keyframe();
        }
        Message::Update { hops: 0, update }.encode(&mut stream);
        sent += 1;
    }
    let bytes = stream.freeze();
    let mut dec = FrameDecoder::new();
    let (mut received, mut keyframes, mut payload) = (0usize, 0usize, 0usize);
    for chunk in bytes.chunks(1_337) {
        dec.push(chunk);
        while let Some(msg) = dec.next_message().expect("our own frames decode") {
            if let Message::Update { update, .. } = msg {
                received += 1;
                keyframes += usize::from(update.keyframe);
                payload += update.payload.len();
            }
        }
    }
    println!(
        "encoded {sent} updates into {} bytes; decoded {received} ({keyframes} keyframes, {payload} payload bytes) from 1337-byte chunks",
        bytes.len()
    );
    assert_eq!(sent, received);
}
