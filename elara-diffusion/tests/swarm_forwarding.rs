//! Forwarding through a relay: a keyframe overtaken by its own deltas (its retransmission
//! took a round trip) must still start its group for the relay's children, live, without a
//! repair round trip; fan-out order; repair for Low viewers of audio; and a viewer joining
//! mid-group is started at the whole newest keyframe, first fragment included.

mod swarm_common;

use std::time::Duration;

use elara_core::{InterestLevel, Message, NodeId, StateId, Time};
use elara_diffusion::harness::{Harness, LinkProfile};
use swarm_common::{Stream, config, delivered, delivered_seqs, publisher_and_viewer, relay_chain};

/// The relay chain of `relay_chain(5)` once settled: 1 publishes and takes one child (2); 3
/// is redirected below 2.
fn settled_chain() -> Harness {
    let mut h = relay_chain(5);
    h.run_for(Duration::from_millis(600));
    assert_eq!(
        h.node(NodeId::from_u64(3)).parent(StateId(7)),
        Some(NodeId::from_u64(2))
    );
    h
}

/// A video update of state 7 from `source` in `group`: fragment `index` of `count` of a
/// keyframe (`key`), as elara-media's packetizer cuts frames, or a whole delta.
fn fragment_update(
    source: NodeId,
    at: Time,
    seq: u64,
    group: u64,
    key: bool,
    index: u16,
    count: u16,
) -> elara_core::StateUpdate {
    let u = elara_core::StateUpdate::new(StateId(7), source, seq, at)
        .with_kind(elara_core::UpdateKind::Video)
        .with_group(elara_core::GroupId(group))
        .with_fragment(elara_core::Fragment { index, count })
        .with_payload(bytes::Bytes::from(vec![1u8; 500]));
    if key { u.keyframe() } else { u }
}

/// [`fragment_update`] of group 0 as the message a parent sends.
fn fragment(source: NodeId, at: Time, seq: u64, key: bool, index: u16, count: u16) -> Message {
    Message::Update {
        hops: 0,
        update: fragment_update(source, at, seq, 0, key, index, count),
    }
}

#[test]
fn a_keyframe_overtaken_by_its_deltas_still_starts_the_group_for_the_children() {
    let state = StateId(7);
    let (publisher, relay, child) = (
        NodeId::from_u64(1),
        NodeId::from_u64(2),
        NodeId::from_u64(3),
    );
    let mut h = settled_chain();

    // The publisher's frames reach the relay as the network delivers them: group 0 in order,
    // then group 1 with its keyframe (seq 15) arriving after its first two deltas.
    let mut s = Stream::video(7, 1);
    let frames: Vec<_> = (0..30)
        .map(|i| s.frame(h.now() + Duration::from_millis(33 * i)))
        .collect();
    let order: Vec<usize> = (0..15).chain([16, 17, 15]).chain(18..30).collect();
    for i in order {
        let f = frames[i].clone();
        // The harness clock must not run behind the frame's timestamp.
        if f.timestamp > h.now() {
            let wait = f.timestamp - h.now();
            h.run_for(wait);
        }
        let sent = h.inject(publisher, relay, Message::Update { hops: 0, update: f });
        assert!(sent, "the publisher and the relay are connected");
        h.run_for(Duration::from_millis(5));
    }
    h.run_for(Duration::from_millis(500));

    let got = delivered_seqs(&h, child, state);
    assert_eq!(got, (0..30).collect::<Vec<_>>(), "the child lost frames");
    let m = h.node(child).state_metrics(state).unwrap();
    assert_eq!(
        m.pulled, 0,
        "the child had to pull frames the relay should have forwarded live"
    );
}

#[test]
fn low_interest_viewers_of_an_audio_stream_get_lost_frames_repaired() {
    // Low interest filters a video stream down to its keyframes, but every audio frame is
    // independent: a Low viewer of audio expects all of it, so a gap is a loss to repair.
    let mut h = Harness::new(11, LinkProfile::wan().with_loss(0.05));
    let state = StateId(9);
    let publisher = NodeId::from_u64(1);
    h.add_node(config(1, 3, None, 200));
    h.node_mut(publisher).create_state(state).unwrap();
    let viewers: Vec<NodeId> = (2..=21).map(NodeId::from_u64).collect();
    for (i, &v) in viewers.iter().enumerate() {
        h.add_node(config(i as u64 + 2, 3, Some(1), 200));
        h.node_mut(v)
            .declare_interest(Time::ZERO, state, InterestLevel::Low);
    }
    h.run_for(Duration::from_secs(3));
    let frames = 300u64;
    for seq in 0..frames {
        let now = h.now();
        let u = elara_core::StateUpdate::new(state, publisher, seq, now)
            .with_kind(elara_core::UpdateKind::Audio)
            .with_payload(bytes::Bytes::from(vec![1u8; 120]));
        h.node_mut(publisher).publish(now, u).unwrap();
        h.run_for(Duration::from_millis(20));
    }
    h.run_for(Duration::from_secs(1));
    for &v in &viewers {
        let got = delivered(&h, v, state);
        // Playback starts at the first frame received; every frame after it is expected.
        let first = got.first().map_or(frames, |g| g.seq);
        let expected = frames - first;
        assert!(
            got.len() as u64 * 100 >= expected * 99,
            "Low viewer {} got {} of {expected} audio frames",
            v.prefix_u64(),
            got.len()
        );
    }
}

/// Publishes one 200-kB keyframe of state 7 from node 1 and returns the ids of the children
/// the publisher handed it to, in order.
fn keyframe_fanout_order(h: &mut Harness) -> Vec<u64> {
    let publisher = NodeId::from_u64(1);
    h.record_sends(true);
    let mut s = Stream::video(7, 1);
    s.key_bytes = 200_000;
    swarm_common::stream_frames(h, &mut s, 1, Duration::from_millis(500));
    h.sends()
        .iter()
        .filter(|u| u.from == publisher && u.seq == 0)
        .map(|u| u.to.prefix_u64())
        .collect()
}

#[test]
fn a_keyframe_fans_out_to_the_strongest_relay_first() {
    // The publisher takes three children of equal interest: two that cannot relay (ids 2 and
    // 3, first in id order) and a strong relay (4). A large keyframe takes a while on the
    // publisher's uplink per copy: the relay, whose subtree waits on it, is handed its copy
    // first (the harness gives every link its own bandwidth, so the order in which the node
    // hands copies to the transport is what a shared uplink would serve them in).
    let state = StateId(7);
    let publisher = NodeId::from_u64(1);
    let mut h = swarm_common::publisher(9, 3, 1000);
    for (id, k) in [(2, 0), (3, 0), (4, 6)] {
        h.add_node(config(id, k, Some(1), 1000));
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(Time::ZERO, state, InterestLevel::High);
    }
    h.run_for(Duration::from_secs(1));
    for id in 2..=4 {
        assert_eq!(h.node(NodeId::from_u64(id)).parent(state), Some(publisher));
    }
    let order = keyframe_fanout_order(&mut h);
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[0], 4, "the relay is not served first: {order:?}");
    for id in 2..=4 {
        assert!(
            !delivered(&h, NodeId::from_u64(id), state).is_empty(),
            "{id} got no keyframe"
        );
    }
}

#[test]
fn a_keyframe_fans_out_to_the_deepest_subtree_first() {
    // The publisher takes two strong relays (2 and 3, equal in every other way; 2 first in id
    // order), and a viewer (4) joins below 3. Node 3 reports the height of its subtree with
    // its interest, so the publisher hands it the large keyframe before 2, whose subtree is
    // only itself: the fan-out delay falls on the shorter path.
    let state = StateId(7);
    let mut h = swarm_common::publisher(9, 2, 1000);
    for id in [2, 3] {
        h.add_node(config(id, 6, Some(1), 1000));
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(Time::ZERO, state, InterestLevel::High);
    }
    h.run_for(Duration::from_secs(1));
    h.add_node(config(4, 0, Some(3), 1000));
    let now = h.now();
    h.node_mut(NodeId::from_u64(4))
        .declare_interest(now, state, InterestLevel::High);
    h.run_for(Duration::from_secs(1));
    for (id, parent) in [(2, 1), (3, 1), (4, 3)] {
        assert_eq!(
            h.node(NodeId::from_u64(id)).parent(state),
            Some(NodeId::from_u64(parent))
        );
    }
    let order = keyframe_fanout_order(&mut h);
    assert_eq!(order, [3, 2], "the deeper subtree is not served first");
    assert!(!delivered(&h, NodeId::from_u64(4), state).is_empty());
}

/// Publishes a video frame as elara-media's packetizer does: a keyframe cut into `parts`
/// fragments with consecutive sequence numbers, each flagged as a keyframe; a delta whole.
fn publish_frame(h: &mut Harness, seq: &mut u64, group: u64, key: bool, parts: u16) {
    let now = h.now();
    let parts = if key { parts } else { 1 };
    let publisher = NodeId::from_u64(1);
    for index in 0..parts {
        let u = fragment_update(publisher, now, *seq, group, key, index, parts);
        *seq += 1;
        h.node_mut(publisher)
            .publish(now, u)
            .expect("authority publishes");
    }
}

#[test]
fn a_viewer_joining_mid_group_starts_at_the_first_fragment_of_the_keyframe() {
    // A keyframe in three fragments (seqs 0-2 of group 0), then deltas. Node 3 joins in the
    // middle of the group: it is started at the newest keyframe, which must mean all of it,
    // from its first fragment — a keyframe missing its first fragments does not decode.
    let state = StateId(7);
    let mut h = publisher_and_viewer(3, 4);
    let mut seq = 0;
    publish_frame(&mut h, &mut seq, 0, true, 3);
    for _ in 0..5 {
        h.run_for(Duration::from_millis(33));
        publish_frame(&mut h, &mut seq, 0, false, 3);
    }
    h.add_node(config(3, 4, Some(1), 1000));
    let now = h.now();
    h.node_mut(NodeId::from_u64(3))
        .declare_interest(now, state, InterestLevel::High);
    for _ in 0..10 {
        h.run_for(Duration::from_millis(33));
        publish_frame(&mut h, &mut seq, 0, false, 3);
    }
    h.run_for(Duration::from_millis(300));
    let seqs = delivered_seqs(&h, NodeId::from_u64(3), state);
    assert!(
        seqs.starts_with(&[0, 1, 2]),
        "the late viewer started at {seqs:?}, not at the keyframe's first fragment"
    );
    assert_eq!(
        seqs.len() as u64,
        seq,
        "every update after the keyframe: {seqs:?}"
    );
}

#[test]
fn a_keyframe_missing_a_fragment_does_not_decode_and_neither_do_its_deltas() {
    // The parent hands node 2 fragments 0 and 2 of a three-fragment keyframe and a delta; the
    // middle fragment never comes (the parent does not hold it either), so the window gives
    // up on it. The keyframe's fragments that came may be delivered, but the delta must not
    // be: its keyframe does not decode.
    let state = StateId(7);
    let (parent, viewer) = (NodeId::from_u64(1), NodeId::from_u64(2));
    let mut h = publisher_and_viewer(4, 4);
    assert_eq!(h.node(viewer).parent(state), Some(parent));
    let now = h.now();
    let update = |seq, key, index, count| fragment(parent, now, seq, key, index, count);
    for m in [
        update(0, true, 0, 3),
        update(2, true, 2, 3),
        update(3, false, 0, 1),
    ] {
        h.node_mut(viewer).handle_message(now, parent, m);
    }
    h.run_for(Duration::from_secs(2));
    let seqs = delivered_seqs(&h, viewer, state);
    assert!(
        !seqs.contains(&3),
        "a delta of an incomplete keyframe was delivered: {seqs:?}"
    );
    let m = h.node(viewer).state_metrics(state).expect("state known");
    assert!(m.skipped >= 1 && m.undecodable >= 1, "{m:?}");
}

#[test]
fn a_relay_holds_back_deltas_until_it_has_the_whole_keyframe_and_sends_them_once() {
    // The relay (2) gets fragments 0 and 2 of a three-fragment keyframe and a delta; fragment
    // 1 comes last (a retransmission). The delta is no use to the child (3) before the
    // keyframe is whole: it goes on once, when fragment 1 completes the keyframe — not once
    // on arrival and again when the keyframe is complete.
    let (publisher, relay, child) = (
        NodeId::from_u64(1),
        NodeId::from_u64(2),
        NodeId::from_u64(3),
    );
    let mut h = settled_chain();
    let now = h.now();
    let update = |seq, key, index, count| fragment(publisher, now, seq, key, index, count);
    let mut to_child = Vec::new();
    let mut drain = |h: &mut Harness, at: Time| {
        while let Some(t) = h.node_mut(relay).poll_transmit(at) {
            if let (true, Message::Update { update, .. }) = (t.to == child, t.message) {
                to_child.push(update.seq);
            }
        }
    };
    for m in [
        update(0, true, 0, 3),
        update(2, true, 2, 3),
        update(3, false, 0, 1),
    ] {
        h.node_mut(relay).handle_message(now, publisher, m);
    }
    drain(&mut h, now + Duration::from_millis(5));
    let later = now + Duration::from_millis(6);
    h.node_mut(relay)
        .handle_message(later, publisher, update(1, true, 1, 3));
    drain(&mut h, later + Duration::from_millis(5));
    let delta_sends = to_child.iter().filter(|&&s| s == 3).count();
    assert_eq!(
        delta_sends, 1,
        "the delta went to the child {delta_sends} times: {to_child:?}"
    );
    assert!(
        to_child.contains(&0) && to_child.contains(&1),
        "{to_child:?}"
    );
}

#[test]
fn a_keyframes_only_viewer_waits_for_a_keyframe_fragment_that_comes_late() {
    // A Low-interest viewer gets keyframes only, so a gap in its sequence is normally the
    // deltas its parent filtered out and is skipped at once. A gap between the fragments of
    // a keyframe is not: fragment 1 of group 1's keyframe comes after fragment 2 (a
    // retransmission), and the viewer must still deliver the whole keyframe.
    let (parent, viewer) = (NodeId::from_u64(1), NodeId::from_u64(2));
    let mut h = publisher_and_viewer(4, 4);
    let now = h.now();
    h.node_mut(viewer)
        .declare_interest(now, StateId(7), InterestLevel::Low);
    h.run_for(Duration::from_millis(50));
    let now = h.now();
    let key = |seq, group, index| Message::Update {
        hops: 0,
        update: fragment_update(parent, now, seq, group, true, index, 3),
    };
    for m in [
        key(0, 0, 0),
        key(1, 0, 1),
        key(2, 0, 2),
        key(33, 1, 0),
        key(35, 1, 2),
    ] {
        h.node_mut(viewer).handle_message(now, parent, m);
    }
    h.run_for(Duration::from_millis(20));
    let now = h.now();
    h.node_mut(viewer)
        .handle_message(now, parent, key(34, 1, 1));
    h.run_for(Duration::from_millis(20));
    let seqs = delivered_seqs(&h, viewer, StateId(7));
    assert_eq!(
        seqs,
        vec![0, 1, 2, 33, 34, 35],
        "what the Low viewer delivered"
    );
}

#[test]
fn a_new_viewer_whose_first_update_is_a_later_keyframe_fragment_waits_for_the_first() {
    // A new child can get a keyframe's later fragments live before the earlier ones its
    // parent replays: its window must start at the keyframe's first fragment, not at the
    // first fragment that happened to arrive.
    let (parent, viewer) = (NodeId::from_u64(1), NodeId::from_u64(2));
    let mut h = publisher_and_viewer(4, 4);
    let now = h.now();
    for (seq, index) in [(2, 2), (0, 0), (1, 1)] {
        h.node_mut(viewer)
            .handle_message(now, parent, fragment(parent, now, seq, true, index, 3));
    }
    h.run_for(Duration::from_millis(20));
    let seqs = delivered_seqs(&h, viewer, StateId(7));
    assert_eq!(seqs, vec![0, 1, 2], "what the new viewer delivered");
}

#[test]
fn a_keyframe_fragment_repaired_after_the_reorder_window_still_completes_its_group() {
    // 100-ms links: a lost fragment is pulled after three round trips (600 ms) and its repair
    // arrives about 800 ms after the fragments behind it, past the 400-ms reorder window but
    // within the 1-s latency budget. Giving the fragment up at the reorder window would lose
    // the whole group (every delta after the keyframe is undecodable without it); waiting
    // for it delivers the keyframe and every delta.
    let state = StateId(7);
    let slow = LinkProfile {
        latency: Duration::from_millis(100),
        ..LinkProfile::wan()
    };
    let mut h = Harness::new(8, slow);
    h.add_node(config(1, 4, None, 1000));
    h.node_mut(NodeId::from_u64(1))
        .create_state(state)
        .expect("fresh state");
    let viewer = NodeId::from_u64(2);
    h.add_node(config(2, 4, Some(1), 1000));
    h.node_mut(viewer)
        .declare_interest(Time::ZERO, state, InterestLevel::High);
    // Long enough for the viewer's pings to measure the 200-ms round trip.
    h.run_for(Duration::from_secs(6));
    assert_eq!(h.node(viewer).parent(state), Some(NodeId::from_u64(1)));
    h.lose_next(
        NodeId::from_u64(1),
        viewer,
        |m| matches!(m, Message::Update { update, .. } if update.seq == 1),
    );
    let mut seq = 0;
    publish_frame(&mut h, &mut seq, 0, true, 3);
    for _ in 0..20 {
        h.run_for(Duration::from_millis(33));
        publish_frame(&mut h, &mut seq, 0, false, 3);
    }
    h.run_for(Duration::from_secs(1));
    let seqs = delivered_seqs(&h, viewer, state);
    assert_eq!(
        seqs,
        (0..seq).collect::<Vec<_>>(),
        "the viewer gave up the lost keyframe fragment and its group"
    );
}
