//! The discrete-event engine: drives one [`ProtocolKind`]'s nodes through the planned
//! [`World`] over the modelled network.
//!
//! Messages are encoded with `elara_core::wire` when they leave a node and decoded when they
//! arrive, as over QUIC. The same encoded [`Bytes`] is shared by every recipient of an identical
//! message (a fan-out costs one encode and reference-count clones). An update's synthetic
//! payload (zeros) is left out of the encoded bytes and put back after decoding; the network
//! carries the whole message's length (see [`Engine::encode`]).
//!
//! Per message the engine schedules one event, its delivery. When a message is sent the engine
//! knows when its first packet reaches the receiver (after the sender's uplink FIFO, the core
//! latency and jitter) and when its last one does (loss recovery delays it), so it books the
//! receiver's downlink right then ([`network::Downlink`]) and schedules the delivery for when the
//! downlink has taken the message in and its last packet is there. The downlink is therefore
//! served in send order rather than arrival order, except that a message arriving before the
//! work already booked goes first (a modelling simplification: the downlink is rarely the
//! bottleneck; at 2,000 viewers the mean downlink wait went from 0.21 to 0.06 ms, see the
//! README). Packets flow: the downlink works alongside the uplink, and a relay forwarding an
//! update it is being handed starts once its first packet was in (cut-through), as a stream of
//! 1,200-byte packets would, although each frame is one update. Queues are finite: a message that
//! does not fit is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use elara_core::{Capabilities, Message, NodeId, StateUpdate, Time, wire};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::Collector;
use crate::network::{self, Downlink, LinkModel, MAX_ATTEMPTS, PACKET_BYTES};
use crate::protocol::{
    LinkStats, NodeSetup, PREFETCH_STAGES, Protocol, ProtocolEvent, ProtocolKind, Transmit,
};
use crate::report::RunReport;
use crate::scenario::{Bootstrap, Recovery};
use crate::world::{FaultPlan, World, node_id, node_index};

/// A zero buffer every synthetic payload is a slice of (payload content is irrelevant; sizes are
/// what the network sees).
static ZEROS: [u8; wire::MAX_PAYLOAD] = [0; wire::MAX_PAYLOAD];

/// Room of one buffer update headers are encoded into.
const ARENA_BYTES: usize = 64 * 1024;

/// How often the tracker re-lists the relays near the root, µs of simulated time.
const TRACKER_REFRESH_US: u64 = 250_000;
/// Deepest level of the relays the tracker hands out.
const TRACKER_MAX_DEPTH: u16 = 2;
/// Child slots a relay needs to be handed out by the tracker.
const TRACKER_MIN_SLOTS: u16 = 2;
/// Relays the tracker needs to know before it hands them out instead of the publisher.
const TRACKER_MIN_RELAYS: usize = 12;

enum Ev {
    Publish(u32),
    /// The whole message is in; its first packet was in at `ready`. `payload` is the length of
    /// an update's zero payload left out of `bytes` (see [`Engine::encode`]).
    Deliver {
        to: u32,
        from: u32,
        payload: u32,
        bytes: Bytes,
        ready: u64,
    },
    Timer(u32),
    Feedback(u32),
    Connected {
        node: u32,
        peer: u32,
    },
    /// `node` learns that its connection to `peer` opened at or before `opened_by` is gone.
    PeerLost {
        node: u32,
        peer: u32,
        opened_by: u64,
    },
    Join(u32),
    Leave(u32),
    PartitionStart(u32),
    PartitionHeal,
}

/// What identifies an encoded update: sender, hops, state, seq, payload address and length.
type EncodeKey = (u32, u8, u64, u64, usize, usize);

/// A message as encoded for the network.
#[derive(Clone)]
struct Encoded {
    /// The encoded bytes (an update's zero payload left out when `payload` > 0).
    bytes: Bytes,
    /// The whole message's encoded length: what the network carries.
    len: usize,
    /// Length of the zero payload left out of `bytes`.
    payload: u32,
}

/// Identity hasher for u32 keys (the keys are node indices, already well spread).
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v);
    }
}

#[derive(Clone, Copy)]
struct Link {
    peer: u32,
    /// When this connection was opened (a loss decided earlier concerns an older one).
    opened: u64,
    ready_at: u64,
    period_bytes: u64,
    period_packets: u32,
    period_lost: u32,
}

/// A node's connections, in creation order (iteration never depends on hashing). `peers`
/// mirrors `links[..].peer` so that a lookup scans 4-byte entries.
#[derive(Default)]
struct LinkTable {
    links: Vec<Link>,
    peers: Vec<u32>,
    index: Option<HashMap<u32, u32, BuildHasherDefault<IndexHasher>>>,
}

const INDEX_FROM: usize = 32;

impl LinkTable {
    fn find(&self, peer: u32) -> Option<usize> {
        match &self.index {
            Some(map) => map.get(&peer).map(|&i| i as usize),
            None => self.peers.iter().position(|&p| p == peer),
        }
    }

    fn insert(&mut self, link: Link) -> usize {
        let i = self.links.len();
        self.links.push(link);
        self.peers.push(link.peer);
        if let Some(map) = &mut self.index {
            map.insert(link.peer, i as u32);
        } else if self.links.len() > INDEX_FROM {
            self.index = Some(
                self.links
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.peer, i as u32))
                    .collect(),
            );
        }
        i
    }

    fn remove(&mut self, peer: u32) -> bool {
        let Some(i) = self.find(peer) else {
            return false;
        };
        self.links.swap_remove(i);
        self.peers.swap_remove(i);
        if let Some(map) = &mut self.index {
            map.remove(&peer);
            if let Some(moved) = self.links.get(i) {
                map.insert(moved.peer, i as u32);
            }
        }
        true
    }
}

/// The engine's per-node state that every message touches, in one cache line: access link
/// FIFOs, their capacities and queue limits, position, timer and liveness.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Access {
    up_busy: u64,
    /// The downlink's booked work ([`network::Downlink::busy`]).
    down_busy: u64,
    /// Its booked stretch ([`network::Downlink::block`]).
    down_block: u32,
    /// Earliest armed timer (`u64::MAX`: none).
    timer_at: u64,
    up_bps: u64,
    down_bps: u64,
    up_queue: u32,
    down_queue: u32,
    pos: (f32, f32),
    alive: bool,
    /// Gilbert-Elliott state of the downlink.
    bad: bool,
}

const _: () = assert!(std::mem::size_of::<Access>() == 64);

/// Progress callback: simulated µs so far, events so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Drives one protocol through a world.
pub struct Engine<'w, K: ProtocolKind> {
    world: &'w World,
    kind: &'w K,
    link: &'w LinkModel,
    now: u64,
    queue: crate::queue::EventQueue<Ev>,
    /// Boxed: a node is moved out of its slot while its output is handled (a pointer move).
    nodes: Vec<Option<Box<K::Node>>>,
    access: Vec<Access>,
    links: Vec<LinkTable>,
    partition: Option<usize>,
    rng: ChaCha8Rng,
    metrics: Collector,
    next_frame: usize,
    evs: Vec<ProtocolEvent>,
    /// The last update encoded: (sender, hops, state, seq, payload address and length) and
    /// what [`Engine::encode`] made of it.
    cache: Option<(EncodeKey, Encoded)>,
    events: u64,
    feedback_us: u64,
    stream_bps: f64,
    /// While a node handles a delivered update: (node, (state, seq), when its first packet was
    /// in), for cut-through forwarding.
    forwarding: Option<(u32, (u64, u64), u64)>,
    /// Tracker bootstrap: the relays it hands out, and when they were listed.
    tracker: Vec<u32>,
    tracker_at: Option<u64>,
    /// Buffers a feedback tick reuses: active links and their rates, the stats handed out.
    feedback_scratch: FeedbackScratch,
    /// Where update headers are encoded (see [`Engine::encode`]).
    arena: BytesMut,
}

/// See [`Engine::feedback`]: (link index, rate) of the active links, their rates, the stats.
type FeedbackScratch = (Vec<(usize, f64)>, Vec<f64>, Vec<(u32, LinkStats)>);

impl<'w, K: ProtocolKind> Engine<'w, K> {
    /// Prepares a run of `kind` over `world`.
    pub fn new(world: &'w World, kind: &'w K) -> Self {
        let n = world.nodes.len();
        let link = &world.link;
        let q = |bps: u64| {
            ((bps as f64 * link.queue_us / 8e6) as u64).clamp(64 * 1024, u64::from(u32::MAX)) as u32
        };
        let mut e = Engine {
            world,
            kind,
            link,
            now: 0,
            queue: crate::queue::EventQueue::new(),
            nodes: (0..n).map(|_| None).collect(),
            access: world
                .nodes
                .iter()
                .map(|p| Access {
                    up_busy: 0,
                    down_busy: 0,
                    down_block: 0,
                    timer_at: u64::MAX,
                    up_bps: p.up_bps,
                    down_bps: p.down_bps,
                    up_queue: q(p.up_bps),
                    down_queue: q(p.down_bps),
                    pos: p.pos,
                    alive: false,
                    bad: false,
                })
                .collect(),
            links: (0..n).map(|_| LinkTable::default()).collect(),
            partition: None,
            rng: ChaCha8Rng::seed_from_u64(world.seed ^ 0x000e_1a2a_00e7),
            metrics: Collector::new(world),
            next_frame: 0,
            evs: Vec::new(),
            cache: None,
            events: 0,
            feedback_us: (world.scenario.feedback_ms * 1000.0) as u64,
            stream_bps: world.stream_rate_bps(),
            forwarding: None,
            tracker: Vec::new(),
            tracker_at: None,
            feedback_scratch: FeedbackScratch::default(),
            arena: BytesMut::new(),
        };
        for (i, plan) in world.nodes.iter().enumerate() {
            e.queue.push(plan.join_us, Ev::Join(i as u32));
            if plan.leave_us != u64::MAX {
                e.queue.push(plan.leave_us, Ev::Leave(i as u32));
            }
        }
        for (j, f) in world.faults.iter().enumerate() {
            if let FaultPlan::Partition { at_us, heal_us, .. } = f {
                e.queue.push(*at_us, Ev::PartitionStart(j as u32));
                e.queue.push(*heal_us, Ev::PartitionHeal);
            }
        }
        if let Some(f) = world.frames.frames.first() {
            e.queue.push(f.time_us, Ev::Publish(0));
        }
        e
    }

    /// Runs to the end and summarises.
    pub fn run(mut self, progress: Progress<'_>) -> RunReport {
        let end = self.world.end_us;
        while let Some((t, ev)) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.events += 1;
            if self.events & 0xFFFF == 0 {
                progress(t, self.events);
            }
            self.prefetch_ahead();
            self.dispatch(ev);
        }
        progress(end, self.events);
        for p in self.nodes.iter().flatten() {
            p.diagnostics(&mut self.metrics.protocol);
        }
        self.metrics
            .finish(self.world, self.kind.name(), self.events)
    }

    /// Prefetches what the next events will read, one stage deeper for each event nearer:
    /// the engine's per-node records, the message and the node's fields for the event
    /// [`PREFETCH_STAGES`] ahead, down to the node's deepest hints for the next one. A run is
    /// bound by memory latency (every event lands on another node, whose state is long out of
    /// the caches); this overlaps those misses with the work of the events before.
    fn prefetch_ahead(&self) {
        for stage in 0..PREFETCH_STAGES {
            if let Some(ev) = self.queue.peek(PREFETCH_STAGES - 1 - stage) {
                self.prefetch_for(stage, ev);
            }
        }
    }

    fn prefetch_for(&self, stage: usize, ev: &Ev) {
        let n = match ev {
            Ev::Deliver { to, .. } => *to,
            Ev::Timer(n) | Ev::Feedback(n) => *n,
            Ev::Connected { node, .. } | Ev::PeerLost { node, .. } => *node,
            _ => return,
        } as usize;
        match stage {
            0 => {
                prefetch(std::ptr::from_ref(&self.access[n]).cast());
                prefetch(std::ptr::from_ref(&self.links[n]).cast());
                if let Ev::Deliver { bytes, .. } = ev {
                    prefetch(bytes.as_ptr());
                    self.metrics
                        .receive_hints(n, self.next_frame_unit(), prefetch);
                }
            }
            _ => prefetch(self.links[n].peers.as_ptr().cast()),
        }
        if let Some(node) = &self.nodes[n] {
            node.prefetch_hints(stage, &mut |p| prefetch(p));
        }
    }

    /// The unit of the newest frame published (updates in flight are mostly recent).
    fn next_frame_unit(&self) -> u32 {
        let frames = &self.world.frames.frames;
        frames
            .get(self.next_frame.saturating_sub(1))
            .map_or(0, |f| f.unit)
    }

    fn time(&self) -> Time {
        Time::from_micros(self.now)
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Publish(i) => self.publish(i),
            Ev::Deliver {
                to,
                from,
                payload,
                bytes,
                ready,
            } => self.deliver(to, from, payload, bytes, ready),
            Ev::Timer(n) => self.timer(n),
            Ev::Feedback(n) => self.feedback(n),
            Ev::Connected { node, peer } => {
                if self.access[node as usize].alive
                    && self.links[node as usize].find(peer).is_some()
                {
                    let now = self.time();
                    if let Some(p) = self.nodes[node as usize].as_mut() {
                        p.peer_connected(now, node_id(peer));
                    }
                    self.after(node);
                }
            }
            Ev::PeerLost {
                node,
                peer,
                opened_by,
            } => {
                let table = &mut self.links[node as usize];
                let current = table
                    .find(peer)
                    .is_some_and(|i| table.links[i].opened <= opened_by);
                if self.access[node as usize].alive && current && table.remove(peer) {
                    let now = self.time();
                    if let Some(p) = self.nodes[node as usize].as_mut() {
                        p.peer_lost(now, node_id(peer));
                    }
                    self.after(node);
                }
            }
            Ev::Join(n) => self.join(n),
            Ev::Leave(n) => self.leave(n),
            Ev::PartitionStart(j) => self.partition_start(j as usize),
            Ev::PartitionHeal => self.partition = None,
        }
    }

    /// What an application configures from a node's uplink and the stream's rate: the
    /// children it can feed at full rate with a 20% margin (16 at most).
    fn max_children(&self, n: u32) -> u16 {
        let up = self.world.nodes[n as usize].up_bps as f64;
        ((up * 0.8 / self.stream_bps.max(1.0)) as u16).min(16)
    }

    /// The peer a joining node contacts first (see [`Bootstrap`]).
    fn bootstrap_for(&mut self) -> NodeId {
        let publisher = self
            .world
            .directory
            .first()
            .map_or(node_id(0), |t| t.authority);
        if self.world.scenario.bootstrap == Bootstrap::Publisher {
            return publisher;
        }
        if self
            .tracker_at
            .is_none_or(|at| self.now >= at + TRACKER_REFRESH_US)
        {
            self.tracker_at = Some(self.now);
            let state = self.world.directory.first().map(|t| t.state);
            let mut top = std::mem::take(&mut self.tracker);
            top.clear();
            top.extend((0..self.nodes.len() as u32).filter(|&i| {
                self.max_children(i) >= TRACKER_MIN_SLOTS
                    && self.nodes[i as usize]
                        .as_ref()
                        .zip(state)
                        .and_then(|(p, s)| p.depth(s))
                        .is_some_and(|d| (1..=TRACKER_MAX_DEPTH).contains(&d))
            }));
            self.tracker = top;
        }
        if self.tracker.len() < TRACKER_MIN_RELAYS {
            return publisher;
        }
        let i = self.rng.random_range(0..self.tracker.len());
        node_id(self.tracker[i])
    }

    fn join(&mut self, n: u32) {
        let bootstrap = self.bootstrap_for();
        let max_children = self.max_children(n);
        let plan = &self.world.nodes[n as usize];
        let setup = NodeSetup {
            id: node_id(n),
            role: plan.role,
            bootstrap: vec![bootstrap],
            caps: Capabilities {
                upload_kbps: (plan.up_bps / 1000) as u32,
                download_kbps: (plan.down_bps / 1000) as u32,
                max_children,
                codecs: 0,
                max_payload: wire::MAX_PAYLOAD as u32,
            },
            seed: splitmix(self.world.seed ^ (u64::from(n) << 20)),
            latency_budget: Duration::from_micros(
                (self.world.scenario.playout.deadline_ms * 1000.0) as u64,
            ),
            reliable_updates: self.link.recovery != Recovery::None,
        };
        let now = self.time();
        let mut node = Box::new(self.kind.create(&setup, now));
        node.start(now, &self.world.directory);
        for (t, track) in self.world.directory.iter().enumerate() {
            let l = self.world.level(n, t);
            if l.is_interested() {
                node.declare_interest(now, track.state, l);
            }
        }
        self.nodes[n as usize] = Some(node);
        self.access[n as usize].alive = true;
        self.after(n);
        let phase = self.feedback_us * u64::from(n % 97) / 97;
        self.queue
            .push(self.now + self.feedback_us + phase, Ev::Feedback(n));
    }

    fn leave(&mut self, n: u32) {
        if !self.access[n as usize].alive {
            return;
        }
        let plan = self.world.nodes[n as usize];
        let detect = if plan.crash {
            self.link.detect_us
        } else {
            let now = self.time();
            if let Some(p) = self.nodes[n as usize].as_mut() {
                p.leave(now);
            }
            self.after(n);
            0
        };
        self.access[n as usize].alive = false;
        if let Some(p) = self.nodes[n as usize].take() {
            p.diagnostics(&mut self.metrics.protocol);
        }
        let links = std::mem::take(&mut self.links[n as usize]);
        for l in links.links {
            let delay = if detect > 0 {
                detect
            } else {
                self.one_way(n, l.peer)
            };
            self.queue.push(
                self.now + delay,
                Ev::PeerLost {
                    node: l.peer,
                    peer: n,
                    opened_by: self.now,
                },
            );
        }
    }

    fn partition_start(&mut self, j: usize) {
        let FaultPlan::Partition { side, .. } = &self.world.faults[j] else {
            return;
        };
        self.partition = Some(j);
        for n in 0..self.nodes.len() {
            if !self.access[n].alive {
                continue;
            }
            for l in &self.links[n].links {
                if side[n] != side[l.peer as usize] {
                    self.queue.push(
                        self.now + self.link.detect_us,
                        Ev::PeerLost {
                            node: n as u32,
                            peer: l.peer,
                            opened_by: self.now,
                        },
                    );
                }
            }
        }
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        match self.partition {
            Some(j) => match &self.world.faults[j] {
                FaultPlan::Partition { side, .. } => side[a as usize] != side[b as usize],
                FaultPlan::MassFailure { .. } => false,
            },
            None => false,
        }
    }

    fn publish(&mut self, i: u32) {
        let frames = &self.world.frames;
        let f = frames.frames[i as usize];
        if let Some(next) = frames.frames.get(i as usize + 1) {
            self.queue.push(next.time_us, Ev::Publish(i + 1));
        }
        self.next_frame = i as usize + 1;
        let track = &frames.tracks[f.track as usize];
        let a = track.authority;
        let state = track.state;
        let (kind, priority) = frames.kind_of(&f);
        if !self.access[a as usize].alive {
            return;
        }
        let now = self.time();
        // A frame cut into fragments is published at once, fragment by fragment, as the
        // packetizer hands them over.
        for index in 0..f.parts {
            let mut update =
                StateUpdate::new(state, node_id(a), u64::from(f.seq + u32::from(index)), now)
                    .with_group(elara_core::GroupId(u64::from(f.group)))
                    .with_kind(kind)
                    .with_priority(priority)
                    .with_fragment(elara_core::Fragment {
                        index,
                        count: f.parts,
                    })
                    .with_payload(Bytes::from_static(&ZEROS[..f.part_len(index)]));
            if f.keyframe {
                update = update.keyframe();
            }
            if let Some(p) = self.nodes[a as usize].as_mut() {
                p.publish(now, update);
            }
        }
        self.after(a);
    }

    fn timer(&mut self, n: u32) {
        if self.access[n as usize].timer_at != self.now || !self.access[n as usize].alive {
            return;
        }
        self.access[n as usize].timer_at = u64::MAX;
        let now = self.time();
        let Some(p) = self.nodes[n as usize].as_mut() else {
            return;
        };
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        self.after(n);
    }

    fn feedback(&mut self, n: u32) {
        if !self.access[n as usize].alive {
            return;
        }
        self.queue
            .push(self.now + self.feedback_us, Ev::Feedback(n));
        let acc = self.access[n as usize];
        let period_s = self.feedback_us as f64 / 1e6;
        let backlog = network::backlog_bytes(self.now, acc.up_busy, acc.up_bps);
        let queue_us = acc.up_busy.saturating_sub(self.now);
        // Max-min fair share of the uplink among the links used in the period.
        let table = &self.links[n as usize];
        let mut scratch = std::mem::take(&mut self.feedback_scratch);
        let (active, rates, stats) = (&mut scratch.0, &mut scratch.1, &mut scratch.2);
        active.clear();
        active.extend(
            table
                .links
                .iter()
                .enumerate()
                .filter(|(_, l)| l.period_packets > 0)
                .map(|(i, l)| (i, l.period_bytes as f64 / period_s)),
        );
        if active.is_empty() {
            self.feedback_scratch = scratch;
            return;
        }
        // What each link could carry now: the uplink capacity left over by the other links at
        // their current rates, at least its max-min fair share (light links such as audio keep
        // what they use, the heavy ones split the rest), at most the receiver's downlink.
        let cap = acc.up_bps as f64 / 8.0;
        let total: f64 = active.iter().map(|a| a.1).sum();
        rates.clear();
        rates.extend(active.iter().map(|a| a.1));
        let equal = max_min_level(cap, rates);
        stats.clear();
        let period_total: f64 = total.max(1.0);
        for &(i, rate) in active.iter() {
            let l = table.links[i];
            let down = self.access[l.peer as usize].down_bps as f64 / 8.0;
            let est = (cap - (total - rate)).max(equal).min(down);
            stats.push((
                l.peer,
                LinkStats {
                    rtt: Duration::from_micros(2 * self.one_way(n, l.peer) + queue_us),
                    send_rate_estimate: est as u64,
                    loss: l.period_lost as f32 / l.period_packets.max(1) as f32,
                    queued_bytes: (backlog as f64 * rate / period_total) as u64,
                },
            ));
        }
        for l in &mut self.links[n as usize].links {
            l.period_bytes = 0;
            l.period_packets = 0;
            l.period_lost = 0;
        }
        let now = self.time();
        if let Some(p) = self.nodes[n as usize].as_mut() {
            for &(peer, s) in stats.iter() {
                p.link_feedback(now, node_id(peer), s);
            }
        }
        self.feedback_scratch = scratch;
        self.after(n);
    }

    fn one_way(&self, a: u32, b: u32) -> u64 {
        self.link
            .one_way_us(self.access[a as usize].pos, self.access[b as usize].pos)
    }

    /// Drains a node after an input: transmits and events until both are empty, then its timer.
    fn after(&mut self, n: u32) {
        let now = self.time();
        // The node is taken out of its slot while its output is handled: sending and events
        // never touch the sender's own node, and each transmit is sent as it is polled.
        let Some(mut node) = self.nodes[n as usize].take() else {
            return;
        };
        loop {
            let mut any = false;
            while let Some(t) = node.poll_transmit(now) {
                any = true;
                self.send(n, t);
            }
            while let Some(e) = node.poll_event() {
                self.evs.push(e);
            }
            if !any && self.evs.is_empty() {
                break;
            }
            let mut evs = std::mem::take(&mut self.evs);
            for e in evs.drain(..) {
                self.on_event(n, e);
            }
            self.evs = evs;
        }
        let deadline = node.poll_timeout();
        self.nodes[n as usize] = Some(node);
        if let Some(t) = deadline {
            let t = t.as_micros().max(self.now);
            if t < self.access[n as usize].timer_at {
                self.access[n as usize].timer_at = t;
                self.queue.push(t, Ev::Timer(n));
            }
        }
    }

    fn on_event(&mut self, n: u32, e: ProtocolEvent) {
        match e {
            ProtocolEvent::Delivered { state, seq, hops } => {
                match self.world.frames.index(state, seq) {
                    Some(u) => self.metrics.on_delivered(self.world, n, u, self.now, hops),
                    None => self.metrics.counters.unknown_deliveries += 1,
                }
            }
            ProtocolEvent::Connect { peer } => self.connect(n, peer),
            ProtocolEvent::Disconnect { peer } => {
                if let Some(p) = node_index(&peer, self.nodes.len())
                    && self.links[n as usize].remove(p)
                {
                    let at = self.now + self.one_way(n, p);
                    self.queue.push(
                        at,
                        Ev::PeerLost {
                            node: p,
                            peer: n,
                            opened_by: self.now,
                        },
                    );
                }
            }
            ProtocolEvent::ParentChanged { .. } => {}
        }
    }

    /// Opens a connection from `n` to `peer` (QUIC handshake: the acceptor learns of it after
    /// half an RTT, the dialler after one RTT), or fails it after the detection delay.
    fn connect(&mut self, n: u32, peer_id: NodeId) {
        let Some(peer) = node_index(&peer_id, self.nodes.len()).filter(|&p| p != n) else {
            self.metrics.counters.bad_destination += 1;
            return;
        };
        if let Some(i) = self.links[n as usize].find(peer) {
            let at = self.links[n as usize].links[i].ready_at.max(self.now);
            self.queue.push(at, Ev::Connected { node: n, peer });
            return;
        }
        self.open_link(n, peer);
    }

    /// Creates the link `from → to` (and its reverse when reachable) and schedules the
    /// connection notifications; returns the index of the link in `from`'s table.
    fn open_link(&mut self, from: u32, to: u32) -> usize {
        let reachable = self.access[to as usize].alive && !self.cut(from, to);
        let rtt = 2 * self.one_way(from, to);
        let now = self.now;
        let fresh = |peer: u32, ready_at: u64| Link {
            peer,
            opened: now,
            ready_at,
            period_bytes: 0,
            period_packets: 0,
            period_lost: 0,
        };
        let i = self.links[from as usize].insert(fresh(to, self.now + rtt));
        if reachable {
            // A new connection replaces whatever the acceptor still held.
            match self.links[to as usize].find(from) {
                Some(j) => self.links[to as usize].links[j] = fresh(from, self.now + rtt / 2),
                None => {
                    self.links[to as usize].insert(fresh(from, self.now + rtt / 2));
                }
            }
            self.queue.push(
                self.now + rtt / 2,
                Ev::Connected {
                    node: to,
                    peer: from,
                },
            );
            self.queue.push(
                self.now + rtt,
                Ev::Connected {
                    node: from,
                    peer: to,
                },
            );
        } else {
            self.queue.push(
                self.now + self.link.detect_us,
                Ev::PeerLost {
                    node: from,
                    peer: to,
                    opened_by: self.now,
                },
            );
        }
        i
    }

    /// Encodes `message` as it leaves `from`. An update whose payload is a slice of [`ZEROS`]
    /// (every synthetic payload) is encoded without its payload bytes, which the receiver puts
    /// back after decoding: the wire length is still the whole message's, and copying megabytes
    /// of zeros per simulated second (and the cache misses it causes) is saved.
    fn encode(&mut self, from: u32, message: &Message) -> Encoded {
        let Message::Update { hops, update } = message else {
            let bytes = message.to_bytes();
            return Encoded {
                len: bytes.len(),
                payload: 0,
                bytes,
            };
        };
        let key = (
            from,
            *hops,
            update.state.0,
            update.seq,
            update.payload.as_ptr() as usize,
            update.payload.len(),
        );
        if let Some((k, e)) = &self.cache
            && *k == key
        {
            return e.clone();
        }
        let zeros = ZEROS.as_ptr_range();
        let (start, end) = (key.4, key.4 + key.5);
        let encoded = if key.5 > 0 && start >= zeros.start as usize && end <= zeros.end as usize {
            let header = Message::Update {
                hops: *hops,
                update: StateUpdate {
                    payload: Bytes::new(),
                    ..update.clone()
                },
            };
            // Headers are written one after the other into a shared buffer: a header costs
            // no allocation of its own (nothing a decoded header-only update keeps refers to
            // it, so a buffer lives only while the messages written into it are in flight).
            let header_len = header.encoded_len();
            if self.arena.capacity() - self.arena.len() < header_len {
                self.arena = BytesMut::with_capacity(ARENA_BYTES.max(header_len));
            }
            header.encode(&mut self.arena);
            Encoded {
                len: message.encoded_len(),
                payload: key.5 as u32,
                bytes: self.arena.split().freeze(),
            }
        } else {
            let mut buf = BytesMut::with_capacity(message.encoded_len());
            message.encode(&mut buf);
            let bytes = buf.freeze();
            Encoded {
                len: bytes.len(),
                payload: 0,
                bytes,
            }
        };
        self.cache = Some((key, encoded.clone()));
        encoded
    }

    fn send(&mut self, from: u32, t: Transmit) {
        let n = self.nodes.len();
        let Some(to) = node_index(&t.to, n) else {
            self.metrics.counters.bad_destination += 1;
            return;
        };
        if to == from {
            self.metrics.counters.bad_destination += 1;
            return;
        }
        let Encoded {
            bytes,
            len,
            payload,
        } = self.encode(from, &t.message);
        let update_key = match &t.message {
            Message::Update { update, .. } => Some((update.state.0, update.seq)),
            _ => None,
        };
        let is_update = update_key.is_some();
        drop(t);
        let packets = len.div_ceil(PACKET_BYTES).max(1) as u32;
        // Connection (opened on first use for protocols that do not ask for one).
        let li = match self.links[from as usize].find(to) {
            Some(i) => i,
            None => self.open_link(from, to),
        };
        let unreachable = !self.access[to as usize].alive || self.cut(from, to);
        let link = &mut self.links[from as usize].links[li];
        link.period_bytes += len as u64;
        link.period_packets += packets;
        let ready_at = link.ready_at;
        if unreachable {
            link.period_lost += packets;
            self.metrics.counters.unreachable += 1;
            return;
        }
        // Uplink FIFO.
        let acc = &mut self.access[from as usize];
        let up_bps = acc.up_bps;
        let backlog = network::backlog_bytes(self.now, acc.up_busy, up_bps);
        if backlog + len as u64 > u64::from(acc.up_queue) {
            self.links[from as usize].links[li].period_lost += packets;
            self.metrics.counters.uplink_drops += 1;
            return;
        }
        // Packets flow (cut-through): a relay forwarding the update it is being handed starts
        // sending once the update's first packet was in, and the last byte cannot leave before
        // it arrived; the receiver's downlink serialises alongside the uplink.
        let mut start = acc.up_busy.max(self.now);
        if is_update
            && let Some((node, key, ready)) = self.forwarding
            && node == from
            && Some(key) == update_key
        {
            start = acc.up_busy.max(ready);
        }
        let pkt_up = network::tx_us(PACKET_BYTES.min(len), up_bps);
        let depart = (start + network::tx_us(len, up_bps)).max(self.now + pkt_up);
        acc.up_busy = depart;
        self.metrics.on_send(from, len, is_update);
        // Core: latency, jitter, loss and recovery.
        let one_way = self.one_way(from, to) + self.link.jitter_us(&mut self.rng);
        // Cut-through may date the first packet before now (the update being forwarded was
        // delayed by loss recovery); nothing arrives in the past.
        let first = (start.max(ready_at) + pkt_up + one_way).max(self.now);
        let mut last = depart.max(ready_at + network::tx_us(len, up_bps)) + one_way;
        let mut attempts = 1;
        // The first attempt risks every packet of the message; a retransmission resends only
        // the lost packet, so later attempts risk one packet each.
        let mut at_risk = len;
        loop {
            let bad = &mut self.access[to as usize].bad;
            if !self.link.lost(at_risk, bad, &mut self.rng) {
                break;
            }
            at_risk = PACKET_BYTES.min(len);
            self.links[from as usize].links[li].period_lost += 1;
            self.metrics.counters.losses += 1;
            if self.link.recovery == Recovery::None || attempts >= MAX_ATTEMPTS {
                self.metrics.counters.lost_messages += 1;
                return;
            }
            attempts += 1;
            // The lost packet is resent after about one RTT; it costs uplink time again.
            let extra = PACKET_BYTES.min(len);
            self.metrics.bytes_up[from as usize] += extra as u64;
            self.metrics.counters.retransmitted_bytes += extra as u64;
            last += 2 * one_way + one_way / 4 + 1000;
        }
        // The receiver's downlink is booked now, in send order (see `network::Downlink`): the
        // message is complete once the downlink has taken it in and its last packet arrived.
        let acc = &mut self.access[to as usize];
        let down_bps = acc.down_bps;
        let mut down = Downlink {
            busy: acc.down_busy,
            block: acc.down_block,
        };
        let Some(rx_start) = down.book(first, len, down_bps, acc.down_queue) else {
            self.metrics.counters.downlink_drops += 1;
            return;
        };
        acc.down_busy = down.busy;
        acc.down_block = down.block;
        let pkt_down = network::tx_us(PACKET_BYTES.min(len), down_bps);
        let done = (rx_start + network::tx_us(len, down_bps)).max(last + pkt_down);
        self.queue.push(
            done,
            Ev::Deliver {
                to,
                from,
                payload,
                bytes,
                ready: rx_start + pkt_down,
            },
        );
    }

    fn deliver(&mut self, to: u32, from: u32, payload: u32, bytes: Bytes, ready: u64) {
        if !self.access[to as usize].alive {
            return;
        }
        if self.links[to as usize].find(from).is_none() {
            // The receiver closed this connection: what was in flight is discarded.
            self.metrics.counters.closed_connection += 1;
            return;
        }
        let mut message = match wire::decode(&bytes) {
            Ok((m, used)) if used == bytes.len() => m,
            _ => {
                self.metrics.counters.decode_errors += 1;
                return;
            }
        };
        drop(bytes);
        if payload > 0 {
            match &mut message {
                Message::Update { update, .. } if update.payload.is_empty() => {
                    update.payload = Bytes::from_static(&ZEROS[..payload as usize]);
                }
                _ => {
                    self.metrics.counters.decode_errors += 1;
                    return;
                }
            }
        }
        if let Message::Update { update, .. } = &mut message
            && let Some(u) = self.world.frames.index(update.state, update.seq)
        {
            self.metrics.on_receive(to, u.unit);
            // Payloads are the engine's zeros: swap the decoded slice (which pins the sender's
            // whole encoded frame) for the same bytes of the static buffer, so that nodes'
            // repair buffers hold no per-hop copies.
            let len = update.payload.len();
            let f = self.world.frames.frames[u.frame as usize];
            if len == f.part_len((u.unit - f.unit) as u16) {
                update.payload = Bytes::from_static(&ZEROS[..len]);
            }
        }
        let key = match &message {
            Message::Update { update, .. } => Some((update.state.0, update.seq)),
            _ => None,
        };
        let now = self.time();
        let Some(p) = self.nodes[to as usize].as_mut() else {
            return;
        };
        p.handle_message(now, node_id(from), message);
        self.forwarding = key.map(|k| (to, k, ready));
        self.after(to);
        self.forwarding = None;
    }
}

/// Asks the CPU to bring the cache line at `p` into the caches (a hint: no effect on what
/// the program computes).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has; a prefetch never faults
    // and never changes memory, whatever the address (it is a hint to the cache).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// SplitMix64: spreads a seed into a well-mixed per-node seed.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The max-min fair share ("water level") of `cap` among links demanding `rates`: links below
/// the level get what they use, each of the others gets the level.
fn max_min_level(cap: f64, rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    let mut left = cap;
    let mut n = rates.len();
    for &r in rates.iter() {
        let level = left / n as f64;
        if r > level {
            return level;
        }
        left -= r;
        n -= 1;
    }
    // Everyone is below the level: the uplink has room, the largest share is what is left.
    left.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_min_share_gives_light_links_their_use_and_splits_the_rest() {
        // 20 units among an audio-like link (1) and three heavy ones: the heavy ones get
        // (20 - 1) / 3 each.
        let level = max_min_level(20.0, &mut [9.0, 1.0, 9.0, 9.0]);
        assert!((level - 19.0 / 3.0).abs() < 1e-9, "{level}");
        // Room to spare: the level is what the others leave.
        assert_eq!(max_min_level(20.0, &mut [1.0, 2.0]), 17.0);
        // Everyone heavy: an equal share.
        assert_eq!(max_min_level(20.0, &mut [30.0, 30.0, 30.0, 30.0]), 5.0);
    }
}
