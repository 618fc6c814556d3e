//! ELARA under test: the real [`SwarmNode`] from `elara-diffusion`, the very state machine the
//! QUIC transport drives, plugged into the engine through a thin adapter that only translates
//! names (the engine's [`Protocol`] contract is the swarm node's).
//!
//! - A livestream broadcaster creates its states ([`SwarmNode::create_state`]) and publishes;
//!   viewers declare interest and join the trees through the broadcaster as bootstrap peer.
//! - Call participants run the swarm's group mode ([`SwarmNode::join_call`]): each is the
//!   authority of its own tracks and every pair connects once; the scenario's interest of a
//!   participant in another's tracks is declared when the track is offered. Listeners (call nodes
//!   that do not publish) join the participants' trees like livestream viewers.

use std::collections::BTreeMap;

use elara_core::{
    InterestLevel, Message, NodeId, StateId, StateUpdate, Time, TrackInfo, UpdateKind,
};
use elara_diffusion::swarm::{Event, SwarmConfig, SwarmNode};

use crate::protocol::{
    LinkStats, NodeSetup, Protocol, ProtocolEvent, ProtocolKind, Role, TrackEntry, Transmit,
};

/// The call id used by call scenarios.
pub const CALL_ID: u64 = 1;

/// The swarm node as a protocol of the simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Elara;

impl ProtocolKind for Elara {
    type Node = ElaraNode;
    fn name(&self) -> &'static str {
        "elara"
    }
    fn create(&self, setup: &NodeSetup, now: Time) -> ElaraNode {
        let mut cfg = SwarmConfig::new(setup.id, setup.caps).with_seed(setup.seed);
        for b in &setup.bootstrap {
            if *b != setup.id {
                cfg = cfg.with_bootstrap(*b);
            }
        }
        let reorder = (setup.latency_budget / 3).max(std::time::Duration::from_millis(50));
        cfg = cfg.with_latency(setup.latency_budget, reorder);
        cfg.reliable_updates = setup.reliable_updates;
        ElaraNode {
            node: SwarmNode::new(cfg, now),
            role: setup.role,
            now,
            wanted: Vec::new(),
            publish_errors: 0,
            states: Vec::new(),
            call: None,
        }
    }
}

/// One ELARA node in the simulator.
// Declaration order is layout order, from a cache line's start: the clock every call updates
// next to the swarm node's hot fields (see `SwarmNode`).
#[repr(C, align(64))]
pub struct ElaraNode {
    now: Time,
    node: SwarmNode,
    role: Role,
    /// Call mode: interest to declare in a track once it is offered.
    wanted: Vec<(StateId, InterestLevel)>,
    publish_errors: u64,
    states: Vec<StateId>,
    /// Call mode: the participants and this node's own tracks.
    call: Option<(Vec<NodeId>, Vec<TrackInfo>)>,
}

impl ElaraNode {
    /// The wrapped swarm node.
    pub fn swarm(&self) -> &SwarmNode {
        &self.node
    }

    /// Updates the swarm node refused to publish.
    pub fn publish_errors(&self) -> u64 {
        self.publish_errors
    }

    fn tick(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
        }
    }
}

impl Protocol for ElaraNode {
    fn start(&mut self, now: Time, tracks: &[TrackEntry]) {
        self.tick(now);
        self.states = tracks.iter().map(|t| t.state).collect();
        let me = self.node.id();
        match self.role {
            Role::Broadcaster => {
                for t in tracks.iter().filter(|t| t.authority == me) {
                    // The directory never names two authorities for one state.
                    let _ = self.node.create_state(t.state);
                }
            }
            Role::Participant => {
                let mut participants: Vec<NodeId> = tracks.iter().map(|t| t.authority).collect();
                participants.sort();
                participants.dedup();
                let own: Vec<TrackInfo> = tracks
                    .iter()
                    .filter(|t| t.authority == me)
                    .map(|t| TrackInfo {
                        state: t.state,
                        kind: if t.video {
                            UpdateKind::Video
                        } else {
                            UpdateKind::Audio
                        },
                        codec: 0,
                        priority: if t.video {
                            elara_core::Priority::Normal
                        } else {
                            elara_core::Priority::High
                        },
                    })
                    .collect();
                self.node
                    .join_call(now, CALL_ID, &participants, own.clone());
                self.call = Some((participants, own));
            }
            Role::Viewer => {}
        }
    }

    fn handle_message(&mut self, now: Time, from: NodeId, message: Message) {
        self.tick(now);
        self.node.handle_message(now, from, message);
    }

    fn handle_timeout(&mut self, now: Time) {
        self.tick(now);
        self.node.handle_timeout(now);
    }

    fn publish(&mut self, now: Time, update: StateUpdate) {
        self.tick(now);
        if self.node.publish(now, update).is_err() {
            self.publish_errors += 1;
        }
    }

    fn declare_interest(&mut self, now: Time, state: StateId, level: InterestLevel) {
        self.tick(now);
        if self.role == Role::Participant {
            // Group mode: interest follows the call offer.
            self.wanted.retain(|w| w.0 != state);
            self.wanted.push((state, level));
        } else {
            self.node.declare_interest(now, state, level);
        }
    }

    fn link_feedback(&mut self, now: Time, peer: NodeId, stats: LinkStats) {
        self.tick(now);
        self.node.link_feedback(now, peer, stats);
    }

    fn peer_connected(&mut self, now: Time, peer: NodeId) {
        self.tick(now);
        self.node.peer_connected(now, peer);
    }

    fn peer_lost(&mut self, now: Time, peer: NodeId) {
        self.tick(now);
        self.node.connection_lost(now, peer);
        // Playing the call server: a participant we could not reach (it had not joined yet, or
        // its connection broke) is offered again, so the node dials it again.
        if let Some((participants, own)) = &self.call
            && participants.contains(&peer)
        {
            self.node.join_call(now, CALL_ID, participants, own.clone());
        }
    }

    fn leave(&mut self, now: Time) {
        self.tick(now);
        self.node.leave(now);
    }

    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        self.tick(now);
        self.node.poll_transmit(now).map(|t| Transmit {
            to: t.to,
            message: t.message,
        })
    }

    fn poll_event(&mut self) -> Option<ProtocolEvent> {
        while let Some(e) = self.node.poll_event() {
            let out = match e {
                Event::Delivered { update, hops, .. } => ProtocolEvent::Delivered {
                    state: update.state,
                    seq: update.seq,
                    hops,
                },
                Event::Connect { peer, .. } => ProtocolEvent::Connect { peer },
                Event::Disconnect { peer } => ProtocolEvent::Disconnect { peer },
                Event::ParentChanged { state, new, .. } => {
                    ProtocolEvent::ParentChanged { state, parent: new }
                }
                Event::TrackOffered { track, .. } => {
                    if let Some(&(_, level)) = self.wanted.iter().find(|w| w.0 == track.state) {
                        let now = self.now;
                        self.node.declare_interest(now, track.state, level);
                    }
                    continue;
                }
                _ => continue,
            };
            return Some(out);
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        self.node.poll_timeout()
    }

    fn depth(&self, state: StateId) -> Option<u16> {
        self.node.depth(state)
    }

    fn prefetch_hints(&self, stage: usize, hint: &mut dyn FnMut(*const u8)) {
        if stage == 0 {
            hint(std::ptr::from_ref(&self.now).cast());
        }
        self.node.prefetch_hints(stage, hint);
    }

    fn diagnostics(&self, out: &mut BTreeMap<String, u64>) {
        let mut add = |k: &str, v: u64| {
            if v > 0 {
                *out.entry(k.to_owned()).or_default() += v;
            }
        };
        let stats = self.node.propagation_stats();
        for (reason, n) in stats.drops() {
            add(&format!("drop_{}", reason.name()), n);
        }
        add("scheduled", stats.scheduled);
        add("sent_updates", stats.sent);
        for state in &self.states {
            if let Some(m) = self.node.state_metrics(*state) {
                add("state_delivered", m.delivered);
                add("state_duplicates", m.duplicates);
                add("state_late", m.late);
                add("state_skipped", m.skipped);
                add("state_non_authority", m.non_authority);
                add("state_not_from_parent", m.not_from_parent);
                add("state_pulled", m.pulled);
                add("state_repaired", m.repaired);
                add("state_pull_crossed", m.pull_crossed);
                add("state_parent_changes", m.parent_changes);
            }
        }
        let c = self.node.counters();
        add("from_unknown_peer", c.from_unknown_peer);
        add("unknown_state", c.unknown_state);
        add("unexpected", c.unexpected);
        add("loops_broken", c.loops_broken);
        add("publish_errors", self.publish_errors);
    }
}
