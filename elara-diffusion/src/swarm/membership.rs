//! Membership: connections, hellos, keep-alives, failure detection, pruning, graceful leave.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use elara_core::{Capabilities, Message, NodeId, Time};
use rand::Rng;

use super::peer::{Peer, PeerPhase};
use super::{Event, PeerDownReason, SwarmNode, TimerReason, Transmit};

/// How long an unneeded connection is kept before it is closed.
const PRUNE_GRACE: Duration = Duration::from_secs(2);
/// How much earlier than due a keep-alive ping may go out, so that it shares a liveness sweep
/// with the other pings of the node (at most half the keep-alive interval).
const PING_BATCH: Duration = Duration::from_millis(100);

impl SwarmNode {
    /// The driver reports that a connection to `peer` is up (one this node asked for with
    /// [`Event::Connect`], or one the peer opened). The node greets it with a hello.
    pub fn peer_connected(&mut self, now: Time, peer: NodeId) {
        if self.left || peer == self.cfg.id {
            return;
        }
        match self.peers.get_mut(&peer) {
            Some(p) if p.phase == PeerPhase::Dialing => {
                p.phase = PeerPhase::Connected;
                p.last_heard = now;
                p.since = now;
            }
            Some(_) => return,
            None => {
                self.peers.insert(
                    peer,
                    Peer::new(now, PeerPhase::Connected, false, Bytes::new()),
                );
            }
        }
        self.timers.cancel(TimerReason::Dial(peer));
        self.failed.remove(&peer);
        let caps = self.cfg.caps;
        self.send_control(
            peer,
            Message::Hello {
                node: self.cfg.id,
                caps,
            },
        );
        self.send_ping(now, peer);
        self.timers
            .set_if_earlier(TimerReason::Liveness, now + self.cfg.keepalive_interval);
        self.flush_pending_joins(now, peer);
        self.offer_call_to(peer);
        self.health_dirty = true;
        self.refresh_health(now);
    }

    /// The driver reports that the connection to `peer` broke (or never came up).
    pub fn connection_lost(&mut self, now: Time, peer: NodeId) {
        let reason = match self.peers.get(&peer) {
            Some(p) if p.phase == PeerPhase::Dialing => PeerDownReason::Unreachable,
            Some(_) => PeerDownReason::ConnectionLost,
            None => return,
        };
        self.peer_gone(now, peer, reason);
        self.refresh_health(now);
    }

    /// Leaves the swarm gracefully: says goodbye to every peer and stops. Children re-attach
    /// elsewhere as soon as they read the goodbye.
    pub fn leave(&mut self, now: Time) {
        let peers: Vec<NodeId> = self.connected_peers().collect();
        for p in peers {
            self.send_control(p, Message::Leave { reason: 0 });
            self.events.push_back(Event::Disconnect { peer: p });
        }
        self.left = true;
        self.pacing.clear();
        self.timers = Default::default();
        let _ = now;
    }

    /// Asks the driver for a connection to `peer` unless one exists or is being made.
    pub(crate) fn dial(&mut self, now: Time, peer: NodeId, addr: Bytes) {
        if peer == self.cfg.id || self.peers.contains_key(&peer) || self.left {
            return;
        }
        self.peers
            .insert(peer, Peer::new(now, PeerPhase::Dialing, true, addr.clone()));
        self.events.push_back(Event::Connect { peer, addr });
        self.timers
            .set(TimerReason::Dial(peer), now + self.cfg.dial_timeout);
    }

    pub(crate) fn on_hello(&mut self, now: Time, from: NodeId, node: NodeId, caps: Capabilities) {
        if node != from {
            self.counters.unexpected += 1;
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.caps = caps;
        if p.phase != PeerPhase::Up {
            p.phase = PeerPhase::Up;
            self.events.push_back(Event::PeerUp { peer: from, caps });
        }
        let _ = now;
    }

    fn send_ping(&mut self, now: Time, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            ping(&mut self.rng, &mut self.control, now, peer, p);
        }
    }

    pub(crate) fn on_pong(&mut self, now: Time, from: NodeId, nonce: u64) {
        if let Some(p) = self.peers.get_mut(&from)
            && let Some((n, sent)) = p.ping
            && n == nonce
        {
            p.ping = None;
            p.rtt_sample(now - sent);
        }
    }

    /// The liveness sweep: one timer per node, not two per peer. It pings every connected
    /// peer that nothing was sent to for a keep-alive interval (or will be within
    /// [`PING_BATCH`] of it), declares down every peer silent for the idle timeout, and is
    /// armed again at the earliest of the next such deadlines.
    ///
    /// Pinging a little early lets a node's pings go out together: once they have, their next
    /// deadlines coincide, and the sweep fires about once per interval instead of once per
    /// peer. (Two timers per peer made keep-alives a sixth of a large simulation's events, and
    /// put a broadcaster's thousands of timers in B-trees.)
    pub(crate) fn on_liveness(&mut self, now: Time) {
        let interval = self.cfg.keepalive_interval;
        let idle = self.cfg.idle_timeout;
        let ping_by = now + PING_BATCH.min(interval / 2);
        let mut next: Option<Time> = None;
        let mut silent = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            if !p.is_connected() {
                continue;
            }
            let idle_at = p.last_heard + idle;
            if idle_at <= now {
                silent.push(id);
                continue;
            }
            let mut ping_at = p.last_sent + interval;
            if ping_at <= ping_by {
                ping(&mut self.rng, &mut self.control, now, id, p);
                p.last_sent = now;
                ping_at = now + interval;
            }
            let due = ping_at.min(idle_at);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        for peer in silent {
            self.events.push_back(Event::Disconnect { peer });
            self.peer_gone(now, peer, PeerDownReason::Timeout);
        }
        if let Some(at) = next {
            self.timers.set_if_earlier(TimerReason::Liveness, at);
        }
    }

    /// True when `peer` has been silent for longer than a live peer ever is: a live peer
    /// sends something at least every keep-alive interval, and a lost message is resent about
    /// a round trip later. It is not declared down before the idle timeout, but a repair may
    /// already count on its failure (an orphan of it asking us for a slot, say).
    pub(crate) fn seems_gone(&self, now: Time, peer: NodeId) -> bool {
        let Some(p) = self.peers.get(&peer).filter(|p| p.is_connected()) else {
            return false;
        };
        let rtt = p.rtt_or(self.cfg.initial_rtt);
        let resent = rtt.saturating_mul(2);
        let silence = self
            .cfg
            .keepalive_interval
            .saturating_add(resent)
            .min(self.cfg.idle_timeout);
        now - p.last_heard > silence
    }

    pub(crate) fn on_dial_timeout(&mut self, now: Time, peer: NodeId) {
        if self
            .peers
            .get(&peer)
            .is_some_and(|p| p.phase == PeerPhase::Dialing)
        {
            self.events.push_back(Event::Disconnect { peer });
            self.peer_gone(now, peer, PeerDownReason::Unreachable);
        }
    }

    pub(crate) fn on_prune(&mut self, now: Time, peer: NodeId) {
        let initiated = self.peers.get(&peer).is_some_and(|p| p.initiated);
        if initiated && !self.needed(peer) {
            self.events.push_back(Event::Disconnect { peer });
            self.peer_gone(now, peer, PeerDownReason::Pruned);
        }
    }

    /// True when `peer` has a role: bootstrap (while joining), call participant, or parent,
    /// previous parent, standby ancestor (grandparent, and great-grandparent unless it is the
    /// root, for fast repair), join target or child in some state.
    pub(crate) fn needed(&self, peer: NodeId) -> bool {
        // A bootstrap peer is needed only while something is still looking for a parent: once
        // attached, the connection goes (a large swarm would otherwise pile every node's
        // connection onto the bootstrap peers); a repair dials it again if it must.
        let me = self.cfg.id;
        if self.cfg.bootstrap.iter().any(|b| b.id == peer)
            && self
                .states
                .values()
                .any(|t| t.own.is_interested() && !t.attached(me) && t.call.is_none())
        {
            return true;
        }
        if self
            .call
            .as_ref()
            .is_some_and(|c| c.participants.contains(&peer))
        {
            return true;
        }
        self.states.values().any(|t| {
            t.parent == Some(peer)
                || t.prev_parent == Some(peer)
                || super::diffusion::standbys(&t.path).any(|a| a == peer)
                || t.joining.as_ref().is_some_and(|j| j.target == peer)
                || t.children.contains_key(&peer)
        })
    }

    /// Arms a prune check for every connection this node opened that has no role any more.
    pub(crate) fn schedule_prunes(&mut self, now: Time) {
        let idle: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.initiated)
            .map(|(id, _)| *id)
            .filter(|id| !self.needed(*id))
            .collect();
        for p in idle {
            self.timers
                .set_if_earlier(TimerReason::Prune(p), now + PRUNE_GRACE);
        }
    }

    /// Forgets `peer` and repairs everything that depended on it.
    pub(crate) fn peer_gone(&mut self, now: Time, peer: NodeId, reason: PeerDownReason) {
        let Some(gone) = self.peers.remove(&peer) else {
            return;
        };
        self.timers.cancel_peer(peer);
        if let (Some(link), Some(sched)) = (gone.link_id, self.scheduler.as_deref_mut()) {
            sched.remove_link(link);
        }
        if reason != PeerDownReason::Pruned {
            self.failed.insert(peer, now + self.cfg.idle_timeout * 2);
        }
        self.events.push_back(Event::PeerDown { peer, reason });
        self.health_dirty = true;
        self.repair_after_loss(now, peer, gone.caps.max_children);
    }
}

/// Queues a ping to `peer` and remembers its nonce and send time for the RTT sample.
fn ping(
    rng: &mut impl Rng,
    control: &mut VecDeque<Transmit>,
    now: Time,
    to: NodeId,
    peer: &mut Peer,
) {
    let nonce: u64 = rng.random();
    peer.ping = Some((nonce, now));
    super::push_control(control, to, Message::Ping { nonce });
}
