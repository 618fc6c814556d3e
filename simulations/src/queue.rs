//! The discrete-event queue: events ordered by time, ties broken by insertion sequence.
//!
//! A calendar queue: a ring of buckets, each [`BUCKET_US`] µs of simulated time wide, covers the
//! next [`HORIZON_US`] µs; events further away wait in a binary heap and move into the ring as
//! time advances. Events are stored inline in their bucket, so a push appends to a vector and a
//! pop takes the last element of the current bucket, which is sorted (descending by time, then
//! sequence) when time reaches it. The order is exactly that of a heap keyed by
//! `(time, sequence)`: runs stay reproducible whatever the bucket sizes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Width of one bucket, µs (a power of two).
pub const BUCKET_US: u64 = 1 << BUCKET_SHIFT;
const BUCKET_SHIFT: u32 = 8;
const BUCKETS: usize = 1 << 14;
/// Simulated time the ring covers, µs (about 4.2 s).
pub const HORIZON_US: u64 = BUCKET_US * BUCKETS as u64;
/// Drained buckets' vectors kept for reuse (the ring itself holds memory only in its pending
/// buckets, whatever their peak sizes were).
const POOL: usize = 256;
/// A drained vector larger than this is freed rather than pooled.
const POOL_MAX_CAPACITY: usize = 1 << 12;

struct Entry<E> {
    time: u64,
    seq: u64,
    event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (u64, u64) {
        (self.time, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<E> Eq for Entry<E> {}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A priority queue of events keyed by time in microseconds. Two events scheduled for the same
/// time come out in the order they were pushed, which makes every run with the same inputs
/// identical.
pub struct EventQueue<E> {
    ring: Vec<Vec<Entry<E>>>,
    /// Start of the current bucket's time range (a multiple of [`BUCKET_US`]).
    base: u64,
    /// Ring index of the current bucket.
    cur: usize,
    /// Whether the current bucket is sorted (descending) and being drained.
    sorted: bool,
    /// Events in the ring.
    in_ring: usize,
    /// Events at or beyond `base + HORIZON_US`.
    far: BinaryHeap<Reverse<Entry<E>>>,
    pool: Vec<Vec<Entry<E>>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            ring: (0..BUCKETS).map(|_| Vec::new()).collect(),
            base: 0,
            cur: 0,
            sorted: false,
            in_ring: 0,
            far: BinaryHeap::new(),
            pool: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time` (microseconds), which must not be before the last popped
    /// event's time (an earlier time is a driver bug: debug builds panic, release builds
    /// schedule it at the start of the current bucket).
    pub fn push(&mut self, time: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.push_keyed(time, seq, event);
    }

    /// Schedules `event` at `time` with its own tie-break `key`: events at the same time come
    /// out by ascending key. Keys must be unique among pending events at one time (a driver
    /// that mixes this with [`EventQueue::push`] must keep its keys apart from the insertion
    /// sequence). The same timing rule as [`EventQueue::push`] applies.
    pub fn push_keyed(&mut self, time: u64, key: u64, event: E) {
        debug_assert!(time >= self.base, "event scheduled in the past");
        let entry = Entry {
            time: time.max(self.base),
            seq: key,
            event,
        };
        self.place(entry);
    }

    fn place(&mut self, entry: Entry<E>) {
        let offset = entry.time - self.base;
        if offset >= HORIZON_US {
            self.far.push(Reverse(entry));
            return;
        }
        let slot = (self.cur + (offset >> BUCKET_SHIFT) as usize) & (BUCKETS - 1);
        self.in_ring += 1;
        let bucket = &mut self.ring[slot];
        if bucket.capacity() == 0
            && let Some(v) = self.pool.pop()
        {
            *bucket = v;
        }
        if slot == self.cur && self.sorted {
            // The bucket being drained is sorted descending: insert in place.
            let key = entry.key();
            let at = bucket.partition_point(|e| e.key() > key);
            bucket.insert(at, entry);
        } else {
            bucket.push(entry);
        }
    }

    /// Moves to the next bucket and pulls in far events that now fall within the horizon. When
    /// the ring is empty it jumps ahead to the next far event's bucket, but not past the bucket
    /// holding `cap` (later pushes at or after `cap` must not land before the current bucket).
    fn advance(&mut self, cap: u64) {
        let drained = std::mem::take(&mut self.ring[self.cur]);
        if drained.capacity() > 0
            && drained.capacity() <= POOL_MAX_CAPACITY
            && self.pool.len() < POOL
        {
            self.pool.push(drained);
        }
        self.sorted = false;
        if self.in_ring == 0 {
            // Nothing in the ring: jump straight to the next far event's bucket.
            match self.far.peek() {
                Some(Reverse(e)) if e.time >= self.base + BUCKET_US => {
                    self.base = (e.time.min(cap) & !(BUCKET_US - 1)).max(self.base + BUCKET_US);
                }
                _ => self.base += BUCKET_US,
            }
        } else {
            self.base += BUCKET_US;
        }
        self.cur = ((self.base >> BUCKET_SHIFT) as usize) & (BUCKETS - 1);
        let limit = self.base + HORIZON_US;
        while self.far.peek().is_some_and(|Reverse(e)| e.time < limit) {
            let Some(Reverse(e)) = self.far.pop() else {
                break;
            };
            self.place(e);
        }
    }

    /// Removes and returns the earliest event with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.pop_before(u64::MAX)
    }

    /// Removes and returns the earliest event with its time if that time is before `limit`.
    /// The queue does not move past `limit`: events may still be pushed at `limit` or later.
    pub fn pop_before(&mut self, limit: u64) -> Option<(u64, E)> {
        loop {
            if self.sorted
                && let Some(e) = self.ring[self.cur].last()
            {
                if e.time >= limit {
                    return None;
                }
                let e = self.ring[self.cur].pop()?;
                self.in_ring -= 1;
                return Some((e.time, e.event));
            }
            if !self.ring[self.cur].is_empty() {
                self.ring[self.cur].sort_unstable_by_key(|e| Reverse(e.key()));
                self.sorted = true;
                continue;
            }
            if (self.in_ring == 0 && self.far.is_empty())
                || self.base.saturating_add(BUCKET_US) >= limit
            {
                // Stay on this bucket: later pushes are not earlier than the last pop, nor
                // earlier than `limit`'s bucket.
                return None;
            }
            self.advance(limit);
        }
    }

    /// The event `k` pops after the next one would return if nothing were pushed meanwhile
    /// (`peek(0)` is the next), when it is already sorted into the current bucket: a hint for
    /// prefetching, never needed for correctness.
    pub fn peek(&self, k: usize) -> Option<&E> {
        if !self.sorted {
            return None;
        }
        let bucket = &self.ring[self.cur];
        let i = bucket.len().checked_sub(k + 1)?;
        Some(&bucket[i].event)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.in_ring + self.far.len()
    }

    /// True when no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(30, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        q.push(10, "a3");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![(10, "a1"), (10, "a2"), (10, "a3"), (20, "b"), (30, "c")]
        );
        assert!(q.is_empty());
    }

    /// `pop_before` hands out only what comes before its limit and never moves past it, so
    /// events pushed at the limit later (a shard taking in another's mail) still come out in
    /// order, even after a long quiet stretch.
    #[test]
    fn pop_before_stops_at_the_limit_and_takes_later_pushes_at_it() {
        let mut q = EventQueue::new();
        q.push_keyed(100, 1, "a");
        q.push_keyed(10 * HORIZON_US, 1, "far");
        assert_eq!(q.pop_before(1_000), Some((100, "a")));
        assert_eq!(q.pop_before(1_000), None);
        // Nothing until the far event: the queue still accepts a push at the limit.
        assert_eq!(q.pop_before(5 * HORIZON_US), None);
        q.push_keyed(5 * HORIZON_US, 2, "b");
        q.push_keyed(5 * HORIZON_US, 1, "a2");
        assert_eq!(q.pop_before(5 * HORIZON_US), None);
        assert_eq!(q.pop_before(u64::MAX), Some((5 * HORIZON_US, "a2")));
        assert_eq!(q.pop(), Some((5 * HORIZON_US, "b")));
        assert_eq!(q.pop(), Some((10 * HORIZON_US, "far")));
        assert!(q.pop().is_none());
    }

    /// Random pushes interleaved with pops, near and far (beyond the ring's horizon) and into the
    /// bucket being drained, come out exactly as from a heap keyed by (time, sequence).
    #[test]
    fn matches_a_heap_ordered_by_time_then_sequence() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut q = EventQueue::new();
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = 0u64;
        for _ in 0..60_000 {
            if rng.random_bool(0.55) {
                let dt = match rng.random_range(0..4) {
                    0 => rng.random_range(0..BUCKET_US),
                    1 => rng.random_range(0..100_000),
                    2 => rng.random_range(0..3 * HORIZON_US),
                    _ => 0,
                };
                q.push(now + dt, seq);
                heap.push(Reverse((now + dt, seq)));
                seq += 1;
            } else {
                let want = heap.pop().map(|Reverse(k)| k);
                let got = q.pop();
                assert_eq!(got, want);
                if let Some((t, _)) = got {
                    now = t;
                }
            }
            assert_eq!(q.len(), heap.len());
        }
        while let Some(Reverse(k)) = heap.pop() {
            assert_eq!(q.pop(), Some(k));
        }
        assert!(q.pop().is_none());
    }
}
