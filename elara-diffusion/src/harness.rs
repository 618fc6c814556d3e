//! A deterministic in-memory network for [`SwarmNode`]s: many nodes wired by queues with
//! per-link latency, loss and bandwidth, stepped event by event until quiet or up to a time.
//!
//! Everything is ordered (a binary heap keyed by time then insertion order, `BTreeMap`s for
//! nodes and links) and every random draw comes from one seeded generator, so the same seed and
//! the same calls reproduce the same run exactly, event for event.
//!
//! The links model QUIC the way `elara-transport` uses it: update messages may be lost (they
//! ride datagrams or unreliable streams), control messages are never lost but a "lost" control
//! message arrives one round trip late (a retransmission). A connection takes one round trip to
//! come up. Each direction of a link serialises its messages at the link's bandwidth, so a node
//! that sends faster than its link sees its messages queue up; each node's scheduler is told the
//! link's bandwidth, RTT and loss as link feedback when the connection comes up. A killed node
//! vanishes silently: its neighbours find out through their keep-alive timeouts.
//!
//! ```
//! use elara_core::{Capabilities, NodeId};
//! use elara_diffusion::harness::{Harness, LinkProfile};
//! use elara_diffusion::swarm::SwarmConfig;
//!
//! let caps = Capabilities { max_children: 4, ..Default::default() };
//! let mut h = Harness::new(1, LinkProfile::lan());
//! h.add_node(SwarmConfig::new(NodeId::from_u64(1), caps));
//! h.add_node(SwarmConfig::new(NodeId::from_u64(2), caps).with_bootstrap(NodeId::from_u64(1)));
//! h.run_for(std::time::Duration::from_millis(100));
//! assert_eq!(h.node(NodeId::from_u64(2)).connected_peers().count(), 1);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use elara_core::{Message, NodeId, Time};
use foldhash::fast::FixedState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scheduler::LinkStats;
use crate::swarm::{Event, SwarmConfig, SwarmNode};

/// One direction of a link: delay, loss and bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkProfile {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Probability that an update message is lost (0.0-1.0).
    pub loss: f64,
    /// Bytes per second this direction carries (`u64::MAX`: unlimited).
    pub bandwidth: u64,
}

impl LinkProfile {
    /// A local network: 1 ms, no loss, 1 Gbit/s.
    pub const fn lan() -> Self {
        LinkProfile {
            latency: Duration::from_millis(1),
            loss: 0.0,
            bandwidth: 125_000_000,
        }
    }

    /// A typical internet path: 20 ms, no loss, 20 Mbit/s.
    pub const fn wan() -> Self {
        LinkProfile {
            latency: Duration::from_millis(20),
            loss: 0.0,
            bandwidth: 2_500_000,
        }
    }

    /// This profile with another loss probability.
    pub const fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// This profile with another bandwidth (bytes per second).
    pub const fn with_bandwidth(mut self, bandwidth: u64) -> Self {
        self.bandwidth = bandwidth;
        self
    }

    /// This profile with another one-way latency.
    pub const fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

/// What the harness counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarnessStats {
    /// Messages handed to a node.
    pub delivered: u64,
    /// Update messages lost on a link.
    pub lost: u64,
    /// Control messages that needed a retransmission.
    pub retransmitted: u64,
    /// Messages dropped because their connection or destination was gone.
    pub undeliverable: u64,
    /// Encoded bytes put on links.
    pub bytes: u64,
}

#[derive(Debug)]
enum Action {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    Connected {
        a: NodeId,
        b: NodeId,
    },
    Close {
        from: NodeId,
        to: NodeId,
        conn: u64,
    },
    Timeout {
        node: NodeId,
    },
}

struct Slot {
    node: SwarmNode,
    alive: bool,
    events: Vec<(Time, Event)>,
    timeout: Option<Time>,
}

/// The in-memory network. See the [module documentation](self).
pub struct Harness {
    now: Time,
    rng: ChaCha8Rng,
    order: u64,
    /// (due, insertion order, slot in `actions`): small keys, so the heap moves little.
    queue: BinaryHeap<Reverse<(Time, u64, u32)>>,
    actions: Vec<Option<Action>>,
    free_actions: Vec<u32>,
    nodes: BTreeMap<NodeId, Slot>,
    default_link: LinkProfile,
    links: BTreeMap<(NodeId, NodeId), LinkProfile>,
    busy_until: HashMap<(NodeId, NodeId), Time, FixedState>,
    /// Open connections, each with a generation so that a late close cannot cut a newer one.
    connections: HashMap<(NodeId, NodeId), u64, FixedState>,
    next_conn: u64,
    dirty: BTreeSet<NodeId>,
    in_flight: u64,
    stats: HarnessStats,
    record_events: bool,
    record_sends: bool,
    sends: Vec<SentUpdate>,
    scratch_tx: Vec<crate::swarm::Transmit>,
    scratch_req: Vec<(bool, NodeId)>,
    lose_next: Vec<LoseNext>,
}

/// A message to lose once ([`Harness::lose_next`]): sender, receiver, which message.
type LoseNext = (NodeId, NodeId, fn(&Message) -> bool);

/// An update message a node put on a link (recorded with [`Harness::record_sends`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentUpdate {
    /// When it left.
    pub at: Time,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The update's state.
    pub state: elara_core::StateId,
    /// The update's sequence number.
    pub seq: u64,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a < b { (a, b) } else { (b, a) }
}

impl Harness {
    /// An empty network whose links all default to `default_link`, with loss drawn from `seed`.
    pub fn new(seed: u64, default_link: LinkProfile) -> Self {
        Harness {
            now: Time::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            order: 0,
            queue: BinaryHeap::new(),
            actions: Vec::new(),
            free_actions: Vec::new(),
            nodes: BTreeMap::new(),
            default_link,
            links: BTreeMap::new(),
            busy_until: HashMap::with_hasher(FixedState::with_seed(0)),
            connections: HashMap::with_hasher(FixedState::with_seed(0)),
            next_conn: 0,
            dirty: BTreeSet::new(),
            in_flight: 0,
            stats: HarnessStats::default(),
            record_events: true,
            record_sends: false,
            sends: Vec::new(),
            scratch_tx: Vec::new(),
            scratch_req: Vec::new(),
            lose_next: Vec::new(),
        }
    }

    /// Stops (or resumes) recording node events (they are still drained); saves memory in big
    /// runs that only read metrics.
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
    }

    /// Starts (or stops) recording every update message put on a link.
    pub fn record_sends(&mut self, on: bool) {
        self.record_sends = on;
    }

    /// Update messages recorded since [`Harness::record_sends`] was switched on.
    pub fn sends(&self) -> &[SentUpdate] {
        &self.sends
    }

    /// Puts `msg` on the connection `from -> to` as if `from`'s node had sent it (for tests of
    /// misbehaving peers). Returns false when the two are not connected.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: Message) -> bool {
        if !self.connections.contains_key(&pair(from, to)) {
            return false;
        }
        self.send(from, to, msg);
        true
    }

    /// Loses the next message `from` puts on the link to `to` that `matches` accepts, whatever
    /// the link's loss rate (for tests of one particular loss): an update is gone, a control
    /// message arrives one round trip late (a retransmission). Several calls queue up; each
    /// loses one message.
    pub fn lose_next(&mut self, from: NodeId, to: NodeId, matches: fn(&Message) -> bool) {
        self.lose_next.push((from, to, matches));
    }

    /// True when the two nodes have a connection.
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.connections.contains_key(&pair(a, b))
    }

    /// Adds a node, created now; returns its id.
    pub fn add_node(&mut self, cfg: SwarmConfig) -> NodeId {
        let id = cfg.id;
        let node = SwarmNode::new(cfg, self.now);
        self.nodes.insert(
            id,
            Slot {
                node,
                alive: true,
                events: Vec::new(),
                timeout: None,
            },
        );
        self.dirty.insert(id);
        id
    }

    /// Current simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// A node (dead or alive). Panics on an unknown id: that is a bug in the test.
    pub fn node(&self, id: NodeId) -> &SwarmNode {
        &self.nodes[&id].node
    }

    /// A node, for calling its application methods; the harness drains it on the next step.
    pub fn node_mut(&mut self, id: NodeId) -> &mut SwarmNode {
        self.dirty.insert(id);
        &mut self.nodes.get_mut(&id).expect("unknown node id").node
    }

    /// Ids of all nodes, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// True unless the node was killed.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|s| s.alive)
    }

    /// Events a node emitted so far, with the time each was drained.
    pub fn events(&self, id: NodeId) -> Vec<Event> {
        self.nodes[&id]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Events a node emitted so far, with their times.
    pub fn timed_events(&self, id: NodeId) -> &[(Time, Event)] {
        &self.nodes[&id].events
    }

    /// Forgets the events recorded so far for every node.
    pub fn clear_events(&mut self) {
        for s in self.nodes.values_mut() {
            s.events.clear();
        }
    }

    /// Counters.
    pub fn stats(&self) -> HarnessStats {
        self.stats
    }

    /// Sets the profile of the direction `from -> to`; feeds the new figures to `from` if the
    /// two are connected.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, profile: LinkProfile) {
        self.links.insert((from, to), profile);
        if self.connections.contains_key(&pair(from, to)) {
            self.feedback(from, to);
        }
    }

    /// Kills a node: it stops processing anything and its neighbours are not told.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(s) = self.nodes.get_mut(&id) {
            s.alive = false;
            s.timeout = None;
        }
        self.connections.retain(|&(a, b), _| a != id && b != id);
    }

    fn profile(&self, from: NodeId, to: NodeId) -> LinkProfile {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    fn push(&mut self, at: Time, action: Action) {
        if matches!(action, Action::Deliver { .. } | Action::Connected { .. }) {
            self.in_flight += 1;
        }
        self.order += 1;
        let slot = match self.free_actions.pop() {
            Some(i) => {
                self.actions[i as usize] = Some(action);
                i
            }
            None => {
                self.actions.push(Some(action));
                (self.actions.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((at, self.order, slot)));
    }

    fn feedback(&mut self, from: NodeId, to: NodeId) {
        let p = self.profile(from, to);
        let back = self.profile(to, from);
        let stats = LinkStats {
            rtt: p.latency + back.latency,
            send_rate_estimate: p.bandwidth,
            loss: p.loss as f32,
            queued_bytes: 0,
        };
        let now = self.now;
        if let Some(s) = self.nodes.get_mut(&from) {
            s.node.link_feedback(now, to, stats);
        }
        self.dirty.insert(from);
    }

    /// Drains a node's transmits and events and re-arms its timeout.
    fn drain(&mut self, id: NodeId) {
        let now = self.now;
        let record = self.record_events;
        let Some(slot) = self.nodes.get_mut(&id) else {
            return;
        };
        if !slot.alive {
            return;
        }
        let mut out = std::mem::take(&mut self.scratch_tx);
        while let Some(t) = slot.node.poll_transmit(now) {
            out.push(t);
        }
        let mut requests = std::mem::take(&mut self.scratch_req);
        while let Some(e) = slot.node.poll_event() {
            match &e {
                Event::Connect { peer, .. } => requests.push((true, *peer)),
                Event::Disconnect { peer } => requests.push((false, *peer)),
                _ => {}
            }
            if record {
                slot.events.push((now, e));
            }
        }
        let timeout = slot.node.poll_timeout();
        if timeout != slot.timeout {
            slot.timeout = timeout;
            if let Some(at) = timeout {
                self.push(at.max(now), Action::Timeout { node: id });
            }
        }
        for t in out.drain(..) {
            self.send(id, t.to, t.message);
        }
        self.scratch_tx = out;
        for &(connect, peer) in &requests {
            if connect {
                if self.is_alive(peer) {
                    let rtt = self.profile(id, peer).latency + self.profile(peer, id).latency;
                    self.push(now + rtt, Action::Connected { a: id, b: peer });
                }
            } else if let Some(&conn) = self.connections.get(&pair(id, peer)) {
                // The close follows whatever the node sent before it (a goodbye, say).
                let lat = self.profile(id, peer).latency;
                let busy = self
                    .busy_until
                    .get(&(id, peer))
                    .copied()
                    .unwrap_or(now)
                    .max(now);
                self.push(
                    busy + lat,
                    Action::Close {
                        from: id,
                        to: peer,
                        conn,
                    },
                );
            }
        }
        requests.clear();
        self.scratch_req = requests;
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if !self.connections.contains_key(&pair(from, to)) {
            self.stats.undeliverable += 1;
            return;
        }
        if self.record_sends
            && let Message::Update { update, .. } = &msg
        {
            self.sends.push(SentUpdate {
                at: self.now,
                from,
                to,
                state: update.state,
                seq: update.seq,
            });
        }
        let p = self.profile(from, to);
        let size = msg.encoded_len() as u64;
        self.stats.bytes += size;
        let tx = if p.bandwidth == u64::MAX || p.bandwidth == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(size.saturating_mul(1_000_000) / p.bandwidth)
        };
        let busy = self.busy_until.entry((from, to)).or_insert(Time::ZERO);
        let start = (*busy).max(self.now);
        *busy = start + tx;
        let mut at = *busy + p.latency;
        let forced = self
            .lose_next
            .iter()
            .position(|&(f, t, matches)| f == from && t == to && matches(&msg));
        if let Some(i) = forced {
            self.lose_next.remove(i);
        }
        let random = p.loss > 0.0 && self.rng.random_bool(p.loss.clamp(0.0, 1.0));
        if forced.is_some() || random {
            if matches!(msg, Message::Update { .. }) {
                self.stats.lost += 1;
                return;
            }
            self.stats.retransmitted += 1;
            at += p.latency + self.profile(to, from).latency;
        }
        self.push(at, Action::Deliver { from, to, msg });
    }

    /// Processes the next queued action; false when nothing is queued.
    pub fn step(&mut self) -> bool {
        self.drain_dirty();
        let Some(Reverse((at, _, slot))) = self.queue.pop() else {
            return false;
        };
        let action = self.actions[slot as usize]
            .take()
            .expect("every queued slot holds an action");
        self.free_actions.push(slot);
        self.now = self.now.max(at);
        let now = self.now;
        match action {
            Action::Deliver { from, to, msg } => {
                self.in_flight -= 1;
                let connected = self.connections.contains_key(&pair(from, to));
                match self.nodes.get_mut(&to) {
                    Some(s) if s.alive && connected => {
                        self.stats.delivered += 1;
                        s.node.handle_message(now, from, msg);
                        self.drain(to);
                    }
                    _ => self.stats.undeliverable += 1,
                }
            }
            Action::Connected { a, b } => {
                self.in_flight -= 1;
                if self.is_alive(a) && self.is_alive(b) {
                    self.next_conn += 1;
                    self.connections.insert(pair(a, b), self.next_conn);
                    for (x, y) in [(a, b), (b, a)] {
                        if let Some(s) = self.nodes.get_mut(&x) {
                            s.node.peer_connected(now, y);
                        }
                        self.feedback(x, y);
                    }
                    self.drain(a);
                    self.drain(b);
                } else if self.is_alive(a) {
                    // The dial fails when the node's dial timeout fires.
                }
            }
            Action::Close { from, to, conn } => {
                if self.connections.get(&pair(from, to)) == Some(&conn)
                    && self.connections.remove(&pair(from, to)).is_some()
                    && let Some(s) = self.nodes.get_mut(&to)
                    && s.alive
                {
                    s.node.connection_lost(now, from);
                    self.drain(to);
                }
            }
            Action::Timeout { node } => {
                if let Some(s) = self.nodes.get_mut(&node)
                    && s.alive
                    && s.timeout == Some(at)
                {
                    s.timeout = None;
                    s.node.handle_timeout(now);
                    self.drain(node);
                }
            }
        }
        true
    }

    fn drain_dirty(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            self.drain(id);
        }
    }

    /// Processes everything due up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Time) {
        loop {
            self.drain_dirty();
            match self.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= t => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until no message or connection is in flight (timers may remain armed) or until
    /// `limit`; returns true when it went quiet before the limit.
    pub fn run_until_quiet(&mut self, limit: Time) -> bool {
        loop {
            self.drain_dirty();
            if self.in_flight == 0 {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= limit => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(limit);
                    return false;
                }
            }
        }
    }
}
