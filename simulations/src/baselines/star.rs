//! Direct star: every viewer subscribes at the publisher with an `Interest` message and the
//! publisher sends each update to each subscriber itself (Low-interest viewers get keyframes
//! and audio only). No relaying: the publisher's uplink carries everything.

use elara_core::{InterestLevel, Message, NodeId, StateId, StateUpdate, Time, UpdateKind};

use super::{Io, Playback, Receipt};
use crate::protocol::{
    LinkStats, NodeSetup, Protocol, ProtocolEvent, ProtocolKind, TrackEntry, Transmit,
};

/// The star baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Star;

impl ProtocolKind for Star {
    type Node = StarNode;
    fn name(&self) -> &'static str {
        "star"
    }
    fn create(&self, setup: &NodeSetup, _now: Time) -> StarNode {
        StarNode {
            id: setup.id,
            tracks: Vec::new(),
            subscribers: Vec::new(),
            rx: Playback::default(),
            io: Io::default(),
            pending: Vec::new(),
            retry_at: None,
        }
    }
}

/// One node of the star baseline.
pub struct StarNode {
    id: NodeId,
    tracks: Vec<TrackEntry>,
    /// For each state this node publishes: its subscribers in subscription order.
    subscribers: Vec<(StateId, Vec<(NodeId, InterestLevel)>)>,
    rx: Playback,
    io: Io,
    /// Subscriptions not yet answered by an update, and when to ask again.
    pending: Vec<(StateId, InterestLevel)>,
    retry_at: Option<Time>,
}

impl StarNode {
    fn subscribe(&mut self, state: StateId, level: InterestLevel) {
        if let Some(a) = self.authority(state)
            && a != self.id
        {
            self.io.send(
                a,
                Message::Interest {
                    state,
                    level,
                    ttl_ms: 0,
                    height: 0,
                },
            );
        }
    }

    fn authority(&self, state: StateId) -> Option<NodeId> {
        self.tracks
            .iter()
            .find(|t| t.state == state)
            .map(|t| t.authority)
    }

    fn drop_peer(&mut self, peer: NodeId) {
        for (_, subs) in &mut self.subscribers {
            subs.retain(|s| s.0 != peer);
        }
    }
}

impl Protocol for StarNode {
    fn start(&mut self, _now: Time, tracks: &[TrackEntry]) {
        self.tracks = tracks.to_vec();
        for t in tracks {
            if t.authority == self.id {
                self.subscribers.push((t.state, Vec::new()));
            }
        }
    }

    fn handle_message(&mut self, _now: Time, from: NodeId, message: Message) {
        match message {
            Message::Interest { state, level, .. } => {
                let Some((_, subs)) = self.subscribers.iter_mut().find(|s| s.0 == state) else {
                    return;
                };
                match subs.iter_mut().find(|s| s.0 == from) {
                    Some(s) if level.is_interested() => s.1 = level,
                    Some(_) => subs.retain(|s| s.0 != from),
                    None if level.is_interested() => subs.push((from, level)),
                    None => {}
                }
            }
            Message::Update { hops, update } => {
                if self.authority(update.state) != Some(update.source) {
                    return;
                }
                self.pending.retain(|p| p.0 != update.state);
                if let Receipt::New { deliver: true } = self.rx.receive(&update) {
                    self.io.deliver(&update, hops);
                }
            }
            Message::Leave { .. } => self.drop_peer(from),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = (!self.pending.is_empty()).then(|| now + super::RETRY);
            for (state, level) in self.pending.clone() {
                self.subscribe(state, level);
            }
        }
    }

    fn publish(&mut self, _now: Time, update: StateUpdate) {
        let Some((_, subs)) = self.subscribers.iter().find(|s| s.0 == update.state) else {
            return;
        };
        let independent = update.kind != UpdateKind::Video || update.keyframe;
        for &(to, level) in subs {
            if level == InterestLevel::Low && !independent {
                continue;
            }
            self.io.send(
                to,
                Message::Update {
                    hops: 0,
                    update: update.clone(),
                },
            );
        }
    }

    fn declare_interest(&mut self, now: Time, state: StateId, level: InterestLevel) {
        self.pending.retain(|p| p.0 != state);
        if level.is_interested() {
            self.pending.push((state, level));
            self.retry_at.get_or_insert(now + super::RETRY);
        }
        self.subscribe(state, level);
    }

    fn link_feedback(&mut self, _now: Time, _peer: NodeId, _stats: LinkStats) {}

    fn peer_connected(&mut self, _now: Time, _peer: NodeId) {}

    fn peer_lost(&mut self, _now: Time, peer: NodeId) {
        self.drop_peer(peer);
    }

    fn leave(&mut self, _now: Time) {
        let mut told = Vec::new();
        for t in &self.tracks {
            if t.authority != self.id && !told.contains(&t.authority) {
                told.push(t.authority);
                self.io.send(t.authority, Message::Leave { reason: 0 });
            }
        }
    }

    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        self.io.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<ProtocolEvent> {
        self.io.poll_event()
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        self.retry_at
    }
}
