//! Membership and placement: capacity-aware placement, graceful leave, health and events.

mod swarm_common;

use std::time::Duration;

use bytes::Bytes;
use elara_core::{InterestLevel, Message, NodeId, PeerInfo, StateId, Time};
use elara_diffusion::harness::{Harness, LinkProfile};
use elara_diffusion::swarm::{Event, Health, HealthReason, PeerDownReason, SwarmNode};
use swarm_common::*;

#[test]
fn a_strong_relay_takes_a_weak_leafs_place_near_the_root() {
    let state = StateId(7);
    let mut h = publisher(4, 2, 1000);
    // Two nodes that cannot relay fill the root's two slots.
    for id in [2, 3] {
        h.add_node(config(id, 0, Some(1), 1000));
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(Time::ZERO, state, InterestLevel::High);
    }
    h.run_for(Duration::from_millis(500));
    let root = NodeId::from_u64(1);
    assert_eq!(h.node(root).children(state).count(), 2);
    // A strong relay arrives: it is placed at depth 1 and a weak leaf moves below it.
    h.add_node(config(4, 8, Some(1), 1000));
    let now = h.now();
    h.node_mut(NodeId::from_u64(4))
        .declare_interest(now, state, InterestLevel::High);
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 40, Duration::from_millis(33));
    h.run_for(Duration::from_secs(2));
    let strong = NodeId::from_u64(4);
    assert_eq!(h.node(strong).depth(state), Some(1));
    let below: Vec<NodeId> = h.node(strong).children(state).collect();
    assert_eq!(below.len(), 1, "no weak leaf moved below the strong relay");
    assert_eq!(h.node(below[0]).depth(state), Some(2));
    assert_eq!(h.node(root).children(state).count(), 2);
    // The moved leaf switched make-before-break: it never missed an update.
    let got = delivered_seqs(&h, below[0], state);
    assert_eq!(got, (0..40).collect::<Vec<_>>());
}

#[test]
fn strong_relays_fill_the_inner_levels_and_the_tree_stays_shallow() {
    // Root takes 4; 8 strong relays (4 children each) and 24 one-child nodes join mixed
    // together. Placement puts the strong uplinks at the inner levels: every strong relay at
    // depth 2 or less, none below a one-child node, and nobody deeper than ⌈log_4 33⌉ = 3.
    let state = StateId(7);
    let mut h = publisher(5, 4, 1000);
    let strong: Vec<u64> = (2..34).filter(|i| i % 4 == 0).collect();
    for id in 2..34 {
        let k = if strong.contains(&id) { 4 } else { 1 };
        h.add_node(config(id, k, Some(1), 1000));
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(Time::ZERO, state, InterestLevel::High);
    }
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 90, Duration::from_millis(33));
    h.run_for(Duration::from_secs(2));
    for id in 2..34u64 {
        let n = h.node(NodeId::from_u64(id));
        let depth = n.depth(state).expect("attached");
        assert!(depth <= 3, "node {id} at depth {depth}");
        if strong.contains(&id) {
            assert!(depth <= 2, "strong relay {id} at depth {depth}");
            let parent = n.parent(state).expect("attached").prefix_u64();
            assert!(
                parent == 1 || strong.contains(&parent),
                "strong relay {id} below one-child node {parent}"
            );
        }
    }
}

#[test]
fn a_relay_leaving_gracefully_hands_its_children_over_at_once() {
    let (mut h, mut s) = livestream(6, LinkProfile::wan(), 12, 2, 1000, InterestLevel::High);
    h.run_for(Duration::from_secs(2));
    stream_frames(&mut h, &mut s, 15, Duration::from_millis(33));
    let relay = (2..=13)
        .map(NodeId::from_u64)
        .find(|&id| h.node(id).children(s.state).count() > 0)
        .expect("a relay");
    let kids: Vec<NodeId> = h.node(relay).children(s.state).collect();
    let t_leave = h.now();
    h.node_mut(relay).leave(t_leave);
    stream_frames(&mut h, &mut s, 10, Duration::from_millis(33));
    for &k in &kids {
        let events = h.timed_events(k);
        assert!(events.iter().any(|(_, e)| matches!(
            e,
            Event::PeerDown { peer, reason: PeerDownReason::Left } if *peer == relay
        )));
        let back = events
            .iter()
            .find(|(at, e)| *at > t_leave && matches!(e, Event::ParentChanged { new: Some(_), .. }))
            .map(|(at, _)| *at - t_leave)
            .expect("re-attached");
        // Far below the 3.5 s keep-alive timeout: the goodbye made the repair immediate.
        assert!(back < Duration::from_millis(500), "re-attach took {back:?}");
        assert_ne!(h.node(k).parent(s.state), Some(relay));
    }
}

#[test]
fn health_reports_detachment_and_recovery() {
    let state = StateId(7);
    let mut h = publisher(2, 2, 100);
    let viewer = NodeId::from_u64(2);
    h.add_node(config(2, 2, Some(1), 100));
    h.node_mut(viewer)
        .declare_interest(Time::ZERO, state, InterestLevel::High);
    h.run_for(Duration::from_millis(300));
    assert_eq!(h.node(viewer).health(), Health::Healthy);
    h.kill(NodeId::from_u64(1));
    h.run_for(Duration::from_secs(2));
    assert!(matches!(
        h.node(viewer).health(),
        Health::Unhealthy(HealthReason::NoPeers | HealthReason::Detached(_))
    ));
    let changes: Vec<Health> = h
        .events(viewer)
        .into_iter()
        .filter_map(|e| match e {
            Event::HealthChanged(x) => Some(x),
            _ => None,
        })
        .collect();
    assert!(changes.len() >= 2, "{changes:?}");
    let m = h.node(viewer).link_metrics(NodeId::from_u64(1));
    assert!(m.is_none(), "a dead peer keeps no link metrics");
}

#[test]
fn a_relay_receives_the_best_quality_its_subtree_wants_and_no_more() {
    let state = StateId(7);
    let mut h = publisher(5, 1, 1000);
    // The publisher takes one child: the Low viewer 2; the High viewer 3 ends up below it.
    h.add_node(config(2, 2, Some(1), 1000));
    h.node_mut(NodeId::from_u64(2))
        .declare_interest(Time::ZERO, state, InterestLevel::Low);
    h.run_for(Duration::from_millis(300));
    let (low, high) = (NodeId::from_u64(2), NodeId::from_u64(3));
    let mut s = Stream::video(7, 1);
    let keys = |h: &Harness, who: NodeId, from: u64| -> (usize, usize) {
        let got: Vec<Got> = delivered(h, who, state)
            .into_iter()
            .filter(|g| g.seq >= from)
            .collect();
        (got.iter().filter(|g| g.keyframe).count(), got.len())
    };
    // Phase 1: only Low below the publisher: keyframes only.
    stream_frames(&mut h, &mut s, 30, Duration::from_millis(33));
    assert_eq!(keys(&h, low, 0), (2, 2));
    // Phase 2: a High viewer joins below the Low one: the relay now gets everything.
    h.add_node(config(3, 2, Some(1), 1000));
    let now = h.now();
    h.node_mut(high)
        .declare_interest(now, state, InterestLevel::High);
    h.run_for(Duration::from_millis(500));
    assert_eq!(h.node(high).parent(state), Some(low));
    assert_eq!(h.node(low).aggregated_interest(state), InterestLevel::High);
    let start = s.next;
    stream_frames(&mut h, &mut s, 30, Duration::from_millis(33));
    h.run_for(Duration::from_millis(300));
    assert_eq!(
        keys(&h, high, start).1,
        30,
        "the High viewer missed updates"
    );
    assert_eq!(
        keys(&h, low, start).1,
        30,
        "the relay did not get the full stream"
    );
    // Phase 3: the High viewer withdraws: back to keyframes only.
    let now = h.now();
    h.node_mut(high)
        .declare_interest(now, state, InterestLevel::None);
    h.run_for(Duration::from_millis(300));
    assert_eq!(h.node(low).children(state).count(), 0);
    let start = s.next;
    stream_frames(&mut h, &mut s, 30, Duration::from_millis(33));
    h.run_for(Duration::from_millis(300));
    assert_eq!(keys(&h, low, start), (2, 2));
}

#[test]
fn a_joiner_tries_a_strong_relay_with_room_before_lengthening_a_chain() {
    // Root takes 2: strong relays 2 (two slots) and 3 (four slots). Six one-child nodes join
    // one after the other; the root's redirects rotate between 2 and 3, so 2 is full with
    // one-child nodes after four joins and later picks of it offer only those as parents.
    // Every joiner must find 3's free slots instead (all six fit at depth 2) rather than
    // hang below a one-child node.
    let state = StateId(7);
    let mut h = publisher(11, 2, 1000);
    join_one_by_one(&mut h, state, &[(2, 2), (3, 4)], 500);
    let weak: Vec<(u64, u16)> = (4..10).map(|id| (id, 1)).collect();
    join_one_by_one(&mut h, state, &weak, 800);
    for id in 4..10u64 {
        let n = h.node(NodeId::from_u64(id));
        let parent = n.parent(state).expect("attached").prefix_u64();
        assert!(
            parent == 2 || parent == 3,
            "node {id} below {parent}, at depth {:?}",
            n.depth(state)
        );
    }
    assert_eq!(h.node(NodeId::from_u64(3)).children(state).count(), 4);
}

#[test]
fn a_strong_relay_below_a_chain_climbs_past_the_one_child_relays() {
    // A chain root 1 -> 2 -> 3 of one-child relays, and a strong relay 4 (four slots) that
    // landed below 3 (it asked 3 first, as a joiner of a storm may). Climbing, 4 takes its
    // grandparent's only slot and the one-child relay there moves below it, twice, until 4
    // is the root's child and both one-child relays hang below it: everyone two hops from
    // the root or less, instead of four for anything 4 feeds.
    let state = StateId(7);
    let mut h = publisher(17, 1, 1000);
    join_one_by_one(&mut h, state, &[(2, 1), (3, 1)], 800);
    h.add_node(config(4, 4, Some(3), 1000));
    let now = h.now();
    h.node_mut(NodeId::from_u64(4))
        .declare_interest(now, state, InterestLevel::High);
    h.run_for(Duration::from_millis(800));
    let [n2, n3, n4] = [2, 3, 4].map(NodeId::from_u64);
    assert_eq!(h.node(n4).depth(state), Some(3), "chain not built");
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 360, Duration::from_millis(33));
    h.run_for(Duration::from_millis(500));
    assert_eq!(
        h.node(n4).depth(state),
        Some(1),
        "the strong relay did not climb"
    );
    for weak in [n2, n3] {
        assert_eq!(h.node(weak).parent(state), Some(n4));
    }
    for id in [n2, n3, n4] {
        let got = delivered(&h, id, state);
        assert_decodable(&got, id);
        let last: Vec<u64> = got.iter().map(|g| g.seq).filter(|&q| q >= 300).collect();
        assert_eq!(last, (300..360).collect::<Vec<_>>(), "{id:?} misses frames");
    }
}

#[test]
fn a_strong_relay_deep_in_a_full_branch_moves_to_a_cousin_branch_with_room() {
    // Root 1 takes one child: 2 (two slots), whose children are 3 and 4 (two slots each).
    // 3's branch runs deep: 5 and 6 below 3, and strong relay 7 below 5 (at depth 4, as a
    // joiner of a storm may land). 4 still has both slots free. Climbing to its grandparent 3
    // cannot help 7 (3's children are as strong as 7); an ancestor higher up (2) points it at
    // its other child 4, and 7 moves there, one level higher, without missing a frame.
    let state = StateId(7);
    let mut h = publisher(29, 1, 1000);
    join_one_by_one(&mut h, state, &[(2, 2), (3, 2), (4, 2)], 800);
    for (id, bootstrap) in [(5, 3), (6, 3), (7, 5)] {
        h.add_node(config(id, 2, Some(bootstrap), 1000));
        let now = h.now();
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(now, state, InterestLevel::High);
        h.run_for(Duration::from_millis(800));
    }
    let [n2, n3, n4, n5, n7] = [2, 3, 4, 5, 7].map(NodeId::from_u64);
    assert_eq!(h.node(n3).parent(state), Some(n2), "tree not built");
    assert_eq!(h.node(n4).parent(state), Some(n2), "tree not built");
    assert_eq!(h.node(n7).parent(state), Some(n5), "tree not built");
    assert_eq!(h.node(n7).depth(state), Some(4));
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 450, Duration::from_millis(33));
    h.run_for(Duration::from_millis(500));
    assert_eq!(
        h.node(n7).parent(state),
        Some(n4),
        "the strong relay stayed deep"
    );
    assert_eq!(h.node(n7).depth(state), Some(3));
    let got = delivered(&h, n7, state);
    assert_decodable(&got, n7);
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert_eq!(seqs, (0..450).collect::<Vec<_>>(), "7 missed frames");
}

#[test]
fn a_switch_cut_short_by_a_move_back_to_the_old_parent_keeps_the_node_attached_there() {
    // 3 hangs below the root 1 and is asked to move to 2 (as a rebalance does). 2 accepts it,
    // but before the switch is over (no group boundary from 2 yet) 2 sends it back to 1. 1
    // still counts 3 as its child and accepts at once; 3 must not then withdraw from 1 as the
    // parent its first switch was leaving: that left 3 counting 1 as its parent while 1 had
    // dropped it, receiving nothing, for good (7% of the viewers of `elara-sim run
    // heterogeneous --set viewers=500 --set duration_s=30 --set 'faults[0].at_s=15'` after
    // the failure).
    let state = StateId(7);
    let mut h = publisher(23, 3, 1000);
    join_one_by_one(&mut h, state, &[(3, 1), (2, 4)], 800);
    let [root, relay, node] = [1, 2, 3].map(NodeId::from_u64);
    assert_eq!(h.node(node).parent(state), Some(root), "tree not built");
    assert_eq!(h.node(relay).parent(state), Some(root), "tree not built");
    let go_to = |id: NodeId, depth: u16| redirect_to(state, id, depth);
    assert!(h.inject(root, node, go_to(relay, 1)));
    h.run_for(Duration::from_millis(400));
    assert_eq!(
        h.node(node).parent(state),
        Some(relay),
        "the move did not start"
    );
    assert!(h.inject(relay, node, go_to(root, 0)));
    h.run_for(Duration::from_millis(400));
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 60, Duration::from_millis(33));
    h.run_for(Duration::from_millis(500));
    assert_eq!(h.node(node).parent(state), Some(root));
    assert!(
        h.node(root).children(state).any(|c| c == node),
        "the root dropped the node that counts it as its parent"
    );
    let got = delivered_seqs(&h, node, state);
    assert!(got.contains(&59), "nothing reaches the node: {got:?}");
}

/// A redirect to `id` (at `depth`, with room), as a rebalance sends it.
fn redirect_to(state: StateId, id: NodeId, depth: u16) -> Message {
    Message::JoinRedirect {
        state,
        candidates: vec![PeerInfo {
            id,
            addr: Bytes::new(),
            spare_kbps: 20_000,
            depth,
            slots: 4,
        }],
    }
}

/// Adds nodes `(id, slots)` one after the other, each declaring High interest in `state`
/// through node 1 and given `settle_ms` to join before the next comes.
fn join_one_by_one(h: &mut Harness, state: StateId, nodes: &[(u64, u16)], settle_ms: u64) {
    for &(id, k) in nodes {
        h.add_node(config(id, k, Some(1), 1000));
        let now = h.now();
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(now, state, InterestLevel::High);
        h.run_for(Duration::from_millis(settle_ms));
    }
}

#[test]
fn keep_alives_to_many_peers_share_one_wakeup_and_a_silent_peer_is_dropped_at_the_idle_timeout() {
    // A node with eight connected peers that send it nothing but pongs: every peer is pinged
    // once per keep-alive interval, but the pings go out together, so the node wakes up about
    // once per interval rather than once per peer (a broadcaster has thousands of peers).
    // Peer 9 stops answering at 4 s and is declared down one idle timeout (3.5 s) later.
    let mut node = SwarmNode::new(config(1, 4, None, 1000), Time::ZERO);
    let peers: Vec<NodeId> = (2..=9).map(NodeId::from_u64).collect();
    for (i, &p) in peers.iter().enumerate() {
        // Connected at different times, so the first deadlines are spread over 700 ms.
        node.peer_connected(Time::from_millis(100 * i as u64), p);
    }
    let silent = NodeId::from_u64(9);
    let mut pings = vec![0u32; peers.len()];
    let mut wakeups = 0;
    let mut down_at = None;
    let mut now = Time::from_millis(700);
    let end = Time::from_secs(10);
    loop {
        while let Some(t) = node.poll_transmit(now) {
            if let Message::Ping { nonce } = t.message {
                let i = peers.iter().position(|&p| p == t.to).expect("a peer");
                pings[i] += 1;
                if t.to != silent || now < Time::from_secs(4) {
                    node.handle_message(now, t.to, Message::Pong { nonce });
                }
            }
        }
        while let Some(e) = node.poll_event() {
            if let Event::PeerDown { peer, reason } = e {
                assert_eq!((peer, reason), (silent, PeerDownReason::Timeout));
                down_at = Some(now);
            }
        }
        match node.poll_timeout() {
            Some(t) if t <= end => {
                now = now.max(t);
                wakeups += 1;
                node.handle_timeout(now);
            }
            _ => break,
        }
    }
    // Pinged at 0.7-1.0 s (when connected), then about every second to the end.
    for (i, &n) in pings.iter().enumerate().take(7) {
        assert!((10..=12).contains(&n), "peer {} pinged {n} times", i + 2);
    }
    assert!(wakeups <= 14, "{wakeups} wake-ups in 10 s for 8 peers");
    let down_at = down_at.expect("the silent peer was never declared down");
    // Last heard at its pong of the last ping before 4 s; down 3.5 s later, not before.
    assert!(
        down_at >= Time::from_millis(6_500) && down_at <= Time::from_millis(7_600),
        "declared down at {down_at:?}"
    );
}

#[test]
fn a_node_that_climbs_past_a_slow_link_keeps_what_the_old_parent_still_had_in_flight() {
    // 3 hangs below 2 over a slow link (300 ms) and moves up to the root, 60 ms away. The
    // root's first keyframe comes while 2's copies of the seven frames before it are still
    // on their way: the switch ends only once they are in. It used to end at that keyframe,
    // skipping to it and refusing the seven as coming from a parent no longer ours.
    let state = StateId(7);
    let mut h = publisher(29, 3, 1000);
    join_one_by_one(&mut h, state, &[(2, 4), (3, 4)], 800);
    let [root, relay, node] = [1, 2, 3].map(NodeId::from_u64);
    let go_to = |id: NodeId, depth: u16| redirect_to(state, id, depth);
    assert!(h.inject(root, node, go_to(relay, 1)));
    let mut s = Stream::video(7, 1);
    stream_frames(&mut h, &mut s, 30, Duration::from_millis(33));
    assert_eq!(
        h.node(node).parent(state).map(|p| p.prefix_u64()),
        Some(2),
        "the move down failed"
    );
    h.set_link(
        relay,
        node,
        LinkProfile::wan().with_latency(Duration::from_millis(300)),
    );
    h.set_link(
        root,
        node,
        LinkProfile::wan().with_latency(Duration::from_millis(60)),
    );
    stream_frames(&mut h, &mut s, 20, Duration::from_millis(33));
    assert!(h.inject(relay, node, go_to(root, 0)));
    stream_frames(&mut h, &mut s, 60, Duration::from_millis(33));
    h.run_for(Duration::from_secs(1));
    assert_eq!(
        h.node(node).parent(state).map(|p| p.prefix_u64()),
        Some(1),
        "the climb failed"
    );
    let got = delivered(&h, node, state);
    assert_decodable(&got, node);
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert_eq!(seqs, (0..110).collect::<Vec<_>>(), "3 missed frames");
    // Over the slow link a frame takes 20 + 300 ms plus serialisation; a gap pulled from the
    // root would come well after that.
    let slowest = got.iter().map(|g| g.latency).max().expect("delivered");
    assert!(
        slowest < Duration::from_millis(400),
        "a frame came {slowest:?} after publication"
    );
}
