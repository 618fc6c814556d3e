//! The node's pacing queue: updates the scheduler decided to send, held until their pacing
//! delay has passed. The scheduler decides (who, whether, at which quality, after which delay);
//! this queue only remembers the decisions until they are due.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use elara_core::{NodeId, Priority, StateUpdate, Time};

use crate::scheduler::LinkId;

/// One decided send.
#[derive(Debug)]
pub(crate) struct Paced {
    pub at: Time,
    pub priority: Priority,
    pub order: u64,
    pub to: NodeId,
    pub link: LinkId,
    pub hops: u8,
    pub update: StateUpdate,
}

impl PartialEq for Paced {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Paced {}
impl PartialOrd for Paced {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Paced {
    /// Max-heap order: the earliest release first, then the most urgent, then the oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .cmp(&self.at)
            .then(self.priority.cmp(&other.priority))
            .then(other.order.cmp(&self.order))
    }
}

/// Decided sends, earliest first.
#[derive(Debug, Default)]
pub(crate) struct PacingQueue {
    heap: BinaryHeap<Paced>,
    next_order: u64,
}

impl PacingQueue {
    pub fn push(&mut self, at: Time, to: NodeId, link: LinkId, hops: u8, update: StateUpdate) {
        let order = self.next_order;
        self.next_order += 1;
        self.heap.push(Paced {
            at,
            priority: update.priority,
            order,
            to,
            link,
            hops,
            update,
        });
    }

    /// The next send due at or before `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<Paced> {
        if self.heap.peek()?.at <= now {
            let p = self.heap.pop();
            if self.heap.is_empty() {
                // Most nodes send in bursts (a frame's fan-out): hold nothing in between.
                self.heap = BinaryHeap::new();
            }
            p
        } else {
            None
        }
    }

    /// When the next send is due.
    pub fn next_release(&self) -> Option<Time> {
        self.heap.peek().map(|p| p.at)
    }

    /// Sends waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}
