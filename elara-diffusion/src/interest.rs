//! Who wants which state, and how much: the [`InterestMap`].
//!
//! # Layout and memory
//!
//! The map is built for the livestream case — one state, a million viewers — where the per-viewer
//! cost is what matters:
//!
//! * every node that holds at least one interest is interned once: its 32-byte [`NodeId`] lives
//!   in a dense `Vec` of records (44 bytes: the id, the position of its first interest and 32
//!   bits of the id's hash), and an open-addressing table of `u32` slots maps an id to its
//!   record index: each slot holds the index (25 bits) and a 7-bit tag from the id's hash, so a
//!   probe reads another node's record only when the tags match (about one occupied slot in
//!   128). The table uses linear probing, is kept at most half full and removes by backward
//!   shift (no tombstones). When it grows it is rebuilt from the hashes stored in the records,
//!   read in order: no id is hashed twice. It grows eightfold while it has at most 32,768
//!   slots (128 kB; 1 MiB after the step) and twofold above, so a large map's table takes 8 to
//!   16 bytes per node. A map holds at most [`MAX_NODES`] (2^25 − 1) nodes at a time;
//! * the id hash is seeded ([`InterestMap::with_hash_seed`]) and covers all 32 bytes of the id.
//!   Ids are derived from public keys, so their bytes are already uniform, but a relay's map
//!   also holds ids it only heard of from others; with a seed nobody else knows, nobody can
//!   choose ids that pile up in one bucket of this node's table (which a hash of a fixed
//!   prefix word, or an unseeded one, would allow). The seed gives four keys, one per id word,
//!   and each multiply of the hash takes two keyed words, so no id word can zero a product.
//!   Linear probing degrades faster than hashbrown's grouped probing when hashes cluster,
//!   which is one more reason the hash stays keyed over the whole id;
//! * declaring a new viewer without expiry for the state of the previous declaration — a
//!   stream going live — is a small inline path (the state check, one compare that the table
//!   has room and no record is free, the hash, one probe that interns the node, two pushes);
//!   everything else (a known node, an expiry, a withdrawal, a new state, growth, reusing a
//!   free record) is out of line. About 111 instructions per entry when 100,000 viewers join
//!   from an empty map, growth of the tables and the benchmark's own loop included, 106 after
//!   [`InterestMap::reserve_nodes`] (`benches/RESULTS.md`; the original's `register` takes
//!   about 1,555);
//! * each state keeps its viewers as one dense vector of `u32`, the node's record index and
//!   its level (with the TTL flag) packed in the top four bits, so iterating a state's viewers
//!   is a slice walk that allocates nothing;
//! * the position of a node's first interest is stored inline in its record; a node's further
//!   interests (a viewer of audio *and* video) sit in a secondary hash table keyed by
//!   (node, state), so every lookup is O(1). (Withdrawing a node's *first* interest while it
//!   holds others promotes one of them into the inline slot, which scans the map's states:
//!   O(S) in the number of distinct states, a handful in practice.)
//! * an interest with a TTL stores its expiry in a side table and a flag bit in its entry,
//!   so interests without TTL pay nothing for the feature.
//!
//! Measured with exact capacity accounting ([`InterestMap::heap_bytes`]) and cross-checked
//! with a counting global allocator (`tests/interest_memory.rs`): **1,000,000 viewers of one
//! state take about 58.7 bytes per viewer** (46.1 for the node records, 8.4 for the node
//! table's 2^21 slots, 4.2 for the state's dense vector, vector growth slack included). The
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
//! * A map holds at most [`MAX_NODES`] nodes at a time; a declaration for one more new node is
//!   refused with [`InterestError::TooManyNodes`] and the map is left unchanged (known nodes
//!   may still declare).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use elara_core::{InterestLevel, NodeId, StateId, Time};

use crate::hash::{IdHashBuilder, IdKeys, hash_id};

/// The most states one node may declare interest in (the overflow count in a node record is
/// 8 bits wide, plus the inline slot).
pub const MAX_STATES_PER_NODE: usize = 256;

/// Node tables with fewer buckets than this grow eightfold, larger ones twofold (see
/// `InterestMap::intern_slow`).
const EIGHTFOLD_BELOW: usize = 1 << 16;

/// The most distinct nodes one map holds at a time (a node-table slot keeps a record index
/// plus one in 25 bits).
pub const MAX_NODES: usize = (1 << 25) - 1;

/// A node-table slot: 0 when empty, else the record index plus one in the low 25 bits and the
/// top 7 bits of the id's stored hash (a tag that rules out most other ids without reading
/// their record) in the high ones.
const SLOT_INDEX_MASK: u32 = (1 << 25) - 1;
const SLOT_TAG_MASK: u32 = !SLOT_INDEX_MASK;

/// The most distinct states one map can track (state slots are 24 bits wide).
pub const MAX_STATES: usize = 1 << 24;

const NO_STATE: u32 = 0x00FF_FFFF;
const SLOT_MASK: u32 = 0x00FF_FFFF;
const TTL_FLAG: u8 = 0x08;
const LEVEL_MASK: u8 = 0x07;
/// A state's entry is one `u32`: the node's record index in the low bits, the raw level nibble
/// (level, [`TTL_FLAG`]) in the top four.
const RAW_SHIFT: u32 = 28;
const ENTRY_NODE_MASK: u32 = (1 << RAW_SHIFT) - 1;

/// One entry of a state's vector: record index `idx` at raw level nibble `raw`.
#[inline(always)]
fn pack_entry(idx: u32, raw: u8) -> u32 {
    idx | (u32::from(raw) << RAW_SHIFT)
}

/// The record index of a state's entry.
#[inline(always)]
fn entry_node(e: u32) -> u32 {
    e & ENTRY_NODE_MASK
}

/// The raw level nibble of a state's entry.
#[inline(always)]
fn entry_raw(e: u32) -> u8 {
    (e >> RAW_SHIFT) as u8
}

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
    /// The map already holds [`MAX_NODES`] nodes and this one is new.
    #[error("the map already holds {MAX_NODES} nodes")]
    TooManyNodes,
}

/// The node table: open addressing with linear probing over `u32` slots (see the slot layout
/// at [`SLOT_INDEX_MASK`]), at most half full, so that a new id's probe usually ends at its
/// first or second slot. The probe starts at the low bits of the id's stored hash.
struct NodeTable {
    /// A power of two in length, or empty.
    slots: Vec<u32>,
    /// The table grows when the node count reaches this: half its slots, at most
    /// `max_nodes`.
    limit: usize,
    /// `limit` while no record is free, else 0: the inline path of
    /// [`InterestMap::intern_with_entry`] may add a node while `records.len()` is below it.
    fast_limit: usize,
    /// [`MAX_NODES`], lower in tests.
    max_nodes: usize,
}

/// The node-table slot for record `idx` whose id has stored hash `h`.
#[inline(always)]
fn slot_value(h: u32, idx: u32) -> u32 {
    (h & SLOT_TAG_MASK) | (idx + 1)
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

/// The viewers of one state, as one dense vector.
struct StateViewers {
    id: StateId,
    /// One `u32` per viewer ([`pack_entry`]): its record index and its raw level nibble (level
    /// in the low 3 bits, [`TTL_FLAG`] when the entry has an expiry).
    entries: Vec<u32>,
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
    index: NodeTable,
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
            .field("nodes", &self.node_count())
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
            index: NodeTable {
                slots: Vec::new(),
                limit: 0,
                fast_limit: 0,
                max_nodes: MAX_NODES,
            },
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

    /// Reserves room for `nodes` more interned nodes (up to [`MAX_NODES`] in all).
    pub fn reserve_nodes(&mut self, nodes: usize) {
        let want = self
            .node_count()
            .saturating_add(nodes)
            .min(self.index.max_nodes);
        self.records
            .reserve(want.saturating_sub(self.records.len()));
        if want > self.index.limit {
            self.rebuild_index((want * 2).next_power_of_two().max(8));
        }
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
        self.records.len() - self.free_records.len()
    }

    fn find_node(&self, node: &NodeId) -> Option<u32> {
        if self.index.slots.is_empty() {
            return None;
        }
        self.probe(stored_hash(&self.keys, node), node).ok()
    }

    /// Looks `node` (stored hash `h`) up in the node table, which must have slots: `Ok(record
    /// index)` when it is there, else `Err(the empty slot where it would go)`.
    #[inline(always)]
    fn probe(&self, h: u32, node: &NodeId) -> Result<u32, usize> {
        let slots = &self.index.slots[..];
        // The mask from the slice's own length (not a stored copy): one load fewer, and the
        // compiler drops the bounds checks of the steps after the first (3 instructions per
        // new entry in the benchmark).
        let mask = slots.len().wrapping_sub(1);
        let mut i = h as usize & mask;
        loop {
            let s = slots[i];
            if s == 0 {
                return Err(i);
            }
            // Same tag: compare the ids.
            if (s ^ h) <= SLOT_INDEX_MASK {
                let idx = (s & SLOT_INDEX_MASK) - 1;
                if self.records[idx as usize].id == *node {
                    return Ok(idx);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The record index of `node`, interning it if new; `true` when it was new. A new node's
    /// first interest — in state `slot`, raw level nibble `raw` — is appended to the state's
    /// vector and recorded inline here, so the common case (a new viewer) costs one hash, one
    /// probe and two pushes. While no record is free and the table has room (`records.len() <
    /// fast_limit`: one compare), a new node takes the next record; anything else goes to
    /// [`InterestMap::intern_slow`].
    #[inline(always)]
    fn intern_with_entry(
        &mut self,
        node: &NodeId,
        slot: u32,
        raw: u8,
    ) -> Result<(u32, bool), InterestError> {
        if self.records.len() >= self.index.fast_limit {
            return self.intern_slow(node, slot, raw);
        }
        let h = stored_hash(&self.keys, node);
        match self.probe(h, node) {
            Ok(idx) => Ok((idx, false)),
            Err(free) => {
                let idx = self.records.len() as u32;
                // The slot is written before the record is pushed: right after the probe, its
                // bounds are known to hold.
                self.index.slots[free] = slot_value(h, idx);
                let pos = self.push_entry(slot, idx, raw);
                self.records.push(NodeRecord {
                    id: *node,
                    first_state: slot,
                    first_pos: pos,
                    hash: h,
                });
                Ok((idx, true))
            }
        }
    }

    /// Appends the entry (record `idx`, raw level nibble `raw`) to state `slot`'s vector;
    /// returns its position.
    #[inline(always)]
    fn push_entry(&mut self, slot: u32, idx: u32, raw: u8) -> u32 {
        let sv = &mut self.states[slot as usize];
        let pos = sv.entries.len() as u32;
        sv.entries.push(pack_entry(idx, raw));
        sv.counts[(raw & LEVEL_MASK) as usize] += 1;
        self.live += 1;
        pos
    }

    /// [`InterestMap::intern_with_entry`] when the node table is full or a record is free:
    /// grows the table (or, at [`MAX_NODES`], refuses a node the map does not know yet) and
    /// reuses a free record for a new node.
    ///
    /// Below [`EIGHTFOLD_BELOW`] slots the table grows eightfold (to 1 MiB at most: from empty
    /// to 100,000 nodes it goes 8 → 64 → … → 32,768 → 262,144 slots and re-inserts 18,724
    /// nodes), above it twofold, so a large map's table takes 8 to 16 bytes per node.
    #[cold]
    #[inline(never)]
    fn intern_slow(
        &mut self,
        node: &NodeId,
        slot: u32,
        raw: u8,
    ) -> Result<(u32, bool), InterestError> {
        let h = stored_hash(&self.keys, node);
        if !self.index.slots.is_empty()
            && let Ok(idx) = self.probe(h, node)
        {
            return Ok((idx, false));
        }
        let nodes = self.node_count();
        if nodes >= self.index.limit {
            if nodes >= self.index.max_nodes {
                return Err(InterestError::TooManyNodes);
            }
            let buckets = self.index.slots.len();
            let grown = if buckets == 0 {
                8
            } else if buckets < EIGHTFOLD_BELOW {
                buckets * 8
            } else {
                buckets * 2
            };
            self.rebuild_index(grown);
        }
        let Err(free) = self.probe(h, node) else {
            unreachable!("the node was not in the table")
        };
        let idx = self.free_records.pop().unwrap_or(self.records.len() as u32);
        self.index.slots[free] = slot_value(h, idx);
        let pos = self.push_entry(slot, idx, raw);
        let rec = NodeRecord {
            id: *node,
            first_state: slot,
            first_pos: pos,
            hash: h,
        };
        if idx as usize == self.records.len() {
            self.records.push(rec);
        } else {
            self.records[idx as usize] = rec;
        }
        self.update_fast_limit();
        Ok((idx, true))
    }

    /// The inline path of [`InterestMap::intern_with_entry`] may add a node while no record
    /// is free and the table is below its limit.
    fn update_fast_limit(&mut self) {
        self.index.fast_limit = if self.free_records.is_empty() {
            self.index.limit
        } else {
            0
        };
    }

    /// Replaces the node table by one of `buckets` slots (a power of two, more than twice the
    /// nodes), filled from the hashes stored in the records: no id is re-hashed. When no
    /// record is free (a map that only grew), every record is live and they are read in
    /// order; otherwise the old table lists the live ones.
    fn rebuild_index(&mut self, buckets: usize) {
        debug_assert!(buckets.is_power_of_two() && buckets >= 2 * self.node_count());
        let mut slots = vec![0u32; buckets];
        let mask = buckets - 1;
        let mut place = |h: u32, idx: u32| {
            let mut i = h as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = slot_value(h, idx);
        };
        if self.free_records.is_empty() {
            for (i, rec) in self.records.iter().enumerate() {
                place(rec.hash, i as u32);
            }
        } else {
            for &s in &self.index.slots {
                if s != 0 {
                    let idx = (s & SLOT_INDEX_MASK) - 1;
                    place(self.records[idx as usize].hash, idx);
                }
            }
        }
        self.index.slots = slots;
        self.index.limit = (buckets / 2).min(self.index.max_nodes);
        self.update_fast_limit();
    }

    /// Takes record `idx` out of the node table: the slots after it in its run move back
    /// (backward-shift deletion), so the table needs no tombstones.
    fn unindex(&mut self, idx: u32) {
        let slots = &mut self.index.slots;
        let mask = slots.len() - 1;
        let mut hole = self.records[idx as usize].hash as usize & mask;
        while slots[hole] & SLOT_INDEX_MASK != idx + 1 {
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = slots[j];
            if s == 0 {
                break;
            }
            let home = self.records[((s & SLOT_INDEX_MASK) - 1) as usize].hash as usize & mask;
            // The entry at `j` may move to `hole` when the hole lies on its way from `home`.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                slots[hole] = s;
                hole = j;
            }
        }
        slots[hole] = 0;
    }

    fn release_node_if_empty(&mut self, idx: u32) {
        let rec = self.records[idx as usize];
        if !rec.is_empty() {
            return;
        }
        self.unindex(idx);
        self.free_records.push(idx);
        self.index.fast_limit = 0;
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
            entries: Vec::new(),
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
        let (idx, new) = self.intern_with_entry(&node, slot, raw)?;
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
                let old_raw = entry_raw(self.states[slot as usize].entries[pos as usize]);
                previous = if self.is_expired(idx, slot, old_raw, now) {
                    InterestLevel::None
                } else {
                    level_of(old_raw)
                };
                let sv = &mut self.states[slot as usize];
                sv.counts[(old_raw & LEVEL_MASK) as usize] -= 1;
                sv.counts[level.as_u8() as usize] += 1;
                sv.entries[pos as usize] = pack_entry(idx, raw);
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
                let pos = sv.entries.len() as u32;
                sv.entries.push(pack_entry(idx, raw));
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
        let last = sv.entries.len() as u32 - 1;
        let raw = entry_raw(sv.entries.swap_remove(pos as usize));
        sv.counts[(raw & LEVEL_MASK) as usize] -= 1;
        let moved = if pos != last {
            Some(entry_node(sv.entries[pos as usize]))
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
                let raw = entry_raw(self.states[slot as usize].entries[pos as usize]);
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
            entries: sv.map_or(&[][..], |s| &s.entries[..]),
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
            .map_or(0, |s| self.states[s as usize].entries.len())
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
        let mut total = vec(self.index.slots.capacity(), 4)
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
            total += vec(s.entries.capacity(), 4);
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

/// The 32 bits of a node id's seeded hash ([`hash_id`]) that the map keeps per record.
#[inline(always)]
fn stored_hash(keys: &IdKeys, id: &NodeId) -> u32 {
    hash_id(keys, id) as u32
}

fn level_of(raw: u8) -> InterestLevel {
    InterestLevel::from_u8(raw & LEVEL_MASK).unwrap_or(InterestLevel::None)
}

/// Iterator over a state's live interests, from [`InterestMap::interested`]. Allocates nothing.
pub struct Interested<'a> {
    map: &'a InterestMap,
    slot: u32,
    entries: &'a [u32],
    pos: usize,
    now: Time,
}

impl Iterator for Interested<'_> {
    type Item = (NodeId, InterestLevel);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(&e) = self.entries.get(self.pos) {
            self.pos += 1;
            let (idx, raw) = (entry_node(e), entry_raw(e));
            if self.map.is_expired(idx, self.slot, raw, self.now) {
                continue;
            }
            return Some((self.map.records[idx as usize].id, level_of(raw)));
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.entries.len() - self.pos))
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
    fn too_many_nodes_is_refused_and_known_nodes_still_declare() {
        let mut m = InterestMap::new();
        m.index.max_nodes = 5;
        // A reserve is capped at the limit (and does not overflow).
        m.reserve_nodes(usize::MAX);
        assert_eq!(m.index.slots.len(), 16);
        for i in 0..5 {
            m.declare(NOW, n(i), S, Low, None).unwrap();
        }
        assert_eq!(
            m.declare(NOW, n(99), S, High, None),
            Err(InterestError::TooManyNodes)
        );
        assert_eq!((m.len(), m.node_count()), (5, 5));
        assert_eq!(m.level(n(99), S, NOW), NONE_L);
        // Known nodes may still change, add states and take an expiry.
        let c = m.declare(NOW, n(3), S, High, None).unwrap();
        assert_eq!((c.previous, c.current), (Low, High));
        m.declare(NOW, n(3), T, Medium, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(m.len(), 6);
        // A node that leaves makes room for a new one, which takes its free record.
        assert_eq!(m.remove_node(n(0)), 1);
        m.declare(NOW, n(99), S, High, None).unwrap();
        assert_eq!(m.node_count(), 5);
        assert_eq!(m.records.len(), 5);
        assert_eq!(m.level(n(99), S, NOW), High);
        assert_eq!(
            m.declare(NOW, n(100), S, High, None),
            Err(InterestError::TooManyNodes)
        );
    }

    #[test]
    fn node_table_removals_keep_every_other_node_findable() {
        // Backward-shift deletion moves the slots after a removed node; every node left must
        // still be found, and free records must be reused, in tables of every size.
        let mut m = InterestMap::with_hash_seed(11);
        let mut present = vec![false; 3000];
        let mut x: u64 = 1;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % 3000) as usize;
            if present[i] && x.is_multiple_of(3) {
                assert_eq!(m.remove_node(n(i as u64)), 1, "step {step}");
                present[i] = false;
            } else {
                let c = m.declare(NOW, n(i as u64), S, Medium, None).unwrap();
                assert_eq!(c.previous != NONE_L, present[i], "step {step}");
                present[i] = true;
            }
            if step % 1000 == 999 {
                for (j, &p) in present.iter().enumerate() {
                    let want = if p { Medium } else { NONE_L };
                    assert_eq!(m.level(n(j as u64), S, NOW), want, "node {j}");
                }
            }
        }
        let live = present.iter().filter(|&&p| p).count();
        assert_eq!((m.len(), m.node_count()), (live, live));
        assert_eq!(m.interested(S, NOW).count(), live);
        // Every live node is in exactly one slot.
        let occupied = m.index.slots.iter().filter(|&&s| s != 0).count();
        assert_eq!(occupied, live);
    }

    #[test]
    fn reserve_nodes_then_fill() {
        let mut m = InterestMap::new();
        m.declare(NOW, n(0), S, Low, None).unwrap();
        m.reserve_nodes(1000);
        let slots = m.index.slots.len();
        assert!(slots >= 2 * 1001);
        for i in 1..=1000 {
            m.declare(NOW, n(i), S, High, None).unwrap();
        }
        assert_eq!(m.index.slots.len(), slots, "no growth after the reserve");
        assert_eq!(m.level(n(0), S, NOW), Low);
        assert_eq!(m.level(n(1000), S, NOW), High);
    }

    #[test]
    fn heap_bytes_are_accounted() {
        // A size where vector doubling leaves no slack and the node table is at its fullest
        // (16,384 nodes in 32,768 slots; right after an eightfold step, 4,097 nodes in 32,768
        // slots, the table alone costs 32 bytes per node); `tests/interest_memory.rs` measures
        // the million-viewer case with a counting allocator.
        let mut m = InterestMap::new();
        for i in 0..16_384 {
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
