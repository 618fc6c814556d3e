//! Whatever a peer sends, a node neither panics nor lets it disturb its other peers.

mod swarm_common;

use std::time::Duration;

use bytes::Bytes;
use elara_core::wire::{MAX_CANDIDATES, MAX_PATH};
use elara_core::{
    Capabilities, Fragment, GroupId, InterestLevel, Message, NodeId, PeerInfo, Priority, StateId,
    StateUpdate, Time, TrackInfo, UpdateKind,
};
use elara_diffusion::swarm::{SwarmConfig, SwarmNode};
use proptest::prelude::*;
use swarm_common::*;

fn id() -> impl Strategy<Value = NodeId> {
    (0u64..8).prop_map(NodeId::from_u64)
}
fn state() -> impl Strategy<Value = StateId> {
    prop_oneof![Just(StateId(7)), (0u64..4).prop_map(StateId)]
}
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, any::<u64>()]
}
fn level() -> impl Strategy<Value = InterestLevel> {
    (0u8..5).prop_map(|l| InterestLevel::from_u8(l).unwrap())
}

fn update() -> impl Strategy<Value = StateUpdate> {
    (
        state(),
        id(),
        seq(),
        any::<u64>(),
        any::<bool>(),
        0u8..3,
        0u8..4,
        0usize..64,
    )
        .prop_map(|(state, source, seq, ts, key, layer, kind, len)| {
            let mut u = StateUpdate::new(state, source, seq, Time::from_micros(ts % 10_000_000))
                .with_group(GroupId(seq / 8))
                .with_layer(layer)
                .with_kind(UpdateKind::from_u8(kind).unwrap())
                .with_priority(Priority::Normal)
                .with_fragment(Fragment::WHOLE)
                .with_payload(Bytes::from(vec![0u8; len]));
            if key {
                u = u.keyframe();
            }
            u
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (id(), any::<u16>()).prop_map(|(node, k)| Message::Hello {
            node,
            caps: Capabilities {
                max_children: k,
                ..Default::default()
            }
        }),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        any::<u8>().prop_map(|reason| Message::Leave { reason }),
        (state(), level(), any::<u32>(), any::<u8>()).prop_map(|(state, level, ttl_ms, height)| {
            Message::Interest {
                state,
                level,
                ttl_ms,
                height,
            }
        }),
        state().prop_map(|state| Message::JoinRequest { state }),
        state().prop_map(|state| Message::RepairRequest { state }),
        (
            state(),
            any::<u16>(),
            proptest::collection::vec(id(), 0..MAX_PATH)
        )
            .prop_map(|(state, depth, path)| Message::JoinAccept { state, depth, path }),
        (state(), proptest::collection::vec(id(), 0..MAX_CANDIDATES)).prop_map(|(state, ids)| {
            Message::JoinRedirect {
                state,
                candidates: ids
                    .into_iter()
                    .map(|id| PeerInfo {
                        id,
                        addr: Bytes::new(),
                        spare_kbps: 0,
                        depth: 1,
                        slots: 0,
                    })
                    .collect(),
            }
        }),
        (any::<u8>(), update()).prop_map(|(hops, update)| Message::Update { hops, update }),
        (state(), id(), proptest::collection::vec(seq(), 0..16)).prop_map(
            |(state, source, seqs)| Message::Announce {
                state,
                source,
                seqs
            }
        ),
        (state(), proptest::collection::vec(seq(), 0..16))
            .prop_map(|(state, seqs)| Message::Pull { state, seqs }),
        (state(), proptest::collection::vec(seq(), 0..16))
            .prop_map(|(state, seqs)| Message::Unavailable { state, seqs }),
        (state(), any::<u8>(), any::<bool>()).prop_map(|(state, max_layer, keyframes_only)| {
            Message::QualityRequest {
                state,
                max_layer,
                keyframes_only,
                rate_kbps: 0,
            }
        }),
        (0u64..3, proptest::collection::vec(state(), 0..4)).prop_map(|(call, states)| {
            Message::CallOffer {
                call,
                tracks: states
                    .into_iter()
                    .map(|state| TrackInfo {
                        state,
                        kind: UpdateKind::Video,
                        codec: 0,
                        priority: Priority::Normal,
                    })
                    .collect(),
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A relay in a live tree takes arbitrary messages from an attacker it is connected to;
    /// its child still gets every update of the stream, in order.
    #[test]
    fn a_relay_fed_garbage_keeps_serving_its_child(
        msgs in proptest::collection::vec(message(), 1..40)
    ) {
        // 1 publishes; 2 joins below 1; 3 joins below 2 (1 takes one child); 4 is the attacker.
        let mut h = relay_chain(3);
        h.add_node(config(4, 4, Some(2), 1000));
        h.run_for(Duration::from_millis(600));
        let (relay, child, attacker) = (NodeId::from_u64(2), NodeId::from_u64(3), NodeId::from_u64(4));
        prop_assert_eq!(h.node(child).parent(StateId(7)), Some(relay));
        let mut s = Stream::video(7, 1);
        for (i, m) in msgs.into_iter().enumerate() {
            h.inject(attacker, relay, m);
            if i % 4 == 0 {
                stream_frames(&mut h, &mut s, 1, Duration::from_millis(10));
            }
        }
        stream_frames(&mut h, &mut s, 3, Duration::from_millis(33));
        h.run_for(Duration::from_millis(500));
        let got = delivered_seqs(&h, child, StateId(7));
        prop_assert_eq!(got, (0..s.next).collect::<Vec<_>>());
    }

    /// A lone node fed arbitrary messages from arbitrary peers, connected or not, at arbitrary
    /// times, never panics and never addresses itself.
    #[test]
    fn a_node_never_panics_on_arbitrary_sequences(
        steps in proptest::collection::vec((id(), message(), 0u64..200_000), 1..60)
    ) {
        let me = NodeId::from_u64(1);
        let cfg = SwarmConfig::new(me, caps(3)).with_bootstrap(NodeId::from_u64(2));
        let mut node = SwarmNode::new(cfg, Time::ZERO);
        node.create_state(StateId(0)).unwrap();
        node.declare_interest(Time::ZERO, StateId(7), InterestLevel::High);
        let mut now = Time::ZERO;
        for p in 2..6 {
            node.peer_connected(now, NodeId::from_u64(p));
        }
        for (i, (from, msg, dt)) in steps.into_iter().enumerate() {
            now += Duration::from_micros(dt);
            node.handle_message(now, from, msg);
            if i % 5 == 0 {
                node.handle_timeout(now);
                let _ = node.publish(now, StateUpdate::new(StateId(0), me, i as u64, now));
            }
            while let Some(t) = node.poll_transmit(now) {
                prop_assert_ne!(t.to, me);
            }
            while node.poll_event().is_some() {}
            let _ = node.poll_timeout();
        }
    }
}

#[test]
fn duplicates_and_strangers_are_dropped_and_counted() {
    let state = StateId(7);
    let (me, parent, stranger) = (
        NodeId::from_u64(5),
        NodeId::from_u64(1),
        NodeId::from_u64(9),
    );
    let mut now = Time::from_secs(1);
    let mut node = SwarmNode::new(SwarmConfig::new(me, caps(2)).with_bootstrap(parent), now);
    node.peer_connected(now, parent);
    node.peer_connected(now, stranger);
    node.declare_interest(now, state, InterestLevel::High);
    node.handle_message(
        now,
        parent,
        Message::JoinAccept {
            state,
            depth: 0,
            path: vec![parent],
        },
    );
    assert_eq!(node.parent(state), Some(parent));
    let update = |seq: u64, source: NodeId, at: Time| {
        let u = StateUpdate::new(state, source, seq, at)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(0));
        Message::Update {
            hops: 0,
            update: if seq == 0 { u.keyframe() } else { u },
        }
    };
    now += Duration::from_millis(10);
    node.handle_message(now, parent, update(0, parent, now));
    node.handle_message(now, parent, update(0, parent, now));
    node.handle_message(now, stranger, update(1, parent, now));
    node.handle_message(now, parent, update(1, stranger, now));
    node.handle_message(now, parent, update(1, parent, now));
    node.handle_message(now, parent, update(1, parent, now));
    let mut seqs = Vec::new();
    while let Some(e) = node.poll_event() {
        if let elara_diffusion::swarm::Event::Delivered { update, hops, .. } = e {
            assert_eq!(hops, 1);
            seqs.push(update.seq);
        }
    }
    assert_eq!(seqs, vec![0, 1]);
    let m = node.state_metrics(state).unwrap();
    assert_eq!(
        (
            m.delivered,
            m.duplicates,
            m.not_from_parent,
            m.non_authority
        ),
        (2, 2, 1, 1)
    );
}
