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
//!   of the group got through ([`Quality::KeyframesOnly`]). A delta is also dropped when, after
//!   it, a keyframe as large as the state's last one could no longer arrive within the budget:
//!   deltas never starve the next keyframe. A target whose group was cut short keeps that
//!   quality ([`Quality::ReducedFrames`], or [`Quality::KeyframesOnly`]) until the next group
//!   starts, whatever the pressure meanwhile. The pressure thresholds are lower
//!   for lower interest, so Low viewers step down first and Critical ones last; keyframes, audio,
//!   control and data go as long as they can arrive within the budget at all.
//! * **Never a broken stream.** Per (link, state) the scheduler tracks the group whose keyframe
//!   the target got; a delta of any other group, or of a group cut short, is dropped with
//!   [`DropReason::MissingKeyframe`] / [`DropReason::FramesSkipped`].
//! * **Bounded latency.** An update older than its state's latency budget is dropped
//!   ([`DropReason::Stale`]); one from a group older than the newest group already scheduled is
//!   dropped ([`DropReason::Superseded`]). Nothing is queued inside the scheduler.
//! * **No allocation in steady state.** Decisions go into a caller-provided buffer; the internal
//!   buffers are reused. `tests/scheduler_alloc.rs` counts allocations at 10,000 receivers:
//!   zero per call once links and states are known.
//!
//! # Cost per target
//!
//! A registered target is kept as the 16-byte [`Decision`] a call starts from (its link, its
//! level, the update's priority, send at full quality now); a call copies them into its output
//! 512 (8 kB) at a time and decides each batch in place while it is in the L1 cache, writing
//! only what differs (a send's delay and quality, a drop's verdict). A decision reads the link's
//! pacer (three `f64` side by side in one 24-byte slot) and the target's track (the group's
//! epoch and flags in one word). For the registered targets of the first state the scheduler
//! saw (the designated state: a node's one stream, or its main one), pacers and tracks are
//! stored per interest level in the order of the level's target list, so a call walks the
//! list, the pacers and the tracks side by side with no lookup by link; every other access
//! (feedback, repairs, send outcomes, [`PropagationScheduler::schedule`], other states) finds
//! them through a per-link (level, position) map. The pressure limits become deadlines once
//! per call, so a decision compares times and never divides. The common cases — a base-layer
//! delta to a target whose group is healthy or already cut short, a keyframe starting a group —
//! run in a loop without calls, four targets per turn; anything else takes the general
//! per-target code, and tests check on random workloads that both decide alike and that the
//! pooled storage decides like the per-link one. About 24 instructions per decision at 10,000
//! receivers, against 304 for the original 0.2.0's `schedule` (`benches/RESULTS.md`); about 20
//! of them for a delta sent on a healthy group (3 for the track check, 8 for the pacer, 9 for
//! the uplink floor, the limit, the quality and the delay), the rest the loop, copying the
//! starting decisions and the targets that take other paths. The price is on
//! [`PropagationScheduler::schedule`] for a link registered in the designated state (one more
//! lookup per target: about 227 instead of 206 instructions per decision in the star benchmark's
//! resolving variant, most of which is the caller's own target listing and hash lookups).
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
//! from a [`NodeId`]). Keep one `Vec<Decision>` and pass it to every `schedule` call. A node with
//! many children registers their aggregated interest with
//! [`PropagationScheduler::set_target`] as it changes and calls
//! [`PropagationScheduler::schedule_registered`] per update (the fast path); a retransmission
//! a child asked for goes through [`PropagationScheduler::schedule_repair`]. Decisions
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

use crate::hash::IdHashBuilder;
use crate::stats::{DropReason, PropagationStats};

/// A handle on one link (one neighbour connection) of a [`PropagationScheduler`]. Stale handles
/// (of a removed link) are recognised and refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(
    /// The slot index in the low half, the slot's generation in the high half: one word to
    /// copy into a decision.
    u64,
);

impl LinkId {
    pub(crate) const fn new(index: u32, generation: u32) -> Self {
        LinkId(((generation as u64) << 32) | index as u64)
    }

    /// The slot index (dense, reused after removal), for drivers that keep per-link arrays.
    pub fn index(self) -> usize {
        self.0 as u32 as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Ordered by index, then generation.
impl Ord for LinkId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.index(), self.generation()).cmp(&(other.index(), other.generation()))
    }
}

impl PartialOrd for LinkId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkId({}.{})", self.index(), self.generation())
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

/// What to do with one update for one target. 16 bytes: the decision loop writes one per
/// target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct Decision {
    /// The target link.
    pub link: LinkId,
    /// Pacing delay before sending, in microseconds (0 when dropped).
    pub delay_micros: u32,
    /// The target's effective interest, as given to [`PropagationScheduler::schedule`].
    pub interest: InterestLevel,
    /// The update's urgency on the link: control first, then audio and keyframes, then deltas.
    pub priority: Priority,
    /// Send or drop.
    pub verdict: Verdict,
    /// The quality the target is receiving at this point.
    pub quality: Quality,
}

impl Decision {
    /// A decision before the scheduler has looked at the target: send at full quality, now.
    const fn start(link: LinkId, interest: InterestLevel, priority: Priority) -> Self {
        Decision {
            link,
            delay_micros: 0,
            interest,
            priority,
            verdict: Verdict::Send,
            quality: Quality::Full,
        }
    }

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

/// A token bucket kept as a virtual clock (GCRA). `zero_at` is the time at which the bucket is
/// back to zero tokens (out of debt: before it, sends are paced); `tau` is the bucket depth in
/// microseconds at the link's rate (the classic GCRA's "theoretical arrival time" is
/// `zero_at + tau`). Sending `c` bytes at `now` takes the bucket to zero at
/// `max(zero_at, now − tau) + c·inv_rate`, and needs that minus `now` microseconds of pacing
/// (if positive). No refill step: a send reads and writes one time.
#[derive(Clone, Copy, Debug)]
struct Pacer {
    zero_at: f64,
    tau: f64,
    /// Microseconds per byte ([`STALLED`] for a stalled link).
    inv_rate: f64,
}

/// Microseconds per byte standing for a stalled (zero-rate) link: any send takes years.
const STALLED: f64 = 1e12;

impl Pacer {
    fn new(now: Time, bytes_per_sec: u64, cfg: &SchedulerConfig) -> Self {
        let (inv_rate, tau) = Self::params(bytes_per_sec, cfg);
        Pacer {
            zero_at: now.as_micros() as f64 - tau,
            tau,
            inv_rate,
        }
    }

    fn params(bytes_per_sec: u64, cfg: &SchedulerConfig) -> (f64, f64) {
        let cap = (bytes_per_sec as f64 * cfg.burst.as_secs_f64()).max(cfg.min_burst_bytes as f64);
        if bytes_per_sec == 0 {
            return (STALLED, cap * STALLED);
        }
        let inv = 1e6 / bytes_per_sec as f64;
        (inv, cap * inv)
    }

    fn rate(&self) -> f64 {
        if self.inv_rate >= STALLED {
            0.0
        } else {
            1e6 / self.inv_rate
        }
    }

    /// Bytes in the bucket at `now` (negative: debt still being paced out).
    fn tokens(&self, now: f64) -> f64 {
        (now - self.zero_at).min(self.tau) / self.inv_rate
    }

    fn set_tokens(&mut self, now: f64, tokens: f64) {
        self.zero_at = now - tokens * self.inv_rate;
    }

    /// Changes the rate, carrying the bucket level over.
    fn set_rate(&mut self, now: f64, bytes_per_sec: u64, cfg: &SchedulerConfig) {
        let tokens = self.tokens(now);
        let (inv_rate, tau) = Self::params(bytes_per_sec, cfg);
        self.inv_rate = inv_rate;
        self.tau = tau;
        let cap = tau / inv_rate;
        self.set_tokens(now, tokens.min(cap));
    }

    /// When the bucket is back to zero after sending `cost` bytes at `now`: the absolute time
    /// the send may leave, and the new `zero_at`.
    #[inline(always)]
    fn after_send(&self, now: f64, cost: f64) -> f64 {
        fmax(now - self.tau, self.zero_at) + cost * self.inv_rate
    }

    fn refund(&mut self, cost: f64) {
        self.zero_at -= cost * self.inv_rate;
    }
}

/// Set in `PropagationScheduler::gens` for a live link; the low bits are the generation.
const LIVE: u32 = 1 << 31;
const GEN_MASK: u32 = LIVE - 1;

/// The per-link data only feedback and reports touch.
#[derive(Clone, Copy, Debug)]
struct LinkCold {
    peer: NodeId,
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
/// The link is slow for this state: a keyframe as large as the state's last one takes more
/// than [`KEY_SHARE`] of the latency budget on it, so its deltas need the exact keyframe
/// reserve check (see [`StateSlot::inv_slow`]).
const SLOW: u8 = 32;
/// A flag never set, for masks that must never match.
const NEVER: u8 = 128;

/// Pushes `x`, growing `v` by a quarter when full instead of doubling it: links and states
/// are added rarely, and every relay of a large swarm has a scheduler (a relay with one state
/// and five links held room for four states and eight links).
fn push_compact<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 1);
    }
    v.push(x);
}

/// `max` without NaN handling (the operands are never NaN): one instruction.
#[inline(always)]
fn fmax(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// Per (link, state), one word: the state's group epoch (see [`StateSlot::epoch`]) of the
/// group whose keyframe the target got, shifted left by 8, and that group's flags in the low
/// byte ([`VALID`], [`HAS_KEY`], ...). Zero: nothing yet. One compare tells whether a delta
/// goes on a healthy group.
type Track = u64;

const fn track(epoch: u64, flags: u8) -> Track {
    (epoch << 8) | flags as u64
}

/// [`SLOW`] for a link of `inv` µs per byte, as a track bit.
#[inline(always)]
fn slow_flag(inv: f64, inv_slow: f64) -> Track {
    if inv > inv_slow { SLOW as Track } else { 0 }
}

#[derive(Clone, Debug)]
struct StateSlot {
    config: StateConfig,
    newest_group: u64,
    /// Number of group starts seen with a newer group id than the one before: the newest
    /// group's epoch (0: no group started yet). Tracks store epochs instead of group ids, so
    /// the group and its flags fit one word; epochs follow group ids in order.
    epoch: u64,
    /// Wire bytes of the state's last keyframe: deltas leave room for the next one.
    key_bytes: f64,
    /// Links slower than this (µs per byte) are [`SLOW`] for the state: `KEY_SHARE × budget /
    /// key_bytes`.
    inv_slow: f64,
    /// Per link slot (for the designated state's registered targets: stale, see [`Pool`]).
    tracks: Vec<Track>,
    /// Per link slot: registered interest (0: not a registered target).
    levels: Vec<u8>,
    /// Per link slot: position in the registered target list of its level.
    positions: Vec<u32>,
    /// Registered targets by interest level (index = level; 0 unused), each as the decision a
    /// call starts from: the link, the level, `targets_priority`, [`Verdict::Send`] at full
    /// quality with no delay. A call copies a level's list into its output in one go and
    /// decides in place, writing only what differs.
    targets: [Vec<Decision>; 5],
    /// The priority the registered decisions carry (rewritten when an update's differs).
    targets_priority: Priority,
}

impl StateSlot {
    /// The epoch standing for `group` in tracks: the newest group's, or one no track holds.
    fn epoch_of(&self, group: u64) -> u64 {
        if self.epoch > 0 && group == self.newest_group {
            self.epoch
        } else {
            self.epoch + 1
        }
    }
}

/// The pacers and tracks of the registered targets of one interest level of the designated
/// state (state slot 0, the first state the scheduler saw), in the order of its target list
/// ([`StateSlot::targets`]): their canonical storage, so that a call deciding that list walks
/// dense arrays instead of indexing by link. Every other access finds them through the
/// designated state's `levels` and `positions`.
#[derive(Clone, Debug, Default)]
struct Pool {
    pacers: Vec<Pacer>,
    tracks: Vec<Track>,
}

/// Whether track `t` is valid and of the group with epoch `epoch`.
fn in_group(t: Track, epoch: u64) -> bool {
    t as u8 & VALID != 0 && t >> 8 == epoch
}

/// Share of a state's latency budget a keyframe may take on a link before the link counts as
/// [`SLOW`] for it.
const KEY_SHARE: f64 = 0.09;

/// (layer limit, delta limit) on pressure, by interest level.
const LIMITS: [(f64, f64); 5] = [(0.0, 0.0), (0.1, 0.3), (0.25, 0.6), (0.5, 0.9), (1.0, 1.0)];

/// Adding this to a delay in `[0, 2^32)` microseconds leaves it, rounded, in the low 32 bits of
/// the sum's representation: a conversion without saturation checks.
const ROUND_MAGIC: f64 = 4_503_599_627_370_496.0; // 2^52

/// The largest delay (µs) a decision can carry; longer ones saturate.
const MAX_DELAY: f64 = u32::MAX as f64;

/// A delay of `delay` µs (≥ 0) as a decision's `delay_micros`: rounded, saturating.
#[inline(always)]
fn delay_micros(delay: f64) -> u32 {
    if delay < MAX_DELAY {
        (delay + ROUND_MAGIC).to_bits() as u32
    } else {
        u32::MAX
    }
}

/// What one update needs for every target's decision, computed once per call. Times are
/// absolute microseconds; the pressure limits of the module documentation become deadlines
/// (`now + limit × what is left of the budget`), so a decision compares times, never divides.
#[derive(Clone, Copy)]
struct UpdateCtx {
    now: f64,
    cost: f64,
    /// `now` plus what is left of the latency budget.
    deadline: f64,
    /// The update's group as a track epoch.
    epoch: u64,
    delta: bool,
    enhancement: bool,
    /// Needs the group's keyframe at the target (a delta or a later keyframe fragment).
    needs_key: bool,
    /// For `needs_key` updates: the target can decode it when `flags & key_mask == VALID |
    /// HAS_KEY` (and the group matches).
    key_mask: u8,
    /// For other updates: blocked when the group matches and `flags & cut_mask == cut_mask`.
    cut_mask: u8,
    /// Starts a group (keyframe, first fragment, base layer).
    starts_group: bool,
    /// For deltas: bytes of the state's last keyframe. A delta is dropped when, with it, a
    /// keyframe that size could no longer arrive within the budget: deltas never starve the
    /// next keyframe.
    key_reserve: f64,
    keyframe_base: bool,
    /// See [`StateSlot::inv_slow`].
    inv_slow: f64,
}

/// What one interest level needs, computed once per call.
#[derive(Clone, Copy)]
struct LevelCtx {
    /// Delays ending after this lose enhancement layers.
    lim_layer: f64,
    /// Delays ending after this lose deltas.
    lim_delta: f64,
    /// Delays ending after this drop this update for targets of this level.
    lim_drop: f64,
    /// Reason when dropped within the deadline.
    quality_reason: DropReason,
    /// Deltas only: a link at most this slow (µs per byte) cannot starve the next keyframe
    /// when its delay is within `lim_drop` (the check the fast path skips).
    inv_safe: f64,
}

/// The shared uplink's pacer during one call: `fl` is the end of what it carries so far plus
/// one more update, minus its depth — the earliest time (when later than `now`) the next send
/// can go. No uplink: `fl` is −∞ and `step` 0.
#[derive(Clone, Copy)]
struct UplinkRun {
    fl: f64,
    step: f64,
}

/// The per-node scheduler. See the [module documentation](self) for what it enforces and how
/// to drive it.
#[derive(Debug)]
pub struct PropagationScheduler {
    config: SchedulerConfig,
    /// Pacer per link slot, except for the designated state's registered targets, whose
    /// pacers are in `pools` (their entry here is stale until they leave the pool).
    pacers: Vec<Pacer>,
    /// See [`Pool`]; index = level (0 unused).
    pools: [Pool; 5],
    /// Generation per link slot, with [`LIVE`] set while the link exists.
    gens: Vec<u32>,
    cold: Vec<LinkCold>,
    free_links: Vec<u32>,
    peers: HashMap<NodeId, LinkId, IdHashBuilder>,
    states: Vec<StateSlot>,
    state_slots: HashMap<StateId, u32, IdHashBuilder>,
    uplink: Option<Pacer>,
    stats: PropagationStats,
    /// Targets of a [`PropagationScheduler::schedule`] call, as given.
    staged: Vec<(LinkId, InterestLevel)>,
    /// The same, sorted by level (strongest first), as decisions to start from (see
    /// [`StateSlot::targets`]).
    scratch: Vec<Decision>,
    /// Tests: decide every target through [`decide_one`], to check the fast path against it.
    #[cfg(test)]
    general_only: bool,
}

impl PropagationScheduler {
    /// A scheduler with no links.
    pub fn new(config: SchedulerConfig) -> Self {
        PropagationScheduler {
            config,
            pacers: Vec::new(),
            pools: Default::default(),
            gens: Vec::new(),
            cold: Vec::new(),
            free_links: Vec::new(),
            peers: HashMap::with_hasher(IdHashBuilder::new(0)),
            states: Vec::new(),
            state_slots: HashMap::with_hasher(IdHashBuilder::new(0)),
            uplink: config
                .uplink_rate
                .map(|r| Pacer::new(Time::ZERO, r, &config)),
            stats: PropagationStats::new(),
            staged: Vec::new(),
            scratch: Vec::new(),
            #[cfg(test)]
            general_only: false,
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
        let pacer = Pacer::new(now, self.config.initial_link_rate, &self.config);
        let cold = LinkCold {
            peer,
            rtt: Duration::ZERO,
            loss: 0.0,
            queued: 0,
            bytes_sent: 0,
        };
        let id = match self.free_links.pop() {
            Some(index) => {
                let generation = (self.gens[index as usize] + 1) & GEN_MASK;
                self.gens[index as usize] = generation | LIVE;
                self.pacers[index as usize] = pacer;
                self.cold[index as usize] = cold;
                LinkId::new(index, generation)
            }
            None => {
                push_compact(&mut self.pacers, pacer);
                push_compact(&mut self.gens, LIVE);
                push_compact(&mut self.cold, cold);
                for s in &mut self.states {
                    push_compact(&mut s.tracks, 0);
                    push_compact(&mut s.levels, 0);
                    push_compact(&mut s.positions, 0);
                }
                LinkId::new((self.pacers.len() - 1) as u32, 0)
            }
        };
        self.peers.insert(peer, id);
        id
    }

    /// Removes a link (and its registered targets); returns false if it was already gone (a
    /// stale or unknown handle).
    pub fn remove_link(&mut self, link: LinkId) -> bool {
        if !self.is_live(link) {
            return false;
        }
        for s in 0..self.states.len() {
            self.unregister_target(s, link);
            self.states[s].tracks[link.index()] = 0;
        }
        let peer = self.cold[link.index()].peer;
        self.gens[link.index()] &= !LIVE;
        self.peers.remove(&peer);
        self.free_links.push(link.index() as u32);
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

    fn is_live(&self, link: LinkId) -> bool {
        self.gens
            .get(link.index())
            .is_some_and(|&g| g == link.generation() | LIVE)
    }

    /// The peer of a link.
    pub fn peer(&self, link: LinkId) -> Option<NodeId> {
        self.is_live(link).then(|| self.cold[link.index()].peer)
    }

    /// A link's current rate, bucket level (at `now`) and last feedback.
    pub fn link_info(&self, now: Time, link: LinkId) -> Option<LinkInfo> {
        if !self.is_live(link) {
            return None;
        }
        let h = *self.pacer(link.index());
        let c = &self.cold[link.index()];
        Some(LinkInfo {
            peer: c.peer,
            rate: h.rate().round() as u64,
            tokens: h.tokens(now.as_micros() as f64).round() as i64,
            rtt: c.rtt,
            loss: c.loss,
            queued_bytes: c.queued,
            bytes_sent: c.bytes_sent,
        })
    }

    /// Applies congestion feedback: the bucket's rate becomes `stats.send_rate_estimate` (its
    /// level carried over), and bytes queued in the transport count as debt. A zero rate
    /// stalls the link: its updates are dropped as rate-limited until the rate comes back.
    pub fn link_feedback(
        &mut self,
        now: Time,
        link: LinkId,
        stats: LinkStats,
    ) -> Result<(), SchedulerError> {
        if !self.is_live(link) {
            return Err(SchedulerError::UnknownLink(link));
        }
        let cfg = self.config;
        let now_us = now.as_micros() as f64;
        let i = link.index();
        let p = self.pacer_mut(i);
        p.set_rate(now_us, stats.send_rate_estimate, &cfg);
        if stats.queued_bytes > 0 {
            let cap = p.tau / p.inv_rate;
            let tokens = p.tokens(now_us).min(cap - stats.queued_bytes as f64);
            p.set_tokens(now_us, tokens);
        }
        let inv = p.inv_rate;
        for s in 0..self.states.len() {
            let inv_slow = self.states[s].inv_slow;
            let t = self.track_mut(s, i);
            *t = (*t & !u64::from(SLOW)) | slow_flag(inv, inv_slow);
        }
        let c = &mut self.cold[i];
        c.rtt = stats.rtt;
        c.loss = stats.loss.clamp(0.0, 1.0);
        c.queued = stats.queued_bytes;
        Ok(())
    }

    /// Sets (`Some`) or lifts (`None`) the node-wide upload limit, bytes per second.
    pub fn set_uplink_rate(&mut self, now: Time, rate: Option<u64>) {
        let cfg = self.config;
        match (rate, &mut self.uplink) {
            (Some(r), Some(p)) => p.set_rate(now.as_micros() as f64, r, &cfg),
            (Some(r), None) => self.uplink = Some(Pacer::new(now, r, &cfg)),
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
        self.refresh_slow(s);
        Ok(())
    }

    /// Where link slot `i`'s pacer (and the designated state's track) is pooled, if it is: the
    /// level and the position (see [`Pool`]).
    fn pooled(&self, i: usize) -> Option<(usize, usize)> {
        let st = self.states.first()?;
        let level = st.levels[i];
        (level != 0).then(|| (level as usize, st.positions[i] as usize))
    }

    /// Link slot `i`'s pacer, wherever it is stored.
    fn pacer(&self, i: usize) -> &Pacer {
        match self.pooled(i) {
            Some((level, pos)) => &self.pools[level].pacers[pos],
            None => &self.pacers[i],
        }
    }

    /// Link slot `i`'s pacer, wherever it is stored.
    fn pacer_mut(&mut self, i: usize) -> &mut Pacer {
        match self.pooled(i) {
            Some((level, pos)) => &mut self.pools[level].pacers[pos],
            None => &mut self.pacers[i],
        }
    }

    /// State slot `s`'s track for link slot `i`, wherever it is stored.
    fn track_mut(&mut self, s: usize, i: usize) -> &mut Track {
        match self.pooled(i) {
            Some((level, pos)) if s == 0 => &mut self.pools[level].tracks[pos],
            _ => &mut self.states[s].tracks[i],
        }
    }

    /// Link slot `i`'s track in state slot `s` when it is valid and holds `group` (only the
    /// newest group's tracks matter: every update of an older group is superseded as a whole).
    fn track_in_group(&mut self, s: usize, i: usize, group: u64) -> Option<&mut Track> {
        let epoch = self.states[s].epoch_of(group);
        let t = self.track_mut(s, i);
        in_group(*t, epoch).then_some(t)
    }

    /// Recomputes state slot `s`'s `inv_slow` and every one of its tracks' [`SLOW`] flag
    /// (after the budget or the keyframe size changed).
    fn refresh_slow(&mut self, s: usize) {
        let st = &mut self.states[s];
        st.inv_slow = if st.key_bytes > 0.0 {
            KEY_SHARE * st.config.latency_budget.as_micros() as f64 / st.key_bytes
        } else {
            f64::INFINITY
        };
        let inv_slow = st.inv_slow;
        for i in 0..self.pacers.len() {
            let inv = self.pacer(i).inv_rate;
            let t = self.track_mut(s, i);
            *t = (*t & !u64::from(SLOW)) | slow_flag(inv, inv_slow);
        }
    }

    fn state_slot(&mut self, state: StateId) -> usize {
        if let Some(&s) = self.state_slots.get(&state) {
            return s as usize;
        }
        let links = self.pacers.len();
        push_compact(
            &mut self.states,
            StateSlot {
                config: StateConfig {
                    latency_budget: self.config.default_latency_budget,
                },
                newest_group: 0,
                epoch: 0,
                key_bytes: 0.0,
                inv_slow: f64::INFINITY,
                tracks: vec![0; links],
                levels: vec![0; links],
                positions: vec![0; links],
                targets: Default::default(),
                targets_priority: Priority::Normal,
            },
        );
        let s = self.states.len() - 1;
        self.state_slots.insert(state, s as u32);
        s
    }

    /// Registers `link` as a target of `state` with effective interest `level` (the strongest
    /// interest in the peer's subtree), replacing any previous level; [`InterestLevel::None`]
    /// unregisters it. Returns the previous level. Registered targets are what
    /// [`PropagationScheduler::schedule_registered`] schedules for; a driver updates them when
    /// a neighbour's aggregated interest changes, not per update. Removing the link
    /// unregisters it everywhere.
    pub fn set_target(
        &mut self,
        state: StateId,
        link: LinkId,
        level: InterestLevel,
    ) -> Result<InterestLevel, SchedulerError> {
        if !self.is_live(link) {
            return Err(SchedulerError::UnknownLink(link));
        }
        let s = self.state_slot(state);
        let prev = self.unregister_target(s, link);
        if level.is_interested() {
            let i = link.index();
            let st = &mut self.states[s];
            let list = &mut st.targets[level as usize];
            st.levels[i] = level as u8;
            st.positions[i] = list.len() as u32;
            list.push(Decision::start(link, level, st.targets_priority));
            if s == 0 {
                // The pacer and the track move into the level's pool, at the same position.
                let pool = &mut self.pools[level as usize];
                pool.pacers.push(self.pacers[i]);
                pool.tracks.push(st.tracks[i]);
            }
        }
        Ok(prev)
    }

    /// The registered interest of `link` in `state`.
    pub fn target(&self, state: StateId, link: LinkId) -> InterestLevel {
        match self.state_slots.get(&state) {
            Some(&s) if self.is_live(link) => {
                let level = self.states[s as usize].levels[link.index()];
                InterestLevel::from_u8(level).unwrap_or(InterestLevel::None)
            }
            _ => InterestLevel::None,
        }
    }

    fn unregister_target(&mut self, s: usize, link: LinkId) -> InterestLevel {
        let st = &mut self.states[s];
        let level = st.levels[link.index()];
        if level == 0 {
            return InterestLevel::None;
        }
        let list = &mut st.targets[level as usize];
        let pos = st.positions[link.index()];
        list.swap_remove(pos as usize);
        if let Some(moved) = list.get(pos as usize) {
            st.positions[moved.link.index()] = pos;
        }
        st.levels[link.index()] = 0;
        if s == 0 {
            // Back from the level's pool, which follows the list's `swap_remove`.
            let pool = &mut self.pools[level as usize];
            self.pacers[link.index()] = pool.pacers.swap_remove(pos as usize);
            st.tracks[link.index()] = pool.tracks.swap_remove(pos as usize);
        }
        InterestLevel::from_u8(level).unwrap_or(InterestLevel::None)
    }

    /// Statistics since creation.
    pub fn stats(&self) -> &PropagationStats {
        &self.stats
    }

    /// Decides, for every target, whether and how to send `update`; writes one [`Decision`]
    /// per target into `out` (cleared first), strongest interest first. `targets` are the
    /// (link, effective interest) of the neighbours whose subtree wants the state; targets with
    /// [`InterestLevel::None`] are skipped without a decision, unknown or removed links get
    /// [`DropReason::UnknownLink`]. Allocates nothing once `out` and the internal buffers have
    /// grown to the number of targets and the state has been seen.
    pub fn schedule(
        &mut self,
        now: Time,
        update: &StateUpdate,
        targets: impl IntoIterator<Item = (LinkId, InterestLevel)>,
        out: &mut Vec<Decision>,
    ) -> ScheduleSummary {
        // Counting sort by level into a reused buffer: no comparison sort, no allocation.
        let mut sorted = std::mem::take(&mut self.scratch);
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        let mut per_level = [0usize; 5];
        for (link, level) in targets {
            if level.is_interested() {
                per_level[level as usize] += 1;
                staged.push((link, level));
            }
        }
        // start[level] = number of targets with a stronger level.
        let mut start = [0usize; 5];
        let mut acc = 0;
        for level in (1..5).rev() {
            start[level] = acc;
            acc += per_level[level];
        }
        let priority = priority_of(update);
        sorted.clear();
        sorted.resize(
            acc,
            Decision::start(LinkId::new(0, 0), InterestLevel::None, priority),
        );
        let mut next = start;
        for &(link, level) in &staged {
            let l = level as usize;
            sorted[next[l]] = Decision::start(link, level, priority);
            next[l] += 1;
        }
        let s = self.state_slot(update.state);
        let lists: [&[Decision]; 5] = [
            &[],
            &sorted[start[1]..start[1] + per_level[1]],
            &sorted[start[2]..start[2] + per_level[2]],
            &sorted[start[3]..start[3] + per_level[3]],
            &sorted[start[4]..start[4] + per_level[4]],
        ];
        let summary = self.run::<true>(now, update, s, out, lists);
        self.scratch = sorted;
        self.staged = staged;
        summary
    }

    /// Like [`PropagationScheduler::schedule`], for the targets registered for the update's
    /// state with [`PropagationScheduler::set_target`]: the fast path for a node with many
    /// neighbours, which keeps its targets up to date as interest changes instead of listing
    /// them for every update.
    pub fn schedule_registered(
        &mut self,
        now: Time,
        update: &StateUpdate,
        out: &mut Vec<Decision>,
    ) -> ScheduleSummary {
        let s = self.state_slot(update.state);
        // The lists are moved out for the call so the decision loop can borrow the tracks.
        let mut targets = std::mem::take(&mut self.states[s].targets);
        let priority = priority_of(update);
        if self.states[s].targets_priority != priority {
            // Once per change of priority (a keyframe among deltas), not per call.
            self.states[s].targets_priority = priority;
            for d in targets.iter_mut().flatten() {
                d.priority = priority;
            }
        }
        let lists: [&[Decision]; 5] = [
            &targets[0],
            &targets[1],
            &targets[2],
            &targets[3],
            &targets[4],
        ];
        // Registered targets are live by construction: no generation check needed.
        let summary = self.run::<false>(now, update, s, out, lists);
        self.states[s].targets = targets;
        summary
    }

    /// The decision loop shared by both schedule calls; `lists[level]` are the targets of each
    /// interest level, as decisions to start from (see [`StateSlot::targets`]; the update's
    /// priority); `CHECK` validates link handles.
    fn run<const CHECK: bool>(
        &mut self,
        now: Time,
        update: &StateUpdate,
        s: usize,
        out: &mut Vec<Decision>,
        lists: [&[Decision]; 5],
    ) -> ScheduleSummary {
        out.clear();
        out.reserve(lists.iter().map(|l| l.len()).sum());
        let budget = self.states[s].config.latency_budget;
        let age = now - update.timestamp;
        let group = update.group.0;
        let mut summary = ScheduleSummary::default();
        let whole = if age > budget {
            Some(DropReason::Stale)
        } else if group < self.states[s].newest_group {
            Some(DropReason::Superseded)
        } else {
            None
        };
        if let Some(reason) = whole {
            for level in (1..5).rev() {
                out.extend(lists[level].iter().map(|&d| Decision {
                    verdict: Verdict::Drop(reason),
                    ..d
                }));
            }
            summary.dropped = out.len() as u32;
            self.stats.record_drops(reason, out.len() as u64);
            return summary;
        }
        let keyframe_base = update.keyframe && update.layer == 0;
        let starts_group = keyframe_base && update.fragment.index == 0;
        let mut refresh = false;
        let st = &mut self.states[s];
        if starts_group {
            let new_group = st.epoch == 0 || group > st.newest_group;
            if new_group {
                st.epoch += 1;
            }
            st.newest_group = group;
            let key_bytes = update.wire_len() as f64 * f64::from(update.fragment.count);
            if key_bytes != st.key_bytes {
                st.key_bytes = key_bytes;
                if new_group {
                    // Only this call's tracks can be of the new group; it sets their flag.
                    st.inv_slow =
                        KEY_SHARE * budget.as_micros() as f64 / key_bytes.max(f64::MIN_POSITIVE);
                } else {
                    refresh = true;
                }
            }
        }
        if refresh {
            self.refresh_slow(s);
        }
        let st = &self.states[s];
        let now_us = now.as_micros() as f64;
        let remaining = (budget - age).as_micros() as f64;
        let delta = update.kind == UpdateKind::Video && !update.keyframe;
        let enhancement = update.layer > 0;
        let ctx = UpdateCtx {
            now: now_us,
            cost: update.wire_len() as f64,
            deadline: now_us + remaining,
            epoch: st.epoch_of(group),
            delta,
            enhancement,
            needs_key: delta || (update.keyframe && (update.fragment.index > 0 || enhancement)),
            key_mask: VALID
                | HAS_KEY
                | if delta { TRUNCATED } else { 0 }
                | if enhancement { LAYER_CUT } else { 0 },
            cut_mask: if enhancement {
                VALID | LAYER_CUT
            } else {
                NEVER
            },
            starts_group,
            keyframe_base,
            key_reserve: if delta { st.key_bytes } else { 0.0 },
            inv_slow: st.inv_slow,
        };
        let mut up = match &self.uplink {
            Some(p) => UplinkRun {
                fl: p.after_send(now_us, ctx.cost),
                step: ctx.cost * p.inv_rate,
            },
            None => UplinkRun {
                fl: f64::NEG_INFINITY,
                step: 0.0,
            },
        };
        let fl_start = up.fl;
        let mut drops = [0u32; DropReason::COUNT];
        #[cfg(test)]
        let fast_ok = !self.general_only;
        #[cfg(not(test))]
        let fast_ok = true;
        let dense = !CHECK && s == 0;
        // The designated state's pooling (see `Pool`), and state `s`'s per-slot tracks.
        let (first, rest) = self.states.split_at_mut(1);
        let (home, pos, tracks) = if s == 0 {
            (
                &first[0].levels[..],
                &first[0].positions[..],
                &mut first[0].tracks[..],
            )
        } else {
            (
                &first[0].levels[..],
                &first[0].positions[..],
                &mut rest[s - 1].tracks[..],
            )
        };
        let mut view = SlotView {
            pacers: &mut self.pacers[..],
            gens: &self.gens[..],
            tracks,
            pools: &mut self.pools,
            home,
            pos,
            own: s == 0,
        };
        for level in (1..5).rev() {
            let (layer_limit, delta_limit) = LIMITS[level];
            let drop_above = if enhancement {
                layer_limit
            } else if delta {
                delta_limit
            } else if ctx.keyframe_base && !ctx.starts_group {
                // A later fragment of a keyframe whose first fragment went: part of a keyframe
                // decodes nothing, so the rest goes however late (a late keyframe still lets
                // the group's later deltas play; a cut one loses the whole group).
                f64::INFINITY
            } else {
                1.0
            };
            let lim_drop = now_us + drop_above * remaining;
            // Slack for rounding: the fast path's check must imply the exact one.
            let slack = 2.0 + ctx.deadline.abs() * 4.0 * f64::EPSILON;
            let lv = LevelCtx {
                lim_layer: now_us + layer_limit * remaining,
                lim_delta: now_us + delta_limit * remaining,
                lim_drop,
                quality_reason: if enhancement {
                    DropReason::LayerSkipped
                } else if delta {
                    DropReason::FramesSkipped
                } else {
                    DropReason::RateLimited
                },
                inv_safe: if ctx.key_reserve > 0.0 {
                    (ctx.deadline - lim_drop - slack) / ctx.key_reserve
                } else {
                    f64::INFINITY
                },
            };
            let list = lists[level];
            let run = LevelRun {
                ctx: &ctx,
                lv: &lv,
                list,
                fast_ok,
            };
            if dense {
                // The designated state's registered targets: their pools, in list order.
                let pool = &mut view.pools[level];
                let mut store = Dense {
                    pacers: &mut pool.pacers[..],
                    tracks: &mut pool.tracks[..],
                };
                run.decide::<CHECK, _>(&mut store, out, &mut up, &mut drops);
            } else {
                run.decide::<CHECK, _>(&mut view, out, &mut up, &mut drops);
            }
        }
        if let Some(p) = &mut self.uplink
            && up.fl > fl_start
        {
            // `fl` ran one update ahead of what was charged.
            p.zero_at = up.fl - up.step;
        }
        for r in DropReason::ALL {
            let n = drops[r as usize];
            if n > 0 {
                summary.dropped += n;
                self.stats.record_drops(r, u64::from(n));
            }
        }
        summary.send = out.len() as u32 - summary.dropped;
        self.stats.scheduled += u64::from(summary.send);
        self.stats.scheduled_bytes += u64::from(summary.send) * ctx.cost as u64;
        summary
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
        if !self.is_live(link) {
            decision.verdict = Verdict::Drop(DropReason::UnknownLink);
            self.stats.record_drops(DropReason::UnknownLink, 1);
            return decision;
        }
        // A delta of a group this scheduler cut for the target (it skipped an earlier delta
        // of it) would not decode there either: repairing it would undo the cut at burst rate.
        if update.kind == UpdateKind::Video
            && !update.keyframe
            && update.layer == 0
            && self
                .track_in_group(s, link.index(), update.group.0)
                .is_some_and(|t| *t as u8 & TRUNCATED != 0)
        {
            decision.verdict = Verdict::Drop(DropReason::FramesSkipped);
            decision.quality = Quality::ReducedFrames;
            self.stats.record_drops(DropReason::FramesSkipped, 1);
            return decision;
        }
        let now_us = now.as_micros() as f64;
        let i = link.index();
        let end = self.pacer(i).after_send(now_us, cost);
        let mut delay = fmax(end - now_us, 0.0);
        let up_end = self.uplink.as_ref().map(|u| {
            let e = u.after_send(now_us, cost);
            delay = fmax(delay, e - now_us);
            e
        });
        if delay > (budget - age).as_micros() as f64 {
            decision.verdict = Verdict::Drop(DropReason::RateLimited);
            self.stats.record_drops(DropReason::RateLimited, 1);
            return decision;
        }
        self.pacer_mut(i).zero_at = end;
        if let (Some(u), Some(e)) = (self.uplink.as_mut(), up_end) {
            u.zero_at = e;
        }
        self.stats.scheduled += 1;
        self.stats.scheduled_bytes += cost as u64;
        decision.verdict = Verdict::Send;
        decision.delay_micros = delay_micros(delay);
        decision
    }

    /// The driver sent `update` on `link` at `now`: counts it and its latency.
    pub fn on_sent(
        &mut self,
        now: Time,
        link: LinkId,
        update: &StateUpdate,
    ) -> Result<(), SchedulerError> {
        if !self.is_live(link) {
            return Err(SchedulerError::UnknownLink(link));
        }
        let bytes = update.wire_len() as u64;
        self.cold[link.index()].bytes_sent += bytes;
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
        if !self.is_live(link) {
            return Err(SchedulerError::UnknownLink(link));
        }
        let cost = update.wire_len() as f64;
        let i = link.index();
        self.pacer_mut(i).refund(cost);
        if let Some(up) = &mut self.uplink {
            up.refund(cost);
        }
        if let Some(&s) = self.state_slots.get(&update.state)
            && let Some(t) = self.track_in_group(s as usize, i, update.group.0)
        {
            if update.layer > 0 {
                *t |= u64::from(LAYER_CUT);
            } else if update.keyframe {
                *t &= !u64::from(HAS_KEY);
            } else if update.kind == UpdateKind::Video {
                *t |= u64::from(TRUNCATED);
            }
        }
        self.stats.record_drops(DropReason::SendFailed, 1);
        Ok(())
    }
}

/// Update kinds `decide_level` is specialised for: a keyframe starting a group.
const KIND_START: u8 = 0;
/// A base-layer video delta.
const KIND_DELTA: u8 = 1;
/// Anything else that needs the group's keyframe (an enhancement layer of a delta or of a
/// keyframe, a later keyframe fragment).
const KIND_DEPENDENT: u8 = 2;
/// An update that decodes on its own (audio, control, data).
const KIND_INDEPENDENT: u8 = 3;

/// Quality by rung number (see [`decide_one`]).
const RUNGS: [Quality; 4] = [
    Quality::Full,
    Quality::BaseLayer,
    Quality::ReducedFrames,
    Quality::KeyframesOnly,
];

/// What the fast path of one level needs (see [`fast_run`]); times are absolute µs.
#[derive(Clone, Copy)]
struct FastCtx {
    now: f64,
    cost: f64,
    /// Uplink time one send costs.
    step: f64,
    /// The level's drop limit, or −∞ when the fast path is off for this call.
    lim_drop: f64,
    lim_layer: f64,
    lim_delta: f64,
    /// `now` plus what is left of the budget.
    deadline: f64,
    /// Deltas with `KEYCHK`: links slower than this may starve the next keyframe.
    inv_safe: f64,
    /// Group starts: links slower than this get [`SLOW`].
    inv_slow: f64,
    /// `ROUND_MAGIC − now`: adding it to an absolute time leaves the delay from `now`,
    /// rounded, in the low 32 bits.
    magic_now: f64,
    /// Deltas: the track of a target that had this group's keyframe and some of its deltas,
    /// nothing cut. Group starts: tracks below this are of an older group.
    healthy: Track,
    /// Deltas: the track of a target that had this group's keyframe and no delta yet. Group
    /// starts: the track written on send.
    fresh: Track,
    /// Deltas: the track of a target whose group was cut short (with [`DELTAS_SENT`]).
    cut: Track,
}

/// Where a [`fast_run`] stopped, and what it counted.
#[derive(Clone, Copy)]
struct RunState {
    /// Position of the next target to decide.
    k: usize,
    /// The uplink's floor (see [`UplinkRun`]).
    fl: f64,
    /// Drops counted in the run: rate-limited, frames skipped.
    drops: [u32; 2],
}

/// One interest level of a call: what [`decide_level`] needs besides the storage.
struct LevelRun<'a> {
    ctx: &'a UpdateCtx,
    lv: &'a LevelCtx,
    /// The level's targets, as decisions to start from.
    list: &'a [Decision],
    fast_ok: bool,
}

impl LevelRun<'_> {
    /// Decides the level's targets (see [`decide_level`]), monomorphised per kind of update,
    /// so the per-target loop carries no test that is the same for every target.
    #[inline(always)]
    fn decide<const CHECK: bool, S: Store>(
        &self,
        store: &mut S,
        out: &mut Vec<Decision>,
        up: &mut UplinkRun,
        drops: &mut [u32; DropReason::COUNT],
    ) {
        let ctx = self.ctx;
        match (
            ctx.starts_group,
            ctx.needs_key,
            ctx.delta && !ctx.enhancement,
        ) {
            (true, _, _) => decide_level::<CHECK, KIND_START, S>(self, store, out, up, drops),
            (false, true, true) => {
                decide_level::<CHECK, KIND_DELTA, S>(self, store, out, up, drops)
            }
            (false, true, false) => {
                decide_level::<CHECK, KIND_DEPENDENT, S>(self, store, out, up, drops)
            }
            (false, false, _) => {
                decide_level::<CHECK, KIND_INDEPENDENT, S>(self, store, out, up, drops)
            }
        }
    }
}

/// Where the pacers and tracks of one level's targets are: [`Dense`] (a pool of the designated
/// state, by position in the level's list) or [`SlotView`] (by link slot).
trait Store {
    /// The pacer and the track of the target at position `k` of the level's list, on `link`;
    /// `None` for an unknown link (with `CHECK`, a stale handle).
    fn at<const CHECK: bool>(&mut self, k: usize, link: LinkId)
    -> Option<(&mut Pacer, &mut Track)>;

    /// Decides targets `ds[st.k..]` in place while they take the common path, and records
    /// where it stopped: at the first target that needs [`decide_one`], or at the end. `ds[0]`
    /// is at position `base` of the level's list. `SAT`: the uplink's floor `fl` is already
    /// past `now`, so it is the floor itself. `KEYCHK`: deltas check the link's rate against
    /// the keyframe reserve (the [`SLOW`] flag does not suffice at this level). Out of line,
    /// so that its loop has the registers to itself.
    fn fast_run<const CHECK: bool, const KIND: u8, const SAT: bool, const KEYCHK: bool>(
        &mut self,
        ds: &mut [Decision],
        base: usize,
        c: FastCtx,
        st: &mut RunState,
    );
}

/// A pool of the designated state's registered targets of one level (see [`Pool`]): entry
/// `k` is the target at position `k` of the level's list.
struct Dense<'a> {
    pacers: &'a mut [Pacer],
    tracks: &'a mut [Track],
}

impl Store for Dense<'_> {
    #[inline(always)]
    fn at<const CHECK: bool>(&mut self, k: usize, _: LinkId) -> Option<(&mut Pacer, &mut Track)> {
        Some((self.pacers.get_mut(k)?, self.tracks.get_mut(k)?))
    }

    #[inline(never)]
    fn fast_run<const CHECK: bool, const KIND: u8, const SAT: bool, const KEYCHK: bool>(
        &mut self,
        ds: &mut [Decision],
        base: usize,
        c: FastCtx,
        st: &mut RunState,
    ) {
        let from = base + st.k;
        let rest = ds.get_mut(st.k..).unwrap_or_default();
        let pacers = self.pacers.get_mut(from..).unwrap_or_default();
        let tracks = self.tracks.get_mut(from..).unwrap_or_default();
        let n = rest.len().min(pacers.len()).min(tracks.len());
        let (rest, pacers, tracks) = (&mut rest[..n], &mut pacers[..n], &mut tracks[..n]);
        let mut f = st.fl;
        let mut drops = st.drops;
        let mut one = |d: &mut Decision, p: &mut Pacer, t: &mut Track| {
            fast_one::<KIND, SAT, KEYCHK>(d, p, t, &c, &mut f, &mut drops)
        };
        // The targets, their pacers and their tracks side by side (no link slot to look up),
        // `UNROLL` at a time (a fraction of the loop's own instructions).
        let (dc, dr) = rest.as_chunks_mut::<UNROLL>();
        let (pc, pr) = pacers.as_chunks_mut::<UNROLL>();
        let (tc, tr) = tracks.as_chunks_mut::<UNROLL>();
        let mut at = 0;
        let stop = dc
            .iter_mut()
            .zip(pc.iter_mut().zip(tc.iter_mut()))
            .position(|([d0, d1, d2, d3], ([p0, p1, p2, p3], [t0, t1, t2, t3]))| {
                at = if !one(d0, p0, t0) {
                    0
                } else if !one(d1, p1, t1) {
                    1
                } else if !one(d2, p2, t2) {
                    2
                } else if !one(d3, p3, t3) {
                    3
                } else {
                    return false;
                };
                true
            });
        let done = match stop {
            Some(chunk) => UNROLL * chunk + at,
            None => {
                let tail = dr
                    .iter_mut()
                    .zip(pr.iter_mut().zip(tr.iter_mut()))
                    .position(|(d, (p, t))| !one(d, p, t))
                    .unwrap_or(dr.len());
                UNROLL * dc.len() + tail
            }
        };
        st.advance(done, f, drops);
    }
}

/// Targets a dense fast run decides per turn of its loop.
const UNROLL: usize = 4;

/// The pacers (wherever they are, see [`Pool`]) and one state's tracks, by link slot.
struct SlotView<'a> {
    /// Per link slot (stale where `home` says pooled).
    pacers: &'a mut [Pacer],
    /// Per link slot, with [`LIVE`].
    gens: &'a [u32],
    /// The state's tracks per link slot (stale where pooled, when `own`).
    tracks: &'a mut [Track],
    pools: &'a mut [Pool; 5],
    /// The designated state's registered level per link slot (0: not pooled).
    home: &'a [u8],
    /// The designated state's list position per link slot.
    pos: &'a [u32],
    /// The state is the designated one: pooled targets' tracks are in the pools too.
    own: bool,
}

impl Store for SlotView<'_> {
    #[inline(always)]
    fn at<const CHECK: bool>(
        &mut self,
        _: usize,
        link: LinkId,
    ) -> Option<(&mut Pacer, &mut Track)> {
        let i = link.index();
        let level = *self.home.get(i)?;
        if i >= self.tracks.len()
            || i >= self.pacers.len()
            || (CHECK && self.gens.get(i) != Some(&(link.generation() | LIVE)))
        {
            return None;
        }
        if level == 0 {
            return Some((&mut self.pacers[i], &mut self.tracks[i]));
        }
        let p = *self.pos.get(i)? as usize;
        let pool = self.pools.get_mut(usize::from(level))?;
        let track = if self.own {
            pool.tracks.get_mut(p)?
        } else {
            &mut self.tracks[i]
        };
        Some((pool.pacers.get_mut(p)?, track))
    }

    #[inline(never)]
    fn fast_run<const CHECK: bool, const KIND: u8, const SAT: bool, const KEYCHK: bool>(
        &mut self,
        ds: &mut [Decision],
        _: usize,
        c: FastCtx,
        st: &mut RunState,
    ) {
        // Every per-slot array cut to one length: one bounds check covers them all.
        let n = (self.home.len())
            .min(self.pos.len())
            .min(self.pacers.len())
            .min(self.tracks.len())
            .min(self.gens.len());
        let mut view = SlotView {
            pacers: &mut self.pacers[..n],
            gens: &self.gens[..n],
            tracks: &mut self.tracks[..n],
            pools: &mut *self.pools,
            home: &self.home[..n],
            pos: &self.pos[..n],
            own: self.own,
        };
        let mut f = st.fl;
        let mut drops = st.drops;
        let rest = ds.get_mut(st.k..).unwrap_or_default();
        let done = rest
            .iter_mut()
            .position(|d| match view.at::<CHECK>(0, d.link) {
                Some((p, t)) => !fast_one::<KIND, SAT, KEYCHK>(d, p, t, &c, &mut f, &mut drops),
                None => true,
            })
            .unwrap_or(rest.len());
        st.advance(done, f, drops);
    }
}

impl RunState {
    /// A fast run decided `done` more targets, leaving the uplink's floor at `fl` and the drop
    /// counts at `drops`.
    #[inline(always)]
    fn advance(&mut self, done: usize, fl: f64, drops: [u32; 2]) {
        self.k += done;
        self.fl = fl;
        self.drops = drops;
    }
}

/// Decides for every target of one interest level: `run.list` holds one decision per target
/// as it starts (the link, the level, the update's priority, a send at full quality with no
/// delay). They are appended to `out` in batches of [`BATCH`] and each batch is decided in
/// place while it is in the L1 cache, rewriting what differs. The common cases (a base-layer
/// delta to a target whose group is healthy or cut short, a group's keyframe to a target of an
/// older group) run in [`Store::fast_run`], a loop with no calls; it stops at the first target
/// that needs more, which [`decide_one`] decides.
#[inline(always)]
fn decide_level<const CHECK: bool, const KIND: u8, S: Store>(
    run: &LevelRun<'_>,
    store: &mut S,
    out: &mut Vec<Decision>,
    up: &mut UplinkRun,
    drops: &mut [u32; DropReason::COUNT],
) {
    let (ctx, lv) = (run.ctx, run.lv);
    let now = ctx.now;
    let step = up.step;
    let fast = run.fast_ok && (KIND == KIND_DELTA || KIND == KIND_START);
    // Deltas: a link that is not SLOW cannot starve the next keyframe within `lim_drop` when
    // `inv_slow <= inv_safe`; otherwise the fast path checks each link's rate.
    let keychk = ctx.inv_slow > lv.inv_safe;
    let fc = FastCtx {
        now,
        cost: ctx.cost,
        step,
        // Delays must fit a decision without saturating, and `magic_now` must be exact.
        lim_drop: if now < ROUND_MAGIC / 2.0 {
            lv.lim_drop.min(now + (MAX_DELAY - 1.0))
        } else {
            f64::NEG_INFINITY
        },
        lim_layer: lv.lim_layer,
        lim_delta: lv.lim_delta,
        deadline: ctx.deadline,
        inv_safe: lv.inv_safe,
        inv_slow: ctx.inv_slow,
        magic_now: ROUND_MAGIC - now,
        healthy: if KIND == KIND_DELTA {
            track(ctx.epoch, VALID | HAS_KEY | DELTAS_SENT)
        } else {
            track(ctx.epoch, 0)
        },
        fresh: track(ctx.epoch, VALID | HAS_KEY),
        cut: track(ctx.epoch, VALID | HAS_KEY | DELTAS_SENT | TRUNCATED),
    };
    let mut st = RunState {
        k: 0,
        fl: up.fl,
        drops: [0; 2],
    };
    for (b, part) in run.list.chunks(BATCH).enumerate() {
        let start = out.len();
        out.extend_from_slice(part);
        let ds = &mut out[start..];
        st.k = 0;
        let batch = Batch {
            ctx,
            lv,
            base: b * BATCH,
            fc: &fc,
            fast,
            keychk,
        };
        batch.decide::<CHECK, KIND, S>(ds, store, &mut st, drops);
    }
    drops[DropReason::RateLimited as usize] += st.drops[0];
    drops[DropReason::FramesSkipped as usize] += st.drops[1];
    up.fl = st.fl;
}

/// Targets decided per batch: the batch's decisions (8 kB) are copied into the output from the
/// target list and decided in place while they are in the L1 cache. Unit tests use small
/// batches, so that their few hundred targets span several (nothing else depends on the size).
#[cfg(not(test))]
const BATCH: usize = 512;
#[cfg(test)]
const BATCH: usize = 48;

/// One batch of [`decide_level`]: the call's and the level's constants, and the batch's first
/// position in the level's list.
struct Batch<'a> {
    ctx: &'a UpdateCtx,
    lv: &'a LevelCtx,
    base: usize,
    fc: &'a FastCtx,
    fast: bool,
    keychk: bool,
}

impl Batch<'_> {
    /// Decides the batch `ds` in place: [`Store::fast_run`] while it can, [`decide_one`]
    /// where it stops.
    #[inline(always)]
    fn decide<const CHECK: bool, const KIND: u8, S: Store>(
        &self,
        ds: &mut [Decision],
        store: &mut S,
        st: &mut RunState,
        drops: &mut [u32; DropReason::COUNT],
    ) {
        let now = self.ctx.now;
        let (base, fc) = (self.base, *self.fc);
        loop {
            if self.fast {
                let sat = st.fl >= now;
                match (sat, self.keychk) {
                    (true, false) => store.fast_run::<CHECK, KIND, true, false>(ds, base, fc, st),
                    (true, true) => store.fast_run::<CHECK, KIND, true, true>(ds, base, fc, st),
                    (false, false) => store.fast_run::<CHECK, KIND, false, false>(ds, base, fc, st),
                    (false, true) => store.fast_run::<CHECK, KIND, false, true>(ds, base, fc, st),
                };
            }
            let k = st.k;
            let Some(d) = ds.get_mut(k) else {
                break;
            };
            match store.at::<CHECK>(base + k, d.link) {
                None => {
                    d.quality = Quality::KeyframesOnly;
                    d.verdict = Verdict::Drop(DropReason::UnknownLink);
                    drops[DropReason::UnknownLink as usize] += 1;
                }
                Some((p, t)) => {
                    if decide_one::<KIND>(self.ctx, self.lv, d, p, t, fmax(st.fl, now), drops) {
                        st.fl += fc.step;
                    }
                }
            }
            st.k = k + 1;
        }
    }
}

/// One target of [`Store::fast_run`], with its link's pacer `p` and its track `tr`: decides
/// `d` and returns true when it takes a common path, or returns false (having changed
/// nothing) when it needs [`decide_one`]. `f` is the uplink's floor; `drops` counts
/// rate-limited and frames-skipped drops.
///
/// Deltas: a target whose group is healthy gets the delta when its delay is within the
/// level's limit, otherwise its group is cut ([`DropReason::FramesSkipped`], or
/// [`DropReason::RateLimited`] past the deadline); a target whose group was cut gets nothing
/// more of it. Group starts: a target of an older group gets the keyframe within the deadline.
/// Exactly what [`decide_one`] decides for these cases.
#[inline(always)]
fn fast_one<const KIND: u8, const SAT: bool, const KEYCHK: bool>(
    d: &mut Decision,
    p: &mut Pacer,
    tr: &mut Track,
    c: &FastCtx,
    f: &mut f64,
    drops: &mut [u32; 2],
) -> bool {
    let t = *tr;
    // The link's pacing: the bucket's new zero time, and when the update would leave.
    let pace = |p: &Pacer, f: f64| {
        let end = p.after_send(c.now, c.cost);
        let mut delay = fmax(end, f);
        if !SAT {
            delay = fmax(delay, c.now);
        }
        (p.inv_rate, end, delay)
    };
    if KIND == KIND_DELTA {
        let fits = |delay: f64, v: f64| delay <= c.lim_drop && (!KEYCHK || v <= c.inv_safe);
        if t == c.healthy {
            // The common case: a delta of a healthy group. The pacer is charged at once and
            // given back when the delta does not go (fewer instructions on the common path).
            let old = p.zero_at;
            let (v, end, delay) = pace(p, *f);
            p.zero_at = end;
            if fits(delay, v) {
                *f += c.step;
                d.quality = delta_quality(delay, c);
                d.delay_micros = (delay + c.magic_now).to_bits() as u32;
                return true;
            }
            p.zero_at = old;
            if delay > c.lim_drop {
                cut_group(d, tr, t, delay, c, drops);
                return true;
            }
            return false;
        }
        if t | u64::from(DELTAS_SENT) == c.cut {
            // The group was cut short: dropped, and the target receives fewer frames (or
            // keyframes only) until the next group, whatever the pressure; the pacer is not
            // read.
            d.quality = if t & u64::from(DELTAS_SENT) != 0 {
                Quality::ReducedFrames
            } else {
                Quality::KeyframesOnly
            };
            d.verdict = Verdict::Drop(DropReason::FramesSkipped);
            drops[1] += 1;
            return true;
        }
        if t == c.fresh {
            // The group's first delta.
            let (v, end, delay) = pace(p, *f);
            if fits(delay, v) {
                let q = delta_quality(delay, c);
                fast_send(d, p, end, delay, q, c, f);
                // Last, so that this path does not share its tail with the common one.
                *tr = c.healthy;
                return true;
            }
            if delay > c.lim_drop {
                cut_group(d, tr, t, delay, c, drops);
                return true;
            }
        }
        false
    } else {
        // A group start, to a target of an older group (or none): no deltas of this group yet.
        let (v, end, delay) = pace(p, *f);
        if t >= c.healthy || delay > c.lim_drop {
            return false;
        }
        *tr = c.fresh | slow_flag(v, c.inv_slow);
        let q = match (delay > c.lim_layer, delay > c.lim_delta) {
            (false, _) => Quality::Full,
            (true, false) => Quality::BaseLayer,
            (true, true) => Quality::KeyframesOnly,
        };
        fast_send(d, p, end, delay, q, c, f);
        true
    }
}

/// The quality a delta that goes is sent at: the base layer once the delay is past the
/// level's layer limit.
#[inline(always)]
fn delta_quality(delay: f64, c: &FastCtx) -> Quality {
    if delay > c.lim_layer {
        Quality::BaseLayer
    } else {
        Quality::Full
    }
}

/// A send on the fast path: charges the link's pacer (its new `zero_at` is `end`) and the
/// uplink's floor `f`, and writes the delay and the quality (the decision says send already).
#[inline(always)]
fn fast_send(
    d: &mut Decision,
    p: &mut Pacer,
    end: f64,
    delay: f64,
    quality: Quality,
    c: &FastCtx,
    f: &mut f64,
) {
    p.zero_at = end;
    *f += c.step;
    d.quality = quality;
    d.delay_micros = (delay + c.magic_now).to_bits() as u32;
}

/// A delta over its level's limit, to a target whose group is healthy or fresh (`t`): dropped,
/// and the group is cut. The quality rung (see [`decide_one`]) and the reason.
#[inline(always)]
fn cut_group(
    d: &mut Decision,
    track: &mut Track,
    t: Track,
    delay: f64,
    c: &FastCtx,
    drops: &mut [u32; 2],
) {
    let over = delay > c.lim_delta;
    let had_deltas = t & u64::from(DELTAS_SENT) != 0;
    d.quality = match (delay > c.lim_layer) as u8 + over as u8 + (over & !had_deltas) as u8 {
        0 => Quality::Full,
        1 => Quality::BaseLayer,
        2 => Quality::ReducedFrames,
        _ => Quality::KeyframesOnly,
    };
    let rate_limited = delay > c.deadline;
    drops[usize::from(!rate_limited)] += 1;
    d.verdict = Verdict::Drop(if rate_limited {
        DropReason::RateLimited
    } else {
        DropReason::FramesSkipped
    });
    *track = t | u64::from(TRUNCATED);
}

/// The whole decision for one target, written into `d` (which holds the target's link, the
/// level's interest and the update's priority): its pacing delay (the later of its link's and
/// the uplink's, `floor`), its quality rung, whether it can decode the update, and the verdict;
/// updates the link's pacer and the target's track. Returns whether it sends (the caller
/// charges the uplink).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn decide_one<const KIND: u8>(
    ctx: &UpdateCtx,
    lv: &LevelCtx,
    d: &mut Decision,
    p: &mut Pacer,
    t: &mut Track,
    floor: f64,
    drops: &mut [u32; DropReason::COUNT],
) -> bool {
    let inv = p.inv_rate;
    // The link's own delay: when the bucket is back to zero after the send.
    let ld = p.after_send(ctx.now, ctx.cost);
    let delay = fmax(ld, floor);
    let word = *t;
    let flags = word as u8;
    let epoch = word >> 8;
    let valid = flags & VALID != 0;
    // Tracks that are not valid never count as in a group.
    let same_group = valid & (epoch == ctx.epoch);
    // Rung: 0 full, 1 base layer, 2 reduced frames (deltas of this group got through),
    // 3 keyframes only.
    let over_delta = delay > lv.lim_delta;
    let had_deltas = same_group & (flags & DELTAS_SENT != 0);
    let rung =
        (delay > lv.lim_layer) as usize + over_delta as usize + (over_delta & !had_deltas) as usize;
    // A target whose group was cut short receives fewer frames (keyframes only if none of the
    // group's deltas got through) until the next group starts, whatever the pressure now.
    let cut = !ctx.starts_group & same_group & (flags & TRUNCATED != 0);
    d.quality = RUNGS[if cut {
        2 + !had_deltas as usize
    } else {
        rung & 3
    }];
    // What the target can still decode.
    let decodable = if KIND == KIND_DELTA || KIND == KIND_DEPENDENT {
        same_group & (flags & ctx.key_mask == VALID | HAS_KEY)
    } else {
        !(valid & (ctx.epoch < epoch)) & !(same_group & (flags & ctx.cut_mask == ctx.cut_mask))
    };
    // Deltas also keep room for the next keyframe (see `UpdateCtx::key_reserve`).
    let starves_key =
        KIND == KIND_DELTA && ctx.key_reserve > 0.0 && ld + ctx.key_reserve * inv > ctx.deadline;
    if decodable & (delay <= lv.lim_drop) & !starves_key {
        p.zero_at = ld;
        if KIND == KIND_START {
            *t = track(ctx.epoch, VALID | HAS_KEY) | slow_flag(inv, ctx.inv_slow);
        } else if KIND == KIND_DELTA {
            *t = word | u64::from(DELTAS_SENT);
        }
        d.delay_micros = delay_micros(delay - ctx.now);
        d.verdict = Verdict::Send;
        return true;
    }
    let reason = if !decodable {
        if valid && ctx.epoch < epoch {
            DropReason::Superseded
        } else if ctx.needs_key && !(same_group && flags & HAS_KEY != 0) {
            DropReason::MissingKeyframe
        } else if ctx.delta && flags & TRUNCATED != 0 {
            DropReason::FramesSkipped
        } else {
            DropReason::LayerSkipped
        }
    } else if delay > ctx.deadline {
        DropReason::RateLimited
    } else {
        lv.quality_reason
    };
    if ctx.starts_group && reason != DropReason::Superseded {
        *t = track(ctx.epoch, VALID);
    } else if ctx.keyframe_base && same_group {
        *t = word & !u64::from(HAS_KEY);
    } else if ctx.delta && !ctx.enhancement && same_group {
        *t = word | u64::from(TRUNCATED);
    } else if ctx.enhancement && same_group {
        *t = word | u64::from(LAYER_CUT);
    }
    drops[reason as usize & 7] += 1;
    d.verdict = Verdict::Drop(reason);
    d.delay_micros = 0;
    false
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
