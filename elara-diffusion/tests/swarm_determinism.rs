//! The same seed reproduces the same run, event for event.

mod swarm_common;

use std::time::Duration;

use elara_core::{InterestLevel, NodeId, Time};
use elara_diffusion::harness::{HarnessStats, LinkProfile};
use elara_diffusion::swarm::Event;
use swarm_common::*;

type Trace = (Vec<(u64, Vec<(Time, Event)>)>, HarnessStats);

/// A run with loss, churn and a kill: everything that draws randomness.
fn run(seed: u64) -> Trace {
    let n = 60u64;
    let link = LinkProfile::wan().with_loss(0.05);
    let (mut h, mut s) = livestream(seed, link, n, 3, 100, InterestLevel::High);
    for id in (2..=n + 1).step_by(4) {
        h.node_mut(NodeId::from_u64(id))
            .declare_interest(Time::ZERO, s.state, InterestLevel::Low);
    }
    h.run_for(Duration::from_secs(1));
    stream_frames(&mut h, &mut s, 20, Duration::from_millis(33));
    let victim = (2..=n + 1)
        .map(NodeId::from_u64)
        .find(|&id| h.node(id).children(s.state).count() > 0)
        .expect("a relay");
    h.kill(victim);
    stream_frames(&mut h, &mut s, 20, Duration::from_millis(33));
    h.run_for(Duration::from_millis(500));
    let events = h
        .ids()
        .map(|id| (id.prefix_u64(), h.timed_events(id).to_vec()))
        .collect();
    (events, h.stats())
}

#[test]
fn same_seed_same_trace_and_another_seed_another() {
    let a = run(42);
    let b = run(42);
    assert_eq!(a.1, b.1);
    for ((ia, ea), (ib, eb)) in a.0.iter().zip(&b.0) {
        assert_eq!(ia, ib);
        assert_eq!(ea, eb, "node {ia} diverged");
    }
    assert!(a.0.iter().map(|(_, e)| e.len()).sum::<usize>() > 1_000);
    let c = run(43);
    assert_ne!(a.1, c.1, "a different seed should lose different messages");
}
