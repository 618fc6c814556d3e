//! What one swarm node costs per update, and what a whole in-memory swarm costs per run.
//!
//! - `relay_update_8_children`: a relay receives one video update from its parent and hands the
//!   scheduler's sends for its 8 children to the driver (handle_message + poll_transmit +
//!   poll_event). This is the per-update cost a simulator pays at every relay.
//! - `harness_100_viewers_30_frames`: a whole run — 100 viewers join a publisher over 20 ms
//!   links, then 30 frames stream through the tree — to track the harness's own overhead.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use elara_core::{
    Capabilities, GroupId, InterestLevel, Message, NodeId, StateId, StateUpdate, Time, UpdateKind,
};
use elara_diffusion::harness::{Harness, LinkProfile};
use elara_diffusion::swarm::{SwarmConfig, SwarmNode};

fn caps(k: u16) -> Capabilities {
    Capabilities {
        upload_kbps: 50_000,
        download_kbps: 50_000,
        max_children: k,
        codecs: 1,
        max_payload: 1 << 20,
    }
}

fn drain(node: &mut SwarmNode, now: Time) -> usize {
    let mut n = 0;
    while let Some(t) = node.poll_transmit(now) {
        black_box(&t);
        n += 1;
    }
    while node.poll_event().is_some() {}
    n
}

fn relay_update(c: &mut Criterion) {
    let state = StateId(1);
    let parent = NodeId::from_u64(1);
    let me = NodeId::from_u64(2);
    let mut now = Time::from_secs(1);
    let mut relay = SwarmNode::new(SwarmConfig::new(me, caps(8)).with_bootstrap(parent), now);
    relay.peer_connected(now, parent);
    relay.declare_interest(now, state, InterestLevel::High);
    relay.handle_message(
        now,
        parent,
        Message::JoinAccept {
            state,
            depth: 0,
            path: vec![parent],
        },
    );
    for i in 0..8 {
        let child = NodeId::from_u64(100 + i);
        relay.peer_connected(now, child);
        relay.handle_message(now, child, Message::JoinRequest { state });
    }
    drain(&mut relay, now);
    assert_eq!(relay.children(state).count(), 8);
    let payload = Bytes::from(vec![0u8; 1_000]);
    let mut seq = 0u64;
    let step = |relay: &mut SwarmNode, now: &mut Time, seq: &mut u64| {
        *now += Duration::from_millis(33);
        let mut u = StateUpdate::new(state, parent, *seq, *now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(*seq / 30))
            .with_payload(payload.clone());
        if (*seq).is_multiple_of(30) {
            u = u.keyframe();
        }
        *seq += 1;
        relay.handle_message(*now, parent, Message::Update { hops: 0, update: u });
        if relay.poll_timeout().is_some_and(|t| t <= *now) {
            relay.handle_timeout(*now);
        }
        drain(relay, *now)
    };
    // What is measured really fans out: ten updates make about 80 transmits.
    let sent: usize = (0..10).map(|_| step(&mut relay, &mut now, &mut seq)).sum();
    assert!(
        sent >= 70,
        "only {sent} transmits for 10 updates to 8 children"
    );
    c.bench_function("relay_update_8_children", |b| {
        b.iter(|| black_box(step(&mut relay, &mut now, &mut seq)))
    });
}

fn harness_run(c: &mut Criterion) {
    let mut group = c.benchmark_group("harness");
    group.sample_size(10);
    group.bench_function("harness_100_viewers_30_frames", |b| {
        b.iter(|| {
            let state = StateId(1);
            let publisher = NodeId::from_u64(1);
            let mut h = Harness::new(1, LinkProfile::wan());
            h.record_events(false);
            h.add_node(SwarmConfig::new(publisher, caps(4)));
            h.node_mut(publisher).create_state(state).unwrap();
            for i in 2..=101 {
                let id = NodeId::from_u64(i);
                h.add_node(SwarmConfig::new(id, caps(4)).with_bootstrap(publisher));
                h.node_mut(id)
                    .declare_interest(Time::ZERO, state, InterestLevel::High);
            }
            h.run_for(Duration::from_secs(1));
            for seq in 0..30 {
                let now = h.now();
                let u = StateUpdate::new(state, publisher, seq, now)
                    .with_payload(Bytes::from_static(&[0; 800]));
                h.node_mut(publisher).publish(now, u).unwrap();
                h.run_for(Duration::from_millis(33));
            }
            black_box(h.stats())
        })
    });
    group.finish();
}

criterion_group!(benches, relay_update, harness_run);
criterion_main!(benches);
