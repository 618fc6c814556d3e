//! Only a state's authority can feed its tree: injected updates reach nobody.

mod swarm_common;

use std::time::Duration;

use elara_core::{InterestLevel, Message, NodeId, StateUpdate};
use elara_diffusion::harness::LinkProfile;
use elara_diffusion::swarm::PublishError;
use swarm_common::*;

#[test]
fn updates_injected_by_a_non_authority_reach_nobody() {
    let n = 40u64;
    let (mut h, mut s) = livestream(21, LinkProfile::wan(), n, 3, 1000, InterestLevel::High);
    h.run_for(Duration::from_secs(2));
    stream_frames(&mut h, &mut s, 10, Duration::from_millis(33));
    let publisher = NodeId::from_u64(1);
    let relay = (2..=n + 1)
        .map(NodeId::from_u64)
        .find(|&id| {
            h.node(id).children(s.state).count() > 0 && h.node(id).depth(s.state) == Some(1)
        })
        .expect("a relay below the publisher");
    let now = h.now();
    // Through the API: refused.
    let forged = StateUpdate::new(s.state, relay, 5_000, now);
    assert_eq!(
        h.node_mut(relay).publish(now, forged.clone()),
        Err(PublishError::NotAuthority(s.state))
    );
    let forged_as_publisher = StateUpdate::new(s.state, publisher, 6_000, now);
    assert_eq!(
        h.node_mut(relay).publish(now, forged_as_publisher.clone()),
        Err(PublishError::NotAuthority(s.state))
    );
    // On the wire: the relay claims its own authority to every neighbour, and claims the
    // publisher's to its parent (which is the publisher itself).
    let peers: Vec<NodeId> = h
        .node(relay)
        .connected_peers()
        .filter(|&p| h.connected(relay, p))
        .collect();
    for &p in &peers {
        let msg = Message::Update {
            hops: 0,
            update: forged.clone(),
        };
        assert!(h.inject(relay, p, msg));
    }
    assert!(h.inject(
        relay,
        publisher,
        Message::Update {
            hops: 0,
            update: forged_as_publisher,
        }
    ));
    stream_frames(&mut h, &mut s, 10, Duration::from_millis(33));
    h.run_for(Duration::from_secs(1));
    let mut dropped = 0;
    for id in (1..=n + 1).map(NodeId::from_u64) {
        let got = delivered(&h, id, s.state);
        assert!(
            got.iter().all(|g| g.seq < 20),
            "node {} took a forged update",
            id.prefix_u64()
        );
        if id != publisher {
            let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
            assert_eq!(
                seqs,
                (0..20).collect::<Vec<_>>(),
                "node {} was disturbed",
                id.prefix_u64()
            );
        }
        let m = h.node(id).state_metrics(s.state).unwrap();
        dropped += m.non_authority + m.not_from_parent;
    }
    assert!(
        dropped >= peers.len() as u64,
        "the injections were not counted"
    );
}
