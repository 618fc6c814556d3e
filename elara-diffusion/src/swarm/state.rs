//! Per-state bookkeeping of a swarm node: its place in the state's tree, its receive window
//! (duplicate suppression, in-order delivery, gap detection) and its repair buffer.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use elara_core::{
    Fragment, GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind,
};

use super::small_map::SmallMap;
use crate::scheduler::Quality;

/// Counters and a latency histogram for one state at one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMetrics {
    /// Updates handed to the application.
    pub delivered: u64,
    /// Updates received that were already held or delivered.
    pub duplicates: u64,
    /// Updates that arrived after their gap had been skipped.
    pub late: u64,
    /// Sequence numbers given up on (never received within the reorder window).
    pub skipped: u64,
    /// Updates dropped because their source is not the state's authority.
    pub non_authority: u64,
    /// Updates dropped because they came from a peer that is not our parent.
    pub not_from_parent: u64,
    /// Video deltas not delivered because their group's keyframe was never received.
    pub undecodable: u64,
    /// Updates this node published (authority only).
    pub published: u64,
    /// Updates handed to the scheduler for a child.
    pub forwarded: u64,
    /// Sequence numbers this node asked its parent for.
    pub pulled: u64,
    /// Updates sent in answer to a child's pull.
    pub repaired: u64,
    /// Sequence numbers a child pulled that this node had queued for it shortly before: not
    /// sent again (the pull crossed them on their way).
    pub pull_crossed: u64,
    /// Times this node's parent changed.
    pub parent_changes: u64,
    /// Delivery latency histogram: bucket `i` counts latencies below `LATENCY_BUCKETS_MS[i]`
    /// (and at or above the previous bound); the last bucket counts everything larger.
    pub latency_hist: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

/// Upper bounds (ms) of the delivery latency histogram buckets in [`StateMetrics`].
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [10, 20, 50, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000];

impl StateMetrics {
    pub(crate) fn record_latency(&mut self, latency: Duration) {
        let ms = latency.as_millis() as u64;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_hist[i] += 1;
    }
}

/// Most updates held behind gaps per state.
const MAX_HELD: usize = 512;

/// What became of an arriving sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Arrival {
    /// Never seen: forward and (in order) deliver.
    New,
    /// Already held or delivered.
    Duplicate,
    /// Its gap was skipped already.
    Late,
}

/// An update waiting for an earlier gap to fill.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub update: StateUpdate,
    pub hops: u8,
    pub arrived: Time,
}

/// Duplicate suppression and in-order delivery for one state.
#[derive(Debug, Default)]
pub(crate) struct ReceiveWindow {
    /// Next sequence number to deliver; `None` before the first update.
    pub floor: Option<u64>,
    /// Bit `i` set: `floor - 1 - i` was delivered (for duplicate vs late accounting).
    pub below: u64,
    /// Updates received above a gap, sorted by sequence number (no duplicates). Its room is
    /// given back whenever the gap closes: most of the time nothing is held.
    pub held: VecDeque<Held>,
    /// Highest sequence number known to exist (received or announced).
    pub highest: Option<u64>,
    /// The group whose keyframe was last delivered to the application, whole (every fragment).
    pub delivered_group: Option<GroupId>,
    /// A keyframe cut into fragments being delivered: its group and the fragment index due
    /// next. A fragment skipped on the way leaves the keyframe (and its group) undecodable.
    pub delivering_key: Option<(GroupId, u16)>,
    /// The group whose keyframe was last received whole (relays forward deltas of this group
    /// only).
    pub received_group: Option<GroupId>,
    /// A keyframe cut into fragments being received (in any order): its group and how many of
    /// its fragments came.
    pub receiving_key: Option<(GroupId, u16)>,
    /// The update that completed the last keyframe received (its last missing fragment).
    pub keyed_by: Option<u64>,
    /// Sequence numbers at or above the floor that the parent said will never come.
    pub gone: BTreeSet<u64>,
    /// Publish time of the newest keyframe received.
    pub last_keyframe_at: Option<Time>,
    /// Publish-time distance between the last two keyframes received (zero until two came).
    pub group_interval: Duration,
    /// A video update was received: the stream has deltas, which Low interest filters out.
    pub video: bool,
}

impl ReceiveWindow {
    /// Classifies `seq` without changing anything.
    pub fn classify(&self, seq: u64) -> Arrival {
        let Some(floor) = self.floor else {
            return Arrival::New;
        };
        if seq >= floor {
            if self.is_held(seq) {
                Arrival::Duplicate
            } else {
                Arrival::New
            }
        } else {
            let back = floor - 1 - seq;
            if back < 64 && self.below & (1 << back) != 0 {
                Arrival::Duplicate
            } else {
                Arrival::Late
            }
        }
    }

    /// Notes a keyframe published at `at`, for the group interval.
    pub fn keyframe_at(&mut self, at: Time) {
        if let Some(prev) = self.last_keyframe_at
            && at > prev
        {
            self.group_interval = at - prev;
        }
        if self.last_keyframe_at.is_none_or(|p| at > p) {
            self.last_keyframe_at = Some(at);
        }
    }

    /// Notes that `seq` exists (from an update or an announce).
    pub fn saw(&mut self, seq: u64) {
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
    }

    /// Advances the floor past `seq`, which was delivered (`delivered`) or skipped.
    fn advance(&mut self, delivered: bool) {
        let floor = self.floor.unwrap_or(0);
        self.below = (self.below << 1) | u64::from(delivered);
        self.floor = Some(floor.saturating_add(1));
    }

    /// Gives up on every sequence number below `target`, discarding held updates below it;
    /// returns how many were given up. Constant time for long jumps.
    fn jump_to(&mut self, target: u64) -> u64 {
        let Some(floor) = self.floor else {
            return 0;
        };
        if target <= floor {
            return 0;
        }
        let n = target - floor;
        if n >= 64 {
            self.below = 0;
            self.floor = Some(target);
        } else {
            for _ in 0..n {
                self.advance(false);
            }
        }
        let below = self.held.partition_point(|h| h.update.seq < target);
        self.held.drain(..below);
        self.release_held();
        n
    }

    /// True when `seq` is held.
    fn is_held(&self, seq: u64) -> bool {
        self.held
            .binary_search_by_key(&seq, |h| h.update.seq)
            .is_ok()
    }

    /// Frees the held updates' room once none is held (and the skipped numbers' once none is
    /// left).
    fn release_held(&mut self) {
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = VecDeque::new();
        }
        if self.gone.is_empty() {
            // An emptied B-tree keeps its leaf allocated.
            self.gone.clear();
        }
    }

    /// Accepts a new in-order or out-of-order update; returns the updates now deliverable, in
    /// order, through `out`.
    pub fn accept(&mut self, held: Held, out: &mut impl FnMut(Held)) {
        let seq = held.update.seq;
        self.saw(seq);
        let floor = *self.floor.get_or_insert(seq);
        if seq == floor {
            self.advance(true);
            out(held);
            self.drain(out);
        } else {
            match self.held.binary_search_by_key(&seq, |h| h.update.seq) {
                Ok(i) => self.held[i] = held,
                Err(i) => self.held.insert(i, held),
            }
            if self.held.len() > MAX_HELD {
                // Bounded memory whatever a parent sends: the furthest update goes.
                self.held.pop_back();
            }
        }
    }

    /// Delivers held updates that have become contiguous with the floor, stepping over
    /// sequence numbers known to be gone.
    fn drain(&mut self, out: &mut impl FnMut(Held)) {
        while let Some(floor) = self.floor {
            match self.held.front() {
                Some(h) if h.update.seq == floor => {
                    let h = self.held.pop_front().expect("checked non-empty");
                    self.advance(true);
                    out(h);
                }
                _ if self.gone.remove(&floor) => self.advance(false),
                _ => break,
            }
        }
        self.release_held();
    }

    /// The parent said these sequence numbers will never come: stop waiting for them. Returns
    /// how many were given up at once (others are stepped over when the floor reaches them).
    pub fn give_up(&mut self, seqs: &[u64], out: &mut impl FnMut(Held)) -> u64 {
        let Some(floor) = self.floor else {
            return 0;
        };
        for &s in seqs {
            if s >= floor && !self.is_held(s) && self.gone.len() < MAX_HELD {
                self.gone.insert(s);
            }
        }
        let before = self.floor;
        self.drain(out);
        let after = self.floor;
        match (before, after) {
            (Some(b), Some(a)) => a - b,
            _ => 0,
        }
    }

    /// True when the gap below the first held update is made only of earlier fragments of the
    /// keyframe that update is a fragment of: a loss to wait for (or pull), never updates a
    /// parent filtered out, since a keyframe goes whole or not at all.
    pub fn gap_inside_keyframe(&self) -> bool {
        let (Some(floor), Some(first)) = (self.floor, self.held.front()) else {
            return false;
        };
        let u = &first.update;
        let seq = u.seq;
        u.keyframe
            && u.fragment.index > 0
            && floor.saturating_add(u64::from(u.fragment.index)) >= seq
    }

    /// Gives up on the gap(s) below the first held update; returns how many seqs were skipped.
    pub fn skip_gap(&mut self, out: &mut impl FnMut(Held)) -> u64 {
        let Some(first) = self.held.front().map(|h| h.update.seq) else {
            return 0;
        };
        let skipped = self.jump_to(first);
        self.drain(out);
        skipped
    }

    /// Gives up on everything below `seq` (held updates below it are discarded); returns how
    /// many sequence numbers were given up.
    pub fn skip_before(&mut self, seq: u64) -> u64 {
        self.jump_to(seq)
    }

    /// True when updates are held behind a gap.
    pub fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    /// Arrival time of the oldest held update.
    pub fn oldest_held(&self) -> Option<Time> {
        self.held.iter().map(|h| h.arrived).min()
    }

    /// Up to `max` sequence numbers known to exist but not received, oldest first.
    pub fn missing(&self, max: usize, out: &mut Vec<u64>) {
        let (Some(floor), Some(highest)) = (self.floor, self.highest) else {
            return;
        };
        let mut s = floor;
        while s <= highest && out.len() < max {
            if !self.is_held(s) && !self.gone.contains(&s) {
                out.push(s);
            }
            let Some(next) = s.checked_add(1) else {
                break;
            };
            s = next;
        }
    }
}

/// An update in a [`RepairBuffer`], without what all of a state's updates share: the state id
/// is the buffer's and the source is an index into the buffer's table of sources (one entry,
/// the authority, but for a node told of another authority mid-stream). 80 bytes (with the
/// forwarding time) instead of the 112 of an update and its hop count.
#[derive(Debug)]
struct Buffered {
    seq: u64,
    group: GroupId,
    timestamp: Time,
    payload: Bytes,
    fragment: Fragment,
    source: u32,
    keyframe: bool,
    layer: u8,
    priority: Priority,
    kind: UpdateKind,
    hops: u8,
    /// When this node passed the update on to its children (it arrived, or was published).
    forwarded: Time,
}

impl Buffered {
    /// As [`StateUpdate::starts_group`].
    fn starts_group(&self) -> bool {
        self.keyframe && self.fragment.index == 0
    }
}

/// Recent updates of a state, ordered by sequence number, bounded in count.
#[derive(Debug, Default)]
pub(crate) struct RepairBuffer {
    /// The state of every update held.
    state: StateId,
    /// Sources of the updates held ([`Buffered::source`] indexes it).
    sources: Vec<NodeId>,
    items: VecDeque<Buffered>,
}

impl RepairBuffer {
    /// Stores an update (with the hop count it arrived with and when it was passed on to the
    /// children), evicting the oldest beyond `cap` and those more than `max_age` older (by
    /// timestamp) than the newest: nothing older can be repaired or replayed within the
    /// latency budget.
    pub fn insert(
        &mut self,
        update: StateUpdate,
        hops: u8,
        forwarded: Time,
        cap: usize,
        max_age: Duration,
    ) {
        let seq = update.seq;
        let at = match self.items.back() {
            Some(last) if last.seq >= seq => self.items.binary_search_by_key(&seq, |b| b.seq).err(),
            _ => Some(self.items.len()),
        };
        if let Some(i) = at {
            let entry = self.compact(update, hops, forwarded);
            if self.items.len() == self.items.capacity() {
                // A quarter more, not twice the room: every node holds one of these.
                self.items.reserve_exact((self.items.len() / 4).max(1));
            }
            self.items.insert(i, entry);
        }
        while self.items.len() > cap.max(1) {
            self.items.pop_front();
        }
        let newest = self.items.back().map_or(Time::ZERO, |b| b.timestamp);
        while self
            .items
            .front()
            .is_some_and(|b| b.timestamp + max_age < newest)
        {
            self.items.pop_front();
        }
    }

    /// `update` in the buffer's compact form.
    fn compact(&mut self, update: StateUpdate, hops: u8, forwarded: Time) -> Buffered {
        self.state = update.state;
        let source = match self.sources.iter().position(|s| *s == update.source) {
            Some(i) => i,
            None => {
                // Forget the sources no update held comes from any more.
                if !self.sources.is_empty() {
                    let mut used = vec![false; self.sources.len()];
                    for b in &self.items {
                        used[b.source as usize] = true;
                    }
                    let mut remap = vec![0u32; self.sources.len()];
                    let mut kept = 0u32;
                    for (i, u) in used.iter().enumerate() {
                        if *u {
                            remap[i] = kept;
                            self.sources[kept as usize] = self.sources[i];
                            kept += 1;
                        }
                    }
                    self.sources.truncate(kept as usize);
                    for b in &mut self.items {
                        b.source = remap[b.source as usize];
                    }
                }
                self.sources.push(update.source);
                self.sources.len() - 1
            }
        };
        Buffered {
            seq: update.seq,
            group: update.group,
            timestamp: update.timestamp,
            payload: update.payload,
            fragment: update.fragment,
            // No more sources than updates held (plus this one).
            source: u32::try_from(source).expect("fewer sources than updates held"),
            keyframe: update.keyframe,
            layer: update.layer,
            priority: update.priority,
            kind: update.kind,
            hops,
            forwarded,
        }
    }

    /// The update `b` stands for, with its hop count.
    fn expand(&self, b: &Buffered) -> (StateUpdate, u8) {
        let update = StateUpdate {
            state: self.state,
            source: self.sources[b.source as usize],
            seq: b.seq,
            group: b.group,
            timestamp: b.timestamp,
            keyframe: b.keyframe,
            layer: b.layer,
            priority: b.priority,
            kind: b.kind,
            fragment: b.fragment,
            payload: b.payload.clone(),
        };
        (update, b.hops)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The update with sequence number `seq`, if still held, with its hop count and when it
    /// was passed on to the children.
    pub fn get(&self, seq: u64) -> Option<(StateUpdate, u8, Time)> {
        self.items
            .binary_search_by_key(&seq, |b| b.seq)
            .ok()
            .map(|i| {
                let b = &self.items[i];
                let (u, h) = self.expand(b);
                (u, h, b.forwarded)
            })
    }

    /// Updates held with a sequence number above `seq`, in order.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = (StateUpdate, u8)> + '_ {
        let start = self.items.partition_point(|b| b.seq <= seq);
        self.items.range(start..).map(|b| self.expand(b))
    }

    /// The newest sequence number held.
    pub fn newest(&self) -> Option<u64> {
        self.items.back().map(|b| b.seq)
    }

    /// Updates from the newest keyframe on (or the whole buffer for streams without keyframes),
    /// not older than `since`. Nothing when that keyframe is older than `since`: its deltas
    /// would not decode without it. A keyframe cut into fragments starts at its first
    /// fragment: the rest do not decode without it.
    pub fn since_last_keyframe(&self, since: Time) -> impl Iterator<Item = (StateUpdate, u8)> + '_ {
        let start = match self.items.iter().rposition(Buffered::starts_group) {
            Some(k) if self.items[k].timestamp >= since => k,
            Some(_) => self.items.len(),
            None if self.items.iter().any(|b| b.kind == UpdateKind::Video) => self.items.len(),
            None => 0,
        };
        self.items
            .range(start..)
            .filter(move |b| b.timestamp >= since)
            .map(|b| self.expand(b))
    }
}

/// Most repair slots open at once in one state, however many relay children failed.
const MAX_REPAIR_SLOTS: u16 = 64;

/// A child in a state's tree.
#[derive(Clone, Debug)]
pub(crate) struct Child {
    /// The strongest interest in the child's subtree.
    pub interest: InterestLevel,
    /// Highest layer the child asked for.
    pub max_layer: u8,
    /// The child asked for keyframes only.
    pub keyframes_only: bool,
    /// Quality last reported for this child.
    pub quality: Quality,
    /// When the child was accepted.
    pub since: Time,
    /// A stronger joiner took this child's slot: it is served until it has moved below it.
    pub leaving: bool,
    /// When this child was asked to move down to a sibling to bring us back to capacity
    /// ([`crate::swarm::SwarmNode`]'s rebalance); it is served meanwhile.
    pub moving_since: Option<Time>,
    /// Repair slots were opened for this child's orphans while it was still connected (it had
    /// gone silent and one of them asked first): its failure opens none again.
    pub repair_opened: bool,
    /// Hops from the child down to the deepest node of its subtree, as it last reported.
    pub height: u8,
    /// The recent updates queued for this child (see [`SentWindow`]).
    pub sent: SentWindow,
}

/// Which of the last 128 sequence numbers of a state were queued for one child: a pull for one
/// of them that comes soon after is crossing the update on its way, and answering it would only
/// send a duplicate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SentWindow {
    /// Sequence number of bit 0.
    base: u64,
    bits: u128,
}

impl SentWindow {
    /// Records `seq` as queued; the window slides forward to hold it (older ones drop out).
    pub fn mark(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        let off = seq - self.base;
        if off >= 128 {
            let shift = off - 127;
            self.bits = if shift >= 128 { 0 } else { self.bits >> shift };
            self.base += shift;
        }
        self.bits |= 1 << (seq - self.base);
    }

    /// True when `seq` is in the window and was queued.
    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < 128 && self.bits & (1 << (seq - self.base)) != 0
    }
}

impl Child {
    pub fn new(interest: InterestLevel, since: Time) -> Self {
        Child {
            since,
            interest,
            max_layer: u8::MAX,
            keyframes_only: false,
            quality: Quality::Full,
            leaving: false,
            moving_since: None,
            repair_opened: false,
            height: 0,
            sent: SentWindow::default(),
        }
    }

    /// True while the child holds one of our slots: not while it moves below a stronger joiner
    /// (`leaving`) or down to a sibling (`moving_since`).
    pub fn holds_slot(&self) -> bool {
        !self.leaving && self.moving_since.is_none()
    }

    /// True when this child's subtree wants `update` at all (Low interest: keyframes and the
    /// base layer only).
    pub fn wants(&self, update: &StateUpdate) -> bool {
        if !self.interest.is_interested() || update.layer > self.max_layer {
            return false;
        }
        let keyframes_only = self.keyframes_only || self.interest == InterestLevel::Low;
        !keyframes_only || (update.layer == 0 && update.is_independent())
    }
}

/// A join in progress.
#[derive(Clone, Debug)]
pub(crate) struct Joining {
    /// The peer asked (or about to be asked once connected).
    pub target: NodeId,
    /// Whether the request has been sent.
    pub sent: bool,
    /// Further candidates (id, transport address), best first.
    pub candidates: Vec<(NodeId, bytes::Bytes)>,
    /// Redirects followed so far.
    pub redirects: u8,
    /// An attached node trying to move up to its grandparent: a redirect ends the attempt.
    pub climb: bool,
    /// Redirects to the ends of chains put behind the other candidates so far.
    pub deferrals: u8,
}

/// This node's view of one state's tree.
#[derive(Debug, Default)]
pub(crate) struct StateTree {
    /// The state's authority, once known.
    pub authority: Option<NodeId>,
    /// This node's own interest.
    pub own: InterestLevel,
    /// Current parent.
    pub parent: Option<NodeId>,
    /// The previous parent, kept during a make-before-break switch until the new one delivered
    /// a group boundary and we have everything below it.
    pub prev_parent: Option<NodeId>,
    /// The new parent's first group boundary, while the previous parent still owes updates
    /// below it: the switch ends once the receive window is past it.
    pub switch_at: Option<u64>,
    /// The parent a switch left, and when: for a latency budget its updates still on their
    /// way are taken (of those it was ahead of the new parent on, the first copy plays).
    pub left_parent: Option<(NodeId, Time)>,
    /// Ancestors from the authority down to and including the parent (empty at the authority).
    pub path: Vec<NodeId>,
    /// A join in progress (boxed: most of the time there is none).
    pub joining: Option<Box<Joining>>,
    /// Children and their interest.
    pub children: SmallMap<NodeId, Child>,
    /// Aggregated interest last told to the parent.
    pub sent_interest: InterestLevel,
    /// The subtree height last reported to the parent.
    pub sent_height: u8,
    /// Rotates redirect candidates across children.
    pub redirect_cursor: usize,
    /// Duplicate suppression and ordering.
    pub recv: ReceiveWindow,
    /// Recent updates for repair.
    pub buffer: RepairBuffer,
    /// Counters.
    pub metrics: StateMetrics,
    /// Own track muted (publishing suppressed).
    pub muted: bool,
    /// The call this state is a track of (group mode).
    pub call: Option<u64>,
    /// When an update was last forwarded or published.
    pub last_forward: Time,
    /// Newest seq announced to children.
    pub announced: Option<u64>,
    /// When the node lost its parent (for health and the re-attach metric).
    pub detached_since: Option<Time>,
    /// When updates were last skipped (for health).
    pub last_skip: Option<Time>,
    /// Pulls sent for the current gap.
    pub pull_rounds: u8,
    /// When the last make-before-break switch was started (rate limit).
    pub last_switch: Option<Time>,
    /// Children asked to move below a stronger joiner once that joiner is attached: (child,
    /// joiner).
    pub pending_moves: Vec<(NodeId, NodeId)>,
    /// Repair slots: children taken above capacity while `repair_until` has not passed, as
    /// many as the relay children that failed (or went silent) could take: their orphans, our
    /// grandchildren, re-attach here within a round trip.
    pub repair_slots: u16,
    /// The repair slots close at this time (orphans detect the failure about when we do).
    pub repair_until: Time,
    /// Set when a new parent accepted us while we were already receiving: the first new
    /// keyframe from it resynchronises the window (the outage's gap is an older group, which the
    /// new parent's scheduler would drop as superseded anyway).
    pub resync: bool,
    /// When the parent was found gone (for the re-attach metric).
    pub parent_lost_at: Option<Time>,
    /// A repair's first request went to a peer that had not yet answered an earlier request
    /// of ours (a climb, say): that peer's next redirect answers the earlier one and is
    /// ignored.
    pub stale_redirect_from: Option<NodeId>,
    /// Longest re-attach observed (detection to accept).
    pub reattach_max: Duration,
}

impl StateTree {
    /// True when this node is the state's authority.
    pub fn is_authority(&self, me: NodeId) -> bool {
        self.authority == Some(me)
    }

    /// True when the node has a live path to the authority (or is it).
    pub fn attached(&self, me: NodeId) -> bool {
        self.is_authority(me) || self.parent.is_some()
    }

    /// True while the node is detached because its parent failed (or left) and has not
    /// re-attached yet: it asks with repair requests.
    pub fn is_orphan(&self) -> bool {
        self.parent.is_none() && self.parent_lost_at.is_some()
    }

    /// The strongest interest here and below.
    pub fn aggregated(&self) -> InterestLevel {
        self.children
            .values()
            .map(|c| c.interest)
            .fold(self.own, InterestLevel::max)
    }

    /// Children holding a slot ([`Child::holds_slot`]).
    pub fn slots_taken(&self) -> usize {
        self.children.values().filter(|c| c.holds_slot()).count()
    }

    /// Depth of this node (the authority is 0).
    pub fn depth(&self) -> u16 {
        self.path.len() as u16
    }

    /// This node's path (ancestors then itself).
    pub fn own_path(&self, me: NodeId) -> Vec<NodeId> {
        let mut p = Vec::with_capacity(self.path.len() + 1);
        p.extend_from_slice(&self.path);
        p.push(me);
        p
    }

    /// Opens `slots` more repair slots above capacity, all open until `until` at least.
    pub fn open_repair_slots(&mut self, now: Time, slots: u16, until: Time) {
        if self.repair_until <= now {
            self.repair_slots = 0;
        }
        self.repair_slots = self
            .repair_slots
            .saturating_add(slots)
            .min(MAX_REPAIR_SLOTS);
        self.repair_until = self.repair_until.max(until);
    }

    /// True when a repair slot is free: the slots are open and fewer than `capacity` plus
    /// their number of children hold a slot.
    pub fn repair_room(&self, now: Time, capacity: usize) -> bool {
        now < self.repair_until && self.slots_taken() < capacity + usize::from(self.repair_slots)
    }

    /// True when the own interest expects every update (so gaps are losses, not filtering):
    /// Medium and above, or Low interest in a stream without deltas (audio, data), of which
    /// the keyframes-only filter passes everything.
    pub fn expects_all(&self) -> bool {
        let level = self.aggregated();
        level >= InterestLevel::Medium || (level.is_interested() && !self.recv.video)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64) -> Held {
        Held {
            update: StateUpdate::new(StateId(1), NodeId::from_u64(1), seq, Time::ZERO),
            hops: 1,
            arrived: Time::ZERO,
        }
    }

    #[test]
    fn window_delivers_in_order_and_classifies_duplicates_and_late() {
        let mut w = ReceiveWindow::default();
        let mut got = Vec::new();
        let mut out = |h: Held| got.push(h.update.seq);
        w.accept(held(10), &mut out);
        assert_eq!(w.classify(10), Arrival::Duplicate);
        w.accept(held(12), &mut out);
        assert_eq!(w.classify(12), Arrival::Duplicate);
        assert!(w.has_gap());
        let mut miss = Vec::new();
        w.missing(8, &mut miss);
        assert_eq!(miss, vec![11]);
        w.accept(held(11), &mut out);
        w.accept(held(14), &mut out);
        assert_eq!(w.skip_gap(&mut out), 1);
        assert_eq!(w.classify(13), Arrival::Late);
        assert_eq!(w.classify(9), Arrival::Late);
        assert_eq!(w.classify(14), Arrival::Duplicate);
        assert_eq!(got, vec![10, 11, 12, 14]);
    }

    #[test]
    fn sent_window_holds_the_last_128_sequence_numbers() {
        let mut w = SentWindow::default();
        for s in [3u64, 5, 130] {
            w.mark(s);
        }
        assert!(w.contains(3) && w.contains(5) && w.contains(130));
        assert!(!w.contains(4) && !w.contains(131));
        // 131 slides the window to 4..=131: 3 drops out.
        w.mark(131);
        assert!(!w.contains(3) && w.contains(5) && w.contains(131));
        // Older than the window: ignored; a jump far ahead clears it.
        w.mark(2);
        assert!(!w.contains(2));
        w.mark(10_000);
        assert!(w.contains(10_000) && !w.contains(131) && !w.contains(9_999));
        w.mark(9_999);
        assert!(w.contains(9_999));
    }

    #[test]
    fn a_buffered_update_is_smaller_than_an_update() {
        assert_eq!(std::mem::size_of::<Buffered>(), 80);
        assert_eq!(std::mem::size_of::<(StateUpdate, u8)>(), 112);
    }

    #[test]
    fn buffer_stays_sorted_and_bounded() {
        let mut b = RepairBuffer::default();
        for s in [1u64, 2, 4, 3, 5] {
            b.insert(held(s).update, 0, Time::ZERO, 4, Duration::from_secs(1));
        }
        assert!(b.get(1).is_none());
        assert_eq!(b.get(3).map(|(u, _, _)| u.seq), Some(3));
        assert_eq!(b.get(3).map(|(u, _, _)| u), Some(held(3).update));
        assert_eq!(b.newest(), Some(5));
    }
}
