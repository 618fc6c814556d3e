//! A neighbour as the node sees it.

use std::time::Duration;

use bytes::Bytes;
use elara_core::{Capabilities, NodeId, Time};

use super::small_map::SmallMap;
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
    /// The RTT of the last link feedback, `None` before any. The rest of that feedback is in
    /// `link` (its rate, loss and queued bytes are written there and nowhere else):
    /// [`Peer::last_feedback`] puts it back together, 32 bytes less per peer than a copy.
    pub feedback_rtt: Option<Duration>,
}

impl Peer {
    /// Counts `message`, handed to the driver for this peer at `now`.
    pub fn count_sent(&mut self, now: Time, message: &elara_core::Message) {
        self.last_sent = now;
        self.link.messages_sent += 1;
        self.link.bytes_sent += message.encoded_len() as u64;
        if matches!(message, elara_core::Message::Update { .. }) {
            self.link.updates_sent += 1;
        }
    }

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
            feedback_rtt: None,
        }
    }

    /// The last link feedback (replayed when the link is registered with the scheduler).
    pub fn last_feedback(&self) -> Option<LinkStats> {
        self.feedback_rtt.map(|rtt| LinkStats {
            rtt,
            send_rate_estimate: self.link.send_rate,
            loss: self.link.loss,
            queued_bytes: self.link.queued_bytes,
        })
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

/// Peers that failed recently, each with the time until which it is not tried again as a
/// parent. Entries are also kept ordered by that time, so expiring them costs only the entries
/// that expire (a broadcaster sees thousands of failed joiners and handles a timeout for every
/// keep-alive).
#[derive(Debug, Default)]
pub(crate) struct FailedPeers {
    until: SmallMap<NodeId, Time>,
    by_time: SmallMap<(Time, NodeId), ()>,
}

impl FailedPeers {
    /// Avoids `peer` until `until`.
    pub(crate) fn insert(&mut self, peer: NodeId, until: Time) {
        if let Some(old) = self.until.insert(peer, until) {
            self.by_time.remove(&(old, peer));
        }
        self.by_time.insert((until, peer), ());
    }

    /// Forgets `peer`.
    pub(crate) fn remove(&mut self, peer: &NodeId) {
        if let Some(old) = self.until.remove(peer) {
            self.by_time.remove(&(old, *peer));
        }
    }

    /// True while `peer` is avoided.
    pub(crate) fn contains_key(&self, peer: &NodeId) -> bool {
        self.until.contains_key(peer)
    }

    /// Drops the entries whose time has come (`until <= now`).
    pub(crate) fn expire(&mut self, now: Time) {
        while let Some((&(at, peer), _)) = self.by_time.first_key_value()
            && at <= now
        {
            self.by_time.pop_first();
            self.until.remove(&peer);
        }
    }
}

#[cfg(test)]
mod failed_tests {
    use super::*;

    #[test]
    fn entries_expire_at_their_time_whatever_the_order_of_insertion() {
        let mut f = FailedPeers::default();
        let (a, b, c) = (
            NodeId::from_u64(1),
            NodeId::from_u64(2),
            NodeId::from_u64(3),
        );
        f.insert(a, Time::from_millis(30));
        f.insert(b, Time::from_millis(10));
        f.insert(c, Time::from_millis(20));
        f.remove(&b);
        f.expire(Time::from_millis(15));
        assert!(f.contains_key(&a) && f.contains_key(&c) && !f.contains_key(&b));
        f.expire(Time::from_millis(20));
        assert!(f.contains_key(&a) && !f.contains_key(&c));
        f.expire(Time::from_millis(29));
        assert!(f.contains_key(&a));
        f.expire(Time::from_millis(30));
        assert!(!f.contains_key(&a));
        f.insert(b, Time::from_millis(5));
        f.expire(Time::from_millis(31));
        assert!(!f.contains_key(&b));
        // Failing again moves the time.
        f.insert(c, Time::from_millis(40));
        f.insert(c, Time::from_millis(60));
        f.expire(Time::from_millis(50));
        assert!(f.contains_key(&c));
        f.expire(Time::from_millis(60));
        assert!(!f.contains_key(&c));
    }
}
