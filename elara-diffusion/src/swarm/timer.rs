//! The node's timers: plain data, each entry saying why it exists.

use std::collections::{BTreeMap, BTreeSet};

use elara_core::{NodeId, StateId, Time};

use super::small_map::{grow_by_quarter, shrink_spare};

/// Why a [`super::SwarmNode`] asked to be woken up. [`super::SwarmNode::next_timer`] returns the
/// earliest deadline together with its reason, for logs and traces.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum TimerReason {
    /// The liveness sweep: ping the peers nothing was sent to for a keep-alive interval,
    /// declare down those not heard from for the idle timeout.
    Liveness,
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

/// Armed timers above which [`Timers`] keeps two B-trees instead of one sorted `Vec`.
const SPILL: usize = 48;
/// Armed timers below which the B-trees go back to a `Vec`.
const UNSPILL: usize = 24;

/// A small table of deadlines keyed by reason: setting a reason again moves its deadline.
///
/// A viewer arms a couple of dozen timers at most: they live in one `Vec` sorted by deadline
/// (latest first, so the next one to fire is popped from the end), and a reason is found by a
/// scan. A node with many peers (the broadcaster) arms thousands: past [`SPILL`] they move into
/// a B-tree ordered by deadline and a B-tree keyed by reason, so that every operation stays
/// logarithmic. Either way timers fire in `(deadline, reason)` order.
#[derive(Debug)]
pub(crate) enum Timers {
    /// Sorted by `(deadline, reason)`, descending; one entry per reason.
    Small(Vec<(Time, TimerReason)>),
    /// More than [`SPILL`] timers (until fewer than [`UNSPILL`] are left).
    Large {
        by_deadline: BTreeSet<(Time, TimerReason)>,
        deadline_of: BTreeMap<TimerReason, Time>,
    },
}

impl Default for Timers {
    fn default() -> Self {
        Timers::Small(Vec::new())
    }
}

impl Timers {
    /// Arms `reason` at `at`, replacing any earlier deadline for the same reason.
    pub(crate) fn set(&mut self, reason: TimerReason, at: Time) {
        match self {
            Timers::Small(v) => {
                if let Some(i) = v.iter().position(|(_, r)| *r == reason) {
                    if v[i].0 == at {
                        return;
                    }
                    v.remove(i);
                }
                let i = v.partition_point(|e| *e > (at, reason));
                grow_by_quarter(v);
                v.insert(i, (at, reason));
                if v.len() > SPILL {
                    let by_deadline: BTreeSet<_> = v.iter().copied().collect();
                    let deadline_of = v.iter().map(|&(t, r)| (r, t)).collect();
                    *self = Timers::Large {
                        by_deadline,
                        deadline_of,
                    };
                }
            }
            Timers::Large {
                by_deadline,
                deadline_of,
            } => {
                if let Some(old) = deadline_of.insert(reason, at) {
                    if old == at {
                        return;
                    }
                    by_deadline.remove(&(old, reason));
                }
                by_deadline.insert((at, reason));
            }
        }
    }

    /// The deadline of `reason`, when armed.
    fn deadline_of(&self, reason: TimerReason) -> Option<Time> {
        match self {
            Timers::Small(v) => v.iter().find(|(_, r)| *r == reason).map(|(t, _)| *t),
            Timers::Large { deadline_of, .. } => deadline_of.get(&reason).copied(),
        }
    }

    /// Arms `reason` at `at` unless it is already armed earlier.
    pub(crate) fn set_if_earlier(&mut self, reason: TimerReason, at: Time) {
        match self.deadline_of(reason) {
            Some(old) if old <= at => {}
            _ => self.set(reason, at),
        }
    }

    /// Disarms `reason`.
    pub(crate) fn cancel(&mut self, reason: TimerReason) {
        match self {
            Timers::Small(v) => {
                if let Some(i) = v.iter().position(|(_, r)| *r == reason) {
                    v.remove(i);
                }
            }
            Timers::Large {
                by_deadline,
                deadline_of,
            } => {
                if let Some(old) = deadline_of.remove(&reason) {
                    by_deadline.remove(&(old, reason));
                }
            }
        }
        self.after_remove();
    }

    /// True when `reason` is armed.
    pub(crate) fn is_set(&self, reason: TimerReason) -> bool {
        self.deadline_of(reason).is_some()
    }

    /// The earliest deadline and its reason.
    pub(crate) fn next(&self) -> Option<(Time, TimerReason)> {
        match self {
            Timers::Small(v) => v.last().copied(),
            Timers::Large { by_deadline, .. } => by_deadline.first().copied(),
        }
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<TimerReason> {
        let (at, reason) = self.next()?;
        if at > now {
            return None;
        }
        match self {
            Timers::Small(v) => {
                v.pop();
            }
            Timers::Large {
                by_deadline,
                deadline_of,
            } => {
                by_deadline.pop_first();
                deadline_of.remove(&reason);
            }
        }
        self.after_remove();
        Some(reason)
    }

    /// Goes back to a `Vec` when few timers are left; gives back a `Vec`'s spare room.
    fn after_remove(&mut self) {
        match self {
            Timers::Large { by_deadline, .. } if by_deadline.len() < UNSPILL => {
                // Descending order, as the small form keeps it.
                let v = std::mem::take(by_deadline).into_iter().rev().collect();
                *self = Timers::Small(v);
            }
            Timers::Small(v) => shrink_spare(v),
            Timers::Large { .. } => {}
        }
    }

    /// The addresses of the entries the next lookups read first (see
    /// [`super::SwarmNode::prefetch_hints`]).
    pub(crate) fn hint(&self, hint: &mut dyn FnMut(*const u8)) {
        if let Timers::Small(v) = self
            && let (Some(first), Some(last)) = (v.first(), v.last())
        {
            hint(std::ptr::from_ref(first).cast());
            hint(std::ptr::from_ref(last).cast());
        }
    }

    /// Disarms every timer concerning `peer`.
    pub(crate) fn cancel_peer(&mut self, peer: NodeId) {
        for r in [TimerReason::Dial(peer), TimerReason::Prune(peer)] {
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

    #[test]
    fn many_timers_fire_in_order_across_spilling() {
        let mut t = Timers::default();
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let peer = NodeId::from_u64(i % 37);
            let r = if i % 2 == 0 {
                TimerReason::Dial(peer)
            } else {
                TimerReason::Prune(peer)
            };
            let at = Time::from_millis((i * 7919) % 1000);
            t.set(r, at);
            expected.retain(|&(_, x)| x != r);
            expected.push((at, r));
        }
        t.cancel(TimerReason::Dial(NodeId::from_u64(0)));
        expected.retain(|&(_, x)| x != TimerReason::Dial(NodeId::from_u64(0)));
        expected.sort();
        let mut got = Vec::new();
        while let Some(r) = t.pop_due(Time::from_millis(1000)) {
            got.push(r);
        }
        assert_eq!(got, expected.iter().map(|&(_, r)| r).collect::<Vec<_>>());
    }
}
