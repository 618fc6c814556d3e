//! A livestream in the deterministic in-memory harness: one publisher, 300 viewers that relay
//! for each other over 20 ms links with 2% loss. Prints the tree's shape, what viewers
//! received, how late, and what the repairs cost.
//!
//! Run with `cargo run -p elara-diffusion --example swarm_livestream [seed] [viewers]`.

use std::time::Duration;

use bytes::Bytes;
use elara_core::{
    Capabilities, GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind,
};
use elara_diffusion::harness::{Harness, LinkProfile};
use elara_diffusion::swarm::{Event, SwarmConfig, SwarmNode};

const FRAMES: u64 = 90;

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let seed = arg(1, 1);
    let viewers = arg(2, 300);
    let started = std::time::Instant::now();
    let caps = Capabilities {
        upload_kbps: 20_000,
        download_kbps: 20_000,
        max_children: 4,
        codecs: 1,
        max_payload: 1 << 20,
    };
    let state = StateId(1);
    let publisher = NodeId::from_u64(1);
    let mut h = Harness::new(seed, LinkProfile::wan().with_loss(0.02));
    let timers = |c: SwarmConfig| {
        c.with_seed(seed)
            .with_keepalive(Duration::from_millis(250), Duration::from_millis(900))
    };
    h.add_node(timers(SwarmConfig::new(publisher, caps)));
    h.node_mut(publisher)
        .create_state(state)
        .expect("new state");
    for i in 2..=viewers + 1 {
        let id = NodeId::from_u64(i);
        h.add_node(timers(SwarmConfig::new(id, caps).with_bootstrap(publisher)));
        let level = if i % 5 == 0 {
            InterestLevel::Low
        } else {
            InterestLevel::High
        };
        h.node_mut(id).declare_interest(Time::ZERO, state, level);
    }
    h.run_for(Duration::from_secs(2));

    // 30 frames per second, a keyframe every 15 frames.
    for seq in 0..FRAMES {
        let now = h.now();
        let key = seq % 15 == 0;
        let mut u = StateUpdate::new(state, publisher, seq, now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(seq / 15))
            .with_priority(if key {
                Priority::High
            } else {
                Priority::Normal
            })
            .with_payload(Bytes::from(vec![0u8; if key { 4_000 } else { 900 }]));
        if key {
            u = u.keyframe();
        }
        h.node_mut(publisher)
            .publish(now, u)
            .expect("publisher owns the state");
        h.run_for(Duration::from_millis(33));
    }
    h.run_for(Duration::from_secs(1));

    let mut depth = [0usize; 12];
    let mut latencies = Vec::new();
    let (mut delivered, mut pulled, mut repaired, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    for id in h.ids() {
        let node = h.node(id);
        if let Some(d) = node.depth(state) {
            depth[usize::from(d).min(11)] += 1;
        }
        let m = node.state_metrics(state).expect("every node has the state");
        delivered += m.delivered;
        pulled += m.pulled;
        repaired += m.repaired;
        skipped += m.skipped;
        for e in h.events(id) {
            if let Event::Delivered { latency, .. } = e {
                latencies.push(latency);
            }
        }
    }
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!("tree depth histogram (depth: nodes): {:?}", &depth[..8]);
    println!(
        "delivered {delivered} updates to {viewers} viewers ({FRAMES} frames; Low viewers get keyframes only)"
    );
    println!(
        "latency p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        latencies.last().expect("something was delivered")
    );
    println!("repair: {pulled} seqs pulled, {repaired} resent, {skipped} given up");
    println!("harness: {:?}", h.stats());
    println!(
        "a SwarmNode value is {} bytes before any peer or state; run took {:?} of wall time",
        std::mem::size_of::<SwarmNode>(),
        started.elapsed()
    );
}
