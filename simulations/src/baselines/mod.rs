//! The baselines ELARA is compared against, as [`Protocol`](crate::protocol::Protocol)
//! implementations driven exactly like the swarm node:
//!
//! - [`star`]: the publisher sends every update straight to every viewer;
//! - [`gossip`]: random push gossip with a fixed fanout over partial views;
//! - [`tree020`]: the original ELARA 0.2.0 policy — a star up to 50 viewers, then a relay tree of
//!   fanout 5 filled depth-first by a coordinator at the publisher.
//!
//! All of them deliver each update at most once and never deliver a video delta whose group's
//! keyframe the node has not delivered (the receiver-side rules every player applies); what
//! differs is who sends what to whom.

pub mod gossip;
pub mod star;
pub mod tree020;

use std::collections::{BTreeMap, VecDeque};

use elara_core::{GroupId, Message, NodeId, StateId, StateUpdate, UpdateKind};

use crate::protocol::{ProtocolEvent, Transmit};

/// Sequence numbers seen recently: a sliding 1,024-wide bit window.
#[derive(Clone, Default)]
pub(crate) struct SeqWindow {
    top: u64,
    started: bool,
    bits: [u64; 16],
}

const WINDOW: u64 = 1024;

impl SeqWindow {
    /// Records `seq`; true when it was not seen before (and is not too old to tell).
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        if !self.started {
            self.started = true;
            self.top = seq;
            self.set(seq);
            return true;
        }
        if seq > self.top {
            let gap = seq - self.top;
            if gap >= WINDOW {
                self.bits = [0; 16];
            } else {
                for s in self.top + 1..=seq {
                    self.clear(s);
                }
            }
            self.top = seq;
            self.set(seq);
            return true;
        }
        if self.top - seq >= WINDOW {
            return false;
        }
        let i = (seq % WINDOW) as usize;
        let had = self.bits[i / 64] & (1 << (i % 64)) != 0;
        self.set(seq);
        !had
    }

    fn set(&mut self, seq: u64) {
        let i = (seq % WINDOW) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, seq: u64) {
        let i = (seq % WINDOW) as usize;
        self.bits[i / 64] &= !(1 << (i % 64));
    }
}

#[derive(Clone, Default)]
struct TrackRx {
    seen: SeqWindow,
    keyed: [Option<GroupId>; 2],
    /// Fragments seen of the newest keyframe still incomplete: its group and how many.
    assembling: Option<(GroupId, u16)>,
}

/// What became of a received update.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Receipt {
    /// Seen before: drop it.
    Duplicate,
    /// New; `deliver` says whether the player can use it (a delta needs its keyframe).
    New {
        /// Hand it to the application.
        deliver: bool,
    },
}

/// Receiver-side rules shared by the baselines: exactly once, no delta without its keyframe.
#[derive(Default)]
pub(crate) struct Playback {
    tracks: BTreeMap<StateId, TrackRx>,
}

impl Playback {
    /// Classifies a received update.
    pub(crate) fn receive(&mut self, u: &StateUpdate) -> Receipt {
        let t = self.tracks.entry(u.state).or_default();
        if !t.seen.insert(u.seq) {
            return Receipt::Duplicate;
        }
        if u.kind != UpdateKind::Video {
            return Receipt::New { deliver: true };
        }
        if u.keyframe {
            // A keyframe cut into fragments keys its group once every fragment is in (in any
            // order: the seq window already dropped duplicates).
            let seen = match t.assembling {
                Some((g, n)) if g == u.group => n + 1,
                _ => 1,
            };
            if seen >= u.fragment.count {
                t.keyed = [Some(u.group), t.keyed[0]];
                t.assembling = None;
            } else {
                t.assembling = Some((u.group, seen));
            }
            return Receipt::New { deliver: true };
        }
        Receipt::New {
            deliver: t.keyed.contains(&Some(u.group)),
        }
    }
}

/// How long a baseline waits before asking again (join, subscription) when nothing came back.
pub(crate) const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Outgoing messages and events of a baseline node.
#[derive(Default)]
pub(crate) struct Io {
    out: VecDeque<Transmit>,
    events: VecDeque<ProtocolEvent>,
}

impl Io {
    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        self.out.push_back(Transmit { to, message });
    }
    /// Hands `u` to the application; `hops` is the relay count carried in the message (0 when
    /// it came straight from the authority), reported as links crossed.
    pub(crate) fn deliver(&mut self, u: &StateUpdate, hops: u8) {
        self.events.push_back(ProtocolEvent::Delivered {
            state: u.state,
            seq: u.seq,
            hops: hops.saturating_add(1),
        });
    }
    pub(crate) fn event(&mut self, e: ProtocolEvent) {
        self.events.push_back(e);
    }
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    pub(crate) fn poll_event(&mut self) -> Option<ProtocolEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elara_core::Time;

    #[test]
    fn window_dedupes_and_slides() {
        let mut w = SeqWindow::default();
        assert!(w.insert(5));
        assert!(!w.insert(5));
        assert!(w.insert(3));
        assert!(w.insert(2000));
        assert!(!w.insert(5), "too old to tell is treated as seen");
        assert!(w.insert(1999));
        assert!(!w.insert(1999));
    }

    #[test]
    fn deltas_wait_for_their_keyframe() {
        let mut p = Playback::default();
        let v = |seq, group, key| {
            let u = StateUpdate::new(StateId(1), NodeId::from_u64(1), seq, Time::ZERO)
                .with_kind(UpdateKind::Video)
                .with_group(GroupId(group));
            if key { u.keyframe() } else { u }
        };
        assert_eq!(p.receive(&v(1, 0, false)), Receipt::New { deliver: false });
        assert_eq!(p.receive(&v(2, 1, true)), Receipt::New { deliver: true });
        assert_eq!(p.receive(&v(3, 1, false)), Receipt::New { deliver: true });
        assert_eq!(p.receive(&v(3, 1, false)), Receipt::Duplicate);
    }
}
