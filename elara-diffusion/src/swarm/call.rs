//! Group mode: a small call where every participant is the authority of its own tracks.
//!
//! Each track is a state whose tree is a star: its participant is the root and every other
//! participant that wants the track is a direct child. One connection per pair, opened by the
//! lower id; a hello then a call offer on every connection; each receiver declares interest per
//! track; muting another participant's track withdraws that interest (the sender stops sending
//! it on that link at once), muting one's own track stops publishing it.

use std::collections::BTreeSet;

use bytes::Bytes;
use elara_core::wire::MAX_TRACKS;
use elara_core::{InterestLevel, Message, NodeId, StateId, Time, TrackInfo};

use super::{Call, Event, SwarmNode};

impl SwarmNode {
    /// Joins call `call` with the given participants (this node may be listed or not) and
    /// offering `tracks` (at most [`MAX_TRACKS`]; this node is their authority). Connects to
    /// every participant with a higher id; lower ids connect to us.
    pub fn join_call(
        &mut self,
        now: Time,
        call: u64,
        participants: &[NodeId],
        mut tracks: Vec<TrackInfo>,
    ) {
        let me = self.cfg.id;
        tracks.truncate(MAX_TRACKS);
        let participants: BTreeSet<NodeId> =
            participants.iter().copied().filter(|p| *p != me).collect();
        for t in &tracks {
            let tree = self.states.get_or_default(t.state);
            tree.authority = Some(me);
            tree.call = Some(call);
        }
        self.call = Some(Call {
            id: call,
            participants: participants.clone(),
            tracks,
        });
        for p in participants {
            if me < p {
                self.dial(now, p, Bytes::new());
            }
            if self.peers.get(&p).is_some_and(|x| x.is_connected()) {
                self.offer_call_to(p);
            }
        }
        self.health_dirty = true;
    }

    /// Mutes (stops publishing) or unmutes one of this node's own tracks. While muted,
    /// [`SwarmNode::publish`] refuses the track's updates and queued ones are not sent.
    pub fn set_muted(&mut self, _now: Time, state: StateId, muted: bool) {
        if let Some(t) = self.states.get_mut(&state)
            && t.authority == Some(self.cfg.id)
        {
            t.muted = muted;
        }
    }

    /// Sends our call offer to `peer` if it takes part in our call.
    pub(crate) fn offer_call_to(&mut self, peer: NodeId) {
        let Some(call) = &self.call else {
            return;
        };
        if !call.participants.contains(&peer) {
            return;
        }
        let msg = Message::CallOffer {
            call: call.id,
            tracks: call.tracks.clone(),
        };
        self.send_control(peer, msg);
    }

    pub(crate) fn on_call_offer(
        &mut self,
        now: Time,
        from: NodeId,
        call: u64,
        tracks: &[TrackInfo],
    ) {
        let me = self.cfg.id;
        let default_level = self.cfg.call_interest;
        let ok = self
            .call
            .as_ref()
            .is_some_and(|c| c.id == call && c.participants.contains(&from));
        if !ok {
            self.counters.unexpected += 1;
            return;
        }
        for track in tracks.iter().take(MAX_TRACKS) {
            let tree = self.states.get_or_default(track.state);
            if tree.authority.is_some_and(|a| a != from) || tree.authority == Some(me) {
                // A track id someone else already owns: not this participant's to offer.
                self.counters.unexpected += 1;
                continue;
            }
            let fresh = tree.authority.is_none();
            tree.authority = Some(from);
            tree.call = Some(call);
            tree.parent = Some(from);
            tree.path = vec![from];
            if fresh {
                tree.own = default_level;
            }
            let level = tree.aggregated();
            tree.sent_interest = level;
            if level.is_interested() {
                self.send_interest(from, track.state, level, 0);
            }
            self.events.push_back(Event::TrackOffered {
                call,
                peer: from,
                track: *track,
            });
        }
        let _ = (now, InterestLevel::None);
    }
}
