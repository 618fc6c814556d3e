//! Who gets an update, in which order, at which quality, after which pacing delay:
//! [`PropagationScheduler`].
//!
//! For each update the scheduler produces one [`Decision`] per target (a direct neighbour whose
//! subtree wants the state), strongest interest first. Each decision says *send* (with a pacing
//! delay) or *drop* (with a [`DropReason`]), and the [`Quality`] the target is receiving.
//!
//! # What it enforces
//!
//! * **Rate limits.** Every link has a token bucket whose rate is the link's measured send rate
//!   ([`PropagationScheduler::link_feedback`]); optionally the node's whole uplink has one too
//!   ([`PropagationScheduler::set_uplink_rate`]). A send may run the bucket into debt as long as
//!   the debt drains before the update's latency budget runs out; the time to drain it is the
//!   decision's pacing delay.
//! * **Quality steps.** The *pressure* on a target is the pacing delay divided by what is left
//!   of the latency budget. As it rises, a target first loses enhancement layers (layer > 0:
//!   [`Quality::BaseLayer`]), then deltas — the first skipped delta cuts the rest of its group,
//!   so the target gets fewer frames ([`Quality::ReducedFrames`]), or only keyframes when no delta
//!   of the group got through ([`Quality::KeyframesOnly`]). The pressure thresholds are lower
//!   for lower interest, so Low viewers step down first and Critical ones last; keyframes, audio,
//!   control and data go as long as they can arrive within the budget at all.
//! * **Never a broken stream.** Per (link, state) the scheduler tracks the group whose keyframe
//!   the target got; a delta of any other group, or of a group cut short, is dropped with
//!   [`DropReason::MissingKeyframe`] / [`DropReason::FramesSkipped`].
//! * **Bounded latency.** An update older than its state's latency budget is dropped
//!   ([`DropReason::Stale`]); one from a group older than the newest group already scheduled is
//!   dropped ([`DropReason::Superseded`]). Nothing is queued inside the scheduler.
//! * **No allocation in steady state.** Decisions go into a caller-provided buffer; the only
//!   internal buffer is reused. `tests/scheduler_alloc.rs` counts allocations at 10,000
//!   receivers: zero per call once links and states are known.
//!
//! # Driving contract
//!
//! The scheduler is a plain value; it never reads a clock. A driver (the swarm node):
//!
//! 1. registers each neighbour with [`PropagationScheduler::add_link`] when the connection is up
//!    and keeps the returned [`LinkId`]; [`PropagationScheduler::remove_link`] when it goes down;
//! 2. feeds congestion feedback with [`PropagationScheduler::link_feedback`] whenever the
//!    transport has a new estimate (every RTT or so);
//! 3. optionally sets per-state latency budgets ([`PropagationScheduler::configure_state`]);
//! 4. for every update it must forward, calls [`PropagationScheduler::schedule`] with `now`, the
//!    update, and the (link, effective interest) of each neighbour whose subtree wants the state
//!    (for example from [`crate::PropagationTopology::targets`]); it sends the update on every
//!    link whose decision is [`Verdict::Send`], not before `now + delay`, in decision order;
//! 5. reports each outcome: [`PropagationScheduler::on_sent`] when the bytes left,
//!    [`PropagationScheduler::on_send_failed`] when they could not (the bucket is refunded, and a
//!    failed keyframe blocks its group's deltas on that link).
//!
//! # API for the swarm node
//!
//! Keep one scheduler per node and one [`LinkId`] per peer connection (`link_id(peer)` maps back
//! from a [`NodeId`]). Keep one `Vec<Decision>` and pass it to every `schedule` call. Decisions
//! carry `priority` and `interest`, so a node that batches several updates can order its transmit
//! queue by `(priority, interest)`. Read [`PropagationScheduler::stats`] for metrics and
//! [`PropagationScheduler::link_info`] for per-link rate, RTT, loss and queue.
//!
//! ```
//! use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
//! use elara_diffusion::scheduler::{LinkStats, PropagationScheduler, SchedulerConfig, Verdict};
//! use bytes::Bytes;
//! use std::time::Duration;
//!
//! let mut sched = PropagationScheduler::new(SchedulerConfig::default());
//! let now = Time::from_secs(1);
//! let a = sched.add_link(now, NodeId::from_u64(1));
//! let b = sched.add_link(now, NodeId::from_u64(2));
//! // Link b can carry only 10 kB/s.
//! let slow = LinkStats { send_rate_estimate: 10_000, ..LinkStats::default() };
//! sched.link_feedback(now, b, slow).unwrap();
//!
//! let key = StateUpdate::new(StateId(1), NodeId::from_u64(0), 0, now)
//!     .with_kind(UpdateKind::Video)
//!     .with_group(GroupId(1))
//!     .with_payload(Bytes::from(vec![0u8; 1200]))
//!     .keyframe();
//! let mut out = Vec::new();
//! let targets = [(a, InterestLevel::High), (b, InterestLevel::Low)];
//! sched.schedule(now, &key, targets, &mut out);
//! assert_eq!(out.len(), 2);
//! assert_eq!(out[0].link, a); // strongest interest first
//! assert!(out.iter().all(|d| d.verdict == Verdict::Send));
//! // The next few deltas overwhelm the slow link: its Low viewer steps down, the fast one not.
//! for seq in 1..6 {
//!     let delta = StateUpdate::new(StateId(1), NodeId::from_u64(0), seq, now)
//!         .with_kind(UpdateKind::Video)
//!         .with_group(GroupId(1))
//!         .with_payload(Bytes::from(vec![0u8; 1200]));
//!     sched.schedule(now, &delta, targets, &mut out);
//! }
//! assert_eq!(out[0].verdict, Verdict::Send);
//! assert!(matches!(out[1].verdict, Verdict::Drop(_)));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use elara_core::{InterestLevel, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind};
use foldhash::fast::FixedState;

use crate::stats::{DropReason, PropagationStats};

/// A handle on one link (one neighbour connection) of a [`PropagationScheduler`]. Stale handles
/// (of a removed link) are recognised and refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    index: u32,
    generation: u32,
}

impl LinkId {
    /// The slot index (dense, reused after removal), for drivers that keep per-link arrays.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkId({}.{})", self.index, self.generation)
    }
}

/// Congestion feedback for one link, from the transport.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// What the link can carry, in bytes per second (the congestion controller's estimate). Zero
    /// means the link is stalled: every update on it is dropped as rate-limited until feedback
    /// says otherwise.
    pub send_rate_estimate: u64,
    /// Recent loss fraction, 0..=1 (recorded for metrics; the rate estimate already reflects it).
    pub loss: f32,
    /// Bytes queued in the transport and not yet on the wire; they count as debt against the
    /// link's bucket.
    pub queued_bytes: u64,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            rtt: Duration::from_millis(50),
            send_rate_estimate: 1_250_000,
            loss: 0.0,
            queued_bytes: 0,
        }
    }
}

/// Per-state settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// How old an update may be (from its timestamp) and still be worth sending. Must be > 0.
    pub latency_budget: Duration,
}

/// Scheduler settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Latency budget of states not configured with [`PropagationScheduler::configure_state`].
    pub default_latency_budget: Duration,
    /// Bucket depth, as time at the link's rate: how much a link may burst after being idle.
    pub burst: Duration,
    /// Minimum bucket depth in bytes, so that a slow link can still carry one large update.
    pub min_burst_bytes: u64,
    /// Rate assumed for a new link until its first feedback, in bytes per second.
    pub initial_link_rate: u64,
    /// The node's total upload rate in bytes per second, shared by all links (`None`: only
    /// per-link limits apply).
    pub uplink_rate: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            default_latency_budget: Duration::from_millis(500),
            burst: Duration::from_millis(100),
            min_burst_bytes: 4_096,
            initial_link_rate: 1_250_000,
            uplink_rate: None,
        }
    }
}

/// The quality a target is receiving, best first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum Quality {
    /// Everything: all layers, all frames.
    #[default]
    Full = 0,
    /// Base layer only: enhancement layers are dropped.
    BaseLayer = 1,
    /// Base layer, and the current group cut short after some deltas.
    ReducedFrames = 2,
    /// Keyframes (and independent updates) only.
    KeyframesOnly = 3,
}

/// Send or drop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Verdict {
    /// Send, after the decision's pacing delay.
    Send,
    /// Do not send, for this reason.
    Drop(DropReason),
}

/// What to do with one update for one target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decision {
    /// The target link.
    pub link: LinkId,
    /// The target's effective interest, as given to [`PropagationScheduler::schedule`].
    pub interest: InterestLevel,
    /// The update's urgency on the link: control first, then audio and keyframes, then deltas.
    pub priority: Priority,
    /// The quality the target is receiving at this point.
    pub quality: Quality,
    /// Send or drop.
    pub verdict: Verdict,
    /// Pacing delay before sending, in microseconds (0 when dropped).
    pub delay_micros: u32,
}

impl Decision {
    /// The pacing delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.delay_micros))
    }

    /// True when the verdict is [`Verdict::Send`].
    pub fn is_send(&self) -> bool {
        self.verdict == Verdict::Send
    }
}

/// Counts for one [`PropagationScheduler::schedule`] call.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ScheduleSummary {
    /// Decisions to send.
    pub send: u32,
    /// Decisions to drop.
    pub dropped: u32,
}

/// A link's current state, from [`PropagationScheduler::link_info`].
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct LinkInfo {
    /// The neighbour.
    pub peer: NodeId,
    /// Bucket rate, bytes per second.
    pub rate: u64,
    /// Bucket level in bytes (negative: debt being paced out).
    pub tokens: i64,
    /// Last reported RTT.
    pub rtt: Duration,
    /// Last reported loss fraction.
    pub loss: f32,
    /// Last reported transport queue.
    pub queued_bytes: u64,
    /// Bytes reported sent on this link.
    pub bytes_sent: u64,
}

/// Why a scheduler call was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The link was removed or never existed.
    #[error("unknown link {0:?}")]
    UnknownLink(LinkId),
    /// A latency budget of zero would drop every update.
    #[error("a latency budget must be greater than zero")]
    ZeroLatencyBudget,
}

/// A token bucket in bytes, refilled at `rate` bytes per microsecond.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Time,
}

impl Bucket {
    fn new(now: Time, bytes_per_sec: u64, cfg: &SchedulerConfig) -> Self {
        let mut b = Bucket {
            rate: 0.0,
            cap: 0.0,
            tokens: 0.0,
            last: now,
        };
        b.set_rate(bytes_per_sec, cfg);
        b.tokens = b.cap;
        b
    }

    fn set_rate(&mut self, bytes_per_sec: u64, cfg: &SchedulerConfig) {
        self.rate = bytes_per_sec as f64 / 1e6;
        let burst = bytes_per_sec as f64 * cfg.burst.as_secs_f64();
        self.cap = burst.max(cfg.min_burst_bytes as f64);
        self.tokens = self.tokens.min(self.cap);
    }

    #[inline]
    fn refill(&mut self, now: Time) {
        if now > self.last {
            let dt = (now.as_micros() - self.last.as_micros()) as f64;
            self.tokens = (self.tokens + dt * self.rate).min(self.cap);
            self.last = now;
        }
    }

    /// Microseconds until `cost` more bytes would have drained (0 if the bucket covers them).
    #[inline]
    fn delay_for(&self, cost: f64) -> f64 {
        let debt = cost - self.tokens;
        if debt <= 0.0 {
            0.0
        } else if self.rate > 0.0 {
            debt / self.rate
        } else {
            f64::INFINITY
        }
    }
}

#[derive(Clone, Debug)]
struct LinkSlot {
    peer: NodeId,
    generation: u32,
    live: bool,
    bucket: Bucket,
    rtt: Duration,
    loss: f32,
    queued: u64,
    bytes_sent: u64,
}

const VALID: u8 = 1;
const HAS_KEY: u8 = 2;
const TRUNCATED: u8 = 4;
const DELTAS_SENT: u8 = 8;
const LAYER_CUT: u8 = 16;

/// Per (link, state): the group whose keyframe the target got, and how that group went.
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    generation: u32,
    group: u64,
    flags: u8,
}

#[derive(Clone, Debug)]
struct StateSlot {
    config: StateConfig,
    newest_group: u64,
    /// Wire bytes of the state's last keyframe: deltas leave room for the next one.
    key_bytes: f64,
    tracks: Vec<Track>,
}

/// (layer limit, delta limit) on pressure, by interest level.
const LIMITS: [(f64, f64); 5] = [(0.0, 0.0), (0.1, 0.3), (0.25, 0.6), (0.5, 0.9), (1.0, 1.0)];

/// The per-node scheduler. See the [module documentation](self) for what it enforces and how
/// to drive it.
#[derive(Debug)]
pub struct PropagationScheduler {
    config: SchedulerConfig,
    links: Vec<LinkSlot>,
    free_links: Vec<u32>,
    peers: HashMap<NodeId, LinkId, FixedState>,
    states: Vec<StateSlot>,
    state_slots: HashMap<StateId, u32, FixedState>,
    uplink: Option<Bucket>,
    stats: PropagationStats,
    scratch: Vec<(LinkId, InterestLevel)>,
}

impl PropagationScheduler {
    /// A scheduler with no links.
    pub fn new(config: SchedulerConfig) -> Self {
        PropagationScheduler {
            config,
            links: Vec::new(),
            free_links: Vec::new(),
            peers: HashMap::with_hasher(FixedState::with_seed(0)),
            states: Vec::new(),
            state_slots: HashMap::with_hasher(FixedState::with_seed(0)),
            uplink: config
                .uplink_rate
                .map(|r| Bucket::new(Time::ZERO, r, &config)),
            stats: PropagationStats::new(),
            scratch: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Adds a link to `peer` at the configured initial rate; returns its handle. Adding a peer
    /// that already has a link returns the existing handle.
    pub fn add_link(&mut self, now: Time, peer: NodeId) -> LinkId {
        if let Some(&id) = self.peers.get(&peer) {
            return id;
        }
        let bucket = Bucket::new(now, self.config.initial_link_rate, &self.config);
        let id = match self.free_links.pop() {
            Some(index) => {
                let slot = &mut self.links[index as usize];
                slot.generation = slot.generation.wrapping_add(1);
                *slot = LinkSlot {
                    peer,
                    generation: slot.generation,
                    live: true,
                    bucket,
                    rtt: Duration::ZERO,
                    loss: 0.0,
                    queued: 0,
                    bytes_sent: 0,
                };
                LinkId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                self.links.push(LinkSlot {
                    peer,
                    generation: 0,
                    live: true,
                    bucket,
                    rtt: Duration::ZERO,
                    loss: 0.0,
                    queued: 0,
                    bytes_sent: 0,
                });
                for s in &mut self.states {
                    s.tracks.push(Track::default());
                }
                LinkId {
                    index: (self.links.len() - 1) as u32,
                    generation: 0,
                }
            }
        };
        self.peers.insert(peer, id);
        id
    }

    /// Removes a link; returns false if it was already gone (a stale or unknown handle).
    pub fn remove_link(&mut self, link: LinkId) -> bool {
        let Some(slot) = self.slot(link) else {
            return false;
        };
        let peer = slot.peer;
        self.links[link.index as usize].live = false;
        self.peers.remove(&peer);
        self.free_links.push(link.index);
        true
    }

    /// The link to `peer`, if any.
    pub fn link_id(&self, peer: NodeId) -> Option<LinkId> {
        self.peers.get(&peer).copied()
    }

    /// Number of live links.
    pub fn link_count(&self) -> usize {
        self.peers.len()
    }

    fn slot(&self, link: LinkId) -> Option<&LinkSlot> {
        self.links
            .get(link.index as usize)
            .filter(|s| s.live && s.generation == link.generation)
    }

    /// The peer of a link.
    pub fn peer(&self, link: LinkId) -> Option<NodeId> {
        self.slot(link).map(|s| s.peer)
    }

    /// A link's current rate, bucket level and last feedback.
    pub fn link_info(&self, link: LinkId) -> Option<LinkInfo> {
        self.slot(link).map(|s| LinkInfo {
            peer: s.peer,
            rate: (s.bucket.rate * 1e6).round() as u64,
            tokens: s.bucket.tokens as i64,
            rtt: s.rtt,
            loss: s.loss,
            queued_bytes: s.queued,
            bytes_sent: s.bytes_sent,
        })
    }

    /// Applies congestion feedback: the bucket's rate becomes `stats.send_rate_estimate`, and
    /// bytes queued in the transport count as debt.
    pub fn link_feedback(
        &mut self,
        now: Time,
        link: LinkId,
        stats: LinkStats,
    ) -> Result<(), SchedulerError> {
        if self.slot(link).is_none() {
            return Err(SchedulerError::UnknownLink(link));
        }
        let cfg = self.config;
        let slot = &mut self.links[link.index as usize];
        slot.bucket.refill(now);
        slot.bucket.set_rate(stats.send_rate_estimate, &cfg);
        let queue_cap = slot.bucket.cap - stats.queued_bytes as f64;
        slot.bucket.tokens = slot.bucket.tokens.min(queue_cap);
        slot.rtt = stats.rtt;
        slot.loss = stats.loss.clamp(0.0, 1.0);
        slot.queued = stats.queued_bytes;
        Ok(())
    }

    /// Sets (`Some`) or lifts (`None`) the node-wide upload limit, bytes per second.
    pub fn set_uplink_rate(&mut self, now: Time, rate: Option<u64>) {
        let cfg = self.config;
        match (rate, &mut self.uplink) {
            (Some(r), Some(b)) => {
                b.refill(now);
                b.set_rate(r, &cfg);
            }
            (Some(r), None) => self.uplink = Some(Bucket::new(now, r, &cfg)),
            (None, _) => self.uplink = None,
        }
        self.config.uplink_rate = rate;
    }

    /// Sets a state's latency budget. A zero budget is refused.
    pub fn configure_state(
        &mut self,
        state: StateId,
        config: StateConfig,
    ) -> Result<(), SchedulerError> {
        if config.latency_budget.is_zero() {
            return Err(SchedulerError::ZeroLatencyBudget);
        }
        let s = self.state_slot(state);
        self.states[s].config = config;
        Ok(())
    }

    fn state_slot(&mut self, state: StateId) -> usize {
        if let Some(&s) = self.state_slots.get(&state) {
            return s as usize;
        }
        self.states.push(StateSlot {
            config: StateConfig {
                latency_budget: self.config.default_latency_budget,
            },
            newest_group: 0,
            key_bytes: 0.0,
            tracks: vec![Track::default(); self.links.len()],
        });
        let s = self.states.len() - 1;
        self.state_slots.insert(state, s as u32);
        s
    }

    /// Statistics since creation.
    pub fn stats(&self) -> &PropagationStats {
        &self.stats
    }

    /// Decides, for every target, whether and how to send `update`; writes one [`Decision`]
    /// per target into `out` (cleared first), strongest interest first. `targets` are the
    /// (link, effective interest) of the neighbours whose subtree wants the state; targets with
    /// [`InterestLevel::None`] are skipped without a decision. Allocates nothing once `out` and
    /// the internal buffer have grown to the number of targets and the state has been seen.
    pub fn schedule(
        &mut self,
        now: Time,
        update: &StateUpdate,
        targets: impl IntoIterator<Item = (LinkId, InterestLevel)>,
        out: &mut Vec<Decision>,
    ) -> ScheduleSummary {
        out.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut per_level = [0u32; 5];
        for (link, level) in targets {
            if level.is_interested() {
                per_level[level as usize] += 1;
                scratch.push((link, level));
            }
        }
        out.reserve(scratch.len());
        let s = self.state_slot(update.state);
        let priority = priority_of(update);
        let cost = update.wire_len() as f64;
        let budget = self.states[s].config.latency_budget;
        let age = now - update.timestamp;
        let group = update.group.0;

        // Whole-update verdicts: stale or superseded for everyone.
        let whole = if age > budget {
            Some(DropReason::Stale)
        } else if group < self.states[s].newest_group {
            Some(DropReason::Superseded)
        } else {
            None
        };
        let mut summary = ScheduleSummary::default();
        if let Some(reason) = whole {
            for level in (1..5).rev() {
                if per_level[level] == 0 {
                    continue;
                }
                for &(link, interest) in scratch.iter().filter(|t| t.1 as usize == level) {
                    out.push(Decision {
                        link,
                        interest,
                        priority,
                        quality: Quality::Full,
                        verdict: Verdict::Drop(reason),
                        delay_micros: 0,
                    });
                }
            }
            summary.dropped = out.len() as u32;
            self.stats.record_drops(reason, out.len() as u64);
            self.scratch = scratch;
            return summary;
        }
        if update.keyframe && update.fragment.index == 0 {
            self.states[s].newest_group = group;
            self.states[s].key_bytes = cost * f64::from(update.fragment.count);
        }
        let remaining_us = (budget - age).as_micros() as f64;
        let delta = update.kind == UpdateKind::Video && !update.keyframe;
        let key_reserve = if delta { self.states[s].key_bytes } else { 0.0 };
        let enhancement = update.layer > 0;
        let mut drops = [0u64; DropReason::COUNT];
        if let Some(up) = &mut self.uplink {
            up.refill(now);
        }
        for level in (1..5).rev() {
            if per_level[level] == 0 {
                continue;
            }
            let (layer_limit, delta_limit) = LIMITS[level];
            for &(link, interest) in scratch.iter().filter(|t| t.1 as usize == level) {
                let d = self.decide(
                    now,
                    s,
                    update,
                    link,
                    cost,
                    remaining_us,
                    layer_limit,
                    delta_limit,
                    delta,
                    key_reserve,
                    enhancement,
                );
                match d.0 {
                    Verdict::Send => summary.send += 1,
                    Verdict::Drop(r) => {
                        summary.dropped += 1;
                        drops[r as usize] += 1;
                    }
                }
                out.push(Decision {
                    link,
                    interest,
                    priority,
                    quality: d.1,
                    verdict: d.0,
                    delay_micros: d.2,
                });
            }
        }
        for r in DropReason::ALL {
            if drops[r as usize] > 0 {
                self.stats.record_drops(r, drops[r as usize]);
            }
        }
        self.stats.scheduled += u64::from(summary.send);
        self.stats.scheduled_bytes += u64::from(summary.send) * cost as u64;
        self.scratch = scratch;
        summary
    }

    /// One target's decision: (verdict, quality, delay µs).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn decide(
        &mut self,
        now: Time,
        s: usize,
        update: &StateUpdate,
        link: LinkId,
        cost: f64,
        remaining_us: f64,
        layer_limit: f64,
        delta_limit: f64,
        delta: bool,
        key_reserve: f64,
        enhancement: bool,
    ) -> (Verdict, Quality, u32) {
        let Some(slot) = self
            .links
            .get_mut(link.index as usize)
            .filter(|l| l.live && l.generation == link.generation)
        else {
            return (
                Verdict::Drop(DropReason::UnknownLink),
                Quality::KeyframesOnly,
                0,
            );
        };
        let track = &mut self.states[s].tracks[link.index as usize];
        if track.generation != link.generation || track.flags & VALID == 0 {
            *track = Track {
                generation: link.generation,
                group: 0,
                flags: 0,
            };
        }
        let group = update.group.0;
        slot.bucket.refill(now);
        let mut delay = slot.bucket.delay_for(cost);
        if let Some(up) = &self.uplink {
            delay = delay.max(up.delay_for(cost));
        }
        let pressure = if remaining_us > 0.0 {
            delay / remaining_us
        } else {
            f64::INFINITY
        };
        // A delta is also dropped when, with it, the next keyframe (as large as the last one)
        // could no longer arrive within the budget: deltas never starve keyframes.
        let reserve_pressure = if key_reserve > 0.0 && remaining_us > 0.0 {
            slot.bucket.delay_for(cost + key_reserve) / remaining_us
        } else {
            pressure
        };
        let rung = if pressure <= layer_limit {
            Quality::Full
        } else if pressure <= delta_limit {
            Quality::BaseLayer
        } else if track.flags & DELTAS_SENT != 0 && track.group == group {
            Quality::ReducedFrames
        } else {
            Quality::KeyframesOnly
        };
        let in_group = track.flags & VALID != 0 && track.group == group;
        // Group bookkeeping first: what this target can still decode.
        let verdict = if track.flags & VALID != 0 && group < track.group {
            Verdict::Drop(DropReason::Superseded)
        } else if (update.keyframe && update.fragment.index > 0 || delta)
            && !(in_group && has(track, HAS_KEY))
        {
            Verdict::Drop(DropReason::MissingKeyframe)
        } else if delta && has(track, TRUNCATED) {
            Verdict::Drop(DropReason::FramesSkipped)
        } else if enhancement && in_group && has(track, LAYER_CUT) {
            Verdict::Drop(DropReason::LayerSkipped)
        } else if pressure > 1.0 {
            Verdict::Drop(DropReason::RateLimited)
        } else if enhancement && pressure > layer_limit {
            Verdict::Drop(DropReason::LayerSkipped)
        } else if delta && (pressure > delta_limit || reserve_pressure > 1.0) {
            Verdict::Drop(DropReason::FramesSkipped)
        } else {
            Verdict::Send
        };
        // Update the track.
        let starts_group = update.keyframe && update.fragment.index == 0 && update.layer == 0;
        match verdict {
            Verdict::Send => {
                slot.bucket.tokens -= cost;
                if let Some(up) = &mut self.uplink {
                    up.tokens -= cost;
                }
                if starts_group {
                    track.group = group;
                    track.flags = VALID | HAS_KEY;
                } else if delta && !enhancement {
                    track.flags |= DELTAS_SENT;
                }
            }
            Verdict::Drop(reason) => {
                if starts_group && reason != DropReason::Superseded {
                    track.group = group;
                    track.flags = VALID;
                } else if update.keyframe && !enhancement && in_group {
                    track.flags &= !HAS_KEY;
                } else if delta && !enhancement && in_group {
                    track.flags |= TRUNCATED;
                } else if enhancement && in_group {
                    track.flags |= LAYER_CUT;
                }
            }
        }
        let delay_micros = if verdict == Verdict::Send {
            delay.min(f64::from(u32::MAX)) as u32
        } else {
            0
        };
        (verdict, rung, delay_micros)
    }

    /// Decides whether a *repair* of `update` (a retransmission the target asked for, or an
    /// update the sender itself only just recovered) fits on `link`. Unlike
    /// [`PropagationScheduler::schedule`] it does not apply group bookkeeping: the target
    /// already holds the update's group (it is repairing a hole in it), so an older group is
    /// not "superseded" for it. The latency budget and the link's rate still apply: a repair
    /// that is stale or cannot arrive within the budget is dropped.
    pub fn schedule_repair(
        &mut self,
        now: Time,
        update: &StateUpdate,
        link: LinkId,
        interest: InterestLevel,
    ) -> Decision {
        let s = self.state_slot(update.state);
        let cost = update.wire_len() as f64;
        let budget = self.states[s].config.latency_budget;
        let age = now - update.timestamp;
        let mut decision = Decision {
            link,
            interest,
            priority: priority_of(update),
            quality: Quality::Full,
            verdict: Verdict::Drop(DropReason::Stale),
            delay_micros: 0,
        };
        if age > budget {
            self.stats.record_drops(DropReason::Stale, 1);
            return decision;
        }
        let Some(slot) = self
            .links
            .get_mut(link.index as usize)
            .filter(|l| l.live && l.generation == link.generation)
        else {
            decision.verdict = Verdict::Drop(DropReason::UnknownLink);
            self.stats.record_drops(DropReason::UnknownLink, 1);
            return decision;
        };
        slot.bucket.refill(now);
        let mut delay = slot.bucket.delay_for(cost);
        if let Some(up) = &mut self.uplink {
            up.refill(now);
            delay = delay.max(up.delay_for(cost));
        }
        if delay > (budget - age).as_micros() as f64 {
            decision.verdict = Verdict::Drop(DropReason::RateLimited);
            self.stats.record_drops(DropReason::RateLimited, 1);
            return decision;
        }
        slot.bucket.tokens -= cost;
        if let Some(up) = &mut self.uplink {
            up.tokens -= cost;
        }
        self.stats.scheduled += 1;
        self.stats.scheduled_bytes += cost as u64;
        decision.verdict = Verdict::Send;
        decision.delay_micros = delay.min(f64::from(u32::MAX)) as u32;
        decision
    }

    /// The driver sent `update` on `link` at `now`: counts it and its latency.
    pub fn on_sent(
        &mut self,
        now: Time,
        link: LinkId,
        update: &StateUpdate,
    ) -> Result<(), SchedulerError> {
        if self.slot(link).is_none() {
            return Err(SchedulerError::UnknownLink(link));
        }
        let bytes = update.wire_len() as u64;
        self.links[link.index as usize].bytes_sent += bytes;
        self.stats.record_sent(bytes, now - update.timestamp);
        Ok(())
    }

    /// The driver could not send `update` on `link`: the bucket gets its bytes back, and the
    /// target's group is marked as broken where it matters (a failed keyframe blocks the group's
    /// deltas, a failed delta cuts the rest of its group).
    pub fn on_send_failed(
        &mut self,
        _now: Time,
        link: LinkId,
        update: &StateUpdate,
    ) -> Result<(), SchedulerError> {
        if self.slot(link).is_none() {
            return Err(SchedulerError::UnknownLink(link));
        }
        let cost = update.wire_len() as f64;
        let slot = &mut self.links[link.index as usize];
        slot.bucket.tokens = (slot.bucket.tokens + cost).min(slot.bucket.cap);
        if let Some(up) = &mut self.uplink {
            up.tokens = (up.tokens + cost).min(up.cap);
        }
        if let Some(&s) = self.state_slots.get(&update.state) {
            let track = &mut self.states[s as usize].tracks[link.index as usize];
            if track.generation == link.generation && track.group == update.group.0 {
                if update.layer > 0 {
                    track.flags |= LAYER_CUT;
                } else if update.keyframe {
                    track.flags &= !HAS_KEY;
                } else if update.kind == UpdateKind::Video {
                    track.flags |= TRUNCATED;
                }
            }
        }
        self.stats.record_drops(DropReason::SendFailed, 1);
        Ok(())
    }
}

fn has(track: &Track, flag: u8) -> bool {
    track.flags & flag != 0
}

/// Link priority of an update: control first, audio and keyframes next, then deltas; never
/// below what the producer asked for.
fn priority_of(update: &StateUpdate) -> Priority {
    let by_kind = match update.kind {
        UpdateKind::Control => Priority::Urgent,
        UpdateKind::Audio => Priority::High,
        UpdateKind::Video if update.keyframe => Priority::High,
        UpdateKind::Video => Priority::Normal,
        UpdateKind::Data => Priority::Normal,
    };
    by_kind.max(update.priority)
}

#[cfg(test)]
mod tests;
