//! Random push gossip with fanout k over partial views.
//!
//! Membership: a joining node asks the bootstrap node (`JoinRequest`), which keeps the list of
//! members and answers with random candidates (`JoinRedirect`); the node greets them (`Hello`)
//! and both sides add each other to their views (capped). A node whose view shrinks below the
//! fanout asks the bootstrap again.
//!
//! Dissemination: a publisher pushes each new update to `fanout` random members; every node
//! pushes each update it sees for the first time to `fanout` random peers of its view (not back
//! to the sender). Interest is ignored: everyone gets everything.

use elara_core::{InterestLevel, Message, NodeId, PeerInfo, StateId, StateUpdate, Time};
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

use super::{Io, Playback, Receipt};
use crate::protocol::{
    LinkStats, NodeSetup, Protocol, ProtocolEvent, ProtocolKind, TrackEntry, Transmit,
};

/// The gossip baseline.
#[derive(Clone, Copy, Debug)]
pub struct Gossip {
    /// Peers each new update is pushed to.
    pub fanout: usize,
    /// Size of each node's partial view.
    pub view: usize,
}

impl ProtocolKind for Gossip {
    type Node = GossipNode;
    fn name(&self) -> &'static str {
        "gossip"
    }
    fn create(&self, setup: &NodeSetup, _now: Time) -> GossipNode {
        GossipNode {
            id: setup.id,
            bootstrap: setup.bootstrap.first().copied().unwrap_or(setup.id),
            fanout: self.fanout,
            view_cap: self.view,
            tracks: Vec::new(),
            view: Vec::new(),
            members: Vec::new(),
            member_set: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(setup.seed),
            rx: Playback::default(),
            io: Io::default(),
            scratch: Vec::new(),
            retry_at: None,
        }
    }
}

/// One node of the gossip baseline.
pub struct GossipNode {
    id: NodeId,
    bootstrap: NodeId,
    fanout: usize,
    view_cap: usize,
    tracks: Vec<TrackEntry>,
    view: Vec<NodeId>,
    /// At the bootstrap node: every member, in join order.
    members: Vec<NodeId>,
    member_set: BTreeSet<NodeId>,
    rng: ChaCha8Rng,
    rx: Playback,
    io: Io,
    scratch: Vec<NodeId>,
    /// When to ask the bootstrap again if it has not answered.
    retry_at: Option<Time>,
}

impl GossipNode {
    fn is_bootstrap(&self) -> bool {
        self.id == self.bootstrap
    }

    fn add_view(&mut self, peer: NodeId) -> bool {
        if peer == self.id || self.view.contains(&peer) || self.view.len() >= self.view_cap {
            return false;
        }
        self.view.push(peer);
        true
    }

    fn forget(&mut self, peer: NodeId) {
        self.view.retain(|p| *p != peer);
        if self.member_set.remove(&peer) {
            self.members.retain(|p| *p != peer);
        }
        if !self.is_bootstrap() && self.view.len() < self.fanout && self.retry_at.is_none() {
            self.io
                .send(self.bootstrap, Message::JoinRequest { state: StateId(0) });
        }
    }

    fn push(&mut self, update: &StateUpdate, hops: u8, except: Option<NodeId>) {
        let pool = if self.is_bootstrap() {
            &self.members
        } else {
            &self.view
        };
        // Sample one spare index so that skipping the sender still leaves `fanout` targets.
        let want = (self.fanout + 1).min(pool.len());
        let picks = rand::seq::index::sample(&mut self.rng, pool.len(), want);
        self.scratch.clear();
        for i in picks.iter() {
            let p = pool[i];
            if Some(p) != except && self.scratch.len() < self.fanout {
                self.scratch.push(p);
            }
        }
        for i in 0..self.scratch.len() {
            self.io.send(
                self.scratch[i],
                Message::Update {
                    hops,
                    update: update.clone(),
                },
            );
        }
    }
}

impl Protocol for GossipNode {
    fn start(&mut self, now: Time, tracks: &[TrackEntry]) {
        self.tracks = tracks.to_vec();
        if !self.is_bootstrap() {
            self.io
                .send(self.bootstrap, Message::JoinRequest { state: StateId(0) });
            self.retry_at = Some(now + super::RETRY);
        }
    }

    fn handle_message(&mut self, _now: Time, from: NodeId, message: Message) {
        match message {
            Message::JoinRequest { .. } if self.is_bootstrap() => {
                let candidates: Vec<PeerInfo> = self
                    .members
                    .choose_multiple(&mut self.rng, self.view_cap.min(16))
                    .filter(|p| **p != from)
                    .map(|p| PeerInfo {
                        id: *p,
                        addr: bytes::Bytes::new(),
                        spare_kbps: 0,
                        depth: 0,
                        slots: 0,
                    })
                    .collect();
                if self.member_set.insert(from) {
                    self.members.push(from);
                }
                self.io.send(
                    from,
                    Message::JoinRedirect {
                        state: StateId(0),
                        candidates,
                    },
                );
            }
            Message::JoinRedirect { candidates, .. } => {
                self.retry_at = None;
                for c in candidates {
                    if self.add_view(c.id) {
                        self.io.send(
                            c.id,
                            Message::Hello {
                                node: self.id,
                                caps: Default::default(),
                            },
                        );
                    }
                }
            }
            Message::Hello { .. } => {
                self.add_view(from);
            }
            Message::Update { hops, update } => {
                if !self
                    .tracks
                    .iter()
                    .any(|t| t.state == update.state && t.authority == update.source)
                {
                    return;
                }
                match self.rx.receive(&update) {
                    Receipt::Duplicate => {}
                    Receipt::New { deliver } => {
                        if deliver {
                            self.io.deliver(&update, hops);
                        }
                        self.push(&update, hops.saturating_add(1), Some(from));
                    }
                }
            }
            Message::Leave { .. } => self.forget(from),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = Some(now + super::RETRY);
            self.io
                .send(self.bootstrap, Message::JoinRequest { state: StateId(0) });
        }
    }

    fn publish(&mut self, _now: Time, update: StateUpdate) {
        self.rx.receive(&update);
        self.push(&update, 0, None);
    }

    fn declare_interest(&mut self, _now: Time, _state: StateId, _level: InterestLevel) {}

    fn link_feedback(&mut self, _now: Time, _peer: NodeId, _stats: LinkStats) {}

    fn peer_connected(&mut self, _now: Time, _peer: NodeId) {}

    fn peer_lost(&mut self, _now: Time, peer: NodeId) {
        self.forget(peer);
    }

    fn leave(&mut self, _now: Time) {
        let mut to = self.view.clone();
        if !to.contains(&self.bootstrap) {
            to.push(self.bootstrap);
        }
        for p in to {
            self.io.send(p, Message::Leave { reason: 0 });
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
