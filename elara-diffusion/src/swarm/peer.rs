//! A neighbour as the node sees it.

use std::time::Duration;

use bytes::Bytes;
use elara_core::{Capabilities, Time};

use crate::scheduler::{LinkId, LinkStats};

/// Figures for the link to one peer: what the transport last reported and what the node
/// counted itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkMetrics {
    /// Smoothed RTT (from link feedback, or from the node's own pings).
    pub rtt: Duration,
    /// Send-rate estimate from the last link feedback, bytes per second.
    pub send_rate: u64,
    /// Loss fraction from the last link feedback (0.0-1.0).
    pub loss: f32,
    /// Bytes queued in the transport, from the last link feedback.
    pub queued_bytes: u64,
    /// Messages handed to the driver for this peer.
    pub messages_sent: u64,
    /// Encoded bytes of those messages.
    pub bytes_sent: u64,
    /// Update messages among them.
    pub updates_sent: u64,
    /// Update messages received from this peer.
    pub updates_received: u64,
    /// Messages received from this peer.
    pub messages_received: u64,
    /// Encoded bytes of those messages.
    pub bytes_received: u64,
}

/// Where a peer's connection stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PeerPhase {
    /// The driver was asked to connect.
    Dialing,
    /// Connected; its hello not yet received.
    Connected,
    /// Hello received.
    Up,
}

/// A neighbour.
#[derive(Debug)]
pub(crate) struct Peer {
    pub phase: PeerPhase,
    /// This node asked for the connection (only the dialling side prunes it).
    pub initiated: bool,
    pub caps: Capabilities,
    pub addr: Bytes,
    pub srtt: Option<Duration>,
    pub last_heard: Time,
    /// When the connection came up (dial start while dialling).
    pub since: Time,
    pub last_sent: Time,
    pub ping: Option<(u64, Time)>,
    pub link: LinkMetrics,
    /// The scheduler's handle for this link, registered the first time something is
    /// scheduled on it (leaves never need one).
    pub link_id: Option<LinkId>,
    /// The last link feedback, replayed when the link is registered.
    pub feedback: Option<LinkStats>,
}

impl Peer {
    pub fn new(now: Time, phase: PeerPhase, initiated: bool, addr: Bytes) -> Self {
        Peer {
            phase,
            initiated,
            caps: Capabilities::default(),
            addr,
            srtt: None,
            last_heard: now,
            since: now,
            last_sent: now,
            ping: None,
            link: LinkMetrics::default(),
            link_id: None,
            feedback: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.phase != PeerPhase::Dialing
    }

    /// Smoothed RTT, or `default` before any sample.
    pub fn rtt_or(&self, default: Duration) -> Duration {
        self.srtt.unwrap_or(default)
    }

    /// Folds an RTT sample into the smoothed RTT (RFC 6298 weights).
    pub fn rtt_sample(&mut self, sample: Duration) {
        let s = match self.srtt {
            None => sample,
            Some(old) => (old * 7 + sample) / 8,
        };
        self.srtt = Some(s);
        self.link.rtt = s;
    }
}
