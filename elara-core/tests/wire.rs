//! Property tests for the wire codec: every message round-trips, truncation is "incomplete" and
//! never "malformed", arbitrary bytes never panic, and caps are enforced before allocation.

use bytes::{BufMut, Bytes, BytesMut};
use elara_core::wire::{self, FrameDecoder, MAX_BODY, MAX_SEQS};
use elara_core::{
    Capabilities, DecodeError, Fragment, GroupId, InterestLevel, Message, NodeId, PeerInfo,
    Priority, StateId, StateUpdate, Time, TrackInfo, UpdateKind,
};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}
fn level() -> impl Strategy<Value = InterestLevel> {
    (0u8..5).prop_map(|v| InterestLevel::from_u8(v).unwrap())
}
fn priority() -> impl Strategy<Value = Priority> {
    (0u8..4).prop_map(|v| Priority::from_u8(v).unwrap())
}
fn kind() -> impl Strategy<Value = UpdateKind> {
    (0u8..4).prop_map(|v| UpdateKind::from_u8(v).unwrap())
}
fn update() -> impl Strategy<Value = StateUpdate> {
    (
        (
            any::<u64>(),
            node(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<bool>(), any::<u8>(), priority(), kind()),
        (1u16..64).prop_flat_map(|c| (0..c, Just(c))),
        proptest::collection::vec(any::<u8>(), 0..2_000),
    )
        .prop_map(
            |((s, src, seq, g, t), (k, layer, p, kind), (i, c), payload)| StateUpdate {
                state: StateId(s),
                source: src,
                seq,
                group: GroupId(g),
                timestamp: Time::from_micros(t),
                keyframe: k,
                layer,
                priority: p,
                kind,
                fragment: Fragment { index: i, count: c },
                payload: Bytes::from(payload),
            },
        )
}
fn seqs() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(any::<u64>(), 0..64)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (node(), any::<(u32, u32, u16, u32, u32)>()).prop_map(|(node, c)| Message::Hello {
            node,
            caps: Capabilities {
                upload_kbps: c.0,
                download_kbps: c.1,
                max_children: c.2,
                codecs: c.3,
                max_payload: c.4
            }
        }),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        any::<u8>().prop_map(|reason| Message::Leave { reason }),
        (any::<u64>(), level(), any::<u32>(), any::<u8>()).prop_map(
            |(s, level, ttl_ms, height)| Message::Interest {
                state: StateId(s),
                level,
                ttl_ms,
                height,
            }
        ),
        any::<u64>().prop_map(|s| Message::JoinRequest { state: StateId(s) }),
        any::<u64>().prop_map(|s| Message::RepairRequest { state: StateId(s) }),
        (
            any::<u64>(),
            any::<u16>(),
            proptest::collection::vec(node(), 0..=elara_core::wire::MAX_PATH)
        )
            .prop_map(|(s, depth, path)| Message::JoinAccept {
                state: StateId(s),
                depth,
                path
            }),
        (
            any::<u64>(),
            proptest::collection::vec(
                (
                    node(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                    any::<u32>(),
                    any::<u16>(),
                    any::<u16>()
                ),
                0..16
            )
        )
            .prop_map(|(s, cs)| Message::JoinRedirect {
                state: StateId(s),
                candidates: cs
                    .into_iter()
                    .map(|(id, addr, spare_kbps, depth, slots)| PeerInfo {
                        id,
                        addr: Bytes::from(addr),
                        spare_kbps,
                        depth,
                        slots
                    })
                    .collect()
            }),
        (any::<u8>(), update()).prop_map(|(hops, update)| Message::Update { hops, update }),
        (any::<u64>(), node(), seqs()).prop_map(|(s, source, seqs)| Message::Announce {
            state: StateId(s),
            source,
            seqs
        }),
        (any::<u64>(), seqs()).prop_map(|(s, seqs)| Message::Pull {
            state: StateId(s),
            seqs
        }),
        (any::<u64>(), seqs()).prop_map(|(s, seqs)| Message::Unavailable {
            state: StateId(s),
            seqs
        }),
        (any::<u64>(), any::<u8>(), any::<bool>(), any::<u32>()).prop_map(|(s, l, k, r)| {
            Message::QualityRequest {
                state: StateId(s),
                max_layer: l,
                keyframes_only: k,
                rate_kbps: r,
            }
        }),
        (
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), kind(), any::<u8>(), priority()), 0..32)
        )
            .prop_map(|(call, ts)| Message::CallOffer {
                call,
                tracks: ts
                    .into_iter()
                    .map(|(s, kind, codec, priority)| TrackInfo {
                        state: StateId(s),
                        kind,
                        codec,
                        priority
                    })
                    .collect()
            }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        let (decoded, used) = wire::decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, msg);
    }

    #[test]
    fn every_strict_prefix_is_incomplete(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = msg.to_bytes();
        let at = cut.index(bytes.len());
        let err = wire::decode(&bytes.slice(..at)).unwrap_err();
        prop_assert!(err.is_incomplete(), "prefix of {} / {} bytes gave {:?}", at, bytes.len(), err);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&Bytes::from(data.clone()));
        let mut dec = FrameDecoder::new();
        dec.push(&data);
        while let Ok(Some(_)) = dec.next_message() {}
    }

    #[test]
    fn mutated_frames_never_panic(msg in message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut v = msg.to_bytes().to_vec();
        let i = pos.index(v.len());
        v[i] = byte;
        let _ = wire::decode(&Bytes::from(v));
    }

    #[test]
    fn chunked_stream_decodes_every_frame(msgs in proptest::collection::vec(message(), 1..8), chunk in 1usize..700) {
        let mut all = BytesMut::new();
        for m in &msgs { m.encode(&mut all); }
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for c in all.chunks(chunk) {
            dec.push(c);
            while let Some(m) = dec.next_message().unwrap() { out.push(m); }
        }
        prop_assert_eq!(out, msgs);
        prop_assert_eq!(dec.buffered(), 0);
    }
}

fn header(ty: u8, body_len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(wire::VERSION);
    b.put_u8(ty);
    b.put_u32_le(body_len);
    b
}

#[test]
fn oversized_body_is_rejected_from_the_header_alone() {
    let b = header(0x20, (MAX_BODY + 1) as u32).freeze();
    assert!(matches!(
        wire::decode(&b),
        Err(DecodeError::TooLarge {
            what: "frame body",
            ..
        })
    ));
    let mut dec = FrameDecoder::new();
    dec.push(&b);
    assert!(dec.next_message().is_err());
}

#[test]
fn oversized_sequence_list_is_rejected() {
    let mut b = header(0x22, 8 + 2);
    b.put_u64_le(1);
    b.put_u16_le((MAX_SEQS + 1) as u16);
    assert!(matches!(
        wire::decode(&b.freeze()),
        Err(DecodeError::TooLarge {
            what: "sequence list",
            ..
        })
    ));
}

#[test]
fn wrong_version_unknown_type_and_bad_enums_are_typed_errors() {
    let mut ping = Message::Ping { nonce: 1 }.to_bytes().to_vec();
    ping[0] = 9;
    assert_eq!(
        wire::decode(&Bytes::from(ping)).unwrap_err(),
        DecodeError::UnsupportedVersion(9)
    );

    let b = header(0x7f, 0).freeze();
    assert_eq!(
        wire::decode(&b).unwrap_err(),
        DecodeError::UnknownType(0x7f)
    );

    let mut b = header(0x10, 13);
    b.put_u64_le(1);
    b.put_u8(9); // no such interest level
    b.put_u32_le(0);
    assert!(matches!(
        wire::decode(&b.freeze()),
        Err(DecodeError::Invalid {
            what: "interest level",
            value: 9
        })
    ));
}

#[test]
fn trailing_bytes_inside_a_frame_are_malformed() {
    let mut b = header(0x02, 9);
    b.put_u64_le(1);
    b.put_u8(0);
    assert!(matches!(
        wire::decode(&b.freeze()),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn zero_fragment_count_is_invalid() {
    let update = StateUpdate::new(StateId(1), NodeId::from_u64(1), 0, Time::ZERO);
    let mut v = Message::Update { hops: 0, update }.to_bytes().to_vec();
    // fragment count sits right before the 4-byte payload length at the end.
    let n = v.len();
    v[n - 6] = 0;
    v[n - 5] = 0;
    assert!(matches!(
        wire::decode(&Bytes::from(v)),
        Err(DecodeError::Invalid {
            what: "fragment index/count",
            ..
        })
    ));
}

#[test]
fn update_payload_is_zero_copy() {
    let update = StateUpdate::new(StateId(1), NodeId::from_u64(1), 0, Time::ZERO)
        .with_payload(Bytes::from(vec![7u8; 1200]));
    let bytes = Message::Update { hops: 3, update }.to_bytes();
    let (msg, _) = wire::decode(&bytes).unwrap();
    let Message::Update { hops, update } = msg else {
        panic!("decoded {msg:?}")
    };
    assert_eq!(hops, 3);
    let start = bytes.as_ptr() as usize;
    let p = update.payload.as_ptr() as usize;
    assert!(p >= start && p < start + bytes.len(), "payload was copied");
}
