//! The sans-IO contract the engine drives: the same shape as the swarm node in `elara-diffusion`
//! (and the QUIC transport's view of it), so that the node under test and the baselines are
//! plugged in the same way.
//!
//! A driver runs this loop for every node, with `now` always non-decreasing per node:
//!
//! 1. feed inputs: [`Protocol::start`] once, then [`Protocol::handle_message`],
//!    [`Protocol::handle_timeout`] (when [`Protocol::poll_timeout`] is due),
//!    [`Protocol::publish`], [`Protocol::declare_interest`], [`Protocol::link_feedback`],
//!    [`Protocol::peer_connected`], [`Protocol::peer_lost`], [`Protocol::leave`];
//! 2. after each input drain [`Protocol::poll_transmit`] until `None` (encode and send each),
//!    then [`Protocol::poll_event`] until `None`;
//! 3. ask [`Protocol::poll_timeout`] and arm a timer for it.

use std::collections::BTreeMap;
use std::time::Duration;

use elara_core::{Capabilities, InterestLevel, Message, NodeId, StateId, StateUpdate, Time};

/// Link measurements handed to a node about one of its neighbours, as a QUIC connection's
/// congestion controller would report them: the swarm node's own type, so the contract is the
/// one the QUIC transport drives.
pub use elara_diffusion::swarm::LinkStats;

/// One message a node wants sent.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// The destination.
    pub to: NodeId,
    /// The message; the engine encodes it with `elara_core::wire` and the receiver decodes it.
    pub message: Message,
}

/// What a node reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolEvent {
    /// An update was handed to the application (the player): at most once per update, and a
    /// video delta only after its group's keyframe.
    Delivered {
        /// The update's state.
        state: StateId,
        /// Its sequence number.
        seq: u64,
        /// Links crossed from the authority (1 = straight from the authority).
        hops: u8,
    },
    /// The node asks the driver to open a connection to `peer`; the driver answers with
    /// [`Protocol::peer_connected`] or [`Protocol::peer_lost`].
    Connect {
        /// The peer.
        peer: NodeId,
    },
    /// The node closed its connection to `peer`.
    Disconnect {
        /// The peer.
        peer: NodeId,
    },
    /// The node's parent for a state changed (tree protocols).
    ParentChanged {
        /// The state.
        state: StateId,
        /// The new parent, or `None` when the node is orphaned.
        parent: Option<NodeId>,
    },
}

/// The role a node plays in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes the livestream's tracks.
    Broadcaster,
    /// Watches the livestream.
    Viewer,
    /// A group call participant: publishes its own tracks and watches the others'.
    Participant,
}

/// A track and its authority, as the scenario's directory (the "stream URL") tells every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackEntry {
    /// The track's state id.
    pub state: StateId,
    /// The node that publishes it.
    pub authority: NodeId,
    /// Whether the track is video (keyframe-led groups) or audio.
    pub video: bool,
}

/// Everything a node is told when it is created.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Nodes to contact first (the broadcaster, or the first participant of a call).
    pub bootstrap: Vec<NodeId>,
    /// What the node offers (upload and download in kbit/s, limits).
    pub caps: Capabilities,
    /// Seed for the node's own random generator.
    pub seed: u64,
    /// Upper bound on one update's play-out latency the application tolerates.
    pub latency_budget: Duration,
    /// The network recovers lost update messages itself (loss recovery `quic-stream`): a
    /// message is late, never gone.
    pub reliable_updates: bool,
}

/// Stages of [`Protocol::prefetch_hints`] the engine asks for.
pub const PREFETCH_STAGES: usize = 2;

/// A node state machine the engine can drive (see the module docs for the loop).
pub trait Protocol {
    /// Called once right after the node is created (join the swarm: contact bootstrap peers).
    fn start(&mut self, now: Time, tracks: &[TrackEntry]);
    /// A decoded message arrived from `from`.
    fn handle_message(&mut self, now: Time, from: NodeId, message: Message);
    /// The time returned by [`Protocol::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Time);
    /// The node is the authority of `update.state` and publishes a new update.
    fn publish(&mut self, now: Time, update: StateUpdate);
    /// The application's interest in `state` changed.
    fn declare_interest(&mut self, now: Time, state: StateId, level: InterestLevel);
    /// Fresh measurements of the link to `peer`.
    fn link_feedback(&mut self, now: Time, peer: NodeId, stats: LinkStats);
    /// A connection to `peer` is established.
    fn peer_connected(&mut self, now: Time, peer: NodeId);
    /// The connection to `peer` failed or was closed.
    fn peer_lost(&mut self, now: Time, peer: NodeId);
    /// The node leaves gracefully (it may still send goodbyes, then it is removed).
    fn leave(&mut self, now: Time);
    /// Next message to send.
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit>;
    /// Next event for the driver.
    fn poll_event(&mut self) -> Option<ProtocolEvent>;
    /// When [`Protocol::handle_timeout`] must next be called.
    fn poll_timeout(&mut self) -> Option<Time>;
    /// The node's depth in `state`'s tree (the publisher is 0), for protocols that build one
    /// (a tracker hands joiners relays near the root, see
    /// [`crate::scenario::Bootstrap::Tracker`]).
    fn depth(&self, state: StateId) -> Option<u16> {
        let _ = state;
        None
    }
    /// Addresses the node's next call most likely reads, for the engine to prefetch while it
    /// handles earlier events: `stage` 0 names the node's own fields, each later stage (up to
    /// [`PREFETCH_STAGES`] - 1) what the stage before points to. A hint only; by default none.
    fn prefetch_hints(&self, stage: usize, hint: &mut dyn FnMut(*const u8)) {
        let _ = (stage, hint);
    }
    /// Adds the node's own counters (drops by reason, repairs, ...) to `out`; the engine sums
    /// them over all nodes into the report.
    fn diagnostics(&self, out: &mut BTreeMap<String, u64>) {
        let _ = out;
    }
}

/// A family of nodes: how to build one, and the name it has in reports.
pub trait ProtocolKind {
    /// The node type.
    type Node: Protocol;
    /// Short stable name used in reports and on the command line.
    fn name(&self) -> &'static str;
    /// Builds a node joining at `now`.
    fn create(&self, setup: &NodeSetup, now: Time) -> Self::Node;
}
