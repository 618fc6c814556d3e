//! Workloads shared by the ELARA benchmarks, so that every bench file measures the same thing
//! on both sides: the original `elara-diffusion` 0.2.0 (as `original`) and this workspace's
//! `elara-diffusion`.
//!
//! The scheduler workload is a star: one source, `V` receivers attached directly, interests
//! 10 % High / 60 % Medium / 30 % Low, one update per call and a decision for every receiver.
#![deny(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
use elara_diffusion::PropagationTopology;
use elara_diffusion::scheduler::{
    Decision, LinkId, LinkStats, PropagationScheduler, SchedulerConfig,
};

/// Payload size of the benchmark's video frames.
pub const PAYLOAD: usize = 1200;

/// The benchmark's interest mix for receiver `i`: 10 % High, 60 % Medium, 30 % Low.
pub fn level_of(i: u64) -> InterestLevel {
    match i % 10 {
        0 => InterestLevel::High,
        1..=6 => InterestLevel::Medium,
        _ => InterestLevel::Low,
    }
}

/// The same mix in the original crate's type.
pub fn original_level_of(i: u64) -> original::InterestLevel {
    match level_of(i) {
        InterestLevel::High => original::InterestLevel::High,
        InterestLevel::Medium => original::InterestLevel::Medium,
        _ => original::InterestLevel::Low,
    }
}

/// A 32-byte node id for receiver `i` that looks like a key hash (not a small integer).
pub fn node_id(i: u64) -> NodeId {
    NodeId::from_u64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// The interest-registration workload on ELARA's map: every id of `ids` declares its interest
/// in state 1 at [`level_of`] its 1-based position.
#[inline]
pub fn declare_all(
    mut map: elara_diffusion::InterestMap,
    ids: &[NodeId],
    now: Time,
) -> elara_diffusion::InterestMap {
    for (i, &node) in ids.iter().enumerate() {
        map.declare(now, node, StateId(1), level_of(i as u64 + 1), None)
            .expect("within limits");
    }
    map
}

/// The same workload on the original crate's map.
#[inline]
pub fn register_all_original(
    mut map: original::InterestMap,
    ids: &[original_core::NodeId],
) -> original::InterestMap {
    for (i, &node) in ids.iter().enumerate() {
        map.register(original::InterestDeclaration::new(
            node,
            1,
            original_level_of(i as u64 + 1),
        ));
    }
    map
}

/// The original crate's scheduler over a star of `v` receivers.
pub struct OriginalStar {
    scheduler: original::PropagationScheduler,
    update: original::StateUpdate,
}

impl OriginalStar {
    /// Builds the star: interests registered in the original `InterestMap`, every node added
    /// to the original `PropagationTopology`.
    pub fn new(v: u64) -> Self {
        let source = original_core::NodeId::new(0);
        let mut interests = original::InterestMap::new();
        let mut topology = original::PropagationTopology::new();
        topology.add_node(source);
        for i in 1..=v {
            let node = original_core::NodeId::new(i);
            interests.register(original::InterestDeclaration::new(
                node,
                1,
                original_level_of(i),
            ));
            topology.add_node(node);
        }
        let scheduler = original::PropagationScheduler::new(interests, topology);
        let update =
            original::StateUpdate::new(1, source, 1, original_core::StateTime::from_millis(0))
                .with_size(PAYLOAD);
        OriginalStar { scheduler, update }
    }

    /// Schedules the update; returns the decisions.
    pub fn step(&self) -> Vec<original::PropagationDecision> {
        self.scheduler.schedule(&self.update)
    }
}

/// ELARA's topology and scheduler over a star of `v` receivers, with rate limiting and
/// quality selection active: every link has a bucket fed by feedback, one link in ten is
/// slower than the stream (30 kB/s for a ~38 kB/s stream) and the source's uplink carries
/// about 90 % of the full-quality demand, so low-interest and slow receivers step down.
pub struct ElaraStar {
    topology: PropagationTopology,
    scheduler: PropagationScheduler,
    root: NodeId,
    state: StateId,
    payload: Bytes,
    seq: u64,
    now: Time,
    targets: Vec<(LinkId, InterestLevel)>,
    out: Vec<Decision>,
}

impl ElaraStar {
    /// Builds the star, links and feedback.
    pub fn new(v: u64) -> Self {
        let root = NodeId::from_u64(0);
        let state = StateId(1);
        let start = Time::from_secs(1);
        let mut topology = PropagationTopology::star(root);
        // Each receiver wants ~38 kB/s (1.28 kB on the wire at 30 frames/s); the uplink
        // carries ~34 kB/s each.
        let cfg = SchedulerConfig {
            uplink_rate: Some(v * 34_000),
            ..SchedulerConfig::default()
        };
        let mut scheduler = PropagationScheduler::new(cfg);
        for i in 1..=v {
            let id = node_id(i);
            topology.add_node(id, 0).expect("fresh id");
            topology
                .set_interest(id, state, level_of(i))
                .expect("node just added");
            let link = scheduler.add_link(start, id);
            scheduler
                .set_target(state, link, topology.effective_interest(id, state))
                .expect("link just added");
            let rate = if i % 10 == 3 { 30_000 } else { 2_000_000 };
            let stats = LinkStats {
                send_rate_estimate: rate,
                ..LinkStats::default()
            };
            scheduler
                .link_feedback(start, link, stats)
                .expect("link just added");
        }
        let mut s = ElaraStar {
            topology,
            scheduler,
            root,
            state,
            payload: Bytes::from(vec![0u8; PAYLOAD]),
            seq: 0,
            now: start,
            targets: Vec::with_capacity(v as usize),
            out: Vec::with_capacity(v as usize),
        };
        // Warm up: the state is known and buffers have their size.
        for _ in 0..3 {
            s.step();
        }
        s
    }

    /// The next frame of a 30 frames/s video stream (a keyframe every 30 frames, base-layer
    /// deltas in between; no enhancement-layer updates), 33 ms after the previous one.
    fn next_update(&mut self) -> StateUpdate {
        self.seq += 1;
        self.now += Duration::from_millis(33);
        let u = StateUpdate::new(self.state, self.root, self.seq, self.now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(self.seq / 30))
            .with_payload(self.payload.clone());
        if self.seq.is_multiple_of(30) {
            u.keyframe()
        } else {
            u
        }
    }

    /// Schedules one update for every interested receiver, over the targets registered
    /// with the scheduler (kept up to date from the topology's aggregated interest when it
    /// changes, not per update). Returns the number of decisions.
    pub fn step(&mut self) -> usize {
        let update = self.next_update();
        self.scheduler
            .schedule_registered(self.now, &update, &mut self.out);
        self.out.len()
    }

    /// The same, but listing the topology's targets for this update and resolving each to its
    /// link with a hash lookup (the general `schedule` entry point). Returns the number of
    /// decisions.
    pub fn step_resolving(&mut self) -> usize {
        let update = self.next_update();
        self.targets.clear();
        for (id, level) in self.topology.targets(self.root, self.state) {
            let link = self
                .scheduler
                .link_id(id)
                .expect("every receiver has a link");
            self.targets.push((link, level));
        }
        self.scheduler.schedule(
            self.now,
            &update,
            self.targets.iter().copied(),
            &mut self.out,
        );
        self.out.len()
    }

    /// The scheduler, for inspection.
    pub fn scheduler(&self) -> &PropagationScheduler {
        &self.scheduler
    }

    /// The decisions of the last step.
    pub fn decisions(&self) -> &[Decision] {
        &self.out
    }
}
