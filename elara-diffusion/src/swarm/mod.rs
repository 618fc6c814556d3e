//! The swarm node: the sans-IO state machine every ELARA node runs.
//!
//! A [`SwarmNode`] keeps a set of neighbours (membership), places itself in one diffusion tree
//! per state it cares about (the state's authority is the root), aggregates interest up those
//! trees, forwards updates down them through the
//! [`PropagationScheduler`], repairs the trees when a
//! parent fails and repairs missing updates by pulling them, and runs small group calls where
//! every participant is the authority of its own tracks.
//!
//! # Driving a node
//!
//! The node never reads a clock, never touches a socket and never spawns anything: the driver
//! (the QUIC transport, the simulator, the in-memory [`crate::harness`]) passes `now` into every
//! call and carries out what the node hands back.
//!
//! **Calls that feed it:**
//! - [`SwarmNode::peer_connected`] when a connection to a peer is up (dialled because of an
//!   [`Event::Connect`], or accepted from the peer); [`SwarmNode::connection_lost`] when one
//!   breaks or a dial fails;
//! - [`SwarmNode::handle_message`] for every message decoded from a peer;
//! - [`SwarmNode::handle_timeout`] when the deadline returned by [`SwarmNode::poll_timeout`]
//!   has passed;
//! - [`SwarmNode::link_feedback`] whenever the transport has fresh congestion figures for a link
//!   (RTT, send rate, loss, queued bytes): they set the link's budget;
//! - the application's calls: [`SwarmNode::publish`], [`SwarmNode::declare_interest`],
//!   [`SwarmNode::join_call`], [`SwarmNode::set_muted`], [`SwarmNode::leave`].
//!
//! **Calls that drain it**, after every feeding call:
//! - [`SwarmNode::poll_transmit`] until it returns `None`: each [`Transmit`] is one message for a
//!   connected peer. Control messages come first, then updates in the order and at the pace the
//!   scheduler allows (so call it again when the timeout fires even if nothing arrived);
//! - [`SwarmNode::poll_event`] until `None`: [`Event::Connect`] and [`Event::Disconnect`] are
//!   requests to the driver, the rest are for the application;
//! - [`SwarmNode::poll_timeout`]: when to call `handle_timeout` next
//!   ([`SwarmNode::next_timer`] says why).
//!
//! ```text
//! loop {
//!     wait for: a message, a connection change, or the deadline
//!     feed it:  handle_message / peer_connected / connection_lost / handle_timeout(now)
//!     while let Some(t) = node.poll_transmit(now) { send t.message to t.to }
//!     while let Some(e) = node.poll_event()      { dial / close / tell the app }
//!     deadline = node.poll_timeout()
//! }
//! ```
//!
//! # How the protocol works
//!
//! - **Membership.** The node dials its bootstrap peers; every connection starts with a
//!   `Hello` carrying [`elara_core::Capabilities`] and a ping (for the RTT). A peer is pinged
//!   when nothing was sent to it for `keepalive_interval` and declared down when nothing was
//!   heard for `idle_timeout`; `Leave` is a graceful goodbye. Connections the node opened and no
//!   longer needs (redirect hops) are closed after a grace period.
//! - **Trees.** Each state's authority is its tree's root. A joiner sends `JoinRequest`; a node
//!   with a free slot (`caps.max_children`) answers `JoinAccept` carrying its ancestor path,
//!   otherwise `JoinRedirect` to a few of its relaying children in rotation, strong relays (two
//!   children or more) first (which fills the tree breadth-first: depth ⌈log_k N⌉). A joiner
//!   that can relay little is sent on down while a strong relay child exists, so the inner
//!   levels are the strong uplinks. A fresh joiner that can relay much more than a full node's
//!   weakest child takes that child's slot and the child moves below it (several such moves at
//!   once). Every 2-4 s an attached strong relay asks an ancestor above its parent (at a random
//!   level) to take it, and follows that ancestor's redirects into a cousin branch while they
//!   land it higher; a node below a one-child relay asks its grandparent. So a tree grown
//!   unevenly in a join storm compacts. A node never attaches under a path containing itself,
//!   so the trees are loop-free.
//! - **Interest.** A node tells its parent the strongest interest of its subtree (`Interest`);
//!   a Low subtree is sent keyframes and the base layer only (of audio, every frame, and a Low
//!   receiver of a stream without deltas repairs its gaps like any other); `None` detaches.
//! - **Forwarding.** An update from the parent is forwarded to every child whose subtree wants
//!   it through the [`PropagationScheduler`]: per-link token buckets from
//!   [`SwarmNode::link_feedback`] under one node-wide bucket at the announced upload,
//!   priorities, quality steps, keyframe tracking, stale and superseded drops (a keyframe
//!   always starts its group for the children, even one that arrives after its deltas); an
//!   update that would reach a child after the latency budget (age + RTT/2) is not sent.
//!   Children are served deepest subtree first: each node reports its subtree's height with
//!   its interest, so a large keyframe's fan-out reaches the longest paths before the leaves.
//!   Decided sends wait in a pacing queue until due. Updates whose source is not the state's
//!   authority, or that do not come from the parent, are dropped and counted.
//! - **Delivery.** Updates reach the application exactly once and in sequence order; a gap
//!   holds later updates for at most `reorder_window`, and video deltas whose keyframe was not
//!   delivered are never handed over.
//! - **Lazy repair.** A gap that outlives two round trips to the parent (the transport
//!   recovers its own losses first), or an `Announce` of a newer sequence number when the
//!   stream goes quiet, makes the node `Pull` the missing numbers from its parent, which
//!   resends them (as repairs: budget and rate apply, group bookkeeping does not, and deltas
//!   of a group the scheduler cut for that child are not re-sent) or answers `Unavailable`,
//!   also for a repair the scheduler refuses.
//! - **Tree repair.** Each node keeps standby connections to its grandparent and
//!   great-grandparent (unless that is the root, whose uplink carries the stream). When its
//!   parent fails (or leaves) it sends a `RepairRequest` to the nearest ancestor it still hears
//!   from (an ancestor silent for longer than a keep-alive interval and two round trips is
//!   asked last: failures often take several relays at once), twice: the ancestor answers each
//!   copy with a `JoinAccept` (the second only repeats it), so a lost request or accept does
//!   not hold the orphan up for a retransmission.
//!   A node whose relay child failed opens twice as many repair slots above capacity as that
//!   child could take (its orphans, and the orphans of a child of it that failed too), for two
//!   idle timeouts, takes repair requests there at once (one round trip over a standby) and
//!   later moves them down a level. An orphan often notices the failure before its
//!   grandparent does (it heard the failed parent more recently): a repair request that
//!   finds no room makes the grandparent count a relay child silent that long as failed and
//!   open its slots at once. Fresh joiners and climbers send `JoinRequest` and never take a
//!   repair slot. A child with nothing flowing asks its new parent with an empty `Pull` to
//!   start it at the newest buffered keyframe still inside the latency budget. A node
//!   switching parents on purpose keeps the old one until the new one delivers a group
//!   boundary (make-before-break), waiting for it up to one group interval plus the latency
//!   budget.
//! - **Group mode.** [`SwarmNode::join_call`]: one connection per pair, dialled by the lower id;
//!   a `CallOffer` per participant; each track is a star rooted at its participant; interest per
//!   track; muting another withdraws interest (the sender stops at once), muting oneself stops
//!   publishing.
//!
//! Not implemented: interest TTLs (`ttl_ms` is sent as 0 and read as "until withdrawn"), the
//! `rate_kbps` of a `QualityRequest` (its layer and keyframes-only fields are honoured), and
//! authentication of updates (a relay could forge its own parent's stream; the transport's
//! peer authentication is the only guard).
//!
//! # Example
//!
//! ```
//! use elara_core::{Capabilities, InterestLevel, NodeId, StateId, StateUpdate, Time};
//! use elara_diffusion::harness::{Harness, LinkProfile};
//! use elara_diffusion::swarm::{Event, SwarmConfig};
//!
//! let caps = Capabilities { upload_kbps: 10_000, max_children: 4, ..Default::default() };
//! let publisher = NodeId::from_u64(1);
//! let viewer = NodeId::from_u64(2);
//! let mut h = Harness::new(7, LinkProfile::lan());
//! h.add_node(SwarmConfig::new(publisher, caps));
//! h.add_node(SwarmConfig::new(viewer, caps).with_bootstrap(publisher));
//! let state = StateId(1);
//! h.node_mut(publisher).create_state(state).unwrap();
//! h.node_mut(viewer).declare_interest(Time::ZERO, state, InterestLevel::High);
//! h.run_for(std::time::Duration::from_millis(200));
//! let now = h.now();
//! h.node_mut(publisher)
//!     .publish(now, StateUpdate::new(state, publisher, 0, now))
//!     .unwrap();
//! h.run_for(std::time::Duration::from_millis(200));
//! assert!(h.events(viewer).iter().any(|e| matches!(e, Event::Delivered { .. })));
//! ```

mod call;
mod config;
mod diffusion;
mod event;
mod membership;
mod pacing;
mod peer;
mod small_map;
mod state;
mod timer;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use elara_core::{InterestLevel, Message, NodeId, Priority, StateId, StateUpdate, Time, TrackInfo};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

pub use config::{BootstrapPeer, SwarmConfig};
pub use event::{Event, Health, HealthReason, PeerDownReason, Transmit};
pub use peer::LinkMetrics;
pub use state::{LATENCY_BUCKETS_MS, StateMetrics};
pub use timer::TimerReason;

use crate::scheduler::{Decision, LinkId, PropagationScheduler, SchedulerConfig};
pub use crate::scheduler::{LinkStats, Quality};
use pacing::PacingQueue;
use peer::Peer;
use small_map::SmallMap;
use state::{Held, StateTree};
use timer::Timers;

/// Share of the announced upload capacity (what the node offers for relaying) the scheduler
/// paces updates into. Measured in `elara-sim` (livestream, 1,000 and 2,000 viewers): 0.9
/// left relays queueing behind their own bucket at high load (continuity 72% against 77%).
const UPLINK_SHARE: f64 = 1.0;

/// Largest room (bytes) an empty reused buffer keeps between calls: one that grew in a burst is
/// freed, so that a node that is idle most of the time holds next to nothing.
const KEEP_SPARE_BYTES: usize = 256;

/// `v` (empty after use) back for reuse, or a fresh one when it holds more room than
/// [`KEEP_SPARE_BYTES`].
pub(crate) fn recycle<T>(v: Vec<T>) -> Vec<T> {
    if v.is_empty() && v.capacity() * std::mem::size_of::<T>() > KEEP_SPARE_BYTES {
        Vec::new()
    } else {
        v
    }
}

/// Queues a control message on `control` (for callers that hold other fields of the node
/// borrowed; the rest use [`SwarmNode::send_control`]).
pub(crate) fn push_control(control: &mut VecDeque<Transmit>, to: NodeId, message: Message) {
    control.push_back(Transmit {
        to,
        message,
        priority: Priority::Urgent,
    });
}

/// Frees a drained queue's room (its items are over a hundred bytes each).
fn release_if_empty<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        *q = VecDeque::new();
    }
}

fn scheduler_config(cfg: &SwarmConfig) -> SchedulerConfig {
    // Every link's bucket draws on one uplink: without a node-wide bucket, each link's
    // estimate assumes the others stay put, a keyframe fan-out plus repairs overfill the
    // uplink queue, and every child's updates arrive late together.
    let uplink_rate = (cfg.caps.upload_kbps > 0)
        .then(|| (f64::from(cfg.caps.upload_kbps) * 125.0 * UPLINK_SHARE) as u64);
    SchedulerConfig {
        default_latency_budget: cfg.latency_budget,
        uplink_rate,
        ..SchedulerConfig::default()
    }
}

/// Why [`SwarmNode::publish`] refused an update.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The update names another source, or the state belongs to another authority.
    #[error("this node is not the authority of {0}")]
    NotAuthority(StateId),
    /// The track is muted ([`SwarmNode::set_muted`]).
    #[error("{0} is muted")]
    Muted(StateId),
    /// The sequence number does not advance past the last one published.
    #[error("sequence {seq} of {state} does not advance past {last}")]
    StaleSequence {
        /// The state.
        state: StateId,
        /// The refused sequence number.
        seq: u64,
        /// The last one published.
        last: u64,
    },
}

/// Counters that concern the node rather than one state or link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Messages received from a peer the driver never reported connected.
    pub from_unknown_peer: u64,
    /// Updates for a state this node has no tree for.
    pub unknown_state: u64,
    /// Messages that were well-formed but made no sense where they arrived (a hello naming
    /// another id, an accept nobody asked for, a call offer for another call, ...).
    pub unexpected: u64,
    /// Tree loops detected (a path containing this node) and broken.
    pub loops_broken: u64,
    /// Attempts to move up to the grandparent ([`TimerReason::Climb`]).
    pub climbs: u64,
    /// Updates not forwarded to a child because they would arrive after the latency budget.
    pub too_late_to_forward: u64,
}

/// A group call this node takes part in.
#[derive(Debug)]
pub(crate) struct Call {
    pub id: u64,
    pub participants: BTreeSet<NodeId>,
    pub tracks: Vec<TrackInfo>,
}

/// The swarm node state machine: membership, one diffusion tree per state, forwarding through
/// the scheduler, repair and group calls, as a plain value with no I/O.
///
/// **Feed it** with [`SwarmNode::peer_connected`] / [`SwarmNode::connection_lost`],
/// [`SwarmNode::handle_message`], [`SwarmNode::handle_timeout`] (once the deadline from
/// [`SwarmNode::poll_timeout`] has passed), [`SwarmNode::link_feedback`], and the application's
/// [`SwarmNode::publish`], [`SwarmNode::declare_interest`], [`SwarmNode::join_call`],
/// [`SwarmNode::set_muted`], [`SwarmNode::leave`].
///
/// **Drain it** after every feeding call: [`SwarmNode::poll_transmit`] until `None` (send each
/// message to its peer), [`SwarmNode::poll_event`] until `None` (open or close connections on
/// [`Event::Connect`] / [`Event::Disconnect`], hand the rest to the application), then
/// [`SwarmNode::poll_timeout`] for the next wake-up. Every call takes `now`; nothing reads a
/// clock, and the same seed with the same inputs gives the same outputs. See the
/// [module documentation](self) for the loop and the protocol.
///
/// # Memory
///
/// A node is about 1 KB inline plus what it allocates, which is sized for the common case of a
/// viewer with one or two states and a handful of peers: its maps (peers, states, children,
/// timers) are sorted vectors until they pass a few dozen entries (a B-tree beyond, as at the
/// broadcaster), queues and scratch buffers give their room back once drained, buffered
/// updates are stored without the fields all of a state's updates share, and the scheduler
/// (relays only) grows its per-link tables by a quarter. Heap bytes per viewer measured by
/// `tests/swarm_memory.rs` (150 viewers, 30 fps video with a keyframe every 2 s, 1 s latency
/// budget, 1% loss; requested bytes, the allocator's own ~16 bytes per block on top; payloads
/// not counted):
///
/// | | after joining | after 8 s of streaming |
/// |---|---|---|
/// | video only, mean | 4.0 KB | 7.5 KB (leaf 5.3 KB, relay of 1/2/4 children 8.1/9.5/14.4 KB) |
/// | video + 50/s audio, mean | 6.4 KB | 12.9 KB (leaf 8.9 KB, relay of 2 children 16.5 KB) |
///
/// (Before these measures: 18.3/31.6 KB and 20.8/40.1 KB.) The largest remaining shares of a
/// streaming relay are its repair buffer (the latency budget's worth of updates, 72 bytes each
/// besides the payload; a leaf keeps the current video group), its peers (~270 bytes each,
/// and ~100 more for their two timers) and its scheduler (~2 KB). Reproduce with
/// `cargo test -p elara-diffusion@0.3.0 --test swarm_memory -- --nocapture`.
#[derive(Debug)]
// Declaration order is layout order: the fields nearly every call reads or writes come first,
// then the configuration (its own hot fields first), so that a call touches a few contiguous
// cache lines (a simulator driving thousands of nodes pays a miss for every line).
#[repr(C)]
pub struct SwarmNode {
    peers: SmallMap<NodeId, Peer>,
    /// Boxed: a viewer has one or two states, and a moved entry is a pointer.
    states: SmallMap<StateId, Box<StateTree>>,
    timers: Timers,
    control: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pacing: PacingQueue,
    /// Created when the node first forwards anything: leaves never pay for one.
    scheduler: Option<Box<PropagationScheduler>>,
    decisions: Vec<Decision>,
    /// Reused buffer of one update's targets ((reported subtree height, announced child slots),
    /// link, interest).
    fanout: Vec<((u8, u16), LinkId, InterestLevel)>,
    scratch: Vec<Held>,
    health: Health,
    health_dirty: bool,
    left: bool,
    counters: NodeCounters,
    cfg: SwarmConfig,
    /// Peers that failed recently, not tried again as parents until the time given.
    failed: peer::FailedPeers,
    call: Option<Call>,
    rng: ChaCha8Rng,
}

impl SwarmNode {
    /// A node that starts dialling its bootstrap peers at `now`.
    pub fn new(cfg: SwarmConfig, now: Time) -> Self {
        let mut node = SwarmNode {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            peers: SmallMap::new(),
            states: SmallMap::new(),
            timers: Timers::default(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            scheduler: None,
            pacing: PacingQueue::default(),
            decisions: Vec::new(),
            fanout: Vec::new(),
            call: None,
            failed: peer::FailedPeers::default(),
            health: Health::Healthy,
            health_dirty: true,
            counters: NodeCounters::default(),
            scratch: Vec::new(),
            left: false,
            cfg,
        };
        for i in 0..node.cfg.bootstrap.len() {
            let b = node.cfg.bootstrap[i].clone();
            node.dial(now, b.id, b.addr);
        }
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &SwarmConfig {
        &self.cfg
    }

    /// Makes this node the authority (tree root) of `state`, so that nodes can join its tree
    /// before the first update is published. Fails if another authority is already known.
    pub fn create_state(&mut self, state: StateId) -> Result<(), PublishError> {
        let me = self.cfg.id;
        let tree = self.states.get_or_default(state);
        match tree.authority {
            Some(a) if a != me => Err(PublishError::NotAuthority(state)),
            _ => {
                tree.authority = Some(me);
                Ok(())
            }
        }
    }

    /// Publishes an update of a state this node is the authority of (creating the state on
    /// first use) and queues it for every child whose subtree wants it.
    pub fn publish(&mut self, now: Time, update: StateUpdate) -> Result<(), PublishError> {
        let me = self.cfg.id;
        let state = update.state;
        if update.source != me {
            return Err(PublishError::NotAuthority(state));
        }
        let tree = self.states.get_or_default(state);
        match tree.authority {
            None => tree.authority = Some(me),
            Some(a) if a != me => return Err(PublishError::NotAuthority(state)),
            Some(_) => {}
        }
        if tree.muted {
            return Err(PublishError::Muted(state));
        }
        if let Some(last) = tree.buffer.newest()
            && update.seq <= last
        {
            return Err(PublishError::StaleSequence {
                state,
                seq: update.seq,
                last,
            });
        }
        tree.metrics.published += 1;
        if update.keyframe {
            tree.recv.received_group = Some(update.group);
        }
        self.forward(now, update, 0, None, false);
        Ok(())
    }

    /// Declares (or withdraws, with [`InterestLevel::None`]) this node's own interest in a state.
    ///
    /// A node not yet in the state's tree starts joining it through its bootstrap peers (or the
    /// authority, when known); a change of the aggregated interest is told to the parent.
    pub fn declare_interest(&mut self, now: Time, state: StateId, level: InterestLevel) {
        let me = self.cfg.id;
        let tree = self.states.get_or_default(state);
        tree.own = level;
        self.health_dirty = true;
        let needs_join = level.is_interested()
            && !tree.attached(me)
            && tree.joining.is_none()
            && tree.call.is_none();
        if needs_join {
            let mut candidates: Vec<NodeId> = tree.authority.into_iter().collect();
            candidates.extend(self.cfg.bootstrap.iter().map(|b| b.id));
            tree.detached_since = Some(now);
            self.start_join(now, state, candidates);
        } else {
            self.propagate_interest(now, state);
        }
    }

    /// Feeds congestion figures for the link to `peer`: they set the link's send budget in the
    /// scheduler, and a parent link that loses too much makes the node look for a better parent.
    pub fn link_feedback(&mut self, now: Time, peer: NodeId, stats: LinkStats) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.link.rtt = stats.rtt;
        p.link.send_rate = stats.send_rate_estimate;
        p.link.loss = stats.loss;
        p.link.queued_bytes = stats.queued_bytes;
        if p.srtt.is_none() {
            p.srtt = Some(stats.rtt);
        }
        p.feedback_rtt = Some(stats.rtt);
        if let (Some(link), Some(sched)) = (p.link_id, self.scheduler.as_deref_mut()) {
            // The handle is current: it is dropped whenever the connection is. The bytes the
            // transport still queues are our own sends, which the scheduler's bucket charged
            // when it decided them: counting them again as debt throttled every relay twice
            // (the sender-side queue after a keyframe fan-out starved the next frames).
            let paid = LinkStats {
                queued_bytes: 0,
                ..stats
            };
            let _ = sched.link_feedback(now, link, paid);
        }
        self.check_parent_quality(now, peer);
    }

    /// The next message to send, if any. Control messages first, then updates as the scheduler
    /// releases them.
    pub fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        let t = match self.control.pop_front() {
            Some(t) => t,
            None => loop {
                release_if_empty(&mut self.control);
                let paced = self.pacing.pop_due(now, self.cfg.pacing_slack)?;
                let wanted = self.still_wanted(paced.to, &paced.update);
                // One lookup of the peer: the link must still be the one decided for, and the
                // peer's counters are updated here.
                let Some(p) = self
                    .peers
                    .get_mut(&paced.to)
                    .filter(|p| p.link_id == Some(paced.link))
                else {
                    continue;
                };
                if let Some(sched) = self.scheduler.as_deref_mut() {
                    if wanted {
                        let _ = sched.on_sent(now, paced.link, &paced.update);
                    } else {
                        // Interest withdrawn or track muted since the decision: give the
                        // bytes back.
                        let _ = sched.on_send_failed(now, paced.link, &paced.update);
                    }
                }
                if !wanted {
                    continue;
                }
                let t = Transmit {
                    to: paced.to,
                    priority: paced.update.priority,
                    message: Message::Update {
                        hops: paced.hops,
                        update: paced.update,
                    },
                };
                p.count_sent(now, &t.message);
                return Some(t);
            },
        };
        if let Some(p) = self.peers.get_mut(&t.to) {
            p.count_sent(now, &t.message);
        }
        Some(t)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() {
            release_if_empty(&mut self.events);
        }
        e
    }

    /// When [`SwarmNode::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let timer = self.timers.next().map(|(t, _)| t);
        match (timer, self.pacing.next_release(self.cfg.pacing_slack)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest armed timer and why it exists (the scheduler's release time is not
    /// included: it shows as [`TimerReason::Scheduler`] only when earlier than every timer).
    pub fn next_timer(&self) -> Option<(Time, TimerReason)> {
        let timer = self.timers.next();
        match (timer, self.pacing.next_release(self.cfg.pacing_slack)) {
            (Some((a, _)), Some(b)) if b < a => Some((b, TimerReason::Scheduler)),
            (None, Some(b)) => Some((b, TimerReason::Scheduler)),
            (t, _) => t,
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(reason) = self.timers.pop_due(now) {
            match reason {
                TimerReason::Liveness => self.on_liveness(now),
                TimerReason::Dial(p) => self.on_dial_timeout(now, p),
                TimerReason::Prune(p) => self.on_prune(now, p),
                TimerReason::JoinRetry(s) => self.on_join_retry(now, s),
                TimerReason::Reorder(s) => self.on_reorder(now, s),
                TimerReason::PullRetry(s) => self.request_repair(now, s),
                TimerReason::Announce(s) => self.on_announce_timer(now, s),
                TimerReason::Rebalance(s) => self.on_rebalance(now, s),
                TimerReason::Climb(s) => self.on_climb(now, s),
                TimerReason::SwitchDeadline(s) => self.finish_switch(now, s),
                TimerReason::Scheduler => {}
            }
        }
        self.failed.expire(now);
        self.health_dirty = true;
        self.refresh_health(now);
    }

    /// Handles one message from a connected peer. Anything a peer sends — out of order,
    /// duplicated, for an unknown state, claiming another's authority — is handled (dropped and
    /// counted when it makes no sense) without affecting other peers.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        if self.left {
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            self.counters.from_unknown_peer += 1;
            return;
        };
        p.last_heard = now;
        p.link.messages_received += 1;
        p.link.bytes_received += msg.encoded_len() as u64;
        match msg {
            Message::Hello { node, caps } => self.on_hello(now, from, node, caps),
            Message::Ping { nonce } => self.send_control(from, Message::Pong { nonce }),
            Message::Pong { nonce } => self.on_pong(now, from, nonce),
            Message::Leave { .. } => self.peer_gone(now, from, PeerDownReason::Left),
            Message::Interest {
                state,
                level,
                height,
                ..
            } => self.on_interest(now, from, state, level, height),
            Message::JoinRequest { state } => self.on_join_request(now, from, state, false),
            Message::RepairRequest { state } => self.on_join_request(now, from, state, true),
            Message::JoinAccept { state, path, .. } => self.on_join_accept(now, from, state, path),
            Message::JoinRedirect { state, candidates } => {
                self.on_join_redirect(now, from, state, &candidates)
            }
            Message::Update { hops, update } => self.on_update(now, from, hops, update),
            Message::Announce {
                state,
                source,
                seqs,
            } => self.on_announce(now, from, state, source, &seqs),
            Message::Pull { state, seqs } => self.on_pull(now, from, state, &seqs),
            Message::Unavailable { state, seqs } => self.on_unavailable(now, from, state, &seqs),
            Message::QualityRequest {
                state,
                max_layer,
                keyframes_only,
                ..
            } => self.on_quality_request(from, state, max_layer, keyframes_only),
            Message::CallOffer { call, tracks } => self.on_call_offer(now, from, call, &tracks),
            _ => self.counters.unexpected += 1,
        }
        if self.health_dirty {
            self.refresh_health(now);
        }
    }

    /// Updates decided for sending and waiting for their pacing delay.
    pub fn paced_len(&self) -> usize {
        self.pacing.len()
    }

    /// The scheduler's statistics (sent, dropped by reason, latency).
    pub fn propagation_stats(&self) -> &crate::stats::PropagationStats {
        static NONE: std::sync::LazyLock<crate::stats::PropagationStats> =
            std::sync::LazyLock::new(crate::stats::PropagationStats::new);
        self.scheduler.as_deref().map_or(&NONE, |s| s.stats())
    }

    /// Addresses of the memory the node's next call most likely reads, for a driver that runs
    /// many nodes (a simulator) and wants to prefetch them while it handles an earlier event.
    /// `stage` 0 names fields of the node itself, stage 1 what those fields point to (its
    /// peers, states and timers), so call stage 1 only once stage 0's addresses had time to
    /// arrive. A hint, nothing else: the addresses may be anywhere in
    /// the node's memory and are only valid until the node is next changed.
    pub fn prefetch_hints(&self, stage: usize, hint: &mut dyn FnMut(*const u8)) {
        fn addr<T>(p: &T) -> *const u8 {
            std::ptr::from_ref(p).cast()
        }
        match stage {
            0 => {
                hint(addr(&self.peers));
                hint(addr(&self.timers));
                hint(addr(&self.events));
                hint(addr(&self.pacing));
                hint(addr(&self.decisions));
                hint(addr(&self.health));
                hint(addr(&self.counters));
                hint(addr(&self.cfg.id));
                hint(addr(&self.cfg.reorder_window));
                hint(addr(&self.cfg.join_timeout));
            }
            1 => {
                if let Some(peers) = self.peers.as_slice() {
                    for p in peers.iter().take(8) {
                        hint(addr(&p.0));
                    }
                }
                if let Some(states) = self.states.as_slice()
                    && let Some(s) = states.first()
                {
                    hint(addr(s));
                }
                self.timers.hint(hint);
            }
            _ => {}
        }
    }

    /// The node's current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Metrics of the link to `peer`.
    pub fn link_metrics(&self, peer: NodeId) -> Option<&LinkMetrics> {
        self.peers.get(&peer).map(|p| &p.link)
    }

    /// Metrics of one state.
    pub fn state_metrics(&self, state: StateId) -> Option<&StateMetrics> {
        self.states.get(&state).map(|t| &t.metrics)
    }

    /// Node-wide counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Peers with a connection (dialling ones excluded).
    pub fn connected_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.is_connected())
            .map(|(id, _)| *id)
    }

    /// This node's parent in a state's tree.
    pub fn parent(&self, state: StateId) -> Option<NodeId> {
        self.states.get(&state).and_then(|t| t.parent)
    }

    /// This node's children in a state's tree.
    pub fn children(&self, state: StateId) -> impl Iterator<Item = NodeId> + '_ {
        self.states
            .get(&state)
            .into_iter()
            .flat_map(|t| t.children.keys().copied())
    }

    /// This node's depth in a state's tree (0 at the authority), when attached.
    pub fn depth(&self, state: StateId) -> Option<u16> {
        let t = self.states.get(&state)?;
        t.attached(self.cfg.id).then(|| t.depth())
    }

    /// The interest of this node's whole subtree in a state (its own and its children's).
    pub fn aggregated_interest(&self, state: StateId) -> InterestLevel {
        self.states
            .get(&state)
            .map_or(InterestLevel::None, |t| t.aggregated())
    }

    /// The longest re-attach (parent loss detected to new parent accepted) seen for a state.
    pub fn longest_reattach(&self, state: StateId) -> Option<Duration> {
        self.states.get(&state).map(|t| t.reattach_max)
    }

    /// The scheduler's handle for the link to `peer`, registering the link (and creating the
    /// scheduler) on first use.
    pub(crate) fn link_for(&mut self, now: Time, peer: NodeId) -> Option<crate::scheduler::LinkId> {
        let p = self.peers.get_mut(&peer).filter(|p| p.is_connected())?;
        if let Some(l) = p.link_id {
            return Some(l);
        }
        let cfg = &self.cfg;
        let sched = self
            .scheduler
            .get_or_insert_with(|| Box::new(PropagationScheduler::new(scheduler_config(cfg))));
        let link = sched.add_link(now, peer);
        if let Some(stats) = p.last_feedback() {
            let _ = sched.link_feedback(now, link, stats);
        }
        p.link_id = Some(link);
        Some(link)
    }

    /// Queues a control message.
    fn send_control(&mut self, to: NodeId, message: Message) {
        push_control(&mut self.control, to, message);
    }

    /// Recomputes the health and emits [`Event::HealthChanged`] when it changed.
    fn refresh_health(&mut self, now: Time) {
        self.health_dirty = false;
        let grace = self.cfg.idle_timeout + self.cfg.join_timeout;
        let mut health = Health::Healthy;
        let wants_peers = !self.cfg.bootstrap.is_empty() || !self.states.is_empty();
        if wants_peers && !self.peers.values().any(Peer::is_connected) {
            health = Health::Unhealthy(HealthReason::NoPeers);
        }
        for (&s, t) in &self.states {
            if !matches!(health, Health::Healthy | Health::Degraded(_)) {
                break;
            }
            if t.own.is_interested() && !t.attached(self.cfg.id) {
                let long = t.detached_since.is_some_and(|d| now - d > grace);
                health = if long {
                    Health::Unhealthy(HealthReason::Detached(s))
                } else {
                    Health::Degraded(HealthReason::Detached(s))
                };
            } else if health == Health::Healthy {
                if t.last_skip.is_some_and(|k| now - k < grace) {
                    health = Health::Degraded(HealthReason::Losing(s));
                } else if t.children.values().any(|c| c.quality != Quality::Full) {
                    health = Health::Degraded(HealthReason::DegradedLink(s));
                }
            }
        }
        if health != self.health {
            self.health = health;
            self.events.push_back(Event::HealthChanged(health));
        }
    }
}
