//! What a [`super::SwarmNode`] hands back: transmits, events and its health.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use elara_core::{Capabilities, Message, NodeId, Priority, StateId, StateUpdate, TrackInfo};

use crate::scheduler::Quality;

/// One message the driver must send to `to` (a connected peer).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Destination peer.
    pub to: NodeId,
    /// The message; encode it with [`Message::encode`].
    pub message: Message,
    /// Urgency: control messages are [`Priority::Urgent`], updates carry their own priority. A
    /// transport may map it to stream priorities.
    pub priority: Priority,
}

/// Why a peer went down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum PeerDownReason {
    /// Nothing heard within the idle timeout.
    Timeout,
    /// The driver reported the connection lost.
    ConnectionLost,
    /// The peer said goodbye.
    Left,
    /// The connection the node asked for never came up.
    Unreachable,
    /// The node no longer needs the peer and closed the connection.
    Pruned,
}

/// Something the application or the driver should know.
///
/// `Connect` and `Disconnect` are requests to the driver; the others are for the application.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Driver: open a connection to `peer` (at `addr`, when not empty) and call
    /// [`super::SwarmNode::peer_connected`] once it is up, or
    /// [`super::SwarmNode::connection_lost`] if it fails.
    Connect {
        /// The peer to connect to.
        peer: NodeId,
        /// Its opaque transport address (may be empty).
        addr: Bytes,
    },
    /// Driver: close the connection to `peer`; the node has forgotten it.
    Disconnect {
        /// The peer.
        peer: NodeId,
    },
    /// A peer finished its hello.
    PeerUp {
        /// The peer.
        peer: NodeId,
        /// What it announced.
        caps: Capabilities,
    },
    /// A peer is gone.
    PeerDown {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: PeerDownReason,
    },
    /// An update of a state this node is interested in, delivered in sequence order, exactly once.
    Delivered {
        /// The update.
        update: StateUpdate,
        /// Links it crossed from its authority (1 for a direct child of the authority).
        hops: u8,
        /// Time from its timestamp to its delivery.
        latency: Duration,
    },
    /// This node's parent in a state's tree changed (`None`: detached).
    ParentChanged {
        /// The state.
        state: StateId,
        /// Previous parent.
        old: Option<NodeId>,
        /// New parent.
        new: Option<NodeId>,
    },
    /// The quality this node sends of a state to one child changed.
    QualityChanged {
        /// The state.
        state: StateId,
        /// The child.
        peer: NodeId,
        /// The new quality.
        quality: Quality,
    },
    /// A call participant offered a track (group mode).
    TrackOffered {
        /// The call.
        call: u64,
        /// The participant (the track's authority).
        peer: NodeId,
        /// The track.
        track: TrackInfo,
    },
    /// The node's health changed.
    HealthChanged(Health),
}

/// Why a node is not healthy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum HealthReason {
    /// The node has no connected peer at all.
    NoPeers,
    /// A state the node is interested in has no parent (joining or re-attaching).
    Detached(StateId),
    /// A state's receive window recently skipped updates it could not repair in time.
    Losing(StateId),
    /// The node sends a reduced quality of a state to at least one child.
    DegradedLink(StateId),
}

impl fmt::Display for HealthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthReason::NoPeers => write!(f, "no connected peer"),
            HealthReason::Detached(s) => write!(f, "{s} has no parent"),
            HealthReason::Losing(s) => write!(f, "{s} is losing updates"),
            HealthReason::DegradedLink(s) => write!(f, "{s} is sent at reduced quality"),
        }
    }
}

/// The node's health, with the reason when it is not healthy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Health {
    /// Everything the node wants it receives; everything it owes it sends.
    Healthy,
    /// Working, but with reduced quality or a repair in progress.
    Degraded(HealthReason),
    /// Not receiving what it wants.
    Unhealthy(HealthReason),
}
