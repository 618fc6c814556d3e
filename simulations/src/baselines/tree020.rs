//! The original ELARA 0.2.0 livestream policy: the publisher serves up to 50 viewers directly
//! (a star); when the 51st arrives it switches to a relay tree of fanout 5 that it builds and
//! extends depth-first (each new viewer goes under the first node with a free slot in pre-order
//! from the root), so the tree's depth grows with the audience. Relays forward every update to
//! all their children (0.2.0 sent everything to everyone; interest levels are not used).
//!
//! The publisher is the coordinator: viewers send it `JoinRequest`; it answers `JoinAccept`
//! (served directly) or `JoinRedirect` naming the parent; the viewer then sends `JoinRequest` to
//! that parent, which accepts it as a child. A viewer that loses its parent asks the coordinator
//! again; the coordinator then drops the lost parent from its tree.

use std::collections::BTreeMap;

use elara_core::{InterestLevel, Message, NodeId, PeerInfo, StateId, StateUpdate, Time};

use super::{Io, Playback, Receipt};
use crate::protocol::{
    LinkStats, NodeSetup, Protocol, ProtocolEvent, ProtocolKind, TrackEntry, Transmit,
};

/// Viewers served directly before switching to a tree (0.2.0's `star_to_tree_threshold`).
pub const STAR_LIMIT: usize = 50;
/// Children per tree node (0.2.0's `tree_fanout`).
pub const FANOUT: usize = 5;

/// The ELARA 0.2.0 baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tree020;

impl ProtocolKind for Tree020 {
    type Node = Tree020Node;
    fn name(&self) -> &'static str {
        "elara-0.2"
    }
    fn create(&self, setup: &NodeSetup, _now: Time) -> Tree020Node {
        Tree020Node {
            id: setup.id,
            tracks: Vec::new(),
            coordinator: None,
            streams: Vec::new(),
            rx: Playback::default(),
            io: Io::default(),
            retry_at: None,
        }
    }
}

#[derive(Default)]
struct Slot {
    parent: Option<NodeId>,
    children: Vec<NodeId>,
}

/// The publisher's view of its tree.
struct Coordinator {
    key: StateId,
    root: NodeId,
    tree: bool,
    members: Vec<NodeId>,
    slots: BTreeMap<NodeId, Slot>,
    /// Pre-order cursor of the depth-first placement.
    stack: Vec<NodeId>,
}

impl Coordinator {
    fn new(key: StateId, root: NodeId) -> Self {
        let mut slots = BTreeMap::new();
        slots.insert(root, Slot::default());
        Coordinator {
            key,
            root,
            tree: false,
            members: Vec::new(),
            slots,
            stack: vec![root],
        }
    }

    fn children(&self, n: NodeId) -> &[NodeId] {
        self.slots.get(&n).map_or(&[], |s| &s.children)
    }

    /// The first node with a free slot in pre-order from the root.
    fn place(&mut self) -> NodeId {
        loop {
            let Some(top) = self.stack.last().copied() else {
                self.stack.push(self.root);
                continue;
            };
            let Some(slot) = self.slots.get(&top) else {
                self.stack.pop();
                continue;
            };
            if slot.children.len() < FANOUT {
                return top;
            }
            self.stack.pop();
            let kids = slot.children.clone();
            self.stack.extend(kids.into_iter().rev());
        }
    }

    fn attach(&mut self, child: NodeId, parent: NodeId) {
        self.slots.entry(parent).or_default().children.push(child);
        self.slots.entry(child).or_default().parent = Some(parent);
    }

    fn detach(&mut self, n: NodeId) {
        let old = self.slots.get(&n).and_then(|s| s.parent);
        if let Some(p) = old
            && let Some(ps) = self.slots.get_mut(&p)
        {
            ps.children.retain(|c| *c != n);
        }
        if let Some(s) = self.slots.get_mut(&n) {
            s.parent = None;
        }
    }

    fn remove(&mut self, n: NodeId) {
        if n == self.root || !self.slots.contains_key(&n) {
            return;
        }
        self.detach(n);
        self.slots.remove(&n);
        self.members.retain(|m| *m != n);
        self.stack.clear();
        self.stack.push(self.root);
    }

    /// Admits `m`, re-announces its place when it asks again, or — when it reports that its
    /// parent is gone (`parent_lost`) — removes that parent and places `m` again. Returns the
    /// (member, parent) assignments to announce.
    fn join(&mut self, m: NodeId, parent_lost: bool) -> Vec<(NodeId, NodeId)> {
        let old = self.slots.get(&m).and_then(|s| s.parent);
        match old {
            Some(old) if parent_lost && old != self.root => self.remove(old),
            Some(old) if !parent_lost => return vec![(m, old)],
            _ => {}
        }
        if self.slots.contains_key(&m) {
            self.detach(m);
        } else {
            self.members.push(m);
        }
        if !self.tree && self.members.len() > STAR_LIMIT {
            // Switch to the tree: re-add every member depth-first, in join order.
            self.tree = true;
            for s in self.slots.values_mut() {
                s.children.clear();
                s.parent = None;
            }
            self.stack = vec![self.root];
            let members = self.members.clone();
            return members
                .into_iter()
                .map(|x| {
                    let p = self.place();
                    self.attach(x, p);
                    (x, p)
                })
                .collect();
        }
        let p = if self.tree { self.place() } else { self.root };
        self.attach(m, p);
        vec![(m, p)]
    }
}

/// This node's membership in one publisher's tree.
struct Stream {
    key: StateId,
    authority: NodeId,
    parent: Option<NodeId>,
    children: Vec<NodeId>,
}

/// One node of the ELARA 0.2.0 baseline.
pub struct Tree020Node {
    id: NodeId,
    tracks: Vec<TrackEntry>,
    coordinator: Option<Coordinator>,
    streams: Vec<Stream>,
    rx: Playback,
    io: Io,
    /// When to ask the coordinator again for streams without a parent.
    retry_at: Option<Time>,
}

impl Tree020Node {
    /// The stream key (smallest state id) of the publisher of `state`.
    fn key_of(&self, state: StateId) -> Option<(StateId, NodeId)> {
        let a = self.tracks.iter().find(|t| t.state == state)?.authority;
        let key = self
            .tracks
            .iter()
            .filter(|t| t.authority == a)
            .map(|t| t.state)
            .min()?;
        Some((key, a))
    }

    fn announce(&mut self, assignments: Vec<(NodeId, NodeId)>) {
        let Some(c) = &self.coordinator else {
            return;
        };
        let key = c.key;
        for (m, p) in assignments {
            if p == self.id {
                self.io.send(
                    m,
                    Message::JoinAccept {
                        state: key,
                        depth: 0,
                        path: vec![self.id],
                    },
                );
            } else {
                self.io.send(
                    m,
                    Message::JoinRedirect {
                        state: key,
                        candidates: vec![PeerInfo {
                            id: p,
                            addr: bytes::Bytes::new(),
                            spare_kbps: 0,
                            depth: 0,
                            slots: 0,
                        }],
                    },
                );
            }
        }
    }

    fn lost(&mut self, now: Time, peer: NodeId) {
        if let Some(c) = &mut self.coordinator {
            c.remove(peer);
        }
        for s in &mut self.streams {
            s.children.retain(|c| *c != peer);
            if s.parent == Some(peer) {
                s.parent = None;
                self.io.event(ProtocolEvent::ParentChanged {
                    state: s.key,
                    parent: None,
                });
                // Report the loss to the coordinator, which drops the lost node and re-places us.
                self.io.send(
                    s.authority,
                    Message::Interest {
                        state: s.key,
                        level: InterestLevel::None,
                        ttl_ms: 0,
                        height: 0,
                    },
                );
                self.retry_at.get_or_insert(now + super::RETRY);
            }
        }
    }

    /// Moves to a new parent for stream `key`, withdrawing from the old relay; false when this
    /// node is not in that stream.
    fn set_parent(&mut self, key: StateId, parent: NodeId) -> bool {
        let Some(s) = self.streams.iter_mut().find(|s| s.key == key) else {
            return false;
        };
        if let Some(old) = s.parent
            && old != parent
            && old != s.authority
        {
            self.io.send(
                old,
                Message::Interest {
                    state: key,
                    level: InterestLevel::None,
                    ttl_ms: 0,
                    height: 0,
                },
            );
        }
        s.parent = Some(parent);
        true
    }

    fn forward(&mut self, key: StateId, update: &StateUpdate, hops: u8) {
        let targets: &[NodeId] = match &self.coordinator {
            Some(c) if c.key == key => c.children(c.root),
            _ => match self.streams.iter().find(|s| s.key == key) {
                Some(s) => &s.children,
                None => &[],
            },
        };
        for &to in targets {
            self.io.send(
                to,
                Message::Update {
                    hops,
                    update: update.clone(),
                },
            );
        }
    }
}

impl Protocol for Tree020Node {
    fn start(&mut self, _now: Time, tracks: &[TrackEntry]) {
        self.tracks = tracks.to_vec();
        let mine = tracks
            .iter()
            .filter(|t| t.authority == self.id)
            .map(|t| t.state)
            .min();
        if let Some(key) = mine {
            self.coordinator = Some(Coordinator::new(key, self.id));
        }
    }

    fn handle_message(&mut self, now: Time, from: NodeId, message: Message) {
        match message {
            Message::JoinRequest { state } => {
                if let Some(c) = &mut self.coordinator
                    && c.key == state
                {
                    let a = c.join(from, false);
                    self.announce(a);
                    return;
                }
                if let Some(s) = self.streams.iter_mut().find(|s| s.key == state) {
                    if !s.children.contains(&from) {
                        s.children.push(from);
                    }
                    self.io.send(
                        from,
                        Message::JoinAccept {
                            state,
                            depth: 0,
                            path: Vec::new(),
                        },
                    );
                }
            }
            Message::JoinRedirect { state, candidates } => {
                if let Some(p) = candidates.first().map(|c| c.id)
                    && self.set_parent(state, p)
                {
                    self.io.send(p, Message::JoinRequest { state });
                }
            }
            Message::JoinAccept { state, .. } if self.set_parent(state, from) => {
                self.io.event(ProtocolEvent::ParentChanged {
                    state,
                    parent: Some(from),
                });
            }
            Message::Interest {
                state,
                level: InterestLevel::None,
                ..
            } => {
                // To the coordinator: "my parent is gone"; to a relay: "I moved away".
                if let Some(c) = &mut self.coordinator
                    && c.key == state
                {
                    let a = c.join(from, true);
                    self.announce(a);
                    return;
                }
                if let Some(s) = self.streams.iter_mut().find(|s| s.key == state) {
                    s.children.retain(|c| *c != from);
                }
            }
            Message::Update { hops, update } => {
                let Some((key, authority)) = self.key_of(update.state) else {
                    return;
                };
                if authority != update.source {
                    return;
                }
                if let Receipt::New { deliver } = self.rx.receive(&update) {
                    if deliver {
                        self.io.deliver(&update, hops);
                    }
                    self.forward(key, &update, hops.saturating_add(1));
                }
            }
            Message::Leave { .. } => self.lost(now, from),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            for s in &self.streams {
                if s.parent.is_none() {
                    self.io
                        .send(s.authority, Message::JoinRequest { state: s.key });
                    self.retry_at = Some(now + super::RETRY);
                }
            }
        }
    }

    fn publish(&mut self, _now: Time, update: StateUpdate) {
        if let Some((key, _)) = self.key_of(update.state) {
            self.forward(key, &update, 0);
        }
    }

    fn declare_interest(&mut self, now: Time, state: StateId, level: InterestLevel) {
        if !level.is_interested() {
            return;
        }
        let Some((key, authority)) = self.key_of(state) else {
            return;
        };
        if authority == self.id || self.streams.iter().any(|s| s.key == key) {
            return;
        }
        self.streams.push(Stream {
            key,
            authority,
            parent: None,
            children: Vec::new(),
        });
        self.retry_at.get_or_insert(now + super::RETRY);
        self.io.send(authority, Message::JoinRequest { state: key });
    }

    fn link_feedback(&mut self, _now: Time, _peer: NodeId, _stats: LinkStats) {}

    fn peer_connected(&mut self, _now: Time, _peer: NodeId) {}

    fn peer_lost(&mut self, now: Time, peer: NodeId) {
        self.lost(now, peer);
    }

    fn leave(&mut self, _now: Time) {
        let mut told: Vec<NodeId> = Vec::new();
        for s in &self.streams {
            let mut to = s.children.clone();
            to.push(s.authority);
            to.extend(s.parent);
            for p in to {
                if !told.contains(&p) {
                    told.push(p);
                    self.io.send(p, Message::Leave { reason: 0 });
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_u64(n)
    }

    #[test]
    fn star_then_depth_first_tree() {
        let mut c = Coordinator::new(StateId(1), id(0));
        for i in 1..=STAR_LIMIT as u64 {
            assert_eq!(c.join(id(i), false), vec![(id(i), id(0))]);
        }
        let all = c.join(id(51), false);
        assert_eq!(all.len(), 51);
        // Root takes 5, then the first child fills, then its first child, ...: depth-first.
        assert_eq!(c.children(id(0)).len(), FANOUT);
        assert_eq!(c.children(id(1)).len(), FANOUT);
        assert_eq!(c.children(id(6)).len(), FANOUT);
        assert_eq!(c.children(id(2)).len(), 0);
        let depth = |mut n: NodeId| {
            let mut d = 0;
            while let Some(p) = c.slots.get(&n).and_then(|s| s.parent) {
                n = p;
                d += 1;
            }
            d
        };
        assert!(depth(id(51)) >= 8, "depth {}", depth(id(51)));
        // Asking again re-announces the same place; reporting the parent lost removes it.
        let p = c.slots[&id(51)].parent.unwrap();
        assert_eq!(c.join(id(51), false), vec![(id(51), p)]);
        c.join(id(51), true);
        assert!(!c.slots.contains_key(&p));
    }
}
