//! Forwarding through a relay when the network reorders: a keyframe overtaken by its own
//! deltas (its retransmission took a round trip) must still start its group for the relay's
//! children, live, without a repair round trip.

mod swarm_common;

use std::time::Duration;

use elara_core::{InterestLevel, Message, NodeId, StateId, Time};
use elara_diffusion::harness::{Harness, LinkProfile};
use swarm_common::{Stream, config, delivered};

#[test]
fn a_keyframe_overtaken_by_its_deltas_still_starts_the_group_for_the_children() {
    let state = StateId(7);
    let (publisher, relay, child) = (
        NodeId::from_u64(1),
        NodeId::from_u64(2),
        NodeId::from_u64(3),
    );
    // 1 publishes and takes one child (2); 3 is redirected below 2.
    let mut h = Harness::new(5, LinkProfile::wan());
    h.add_node(config(1, 1, None, 1000));
    h.node_mut(publisher).create_state(state).unwrap();
    h.add_node(config(2, 4, Some(1), 1000));
    h.node_mut(relay)
        .declare_interest(Time::ZERO, state, InterestLevel::High);
    h.run_for(Duration::from_millis(300));
    h.add_node(config(3, 4, Some(1), 1000));
    let now = h.now();
    h.node_mut(child)
        .declare_interest(now, state, InterestLevel::High);
    h.run_for(Duration::from_millis(600));
    assert_eq!(h.node(child).parent(state), Some(relay));

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

    let got: Vec<u64> = delivered(&h, child, state).iter().map(|g| g.seq).collect();
    assert_eq!(got, (0..30).collect::<Vec<_>>(), "the child lost frames");
    let m = h.node(child).state_metrics(state).unwrap();
    assert_eq!(
        m.pulled, 0,
        "the child had to pull frames the relay should have forwarded live"
    );
}
