//! Who wants which state, and how much: the [`InterestMap`].
//!
//! # Layout and memory
//!
//! The map is built for the livestream case — one state, a million viewers — where the per-viewer
//! cost is what matters:
//!
//! * every node that holds at least one interest is interned once: its 32-byte [`NodeId`] lives
//!   in a dense `Vec` of records (44 bytes: the id, the position of its first interest and 32
//!   bits of the id's hash), and a `hashbrown::HashTable<u32>` maps an id to its record index,
//!   so the table holds 4-byte indices only (5 bytes per bucket with its control byte). When the
//!   table grows it is rebuilt from the hashes stored in the records, read in order: no id is
//!   hashed twice. It grows eightfold while it has fewer than 32,768 buckets (160 kB; at most
//!   640 kB after the step) and twofold above, so a large map's table is at most twice what
//!   its nodes need;
//! * the id hash is seeded ([`InterestMap::with_hash_seed`]) and covers all 32 bytes of the id.
//!   Ids are derived from public keys, so their bytes are already uniform, but a relay's map
//!   also holds ids it only heard of from others; with a seed nobody else knows, nobody can
//!   choose ids that pile up in one bucket of this node's table (which a hash of a fixed
//!   prefix word, or an unseeded one, would allow). The seed gives four keys, one per id word,
//!   and each multiply of the hash takes two keyed words, so no id word can zero a product;
//! * declaring a new viewer without expiry for the state of the previous declaration — a
//!   stream going live — is a small inline path (the state check, one hash probe that interns
//!   the node and places its entry, three pushes); everything else (a known node, an expiry,
//!   a withdrawal, a new state) is out of line. About 173 instructions per entry when 100,000
//!   viewers join from an empty map, growth of the tables included, 163 after
//!   [`InterestMap::reserve_nodes`] (`benches/RESULTS.md`; the original's `register` takes
//!   about 1,555);
//! * each state keeps its viewers as two dense parallel vectors, node index (`u32`) and level
//!   (`u8`), so iterating a state's viewers is a slice walk that allocates nothing;
//! * the position of a node's first interest is stored inline in its record; a node's further
//!   interests (a viewer of audio *and* video) sit in a secondary hash table keyed by
//!   (node, state), so every lookup is O(1). (Withdrawing a node's *first* interest while it
//!   holds others promotes one of them into the inline slot, which scans the map's states:
//!   O(S) in the number of distinct states, a handful in practice.)
//! * an interest with a TTL stores its expiry in a side table and a flag bit in its level byte,
//!   so interests without TTL pay nothing for the feature.
//!
//! Measured with exact capacity accounting ([`InterestMap::heap_bytes`]) and cross-checked
//! with a counting global allocator (`tests/interest_memory.rs`): **1,000,000 viewers of one
//! state take about 62 bytes per viewer** (46 for the node records, 10.5 for the id table at
//! hashbrown's load factor, 5.2 for the state's dense vectors, vector growth slack included). The
//! original `elara-diffusion` 0.2.0 needs about 226.
//!
//! # Time
//!
//! Nothing here reads a clock. Expiries are absolute [`Time`]s computed from the `now` passed to
//! [`InterestMap::declare`]; queries take `now` and treat an expired interest as absent;
//! [`InterestMap::expire`] removes expired entries for good.
//!
//! # Bad input
//!
//! * The map has no separate membership: declaring for a node it has never seen is how a node
//!   enters it. Withdrawing an interest that does not exist, or removing a node the map does
//!   not know, changes nothing and reports [`InterestLevel::None`] / `0`.
//! * Declaring [`InterestLevel::None`] is a withdrawal.
//! * Declaring with an expiry at or before `now` (a TTL in the past or a zero TTL) is a
//!   withdrawal too: the interest would already have expired. The returned [`InterestChange`]
//!   says so (`current == None`).
//! * A node may hold interests in at most [`MAX_STATES_PER_NODE`] states; one more is refused with
//!   [`InterestError::TooManyStates`] and the map is left unchanged.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use elara_core::{InterestLevel, NodeId, StateId, Time};
use hashbrown::HashTable;

use crate::hash::{IdHashBuilder, IdKeys, hash_id};

/// The most states one node may declare interest in (the overflow count in a node record is
/// 8 bits wide, plus the inline slot).
pub const MAX_STATES_PER_NODE: usize = 256;

/// Node tables with fewer buckets than this grow eightfold, larger ones twofold (see
/// `InterestMap::grow_index`).
const EIGHTFOLD_BELOW: usize = 1 << 15;

/// The most distinct states one map can track (state slots are 24 bits wide).
pub const MAX_STATES: usize = 1 << 24;

const NO_STATE: u32 = 0x00FF_FFFF;
const SLOT_MASK: u32 = 0x00FF_FFFF;
const TTL_FLAG: u8 = 0x80;
const LEVEL_MASK: u8 = 0x07;

/// Why an interest could not be declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterestError {
    /// The node already holds [`MAX_STATES_PER_NODE`] interests.
    #[error("node {node} already holds {MAX_STATES_PER_NODE} interests")]
    TooManyStates {
        /// The node.
        node: NodeId,
    },
    /// The map already tracks [`MAX_STATES`] states.
    #[error("the map already tracks {MAX_STATES} states")]
    TooManyDistinctStates,
}

/// What a declaration changed: the level before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestChange {
    /// The node's level before the call (`None` when it had no live interest).
    pub previous: InterestLevel,
    /// The node's level after the call (`None` when the call withdrew the interest).
    pub current: InterestLevel,
}

impl InterestChange {
    /// True when the level changed.
    pub fn changed(&self) -> bool {
        self.previous != self.current
    }
}

/// One interned node: its id and where its first interest sits.
#[derive(Clone, Copy)]
struct NodeRecord {
    id: NodeId,
    /// Low 24 bits: state slot of the inline interest (`NO_STATE` when empty); high 8 bits:
    /// number of further interests held in `InterestMap::more`.
    first_state: u32,
    /// Position of the inline interest in its state's dense vectors.
    first_pos: u32,
    /// The id's hash as the node table uses it (see [`stored_hash`]): the table grows without
    /// re-hashing any id.
    hash: u32,
}

impl NodeRecord {
    fn inline_slot(&self) -> u32 {
        self.first_state & SLOT_MASK
    }
    fn extra(&self) -> u32 {
        self.first_state >> 24
    }
    fn set_inline(&mut self, slot: u32, pos: u32) {
        self.first_state = (self.first_state & !SLOT_MASK) | slot;
        self.first_pos = pos;
    }
    fn set_extra(&mut self, extra: u32) {
        self.first_state = (self.first_state & SLOT_MASK) | (extra << 24);
    }
    fn is_empty(&self) -> bool {
        self.inline_slot() == NO_STATE && self.extra() == 0
    }
}

/// The viewers of one state, as dense parallel vectors.
struct StateViewers {
    id: StateId,
    nodes: Vec<u32>,
    /// Level in the low 3 bits, [`TTL_FLAG`] when the entry has an expiry.
    levels: Vec<u8>,
    /// Entries per level (index = level as u8), TTL or not.
    counts: [u32; 5],
}

/// Who wants which state, at which [`InterestLevel`], until when.
///
/// See the [module documentation](self) for the layout and its measured memory cost.
///
/// ```
/// use elara_core::{InterestLevel, NodeId, StateId, Time};
/// use elara_diffusion::InterestMap;
/// use std::time::Duration;
///
/// let mut map = InterestMap::new();
/// let now = Time::from_secs(10);
/// let video = StateId(1);
/// map.declare(now, NodeId::from_u64(7), video, InterestLevel::High, None).unwrap();
/// map.declare(now, NodeId::from_u64(8), video, InterestLevel::Low, Some(Duration::from_secs(5)))
///     .unwrap();
/// assert_eq!(map.interested(video, now).count(), 2);
/// // Five seconds later the TTL has run out.
/// let later = now + Duration::from_secs(5);
/// assert_eq!(map.level(NodeId::from_u64(8), video, later), InterestLevel::None);
/// assert_eq!(map.expire(later), 1);
/// assert_eq!(map.len(), 1);
/// ```
pub struct InterestMap {
    /// The node-id hash's keys, from the seed.
    keys: IdKeys,
    index: HashTable<u32>,
    records: Vec<NodeRecord>,
    free_records: Vec<u32>,
    states: Vec<StateViewers>,
    state_slots: HashMap<StateId, u32, IdHashBuilder>,
    /// Positions of interests beyond a node's first: (node index, state slot) -> position.
    more: HashMap<(u32, u32), u32, IdHashBuilder>,
    /// Expiry of every entry that has one.
    expiries: HashMap<(u32, u32), Time, IdHashBuilder>,
    /// Expiries in time order, for [`InterestMap::expire`]; stale items are skipped.
    deadlines: BinaryHeap<Reverse<(Time, u32, u32)>>,
    /// The state of the last declaration, to skip the state lookup in bulk declarations.
    last_state: Option<(StateId, u32)>,
    live: usize,
}

impl Default for InterestMap {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InterestMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterestMap")
            .field("entries", &self.live)
            .field("nodes", &self.index.len())
            .field("states", &self.state_slots.len())
            .finish()
    }
}

impl InterestMap {
    /// An empty map with hash seed 0.
    pub fn new() -> Self {
        Self::with_hash_seed(0)
    }

    /// An empty map whose node-id hashing uses `seed`. A deployment passes a random seed from its
    /// configuration so that nobody can grind node ids that collide in this node's tables;
    /// the seed changes no observable result, only the table layout.
    pub fn with_hash_seed(seed: u64) -> Self {
        let hasher = IdHashBuilder::new(seed);
        InterestMap {
            keys: IdKeys::new(seed),
            index: HashTable::new(),
            records: Vec::new(),
            free_records: Vec::new(),
            states: Vec::new(),
            state_slots: HashMap::with_hasher(hasher),
            more: HashMap::with_hasher(hasher),
            expiries: HashMap::with_hasher(hasher),
            deadlines: BinaryHeap::new(),
            last_state: None,
            live: 0,
        }
    }

    /// Reserves room for `nodes` more interned nodes.
    pub fn reserve_nodes(&mut self, nodes: usize) {
        self.records.reserve(nodes);
        let records = &self.records;
        self.index
            .reserve(nodes, |&i| table_hash(records[i as usize].hash));
    }

    /// Number of live entries (node, state) — expired-but-not-yet-swept entries included.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The states that have ever had an entry in this map (some may have none left).
    pub fn states(&self) -> impl Iterator<Item = StateId> + '_ {
        self.states.iter().map(|s| s.id)
    }

    /// Number of distinct nodes holding at least one entry.
    pub fn node_count(&self) -> usize {
        self.index.len()
    }

    fn find_node(&self, node: &NodeId) -> Option<u32> {
        let h = table_hash(stored_hash(&self.keys, node));
        let records = &self.records;
        self.index
            .find(h, |&i| records[i as usize].id == *node)
            .copied()
    }

    /// The record index of `node`, interning it if new; `true` when it was new. A new node's
    /// first interest — in state `slot`, raw level byte `raw` — is appended to the state's
    /// vectors and recorded inline here, so the common case (a new viewer) costs one hash
    /// probe and three pushes.
    #[inline(always)]
    fn intern_with_entry(&mut self, node: &NodeId, slot: u32, raw: u8) -> (u32, bool) {
        if self.index.len() == self.index.capacity() {
            self.grow_index();
        }
        let h = stored_hash(&self.keys, node);
        let records = &mut self.records;
        let entry = self.index.entry(
            table_hash(h),
            |&i| records[i as usize].id == *node,
            |&i| table_hash(records[i as usize].hash),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => (*o.get(), false),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let sv = &mut self.states[slot as usize];
                let pos = sv.nodes.len() as u32;
                let rec = || NodeRecord {
                    id: *node,
                    first_state: slot,
                    first_pos: pos,
                    hash: h,
                };
                let idx = match self.free_records.pop() {
                    None => {
                        records.push(rec());
                        (records.len() - 1) as u32
                    }
                    Some(i) => reuse_record(records, i, rec()),
                };
                v.insert(idx);
                sv.nodes.push(idx);
                sv.levels.push(raw);
                sv.counts[(raw & LEVEL_MASK) as usize] += 1;
                self.live += 1;
                (idx, true)
            }
        }
    }

    /// Replaces the full node table by a larger one, filled from the hashes stored in the
    /// records: no id is re-hashed. When no record is free (a map that only grew), every
    /// record is live and they are read in order; otherwise the old table lists the live ones.
    ///
    /// Below [`EIGHTFOLD_BELOW`] buckets the table grows eightfold (to 640 kB at most; from
    /// empty to 100,000 nodes it rebuilds 16,383 entries instead of 76,457 with fourfold
    /// growth below 65,536 buckets, or 114,684 with twofold), above it twofold, the
    /// size hashbrown's own growth would pick, so a large map's table is never more than
    /// twice what its nodes need.
    #[cold]
    fn grow_index(&mut self) {
        let records = &self.records;
        let rehash = |&j: &u32| table_hash(records[j as usize].hash);
        let cap = self.index.capacity();
        // hashbrown keeps 7/8 of its buckets usable (3 of 4 in the smallest table).
        let buckets = (cap * 8 / 7).next_power_of_two();
        let want = if buckets < EIGHTFOLD_BELOW {
            cap * 8
        } else {
            self.index.len() + 1
        };
        let mut table = HashTable::with_capacity(want.max(self.index.len() + 1));
        if self.free_records.is_empty() {
            for (i, rec) in records.iter().enumerate() {
                table.insert_unique(table_hash(rec.hash), i as u32, rehash);
            }
        } else {
            for &i in &self.index {
                table.insert_unique(rehash(&i), i, rehash);
            }
        }
        debug_assert_eq!(table.len(), self.index.len());
        self.index = table;
    }

    fn release_node_if_empty(&mut self, idx: u32) {
        let rec = self.records[idx as usize];
        if !rec.is_empty() {
            return;
        }
        let h = table_hash(rec.hash);
        if let Ok(e) = self.index.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        self.free_records.push(idx);
    }

    fn state_slot(&self, state: StateId) -> Option<u32> {
        match self.last_state {
            Some((id, s)) if id == state => Some(s),
            _ => self.state_slots.get(&state).copied(),
        }
    }

    #[inline(always)]
    fn state_slot_or_insert(&mut self, state: StateId) -> Result<u32, InterestError> {
        match self.last_state {
            Some((id, s)) if id == state => Ok(s),
            _ => self.state_slot_lookup_or_insert(state),
        }
    }

    #[inline(never)]
    fn state_slot_lookup_or_insert(&mut self, state: StateId) -> Result<u32, InterestError> {
        if let Some(s) = self.state_slot(state) {
            self.last_state = Some((state, s));
            return Ok(s);
        }
        if self.states.len() >= MAX_STATES {
            return Err(InterestError::TooManyDistinctStates);
        }
        let slot = self.states.len() as u32;
        self.states.push(StateViewers {
            id: state,
            nodes: Vec::new(),
            levels: Vec::new(),
            counts: [0; 5],
        });
        self.state_slots.insert(state, slot);
        self.last_state = Some((state, slot));
        Ok(slot)
    }

    /// Position of (node, slot) in the state's vectors.
    fn position(&self, idx: u32, slot: u32) -> Option<u32> {
        let rec = &self.records[idx as usize];
        if rec.inline_slot() == slot {
            return Some(rec.first_pos);
        }
        if rec.extra() == 0 {
            return None;
        }
        self.more.get(&(idx, slot)).copied()
    }

    fn set_position(&mut self, idx: u32, slot: u32, pos: u32) {
        let rec = &mut self.records[idx as usize];
        if rec.inline_slot() == slot {
            rec.first_pos = pos;
        } else if let Some(p) = self.more.get_mut(&(idx, slot)) {
            *p = pos;
        }
    }

    fn is_expired(&self, idx: u32, slot: u32, raw_level: u8, now: Time) -> bool {
        raw_level & TTL_FLAG != 0 && self.expiries.get(&(idx, slot)).is_some_and(|&t| t <= now)
    }

    /// Declares, changes or (with [`InterestLevel::None`]) withdraws `node`'s interest in `state`.
    ///
    /// `ttl`: `None` for an interest that lasts until withdrawn; `Some(d)` for one that expires
    /// at `now + d` (a zero TTL is a withdrawal, see the module's "Bad input"). Re-declaring
    /// replaces both the level and the expiry.
    #[inline]
    pub fn declare(
        &mut self,
        now: Time,
        node: NodeId,
        state: StateId,
        level: InterestLevel,
        ttl: Option<Duration>,
    ) -> Result<InterestChange, InterestError> {
        self.declare_until(now, node, state, level, ttl.map(|d| now + d))
    }

    /// Like [`InterestMap::declare`] with an absolute expiry: `expires_at` at or before `now`
    /// withdraws the interest (it would already have expired).
    #[inline]
    pub fn declare_until(
        &mut self,
        now: Time,
        node: NodeId,
        state: StateId,
        level: InterestLevel,
        expires_at: Option<Time>,
    ) -> Result<InterestChange, InterestError> {
        let withdraw = !level.is_interested() || expires_at.is_some_and(|t| t <= now);
        if withdraw {
            return Ok(self.withdraw_change(now, node, state));
        }
        let slot = self.state_slot_or_insert(state)?;
        let ttl_bit = if expires_at.is_some() { TTL_FLAG } else { 0 };
        let raw = level.as_u8() | ttl_bit;
        let (idx, new) = self.intern_with_entry(&node, slot, raw);
        if new && expires_at.is_none() {
            // The common case (a new viewer, no expiry): `intern_with_entry` placed the entry.
            return Ok(InterestChange {
                previous: InterestLevel::None,
                current: level,
            });
        }
        self.declare_rest(now, node, idx, new, slot, raw, level, expires_at)
    }

    /// [`InterestMap::declare_until`] for a withdrawal.
    #[cold]
    #[inline(never)]
    fn withdraw_change(&mut self, now: Time, node: NodeId, state: StateId) -> InterestChange {
        let previous = self.level(node, state, now);
        self.withdraw(node, state);
        InterestChange {
            previous,
            current: InterestLevel::None,
        }
    }

    /// The rest of [`InterestMap::declare_until`] once the node is interned as `idx` (`new`:
    /// just now, with its entry placed): a known node's new or changed entry, and the expiry.
    /// Out of line, so that the common case (a new viewer without expiry) stays small.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn declare_rest(
        &mut self,
        now: Time,
        node: NodeId,
        idx: u32,
        new: bool,
        slot: u32,
        raw: u8,
        level: InterestLevel,
        expires_at: Option<Time>,
    ) -> Result<InterestChange, InterestError> {
        let previous;
        let pos = if new { None } else { self.position(idx, slot) };
        match pos {
            // A new node: `intern_with_entry` already placed its entry.
            None if new => previous = InterestLevel::None,
            Some(pos) => {
                let old_raw = self.states[slot as usize].levels[pos as usize];
                previous = if self.is_expired(idx, slot, old_raw, now) {
                    InterestLevel::None
                } else {
                    level_of(old_raw)
                };
                let sv = &mut self.states[slot as usize];
                sv.counts[(old_raw & LEVEL_MASK) as usize] -= 1;
                sv.counts[level.as_u8() as usize] += 1;
                sv.levels[pos as usize] = raw;
            }
            None => {
                let rec = self.records[idx as usize];
                let has_inline = rec.inline_slot() != NO_STATE;
                if has_inline && rec.extra() as usize + 1 >= MAX_STATES_PER_NODE {
                    self.release_node_if_empty(idx);
                    return Err(InterestError::TooManyStates { node });
                }
                previous = InterestLevel::None;
                let sv = &mut self.states[slot as usize];
                let pos = sv.nodes.len() as u32;
                sv.nodes.push(idx);
                sv.levels.push(raw);
                sv.counts[level.as_u8() as usize] += 1;
                let rec = &mut self.records[idx as usize];
                if has_inline {
                    rec.set_extra(rec.extra() + 1);
                    self.more.insert((idx, slot), pos);
                } else {
                    rec.set_inline(slot, pos);
                }
                self.live += 1;
            }
        }
        match expires_at {
            Some(t) => {
                self.expiries.insert((idx, slot), t);
                self.deadlines.push(Reverse((t, idx, slot)));
            }
            None => {
                // A new node's entry cannot have an expiry (removing an entry removes it).
                if !new && !self.expiries.is_empty() {
                    self.expiries.remove(&(idx, slot));
                }
            }
        }
        Ok(InterestChange {
            previous,
            current: level,
        })
    }

    /// Withdraws `node`'s interest in `state`; returns the level it had (`None` if there was
    /// none, or it had expired: an absent entry is not an error).
    pub fn withdraw(&mut self, node: NodeId, state: StateId) -> InterestLevel {
        let (Some(idx), Some(slot)) = (self.find_node(&node), self.state_slot(state)) else {
            return InterestLevel::None;
        };
        match self.remove_entry(idx, slot) {
            Some(raw) => level_of(raw),
            None => InterestLevel::None,
        }
    }

    /// Removes the entry (idx, slot); returns its raw level byte.
    fn remove_entry(&mut self, idx: u32, slot: u32) -> Option<u8> {
        let pos = self.position(idx, slot)?;
        let sv = &mut self.states[slot as usize];
        let last = sv.nodes.len() as u32 - 1;
        let raw = sv.levels[pos as usize];
        sv.counts[(raw & LEVEL_MASK) as usize] -= 1;
        sv.nodes.swap_remove(pos as usize);
        sv.levels.swap_remove(pos as usize);
        let moved = if pos != last {
            Some(sv.nodes[pos as usize])
        } else {
            None
        };
        // Forget where (idx, slot) was.
        let rec = &mut self.records[idx as usize];
        if rec.inline_slot() == slot {
            rec.set_inline(NO_STATE, 0);
            // Promote one further interest into the inline slot, so an empty inline slot
            // always means "no interests at all".
            if rec.extra() > 0 {
                let promoted = self
                    .states
                    .iter()
                    .enumerate()
                    .find_map(|(s, _)| {
                        let s = s as u32;
                        self.more.get(&(idx, s)).map(|&p| (s, p))
                    })
                    .expect("extra > 0 means a further interest exists in `more`");
                self.more.remove(&(idx, promoted.0));
                let rec = &mut self.records[idx as usize];
                rec.set_inline(promoted.0, promoted.1);
                rec.set_extra(rec.extra() - 1);
            }
        } else {
            self.more.remove(&(idx, slot));
            rec.set_extra(rec.extra() - 1);
        }
        if let Some(m) = moved {
            self.set_position(m, slot, pos);
        }
        if raw & TTL_FLAG != 0 {
            self.expiries.remove(&(idx, slot));
        }
        self.live -= 1;
        self.release_node_if_empty(idx);
        Some(raw)
    }

    /// Removes every interest of `node` (it left); returns how many there were (0 for a node the
    /// map does not know).
    pub fn remove_node(&mut self, node: NodeId) -> usize {
        let Some(idx) = self.find_node(&node) else {
            return 0;
        };
        let mut removed = 0;
        loop {
            let rec = self.records[idx as usize];
            let slot = rec.inline_slot();
            if slot == NO_STATE || rec.id != node {
                break;
            }
            self.remove_entry(idx, slot);
            removed += 1;
        }
        removed
    }

    /// `node`'s live interest in `state` at `now` (`None` if absent or expired).
    pub fn level(&self, node: NodeId, state: StateId, now: Time) -> InterestLevel {
        let (Some(idx), Some(slot)) = (self.find_node(&node), self.state_slot(state)) else {
            return InterestLevel::None;
        };
        match self.position(idx, slot) {
            Some(pos) => {
                let raw = self.states[slot as usize].levels[pos as usize];
                if self.is_expired(idx, slot, raw, now) {
                    InterestLevel::None
                } else {
                    level_of(raw)
                }
            }
            None => InterestLevel::None,
        }
    }

    /// The live interests in `state` at `now`, in no particular order. Allocates nothing.
    pub fn interested(&self, state: StateId, now: Time) -> Interested<'_> {
        let sv = self.state_slot(state).map(|s| &self.states[s as usize]);
        Interested {
            map: self,
            slot: self.state_slot(state).unwrap_or(0),
            nodes: sv.map_or(&[][..], |s| &s.nodes[..]),
            levels: sv.map_or(&[][..], |s| &s.levels[..]),
            pos: 0,
            now,
        }
    }

    /// Number of entries for `state` at each level (index = `InterestLevel as usize`), expired
    /// but unswept entries included. O(1).
    pub fn level_counts(&self, state: StateId) -> [u32; 5] {
        self.state_slot(state)
            .map_or([0; 5], |s| self.states[s as usize].counts)
    }

    /// Number of entries for `state`, expired but unswept entries included. O(1).
    pub fn count(&self, state: StateId) -> usize {
        self.state_slot(state)
            .map_or(0, |s| self.states[s as usize].nodes.len())
    }

    /// The strongest live interest anyone holds in `state` at `now`.
    pub fn strongest(&self, state: StateId, now: Time) -> InterestLevel {
        let counts = self.level_counts(state);
        if self.expiries.is_empty() {
            return (1..5)
                .rev()
                .find(|&l| counts[l] > 0)
                .and_then(|l| InterestLevel::from_u8(l as u8))
                .unwrap_or(InterestLevel::None);
        }
        self.interested(state, now)
            .map(|(_, l)| l)
            .max()
            .unwrap_or(InterestLevel::None)
    }

    /// Removes every entry whose expiry is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut removed = 0;
        while let Some(&Reverse((t, idx, slot))) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            // Skip heap items made stale by a re-declaration or a withdrawal.
            if self.expiries.get(&(idx, slot)) == Some(&t) && self.remove_entry(idx, slot).is_some()
            {
                removed += 1;
            }
        }
        removed
    }

    /// The earliest expiry among live entries with a TTL (a driver's timer), if any. May report
    /// a deadline already superseded by a re-declaration; calling [`InterestMap::expire`] then is
    /// harmless.
    pub fn next_expiry(&self) -> Option<Time> {
        self.deadlines.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Exact heap bytes held by the map: the capacity of every vector and table it owns
    /// (hash tables at their real allocation size). Divided by [`InterestMap::len`] this is the
    /// per-entry memory figure quoted in the module documentation.
    pub fn heap_bytes(&self) -> usize {
        let vec = |cap: usize, size: usize| cap * size;
        let mut total = self.index.allocation_size()
            + vec(self.records.capacity(), size_of::<NodeRecord>())
            + vec(self.free_records.capacity(), 4)
            + vec(self.states.capacity(), size_of::<StateViewers>())
            + hashmap_bytes(self.state_slots.capacity(), size_of::<(StateId, u32)>())
            + hashmap_bytes(self.more.capacity(), size_of::<((u32, u32), u32)>())
            + hashmap_bytes(self.expiries.capacity(), size_of::<((u32, u32), Time)>())
            + vec(
                self.deadlines.capacity(),
                size_of::<Reverse<(Time, u32, u32)>>(),
            );
        for s in &self.states {
            total += vec(s.nodes.capacity(), 4) + s.levels.capacity();
        }
        total
    }
}

/// Heap bytes of a std `HashMap` with `capacity` (hashbrown layout: buckets a power of two with
/// load factor 7/8, one control byte per bucket plus a trailing group of 16).
fn hashmap_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        if capacity < 4 { 4 } else { 8 }
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    let data = (buckets * entry).next_multiple_of(16);
    data + buckets + 16
}

/// Stores `rec` in the free record slot `i` and returns `i`. Out of line: a map filling from
/// empty never reuses a record, and building the record in place in the caller's push saves
/// a copy of it.
#[cold]
#[inline(never)]
fn reuse_record(records: &mut [NodeRecord], i: u32, rec: NodeRecord) -> u32 {
    records[i as usize] = rec;
    i
}

/// The 32 bits of a node id's seeded hash ([`hash_id`]) that the map keeps per record.
#[inline(always)]
fn stored_hash(keys: &IdKeys, id: &NodeId) -> u32 {
    hash_id(keys, id) as u32
}

/// The node table's hash for a stored hash: the 32 bits in both halves, so that the table's
/// bucket (low bits) and its 7-bit tag (top bits) both come from them. The two are independent
/// up to 2^25 buckets (33 million nodes); past that they share bits, which only costs a few
/// more id comparisons per lookup.
#[inline(always)]
fn table_hash(h: u32) -> u64 {
    u64::from(h) * 0x1_0000_0001
}

fn level_of(raw: u8) -> InterestLevel {
    InterestLevel::from_u8(raw & LEVEL_MASK).unwrap_or(InterestLevel::None)
}

/// Iterator over a state's live interests, from [`InterestMap::interested`]. Allocates nothing.
pub struct Interested<'a> {
    map: &'a InterestMap,
    slot: u32,
    nodes: &'a [u32],
    levels: &'a [u8],
    pos: usize,
    now: Time,
}

impl Iterator for Interested<'_> {
    type Item = (NodeId, InterestLevel);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.nodes.len() {
            let i = self.pos;
            self.pos += 1;
            let idx = self.nodes[i];
            let raw = self.levels[i];
            if self.map.is_expired(idx, self.slot, raw, self.now) {
                continue;
            }
            return Some((self.map.records[idx as usize].id, level_of(raw)));
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.nodes.len() - self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InterestLevel::{Critical, High, Low, Medium};
    const NONE_L: InterestLevel = InterestLevel::None;

    fn n(i: u64) -> NodeId {
        NodeId::from_u64(i)
    }
    const S: StateId = StateId(1);
    const T: StateId = StateId(2);
    const NOW: Time = Time::from_secs(100);

    #[test]
    fn declare_change_withdraw() {
        let mut m = InterestMap::new();
        let c = m.declare(NOW, n(1), S, High, None).unwrap();
        assert_eq!((c.previous, c.current), (NONE_L, High));
        let c = m.declare(NOW, n(1), S, Low, None).unwrap();
        assert_eq!((c.previous, c.current), (High, Low));
        assert!(c.changed());
        assert_eq!(m.level(n(1), S, NOW), Low);
        assert_eq!(m.len(), 1);
        assert_eq!(m.withdraw(n(1), S), Low);
        assert_eq!(m.level(n(1), S, NOW), NONE_L);
        assert!(m.is_empty());
        assert_eq!(m.node_count(), 0);
    }

    #[test]
    fn declaring_none_withdraws() {
        let mut m = InterestMap::new();
        m.declare(NOW, n(1), S, Medium, None).unwrap();
        let c = m.declare(NOW, n(1), S, NONE_L, None).unwrap();
        assert_eq!((c.previous, c.current), (Medium, NONE_L));
        assert!(m.is_empty());
    }

    #[test]
    fn absent_entries_are_not_errors() {
        let mut m = InterestMap::new();
        assert_eq!(m.withdraw(n(9), S), NONE_L);
        assert_eq!(m.remove_node(n(9)), 0);
        assert_eq!(m.level(n(9), S, NOW), NONE_L);
        assert_eq!(m.interested(S, NOW).count(), 0);
        m.declare(NOW, n(1), S, Low, None).unwrap();
        assert_eq!(m.withdraw(n(1), T), NONE_L);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn ttl_in_the_past_or_zero_is_a_withdrawal() {
        let mut m = InterestMap::new();
        m.declare(NOW, n(1), S, High, None).unwrap();
        let c = m
            .declare_until(NOW, n(1), S, Medium, Some(Time::from_secs(50)))
            .unwrap();
        assert_eq!((c.previous, c.current), (High, NONE_L));
        assert_eq!(m.level(n(1), S, NOW), NONE_L);
        let c = m.declare(NOW, n(2), S, High, Some(Duration::ZERO)).unwrap();
        assert_eq!(c.current, NONE_L);
        assert!(m.is_empty());
    }

    #[test]
    fn ttl_expires_by_now_passed_in() {
        let mut m = InterestMap::new();
        let ttl = Some(Duration::from_secs(10));
        m.declare(NOW, n(1), S, High, ttl).unwrap();
        m.declare(NOW, n(2), S, Low, None).unwrap();
        let before = NOW + Duration::from_secs(9);
        let at = NOW + Duration::from_secs(10);
        assert_eq!(m.level(n(1), S, before), High);
        assert_eq!(m.level(n(1), S, at), NONE_L);
        assert_eq!(m.interested(S, at).count(), 1);
        assert_eq!(m.strongest(S, before), High);
        assert_eq!(m.strongest(S, at), Low);
        assert_eq!(m.next_expiry(), Some(at));
        assert_eq!(m.expire(before), 0);
        assert_eq!(m.expire(at), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.next_expiry(), None);
    }

    #[test]
    fn redeclaring_replaces_the_expiry() {
        let mut m = InterestMap::new();
        m.declare(NOW, n(1), S, High, Some(Duration::from_secs(1)))
            .unwrap();
        m.declare(NOW, n(1), S, High, None).unwrap();
        let later = NOW + Duration::from_secs(60);
        assert_eq!(m.expire(later), 0);
        assert_eq!(m.level(n(1), S, later), High);
    }

    #[test]
    fn many_states_per_node_and_remove_node() {
        let mut m = InterestMap::new();
        for s in 0..10 {
            m.declare(NOW, n(1), StateId(s), Medium, None).unwrap();
            m.declare(NOW, n(2), StateId(s), Low, None).unwrap();
        }
        // Withdraw the inline one first: a further interest is promoted.
        assert_eq!(m.withdraw(n(1), StateId(0)), Medium);
        for s in 1..10 {
            assert_eq!(m.level(n(1), StateId(s), NOW), Medium);
        }
        assert_eq!(m.remove_node(n(1)), 9);
        assert_eq!(m.len(), 10);
        for s in 0..10 {
            assert_eq!(m.level(n(2), StateId(s), NOW), Low);
            assert_eq!(m.count(StateId(s)), 1);
        }
    }

    #[test]
    fn too_many_states_is_refused_and_changes_nothing() {
        let mut m = InterestMap::new();
        for s in 0..MAX_STATES_PER_NODE as u64 {
            m.declare(NOW, n(1), StateId(s), Low, None).unwrap();
        }
        let err = m
            .declare(NOW, n(1), StateId(100_000), Low, None)
            .unwrap_err();
        assert_eq!(err, InterestError::TooManyStates { node: n(1) });
        assert_eq!(m.len(), MAX_STATES_PER_NODE);
        assert_eq!(m.remove_node(n(1)), MAX_STATES_PER_NODE);
    }

    #[test]
    fn level_counts_track_changes() {
        let mut m = InterestMap::new();
        for i in 0..10 {
            m.declare(NOW, n(i), S, if i < 3 { High } else { Low }, None)
                .unwrap();
        }
        assert_eq!(m.level_counts(S), [0, 7, 0, 3, 0]);
        m.withdraw(n(0), S);
        m.declare(NOW, n(5), S, Critical, None).unwrap();
        assert_eq!(m.level_counts(S), [0, 6, 0, 2, 1]);
        assert_eq!(m.strongest(S, NOW), Critical);
    }

    #[test]
    fn the_node_table_grows_from_stored_hashes_with_and_without_free_records() {
        let mut m = InterestMap::with_hash_seed(3);
        for i in 0..100 {
            m.declare(NOW, n(i), S, Low, None).unwrap();
        }
        // Free records in the middle: the next growths rebuild from the old table.
        for i in (0..100).step_by(2) {
            assert_eq!(m.remove_node(n(i)), 1);
        }
        for i in 100..400 {
            m.declare(NOW, n(i), S, High, None).unwrap();
        }
        assert_eq!(m.node_count(), 350);
        for i in 0..400 {
            let want = if i >= 100 {
                High
            } else if i % 2 == 1 {
                Low
            } else {
                NONE_L
            };
            assert_eq!(m.level(n(i), S, NOW), want, "node {i}");
        }
    }

    #[test]
    fn heap_bytes_are_accounted() {
        // A size where vector doubling leaves no slack; `tests/interest_memory.rs` measures
        // the million-viewer case with a counting allocator.
        let mut m = InterestMap::new();
        for i in 0..8192 {
            m.declare(NOW, n(i), S, Medium, None).unwrap();
        }
        let per = m.heap_bytes() as f64 / m.len() as f64;
        assert!(per < 64.0, "{per} bytes per viewer");
        assert!(per > 40.0, "{per} bytes per viewer is too good to be true");
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Declare(u64, u64, u8, Option<u64>),
            Withdraw(u64, u64),
            Remove(u64),
            Advance(u64),
            Expire,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..12u64, 0..4u64, 0..5u8, proptest::option::of(0..5u64))
                    .prop_map(|(a, b, c, d)| Op::Declare(a, b, c, d)),
                2 => (0..12u64, 0..4u64).prop_map(|(a, b)| Op::Withdraw(a, b)),
                1 => (0..12u64).prop_map(Op::Remove),
                1 => (0..3u64).prop_map(Op::Advance),
                1 => Just(Op::Expire),
            ]
        }

        proptest! {
            /// The map answers like a plain BTreeMap model under any sequence of operations.
            #[test]
            fn matches_a_simple_model(ops in proptest::collection::vec(op(), 1..120)) {
                let mut m = InterestMap::new();
                let mut model: BTreeMap<(u64, u64), (InterestLevel, Option<Time>)> = BTreeMap::new();
                let mut now = Time::from_secs(1);
                for op in ops {
                    match op {
                        Op::Declare(a, s, l, ttl) => {
                            let level = InterestLevel::from_u8(l).unwrap();
                            let exp = ttl.map(|t| now + Duration::from_secs(t));
                            let change = m.declare_until(now, n(a), StateId(s), level, exp).unwrap();
                            // What the call reports: the live level before (the inline path for
                            // a new viewer and the general one alike), and the level after.
                            let before = model
                                .get(&(a, s))
                                .filter(|v| v.1.is_none_or(|e| e > now))
                                .map_or(InterestLevel::None, |v| v.0);
                            prop_assert_eq!(change.previous, before);
                            let live = level.is_interested() && exp.is_none_or(|e| e > now);
                            prop_assert_eq!(
                                change.current,
                                if live { level } else { InterestLevel::None }
                            );
                            if level.is_interested() && exp.is_none_or(|e| e > now) {
                                model.insert((a, s), (level, exp));
                            } else {
                                model.remove(&(a, s));
                            }
                        }
                        Op::Withdraw(a, s) => {
                            m.withdraw(n(a), StateId(s));
                            model.remove(&(a, s));
                        }
                        Op::Remove(a) => {
                            let had = model.keys().filter(|k| k.0 == a).count();
                            prop_assert_eq!(m.remove_node(n(a)), had);
                            model.retain(|k, _| k.0 != a);
                        }
                        Op::Advance(d) => now += Duration::from_secs(d),
                        Op::Expire => {
                            m.expire(now);
                            model.retain(|_, v| v.1.is_none_or(|e| e > now));
                        }
                    }
                    for a in 0..12 {
                        for s in 0..4 {
                            let want = model
                                .get(&(a, s))
                                .filter(|v| v.1.is_none_or(|e| e > now))
                                .map_or(InterestLevel::None, |v| v.0);
                            prop_assert_eq!(m.level(n(a), StateId(s), now), want);
                        }
                    }
                    for s in 0..4 {
                        let mut got: Vec<_> = m.interested(StateId(s), now).collect();
                        got.sort();
                        let want: Vec<_> = model
                            .iter()
                            .filter(|(k, v)| k.1 == s && v.1.is_none_or(|e| e > now))
                            .map(|(k, v)| (n(k.0), v.0))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
