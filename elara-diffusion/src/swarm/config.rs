//! Configuration of a [`super::SwarmNode`].

use std::time::Duration;

use bytes::Bytes;
use elara_core::{Capabilities, InterestLevel, NodeId};

/// Default [`SwarmConfig::pacing_slack`]: the default latency budget, so that every update the
/// scheduler decides to send goes to the transport at once, in the order of its pacing times
/// (the scheduler drops what could not arrive within the budget anyway).
///
/// Holding updates in the node until their pacing time, with the transport's own queue behind
/// it, queued every update twice: 30 ms per relay hop on average, 104 ms at p90, and keyframes
/// reached deep nodes after their budget, cutting whole groups. `elara-sim run livestream
/// --set duration_s=20` (10,000 viewers): continuity 89.9 -> 94.2%, video alone 79.9 ->
/// 85.3%, p99 latency 1.15 -> 1.04 s; 2,000 viewers, seeds 1/2/3: 98.5/98.4/97.5 ->
/// 98.4/98.9/99.0%. Slacks of 40 and 100 ms were worse than either (2,000 viewers, seed 3:
/// 95.7 and 95.5%).
pub const PACING_SLACK: Duration = Duration::from_secs(1);

/// A peer to contact first: its id and an opaque transport address (empty when the driver can
/// reach peers by id alone, as the in-memory harness and the simulator do).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BootstrapPeer {
    /// The peer's id.
    pub id: NodeId,
    /// Opaque transport address handed back in [`super::Event::Connect`].
    pub addr: Bytes,
}

/// Everything a [`super::SwarmNode`] needs to start: its identity, what it offers, where to
/// join, the seed of its random choices, and the protocol's time constants.
///
/// [`SwarmConfig::new`] gives defaults suited to the public internet (1 s keep-alives); tests
/// and simulations usually shorten the timers with the `with_*` builders.
#[derive(Clone, Debug)]
// Declaration order is layout order: the fields a node reads on every update first (see
// `SwarmNode`).
#[repr(C)]
pub struct SwarmConfig {
    /// This node's id.
    pub id: NodeId,
    /// An update the scheduler paces to go out within this long is handed to the transport
    /// at once, in pacing order: a transport queue that short costs the update nothing more
    /// than the wait would. Longer waits (a link or the uplink really behind) stay in the
    /// node, where the update can still be dropped when stale or passed by a more urgent one.
    pub pacing_slack: Duration,
    /// Updates older than this (by their timestamp) are stale: not delivered late, not repaired.
    pub latency_budget: Duration,
    /// How long a gap in the sequence holds back later updates before it is skipped.
    pub reorder_window: Duration,
    /// Quiet time after the last forwarded update before children are told the newest seq.
    pub announce_delay: Duration,
    /// RTT assumed for a peer before any measurement.
    pub initial_rtt: Duration,
    /// A peer from which nothing was heard for this long is declared down.
    pub idle_timeout: Duration,
    /// A join request unanswered for this long moves on to the next candidate.
    pub join_timeout: Duration,
    /// Peers contacted to join state trees.
    pub bootstrap: Vec<BootstrapPeer>,
    /// Most recent updates kept per state to answer pulls and to start new children at a
    /// keyframe (only by relays and the authority; entries older than the latency budget go).
    pub repair_buffer: usize,
    /// Capabilities announced in every `Hello`; `max_children` bounds the children per state.
    pub caps: Capabilities,
    /// Seed of the node's random generator: the same seed and the same inputs give the same run.
    pub seed: u64,
    /// A ping is sent to a peer to which nothing was sent for this long.
    pub keepalive_interval: Duration,
    /// A connection the driver was asked to open that is not up after this long is abandoned.
    pub dial_timeout: Duration,
    /// Redirects followed by one join attempt before starting over from the bootstrap peers.
    pub max_redirects: u8,
    /// Interest declared in every track of a call participant when the track is offered.
    pub call_interest: InterestLevel,
    /// The transport recovers lost update messages itself (updates ride reliable streams): an
    /// update sent is late when a packet of it was lost, never gone. A relay then waits longer
    /// before it answers a child's pull for an update it sent that child (see
    /// [`super::SwarmNode`]'s pull handling): the copy may still be on its way. Off by default:
    /// updates may be lost (datagrams, or streams reset when superseded).
    pub reliable_updates: bool,
}

impl SwarmConfig {
    /// Defaults for node `id` with capabilities `caps` (internet timers: 1 s keep-alive,
    /// 3 s idle timeout, 1 s latency budget).
    pub fn new(id: NodeId, caps: Capabilities) -> Self {
        SwarmConfig {
            id,
            seed: id.prefix_u64(),
            caps,
            bootstrap: Vec::new(),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(2),
            join_timeout: Duration::from_millis(800),
            latency_budget: Duration::from_secs(1),
            reorder_window: Duration::from_millis(400),
            announce_delay: Duration::from_millis(100),
            repair_buffer: 128,
            initial_rtt: Duration::from_millis(100),
            max_redirects: 24,
            call_interest: InterestLevel::High,
            pacing_slack: PACING_SLACK,
            reliable_updates: false,
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a bootstrap peer reachable by id alone.
    pub fn with_bootstrap(mut self, id: NodeId) -> Self {
        self.bootstrap.push(BootstrapPeer {
            id,
            addr: Bytes::new(),
        });
        self
    }

    /// Sets keep-alive interval and idle timeout together.
    pub fn with_keepalive(mut self, interval: Duration, idle_timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets the latency budget and the reorder window (which should be well inside it).
    pub fn with_latency(mut self, budget: Duration, reorder_window: Duration) -> Self {
        self.latency_budget = budget;
        self.reorder_window = reorder_window;
        self
    }
}
