//! Livestream fan-out in the deterministic harness: one publisher, many relaying viewers.

mod swarm_common;

use std::time::Duration;

use elara_core::{InterestLevel, NodeId};
use elara_diffusion::harness::LinkProfile;
use swarm_common::*;

#[test]
fn small_swarm_everyone_gets_everything_in_order() {
    let (mut h, mut s) = livestream(1, LinkProfile::wan(), 20, 3, 1000, InterestLevel::High);
    h.run_for(Duration::from_secs(2));
    for id in 2..=21 {
        let n = NodeId::from_u64(id);
        assert!(h.node(n).parent(s.state).is_some(), "{id} not attached");
    }
    stream_frames(&mut h, &mut s, 30, Duration::from_millis(33));
    h.run_for(Duration::from_secs(1));
    for id in 2..=21 {
        let n = NodeId::from_u64(id);
        let got = delivered(&h, n, s.state);
        let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "node {id}");
    }
}

/// ⌈log_k n⌉ for integers.
fn ceil_log(k: u64, n: u64) -> u32 {
    let mut d = 0;
    let mut reach = 1u64;
    while reach < n {
        reach = reach.saturating_mul(k);
        d += 1;
    }
    d
}

#[test]
fn thousand_nodes_no_loss_exactly_once_in_order_with_logarithmic_hops() {
    let n = 1_000u64;
    let k = 4u16;
    let frames = 45u64;
    let (mut h, mut s) = livestream(11, LinkProfile::wan(), n, k, 1000, InterestLevel::High);
    h.record_events(false);
    h.run_for(Duration::from_secs(3));
    for id in 2..=n + 1 {
        assert!(
            h.node(NodeId::from_u64(id)).parent(s.state).is_some(),
            "node {id} not attached"
        );
    }
    h.record_events(true);
    stream_frames(&mut h, &mut s, frames, Duration::from_millis(33));
    h.run_for(Duration::from_secs(1));
    let mut hops = Vec::new();
    for id in 2..=n + 1 {
        let got = delivered(&h, NodeId::from_u64(id), s.state);
        let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        assert_eq!(seqs, (0..frames).collect::<Vec<_>>(), "node {id}");
        hops.extend(got.iter().map(|g| g.hops));
    }
    hops.sort_unstable();
    let p99 = hops[hops.len() * 99 / 100];
    let bound = ceil_log(u64::from(k), n) + 2;
    println!(
        "p99 hops {p99}, max {}, bound {bound}",
        hops.last().unwrap()
    );
    assert!(u32::from(p99) <= bound, "p99 hops {p99} > {bound}");
}
