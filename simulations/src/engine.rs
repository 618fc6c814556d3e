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
//! latency and jitter) and when its last one does (loss recovery delays it). The receiver's
//! downlink books it ([`network::Downlink`]) at the end of the window it was sent in (see
//! [`run`]: nodes run in shards, possibly on several threads, that swap what their nodes did at
//! each other at window ends), and the delivery is scheduled for when the downlink has taken
//! the message in and its last packet is there. The downlink is therefore served in send order
//! rather than arrival order, except that a message arriving before the work already booked
//! goes first (a modelling simplification: the downlink is rarely the bottleneck; at 2,000
//! viewers the mean downlink wait went from 0.21 to 0.06 ms, see the README). Jitter is drawn
//! by the sender, loss (the receiver's access link's Gilbert-Elliott state) by the receiver,
//! each from its node's own generator. Packets flow: the downlink works alongside the uplink, and a relay forwarding an
//! update it is being handed starts once its first packet was in (cut-through), as a stream of
//! 1,200-byte packets would, although each frame is one update. Queues are finite: a message that
//! does not fit is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use elara_core::{Capabilities, Message, NodeId, StateUpdate, Time, wire};
use rand::Rng;

use crate::metrics::Collector;
use crate::network::{self, Downlink, LinkModel, MAX_ATTEMPTS, NodeRng, PACKET_BYTES};
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

/// What a node's action does at another node, handed to that node's shard at the end of the
/// window it happened in (see [`run`]).
enum Handover {
    /// A message on its way: the receiver's downlink books it.
    Arrive(InFlight),
    /// The acceptor's half of a connection `peer` opened at `opened`: `node` holds it from
    /// now on and learns of it at `ready_at`.
    Accept {
        node: u32,
        peer: u32,
        opened: u64,
        ready_at: u64,
    },
    /// An event at another node.
    Event { time: u64, node: u32, ev: Ev },
    /// `packets` of what `node` sent to `peer` were lost (for `node`'s link statistics).
    Lost { node: u32, peer: u32, packets: u32 },
}

/// A message on its way from `from` to `to`: its first packet reaches `to` at `first`, its last
/// one at `last` unless loss delays it. `payload` is the length of an update's zero payload left out of `bytes`.
struct InFlight {
    to: u32,
    from: u32,
    first: u64,
    last: u64,
    /// The path's one-way latency for this message (a retransmission costs about one RTT).
    one_way: u64,
    len: u32,
    payload: u32,
    bytes: Bytes,
}

impl Handover {
    fn node(&self) -> u32 {
        match self {
            Handover::Arrive(m) => m.to,
            Handover::Accept { node, .. }
            | Handover::Event { node, .. }
            | Handover::Lost { node, .. } => *node,
        }
    }
}

/// A [`Handover`] with when and by whom it was made: shards take them in by `(at, origin)`,
/// each origin's in the order it made them, whatever the shard count.
struct Sent {
    at: u64,
    origin: u32,
    what: Handover,
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
    /// The node's draws: jitter on what it sends, loss on what it receives.
    rng: NodeRng,
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

    /// Closes every connection; returns them.
    fn clear(&mut self) -> Vec<Link> {
        self.peers.clear();
        self.index = None;
        std::mem::take(&mut self.links)
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
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Most threads one run is split over.
pub const MAX_SHARDS: usize = 64;

/// Runs `kind` over `world` with its nodes split over `shards` threads, and summarises.
///
/// Node `n` belongs to shard `n % shards`. The shards advance together in windows as long as
/// the smallest one-way latency ([`LinkModel::min_one_way_us`]): whatever a node does at
/// another node — a message it sends, a connection it opens, a loss notice — lands at least
/// that far ahead, so no shard needs another's work before the window's end. At each window's
/// end the shards swap what their nodes did at other nodes ([`Handover`]s), and each takes in
/// its own in a fixed order, `(when, by whom)`; a single shard does exactly the same on its
/// own. The receiving side of a send (the downlink, loss on the receiver's access link,
/// whether the receiver is still up) is done then, by the receiver's shard, drawing from the
/// receiver's own generator; the sending side (uplink, latency, jitter, from the sender's
/// generator) at once. Events at the same time run by node, then in the
/// order they were scheduled for it. So the report is byte-identical for any shard count.
pub fn run<K: ProtocolKind + Sync>(
    world: &World,
    kind: &K,
    shards: usize,
    progress: Progress<'_>,
) -> RunReport {
    let p = shards.clamp(1, MAX_SHARDS);
    let exchange = Exchange::new(p);
    // Shard 0 runs on this thread, the others on their own.
    let parts: Vec<(Collector, u64)> = std::thread::scope(|scope| {
        let exchange = &exchange;
        let others: Vec<_> = (1..p)
            .map(|s| scope.spawn(move || exchange.drive(world, kind, s, progress)))
            .collect();
        let first = exchange.drive(world, kind, 0, progress);
        std::iter::once(first)
            .chain(
                others
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
            )
            .collect()
    });
    let mut parts = parts.into_iter();
    let (mut collector, mut events) = parts.next().expect("at least one shard");
    for (c, n) in parts {
        collector.absorb(c);
        events += n;
    }
    progress(world.end_us, events);
    collector.finish(world, kind.name(), events)
}

/// What the shards of one run swap at window ends.
struct Exchange {
    shards: usize,
    /// Mail from shard `s` to shard `d` in windows of parity `k`: `(k * shards + s) * shards +
    /// d`. Two sets, so that a shard may post its next window's mail while another still reads.
    mail: Vec<Mutex<Vec<Sent>>>,
    /// Each shard's share of the tracker's list, by parity likewise: `k * shards + s`.
    lists: Vec<Mutex<Option<Vec<u32>>>>,
    barrier: SpinBarrier,
    /// Events run so far by all shards (for progress).
    total: AtomicU64,
}

impl Exchange {
    fn new(shards: usize) -> Exchange {
        Exchange {
            shards,
            mail: (0..2 * shards * shards).map(|_| Mutex::default()).collect(),
            lists: (0..2 * shards).map(|_| Mutex::default()).collect(),
            barrier: SpinBarrier::new(shards),
            total: AtomicU64::new(0),
        }
    }

    /// Runs shard `s` window by window to the end; shard 0 reports progress.
    fn drive<K: ProtocolKind + Sync>(
        &self,
        world: &World,
        kind: &K,
        s: usize,
        progress: Progress<'_>,
    ) -> (Collector, u64) {
        let _guard = AbortOnPanic(&self.barrier);
        let p = self.shards;
        let end = world.end_us;
        let window = world.link.min_one_way_us().min(world.link.detect_us).max(1);
        let mut e = Engine::new(world, kind, s as u32, p as u32);
        let mut inbox = Vec::new();
        let (mut counted, mut reported) = (0, 0);
        let (mut at, mut k) = (0, 0);
        while at <= end {
            let until = at.saturating_add(window).min(end + 1);
            e.run_until(until);
            let share = e.tracker_share(until);
            let refresh = share.is_some();
            *lock(&self.lists[k * p + s]) = share;
            for (d, out) in e.outbox.iter_mut().enumerate() {
                std::mem::swap(&mut *lock(&self.mail[(k * p + s) * p + d]), out);
            }
            self.total.fetch_add(e.events - counted, Ordering::Relaxed);
            counted = e.events;
            if !self.barrier.wait() {
                break;
            }
            for src in 0..p {
                inbox.append(&mut lock(&self.mail[(k * p + src) * p + s]));
            }
            let tracker = refresh.then(|| {
                let mut all: Vec<u32> = (0..p)
                    .flat_map(|src| lock(&self.lists[k * p + src]).clone())
                    .flatten()
                    .collect();
                all.sort_unstable();
                all
            });
            e.take_in(until, tracker, &mut inbox);
            if s == 0 {
                let t = self.total.load(Ordering::Relaxed);
                if t >= reported + 0x10000 {
                    reported = t;
                    progress(until.min(end), t);
                }
            }
            at = until;
            k ^= 1;
        }
        e.finish()
    }
}

/// Locks `m`, whatever a panicking holder left (the data is plain mail).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A barrier for the shards' window ends: they spin briefly, then yield, so that a short
/// window costs no sleep and wake-up; a shard that panics releases the others (their
/// [`SpinBarrier::wait`] returns false).
struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    abort: AtomicBool,
}

impl SpinBarrier {
    fn new(n: usize) -> SpinBarrier {
        SpinBarrier {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
        }
    }

    /// Waits for every shard; false when one of them panicked.
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return !self.abort.load(Ordering::Relaxed);
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.abort.load(Ordering::Relaxed) {
                return false;
            }
            if spins < 200 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        !self.abort.load(Ordering::Relaxed)
    }
}

/// Releases the other shards when the one holding it panics.
struct AbortOnPanic<'a>(&'a SpinBarrier);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort.store(true, Ordering::Relaxed);
        }
    }
}

/// Drives one shard of one protocol's nodes through a world (see [`run`]): the nodes whose
/// index modulo `shards` is `shard`.
struct Engine<'w, K: ProtocolKind> {
    world: &'w World,
    kind: &'w K,
    link: &'w LinkModel,
    shard: u32,
    shards: u32,
    now: u64,
    queue: crate::queue::EventQueue<Ev>,
    /// Per node, events pushed for it so far: the tie-break of events at the same time is
    /// (node, this count), the same whatever the shard count.
    seqs: Vec<u32>,
    /// Events pushed that concern no single node (publishing, partitions).
    global_seq: u64,
    /// Of them, those run so far.
    global_events: u64,
    /// Handovers made in the current window, per destination shard.
    outbox: Vec<Vec<Sent>>,
    /// Boxed: a node is moved out of its slot while its output is handled (a pointer move).
    nodes: Vec<Option<Box<K::Node>>>,
    access: Vec<Access>,
    links: Vec<LinkTable>,
    partition: Option<usize>,
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
    /// Tracker bootstrap: the relays it hands out, and when they are next listed.
    tracker: Vec<u32>,
    tracker_next: u64,
    /// When the last node joins (the tracker is not needed after).
    last_join_us: u64,
    /// Buffers a feedback tick reuses: active links and their rates, the stats handed out.
    feedback_scratch: FeedbackScratch,
    /// Where update headers are encoded (see [`Engine::encode`]).
    arena: BytesMut,
}

/// See [`Engine::feedback`]: (link index, rate) of the active links, their rates, the stats.
type FeedbackScratch = (Vec<(usize, f64)>, Vec<f64>, Vec<(u32, LinkStats)>);

impl<'w, K: ProtocolKind> Engine<'w, K> {
    /// Prepares shard `shard` of `shards` of a run of `kind` over `world`.
    fn new(world: &'w World, kind: &'w K, shard: u32, shards: u32) -> Self {
        let n = world.nodes.len();
        let link = &world.link;
        let q = |bps: u64| {
            ((bps as f64 * link.queue_us / 8e6) as u64).clamp(64 * 1024, u64::from(u32::MAX)) as u32
        };
        let mut e = Engine {
            world,
            kind,
            link,
            shard,
            shards,
            now: 0,
            queue: crate::queue::EventQueue::new(),
            seqs: vec![0; n],
            global_seq: 0,
            global_events: 0,
            outbox: (0..shards).map(|_| Vec::new()).collect(),
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
            links: (0..n as u32)
                .map(|i| LinkTable {
                    rng: NodeRng::new(world.seed ^ 0x000e_1a2a_00e7, i),
                    ..LinkTable::default()
                })
                .collect(),
            partition: None,
            metrics: Collector::new(world),
            next_frame: 0,
            evs: Vec::new(),
            cache: None,
            events: 0,
            feedback_us: (world.scenario.feedback_ms * 1000.0) as u64,
            stream_bps: world.stream_rate_bps(),
            forwarding: None,
            tracker: Vec::new(),
            tracker_next: 0,
            last_join_us: world.nodes.iter().map(|p| p.join_us).max().unwrap_or(0),
            feedback_scratch: FeedbackScratch::default(),
            arena: BytesMut::new(),
        };
        for (i, plan) in world.nodes.iter().enumerate() {
            let i = i as u32;
            if !e.owns(i) {
                continue;
            }
            e.push(plan.join_us, i, Ev::Join(i));
            if plan.leave_us != u64::MAX {
                e.push(plan.leave_us, i, Ev::Leave(i));
            }
        }
        for (j, f) in world.faults.iter().enumerate() {
            if let FaultPlan::Partition { at_us, heal_us, .. } = f {
                e.push_global(*at_us, Ev::PartitionStart(j as u32));
                e.push_global(*heal_us, Ev::PartitionHeal);
            }
        }
        if let Some(f) = world.frames.frames.first() {
            e.push_global(f.time_us, Ev::Publish(0));
        }
        e
    }

    /// Whether node `n` is in this shard.
    fn owns(&self, n: u32) -> bool {
        n % self.shards == self.shard
    }

    /// Schedules `ev` for node `node` at `time`.
    fn push(&mut self, time: u64, node: u32, ev: Ev) {
        let c = &mut self.seqs[node as usize];
        let key = (u64::from(node) << 32) | u64::from(*c);
        *c = c.wrapping_add(1);
        self.queue.push_keyed(time, key, ev);
    }

    /// Schedules an event that concerns no single node (every shard schedules the same ones):
    /// it comes after the nodes' events of the same time.
    fn push_global(&mut self, time: u64, ev: Ev) {
        let key = ((self.nodes.len() as u64) << 32) | self.global_seq;
        self.global_seq += 1;
        self.queue.push_keyed(time, key, ev);
    }

    /// Hands `what` over to the shard of the node it concerns, made now by `origin`.
    fn hand_over(&mut self, origin: u32, what: Handover) {
        let s = (what.node() % self.shards) as usize;
        self.outbox[s].push(Sent {
            at: self.now,
            origin,
            what,
        });
    }

    /// Tells `peer` at `time` that its connections to `n` opened until now are gone.
    fn tell_lost(&mut self, n: u32, peer: u32, time: u64) {
        self.hand_over(
            n,
            Handover::Event {
                time,
                node: peer,
                ev: Ev::PeerLost {
                    node: peer,
                    peer: n,
                    opened_by: self.now,
                },
            },
        );
    }

    /// Runs the events before `until`.
    fn run_until(&mut self, until: u64) {
        while let Some((t, ev)) = self.queue.pop_before(until) {
            self.now = t;
            self.events += 1;
            self.prefetch_ahead();
            self.dispatch(ev);
        }
    }

    /// The window ending at `until` is done: when the tracker lists relays at `until`, this
    /// shard's share of them.
    fn tracker_share(&self, until: u64) -> Option<Vec<u32>> {
        if self.world.scenario.bootstrap == Bootstrap::Publisher
            || until < self.tracker_next
            || until > self.last_join_us.saturating_add(TRACKER_REFRESH_US)
        {
            return None;
        }
        let state = self.world.directory.first().map(|t| t.state);
        Some(
            (self.shard..self.nodes.len() as u32)
                .step_by(self.shards as usize)
                .filter(|&i| {
                    self.max_children(i) >= TRACKER_MIN_SLOTS
                        && self.nodes[i as usize]
                            .as_ref()
                            .zip(state)
                            .and_then(|(p, s)| p.depth(s))
                            .is_some_and(|d| (1..=TRACKER_MAX_DEPTH).contains(&d))
                })
                .collect(),
        )
    }

    /// Starts the window at `at`: takes in the tracker's new list (ascending), if any, and
    /// the handovers made before `at` for this shard's nodes, in the order the shards made
    /// them (shard 0's first; each origin's in the order it made them).
    fn take_in(&mut self, at: u64, tracker: Option<Vec<u32>>, sent: &mut Vec<Sent>) {
        self.now = at;
        if let Some(list) = tracker {
            self.tracker = list;
            self.tracker_next = at + TRACKER_REFRESH_US;
        }
        // Stable: an origin's handovers keep their order.
        sent.sort_by_key(|s| (s.at, s.origin));
        for s in sent.drain(..) {
            match s.what {
                Handover::Arrive(m) => self.arrive(m),
                Handover::Accept {
                    node,
                    peer,
                    opened,
                    ready_at,
                } => self.accept(node, peer, opened, ready_at),
                Handover::Event { time, node, ev } => self.push(time.max(at), node, ev),
                Handover::Lost {
                    node,
                    peer,
                    packets,
                } => {
                    let table = &mut self.links[node as usize];
                    if let Some(i) = table.find(peer) {
                        table.links[i].period_lost += packets;
                    }
                }
            }
        }
    }

    /// This shard's results: its collector (with its nodes' diagnostics) and event count
    /// (every shard runs the events that concern no single node; shard 0 counts them).
    fn finish(mut self) -> (Collector, u64) {
        for p in self.nodes.iter().flatten() {
            p.diagnostics(&mut self.metrics.protocol);
        }
        let events = if self.shard == 0 {
            self.events
        } else {
            self.events - self.global_events
        };
        (self.metrics, events)
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
            Ev::Publish(i) => {
                self.global_events += 1;
                self.publish(i);
            }
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
            Ev::PartitionStart(j) => {
                self.global_events += 1;
                self.partition_start(j as usize);
            }
            Ev::PartitionHeal => {
                self.global_events += 1;
                self.partition = None;
            }
        }
    }

    /// What an application configures from a node's uplink and the stream's rate: the
    /// children it can feed at full rate with a 20% margin (16 at most).
    fn max_children(&self, n: u32) -> u16 {
        let up = self.world.nodes[n as usize].up_bps as f64;
        ((up * 0.8 / self.stream_bps.max(1.0)) as u16).min(16)
    }

    /// The peer node `n` contacts first when it joins (see [`Bootstrap`]). The tracker's list
    /// is re-made every [`TRACKER_REFRESH_US`] at a window's end (see [`Engine::tracker_share`]).
    fn bootstrap_for(&mut self, n: u32) -> NodeId {
        let publisher = self
            .world
            .directory
            .first()
            .map_or(node_id(0), |t| t.authority);
        if self.world.scenario.bootstrap == Bootstrap::Publisher
            || self.tracker.len() < TRACKER_MIN_RELAYS
        {
            return publisher;
        }
        let i = self.links[n as usize]
            .rng
            .random_range(0..self.tracker.len());
        node_id(self.tracker[i])
    }

    /// Whether node `n` is up now (another shard's node too: joins and leaves are planned).
    fn up(&self, n: u32) -> bool {
        let plan = &self.world.nodes[n as usize];
        plan.join_us <= self.now && self.now < plan.leave_us
    }

    fn join(&mut self, n: u32) {
        let bootstrap = self.bootstrap_for(n);
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
        self.push(self.now + self.feedback_us + phase, n, Ev::Feedback(n));
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
        let links = self.links[n as usize].clear();
        for l in links {
            let delay = if detect > 0 {
                detect
            } else {
                self.one_way(n, l.peer)
            };
            self.tell_lost(n, l.peer, self.now + delay);
        }
    }

    fn partition_start(&mut self, j: usize) {
        let FaultPlan::Partition { side, .. } = &self.world.faults[j] else {
            return;
        };
        self.partition = Some(j);
        for n in (self.shard as usize..self.nodes.len()).step_by(self.shards as usize) {
            if !self.access[n].alive {
                continue;
            }
            for i in 0..self.links[n].links.len() {
                let peer = self.links[n].links[i].peer;
                if side[n] != side[peer as usize] {
                    self.push(
                        self.now + self.link.detect_us,
                        n as u32,
                        Ev::PeerLost {
                            node: n as u32,
                            peer,
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
            self.push_global(next.time_us, Ev::Publish(i + 1));
        }
        self.next_frame = i as usize + 1;
        let track = &frames.tracks[f.track as usize];
        let a = track.authority;
        let state = track.state;
        let (kind, priority) = frames.kind_of(&f);
        if !self.owns(a) || !self.access[a as usize].alive {
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
                self.push(t, n, Ev::Timer(n));
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
                    self.tell_lost(n, p, self.now + self.one_way(n, p));
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
            self.push(at, n, Ev::Connected { node: n, peer });
            return;
        }
        self.open_link(n, peer);
    }

    /// Creates the link `from → to` (the acceptor's half is handed over when `to` is
    /// reachable) and schedules the dialler's connection notice; returns the index of the link
    /// in `from`'s table.
    fn open_link(&mut self, from: u32, to: u32) -> usize {
        let reachable = self.up(to) && !self.cut(from, to);
        let rtt = 2 * self.one_way(from, to);
        let i = self.links[from as usize].insert(fresh_link(to, self.now, self.now + rtt));
        if reachable {
            self.hand_over(
                from,
                Handover::Accept {
                    node: to,
                    peer: from,
                    opened: self.now,
                    ready_at: self.now + rtt / 2,
                },
            );
            self.push(
                self.now + rtt,
                from,
                Ev::Connected {
                    node: from,
                    peer: to,
                },
            );
        } else {
            self.push(
                self.now + self.link.detect_us,
                from,
                Ev::PeerLost {
                    node: from,
                    peer: to,
                    opened_by: self.now,
                },
            );
        }
        i
    }

    /// The acceptor's half of a connection `peer` opened at `opened` (see [`Handover::Accept`]).
    fn accept(&mut self, node: u32, peer: u32, opened: u64, ready_at: u64) {
        if !self.access[node as usize].alive {
            // Gone since the dial: the dialler learns of it as of any other lost peer.
            self.tell_lost(node, peer, self.now + self.one_way(node, peer));
            return;
        }
        // A new connection replaces whatever the acceptor still held.
        let link = fresh_link(peer, opened, ready_at);
        let table = &mut self.links[node as usize];
        match table.find(peer) {
            Some(j) => table.links[j] = link,
            None => {
                table.insert(link);
            }
        }
        self.push(ready_at.max(self.now), node, Ev::Connected { node, peer });
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
        let unreachable = !self.up(to) || self.cut(from, to);
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
        // Core: latency and jitter (drawn from the sender's generator); loss and recovery are
        // the receiver's access link's (see `arrive`).
        let one_way =
            self.one_way(from, to) + self.link.jitter_us(&mut self.links[from as usize].rng);
        // Cut-through may date the first packet before now (the update being forwarded was
        // delayed by loss recovery); nothing arrives in the past.
        let first = (start.max(ready_at) + pkt_up + one_way).max(self.now);
        let last = depart.max(ready_at + network::tx_us(len, up_bps)) + one_way;
        self.hand_over(
            from,
            Handover::Arrive(InFlight {
                to,
                from,
                first,
                last,
                one_way,
                len: len as u32,
                payload,
                bytes,
            }),
        );
    }

    /// The receiver's side of a send (see [`Handover::Arrive`]): its downlink is booked when
    /// the window the message was sent in is over, in send order (see `network::Downlink`);
    /// the message is complete once the downlink has taken it in and its last packet arrived.
    fn arrive(&mut self, m: InFlight) {
        let InFlight {
            to,
            from,
            first,
            last,
            one_way,
            len,
            payload,
            bytes,
        } = m;
        let len = len as usize;
        if !self.access[to as usize].alive {
            // Gone since the send: what was in flight is lost with it.
            return;
        }
        // Loss on the receiver's access link (its Gilbert-Elliott state, its generator) and
        // recovery; the sender's link statistics learn of the losses at the next window's end.
        let model = self.link;
        let mut last = last;
        let mut attempts = 1;
        let mut lost = 0;
        // The first attempt risks every packet of the message; a retransmission resends only
        // the lost packet, so later attempts risk one packet each.
        let mut at_risk = len;
        let delivered = loop {
            let bad = &mut self.access[to as usize].bad;
            if !model.lost(at_risk, bad, &mut self.links[to as usize].rng) {
                break true;
            }
            at_risk = PACKET_BYTES.min(len);
            lost += 1;
            self.metrics.counters.losses += 1;
            if model.recovery == Recovery::None || attempts >= MAX_ATTEMPTS {
                self.metrics.counters.lost_messages += 1;
                break false;
            }
            attempts += 1;
            // The lost packet is resent after about one RTT; it costs uplink bytes again.
            let extra = PACKET_BYTES.min(len);
            self.metrics.bytes_up[from as usize] += extra as u64;
            self.metrics.counters.retransmitted_bytes += extra as u64;
            last += 2 * one_way + one_way / 4 + 1000;
        };
        if lost > 0 {
            self.hand_over(
                to,
                Handover::Lost {
                    node: from,
                    peer: to,
                    packets: lost,
                },
            );
        }
        if !delivered {
            return;
        }
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
        self.push(
            done.max(self.now),
            to,
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

/// A connection to `peer` opened at `opened`, usable from `ready_at`.
fn fresh_link(peer: u32, opened: u64, ready_at: u64) -> Link {
    Link {
        peer,
        opened,
        ready_at,
        period_bytes: 0,
        period_packets: 0,
        period_lost: 0,
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
