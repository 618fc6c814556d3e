//! The node's pacing queue: updates the scheduler decided to send, held until their pacing
//! delay has passed. The scheduler decides (who, whether, at which quality, after which delay);
//! this queue only remembers the decisions until they are due.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

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

    /// The next send due at or before `now + slack`, earliest first.
    pub fn pop_due(&mut self, now: Time, slack: Duration) -> Option<Paced> {
        if self.heap.peek()?.at <= now + slack {
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

    /// When the next send is due, `slack` early.
    pub fn next_release(&self, slack: Duration) -> Option<Time> {
        self.heap.peek().map(|p| p.at.saturating_sub(slack))
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

#[cfg(test)]
mod tests {
    use super::*;
    use elara_core::StateId;

    fn update(seq: u64) -> StateUpdate {
        StateUpdate::new(StateId(1), NodeId::from_u64(1), seq, Time::ZERO)
    }

    #[test]
    fn sends_due_within_the_slack_go_at_once_in_pacing_order_and_later_ones_wait() {
        let mut q = PacingQueue::default();
        let link = LinkId::new(0, 0);
        let ms = Time::from_millis;
        // Pushed out of order: the pacing times decide the order they go in.
        q.push(ms(30), NodeId::from_u64(3), link, 1, update(3));
        q.push(ms(10), NodeId::from_u64(2), link, 1, update(2));
        q.push(ms(500), NodeId::from_u64(4), link, 1, update(4));
        let slack = Duration::from_millis(100);
        assert_eq!(q.next_release(slack), Some(Time::ZERO));
        let now = Time::ZERO;
        let first = q.pop_due(now, slack).expect("due within the slack");
        let second = q.pop_due(now, slack).expect("due within the slack");
        assert_eq!((first.update.seq, second.update.seq), (2, 3));
        // 500 ms is a real wait: it stays until 100 ms before its time.
        assert!(q.pop_due(now, slack).is_none());
        assert_eq!(q.next_release(slack), Some(ms(400)));
        assert_eq!(q.pop_due(ms(400), slack).map(|p| p.update.seq), Some(4));
        // Without slack nothing goes early.
        q.push(ms(450), NodeId::from_u64(5), link, 1, update(5));
        assert!(q.pop_due(ms(449), Duration::ZERO).is_none());
    }
}
