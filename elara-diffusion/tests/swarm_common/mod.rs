//! Shared helpers for the swarm harness tests: node configs, a synthetic video stream, and
//! readers of what nodes delivered.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use elara_core::{
    Capabilities, GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind,
};
use elara_diffusion::harness::Harness;
use elara_diffusion::swarm::{Event, SwarmConfig};

/// Capabilities of a relay accepting `k` children.
pub fn caps(k: u16) -> Capabilities {
    Capabilities {
        upload_kbps: 20_000,
        download_kbps: 20_000,
        max_children: k,
        codecs: 1,
        max_payload: 1 << 20,
    }
}

/// A node config with test timers (keep-alive `ka` ms, idle timeout 3.5 × `ka`).
pub fn config(id: u64, k: u16, bootstrap: Option<u64>, ka_ms: u64) -> SwarmConfig {
    let mut c = SwarmConfig::new(NodeId::from_u64(id), caps(k))
        .with_seed(id.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .with_keepalive(
            Duration::from_millis(ka_ms),
            Duration::from_millis(ka_ms * 7 / 2),
        );
    c.join_timeout = Duration::from_millis(300);
    c.dial_timeout = Duration::from_millis(400);
    if let Some(b) = bootstrap {
        c = c.with_bootstrap(NodeId::from_u64(b));
    }
    c
}

/// A synthetic video track: a keyframe every `gop` frames, each frame one update.
pub struct Stream {
    pub state: StateId,
    pub source: NodeId,
    pub gop: u64,
    pub key_bytes: usize,
    pub delta_bytes: usize,
    pub next: u64,
}

impl Stream {
    pub fn video(state: u64, source: u64) -> Self {
        Stream {
            state: StateId(state),
            source: NodeId::from_u64(source),
            gop: 15,
            key_bytes: 3_000,
            delta_bytes: 800,
            next: 0,
        }
    }

    pub fn frame(&mut self, now: Time) -> StateUpdate {
        let seq = self.next;
        self.next += 1;
        let key = seq.is_multiple_of(self.gop);
        let len = if key {
            self.key_bytes
        } else {
            self.delta_bytes
        };
        let mut u = StateUpdate::new(self.state, self.source, seq, now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(seq / self.gop))
            .with_priority(if key {
                Priority::High
            } else {
                Priority::Normal
            })
            .with_payload(Bytes::from(vec![(seq % 251) as u8; len]));
        if key {
            u = u.keyframe();
        }
        u
    }
}

/// Publishes `n` frames `interval` apart, running the harness in between.
pub fn stream_frames(h: &mut Harness, stream: &mut Stream, n: u64, interval: Duration) {
    for _ in 0..n {
        let now = h.now();
        let f = stream.frame(now);
        h.node_mut(stream.source)
            .publish(now, f)
            .expect("authority publishes");
        h.run_for(interval);
    }
}

/// One delivered update as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub seq: u64,
    pub hops: u8,
    pub latency: Duration,
    pub keyframe: bool,
    pub group: GroupId,
    pub at: Time,
}

/// What `id` delivered of `state`, in delivery order.
pub fn delivered(h: &Harness, id: NodeId, state: StateId) -> Vec<Got> {
    h.timed_events(id)
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Delivered {
                update,
                hops,
                latency,
            } if update.state == state => Some(Got {
                seq: update.seq,
                hops: *hops,
                latency: *latency,
                keyframe: update.keyframe,
                group: update.group,
                at: *at,
            }),
            _ => None,
        })
        .collect()
}

/// The sequence numbers `id` delivered of `state`, in delivery order.
pub fn delivered_seqs(h: &Harness, id: NodeId, state: StateId) -> Vec<u64> {
    delivered(h, id, state).iter().map(|g| g.seq).collect()
}

/// Asserts that no delivered video delta came before its group's keyframe.
pub fn assert_decodable(got: &[Got], who: NodeId) {
    let mut group_with_key = None;
    for g in got {
        if g.keyframe {
            group_with_key = Some(g.group);
        } else {
            assert_eq!(
                group_with_key,
                Some(g.group),
                "{who} was handed delta {} of {:?} without its keyframe",
                g.seq,
                g.group
            );
        }
    }
}

/// Builds a livestream: node 1 publishes, nodes 2..=n+1 join through it with `level`.
pub fn livestream(
    seed: u64,
    link: elara_diffusion::harness::LinkProfile,
    n: u64,
    k: u16,
    ka_ms: u64,
    level: InterestLevel,
) -> (Harness, Stream) {
    let mut h = Harness::new(seed, link);
    h.add_node(config(1, k, None, ka_ms));
    let stream = Stream::video(7, 1);
    h.node_mut(NodeId::from_u64(1))
        .create_state(stream.state)
        .expect("fresh state");
    for i in 2..=n + 1 {
        h.add_node(config(i, k, Some(1), ka_ms));
        h.node_mut(NodeId::from_u64(i))
            .declare_interest(Time::ZERO, stream.state, level);
    }
    (h, stream)
}

/// WAN links and node 1 alone, publishing state 7 and taking `slots` children (keep-alive
/// `ka_ms`).
pub fn publisher(seed: u64, slots: u16, ka_ms: u64) -> Harness {
    let mut h = Harness::new(seed, elara_diffusion::harness::LinkProfile::wan());
    h.add_node(config(1, slots, None, ka_ms));
    h.node_mut(NodeId::from_u64(1))
        .create_state(StateId(7))
        .expect("fresh state");
    h
}

/// Node 1 publishes state 7 and can take `publisher_slots` children; node 2 (four slots)
/// has joined it with High interest, 300 ms in (WAN links).
pub fn publisher_and_viewer(seed: u64, publisher_slots: u16) -> Harness {
    let state = StateId(7);
    let mut h = publisher(seed, publisher_slots, 1000);
    h.add_node(config(2, 4, Some(1), 1000));
    h.node_mut(NodeId::from_u64(2))
        .declare_interest(Time::ZERO, state, InterestLevel::High);
    h.run_for(Duration::from_millis(300));
    h
}

/// A three-node chain for state 7: node 1 publishes and takes one child, node 2 joins below
/// it, node 3 is added and asks to join (it will be redirected below 2). The harness is
/// returned before 3's join completes, so that a test may add nodes first; run it a few
/// hundred milliseconds to settle the chain.
pub fn relay_chain(seed: u64) -> Harness {
    let state = StateId(7);
    let mut h = publisher_and_viewer(seed, 1);
    h.add_node(config(3, 4, Some(1), 1000));
    let now = h.now();
    h.node_mut(NodeId::from_u64(3))
        .declare_interest(now, state, InterestLevel::High);
    h
}
