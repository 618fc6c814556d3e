//! The discrete-event queue: events ordered by time, ties broken by insertion sequence.
//!
//! The heap holds compact 24-byte keys `(time, seq, slot)`; event bodies live in a slab indexed by
//! `slot` and are recycled through a free list, so the steady state allocates nothing per event.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    time: u64,
    seq: u64,
    slot: u32,
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap and we pop the earliest event first.
        other
            .time
            .cmp(&self.time)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A priority queue of events keyed by time in microseconds. Two events scheduled for the same
/// time come out in the order they were pushed, which makes every run with the same inputs
/// identical.
pub struct EventQueue<E> {
    heap: BinaryHeap<Key>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time` (microseconds).
    pub fn push(&mut self, time: u64, event: E) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(event);
                slot
            }
            None => {
                let slot = u32::try_from(self.slab.len())
                    .expect("more than 4 billion pending events: the scenario is far too large");
                self.slab.push(Some(event));
                slot
            }
        };
        self.heap.push(Key {
            time,
            seq: self.next_seq,
            slot,
        });
        self.next_seq += 1;
    }

    /// Removes and returns the earliest event with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let key = self.heap.pop()?;
        let event = self.slab[key.slot as usize]
            .take()
            .expect("every heap key points at a filled slab slot");
        self.free.push(key.slot);
        Some((key.time, event))
    }

    /// Time of the earliest pending event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|k| k.time)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn slots_are_recycled() {
        let mut q = EventQueue::new();
        for round in 0..10u64 {
            q.push(round, round);
            q.push(round, round + 100);
            assert_eq!(q.pop(), Some((round, round)));
            assert_eq!(q.pop(), Some((round, round + 100)));
        }
        assert!(q.slab.len() <= 2);
    }
}
