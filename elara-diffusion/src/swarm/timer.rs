//! The node's timers: plain data, each entry saying why it exists.

use std::collections::{BTreeMap, BTreeSet};

use elara_core::{NodeId, StateId, Time};

/// Why a [`super::SwarmNode`] asked to be woken up. [`super::SwarmNode::next_timer`] returns the
/// earliest deadline together with its reason, for logs and traces.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum TimerReason {
    /// Nothing was sent to this peer for a keep-alive interval: send a ping.
    KeepAlive(NodeId),
    /// Nothing was heard from this peer: declare it down when the idle timeout has passed.
    PeerIdle(NodeId),
    /// A connection we asked the driver to open did not come up in time.
    Dial(NodeId),
    /// A peer we no longer need is closed after a short grace period.
    Prune(NodeId),
    /// A join request for this state went unanswered: try the next candidate.
    JoinRetry(StateId),
    /// The oldest gap in this state's receive window may have to be skipped.
    Reorder(StateId),
    /// Missing updates of this state are pulled again.
    PullRetry(StateId),
    /// The stream of this state went quiet: announce the newest sequence number to children.
    Announce(StateId),
    /// A make-before-break switch waits at most this long for a group boundary before the old
    /// parent is left.
    SwitchDeadline(StateId),
    /// Children were taken above capacity to repair the tree fast: move one down.
    Rebalance(StateId),
    /// A periodic attempt to move up a level, to the grandparent, where it has room: a tree
    /// grown during a join storm or torn by failures compacts again.
    Climb(StateId),
    /// The propagation scheduler can release queued data (a token bucket refilled).
    Scheduler,
}

/// A small table of deadlines keyed by reason: setting a reason again moves its deadline.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_deadline: BTreeSet<(Time, TimerReason)>,
    deadline_of: BTreeMap<TimerReason, Time>,
}

impl Timers {
    /// Arms `reason` at `at`, replacing any earlier deadline for the same reason.
    pub(crate) fn set(&mut self, reason: TimerReason, at: Time) {
        if let Some(old) = self.deadline_of.insert(reason, at) {
            if old == at {
                return;
            }
            self.by_deadline.remove(&(old, reason));
        }
        self.by_deadline.insert((at, reason));
    }

    /// Arms `reason` at `at` unless it is already armed earlier.
    pub(crate) fn set_if_earlier(&mut self, reason: TimerReason, at: Time) {
        match self.deadline_of.get(&reason) {
            Some(&old) if old <= at => {}
            _ => self.set(reason, at),
        }
    }

    /// Disarms `reason`.
    pub(crate) fn cancel(&mut self, reason: TimerReason) {
        if let Some(old) = self.deadline_of.remove(&reason) {
            self.by_deadline.remove(&(old, reason));
        }
    }

    /// True when `reason` is armed.
    pub(crate) fn is_set(&self, reason: TimerReason) -> bool {
        self.deadline_of.contains_key(&reason)
    }

    /// The earliest deadline and its reason.
    pub(crate) fn next(&self) -> Option<(Time, TimerReason)> {
        self.by_deadline.first().copied()
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<TimerReason> {
        let &(at, reason) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.pop_first();
        self.deadline_of.remove(&reason);
        Some(reason)
    }

    /// Disarms every timer concerning `peer`.
    pub(crate) fn cancel_peer(&mut self, peer: NodeId) {
        for r in [
            TimerReason::KeepAlive(peer),
            TimerReason::PeerIdle(peer),
            TimerReason::Dial(peer),
            TimerReason::Prune(peer),
        ] {
            self.cancel(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearming_moves_the_deadline_and_pop_is_ordered() {
        let mut t = Timers::default();
        let a = TimerReason::Announce(StateId(1));
        let b = TimerReason::Scheduler;
        t.set(a, Time::from_millis(30));
        t.set(b, Time::from_millis(20));
        t.set(a, Time::from_millis(10));
        assert_eq!(t.next(), Some((Time::from_millis(10), a)));
        t.set_if_earlier(b, Time::from_millis(40));
        assert_eq!(t.pop_due(Time::from_millis(15)), Some(a));
        assert_eq!(t.pop_due(Time::from_millis(15)), None);
        assert_eq!(t.pop_due(Time::from_millis(25)), Some(b));
        assert!(!t.is_set(b));
        assert_eq!(t.next(), None);
    }
}
