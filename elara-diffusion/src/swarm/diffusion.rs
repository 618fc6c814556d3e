//! Diffusion per state: joining a tree (request, accept, redirect), interest aggregation,
//! forwarding through the scheduler, in-order delivery, lazy repair and tree repair.

use std::time::Duration;

use bytes::Bytes;
use elara_core::wire::{MAX_CANDIDATES, MAX_PATH, MAX_SEQS};
use elara_core::{InterestLevel, Message, NodeId, PeerInfo, StateId, StateUpdate, Time};

use super::peer::Peer;
use super::small_map::SmallMap;
use super::state::{Arrival, Child, Held, Joining, ReceiveWindow};
use super::{Event, SwarmNode, TimerReason};
use crate::scheduler::Verdict;

/// Candidates listed in one redirect.
const REDIRECT_FANOUT: usize = 3;
/// Most pull rounds for one gap.
const MAX_PULL_ROUNDS: u8 = 6;
/// Most sequence numbers asked for in one pull.
const PULL_BATCH: usize = 64;
/// Ancestors above the parent kept connected as standbys for fast repair: the grandparent and
/// the great-grandparent, so that an orphan whose grandparent failed at the same time still
/// reaches a live ancestor without a handshake (and one whose great-grandparent failed too
/// sees it silent and skips it, instead of waiting out a dial). An orphan asks its
/// great-grandparent only when its grandparent is gone or silent, so great-grandparents keep
/// their repair slots for their own grandchildren. The root is never a second standby (see
/// [`standbys`]). Measured on the 20%-of-relays kill under 5% loss (RTT 40 ms): with the
/// grandparent alone, re-attach p90 was 80-480 ms and max up to 520 ms (a fresh dial to a
/// great-grandparent that had failed too waits for the dial timeout); with two, and the repair
/// request sent twice ([`REPAIR_COPIES`]), median 40 ms, p90 40-80 ms, max 40-80 ms (seeds
/// 1-12). In `elara-sim run livestream --set viewers=2000` (seeds 1 / 2) video continuity is
/// 93.1 / 94.4% against 93.9 / 96.2% with one standby; with the root as a second standby it
/// was 89.3 / 93.7%. In `elara-sim run heterogeneous --set viewers=1000` (a 20% mass failure
/// at 30 s, seeds 1-6) High continuity is 67.3 / 99.2 / 73.3 / 67.6 / 74.4 / 70.3% against
/// 70.9 / 99.3 / 71.1 / 72.5 / 74.9 / 68.9% with the root as a second standby and one repair
/// request (mean of the five seeds other than 2: 70.6 against 71.7%, video alone 58.4 against
/// 58.5%); leaving the root out with one request gave 66.2 / 71.0% on seeds 1 / 3. With the
/// root a standby, one standby had given 78.0 / 99.4 / 69.7% on seeds 1-3: this scenario
/// swings by several points from seed to seed either way.
pub(crate) const STANDBYS: usize = 2;

/// The standby ancestors of a node whose path (root first, parent last) is `path`: the
/// [`STANDBYS`] ancestors above the parent, except the root as the second one. Every node
/// three levels down would otherwise hold a connection to the root, for the rare orphan whose
/// parent and grandparent failed together (which reaches the root over a fresh connection in
/// two round trips anyway). In `elara-sim run livestream --set viewers=2000` (seed 1, no
/// failures) those connections made the root send 31,000 control messages in 20 s against
/// 20,000 (1.06 MB against 0.90 MB, beside 39 MB of stream), and video continuity was 89.3%
/// against 93.1%. Those bytes alone hardly explain it; the rest is not pinned down (letting
/// long-connected joiners displace weaker children, as fresh joiners do, recovered 2.4 of the
/// 3.8 points, but that changes climbing too).
pub(crate) fn standbys(path: &[NodeId]) -> impl Iterator<Item = NodeId> + '_ {
    let grandparent = path.len().wrapping_sub(2);
    path.iter()
        .enumerate()
        .rev()
        .skip(1)
        .take(STANDBYS)
        .filter(move |&(i, _)| i == grandparent || i > 0)
        .map(|(_, &a)| a)
}
/// How long updates held behind a gap wait for it: the reorder window, or the whole latency
/// budget while a keyframe cut into fragments is incomplete. Giving up a piece of a keyframe
/// loses its whole group (every delta after it is undecodable), while a piece that comes late
/// still lets the rest of the group play: with 16-kB fragments at 500 viewers and 1% loss,
/// skipping such gaps after the reorder window cost whole groups at a time.
fn gap_wait(recv: &ReceiveWindow, window: Duration, budget: Duration) -> Duration {
    if recv.receiving_key.is_some() || recv.gap_inside_keyframe() {
        window.max(budget)
    } else {
        window
    }
}

/// Repair slots a failed relay child opens per child it could take: its orphans come, and so
/// do the orphans of a child of it that failed at the same time (their grandparent is gone).
/// With one per child, such double failures left orphans redirected down the tree (same kill:
/// p90 40-160 ms, max 80-280 ms).
const REPAIR_SLOTS_PER_SLOT: u16 = 2;
/// Copies of a repair request an orphan sends. The ancestor answers each with an accept (the
/// second finds the orphan already its child and only repeats the accept), so a re-attach
/// waits for a retransmission only when both copies of the request, or both accepts, are
/// lost: with one copy, a lost request and a lost accept together (0.25% of orphans at 5%
/// loss, about one orphan in each of a third of the seeds of the 20%-of-relays kill) took
/// three round trips; with two, re-attach stays within two.
const REPAIR_COPIES: usize = 2;
/// How often an attached node tries to move up a level (plus up to as much again of jitter).
const CLIMB_INTERVAL: Duration = Duration::from_secs(2);
/// Round trips a gap in the sequence may last before its updates are pulled from the parent.
/// Three, not two: a frame a lost packet holds back comes about one and a quarter round trips
/// late (its retransmission), plus the parent's queue; pulled at two it often arrived anyway
/// and the pulled copy was a duplicate. `elara-sim run livestream --set duration_s=20` (10,000
/// viewers): duplicates 6.2 -> 5.4%, continuity 96.9 -> 97.1%, startup p95 4.7 -> 4.0 s, p99
/// 0.996 -> 1.008 s; 2,000 viewers (`--set viewers=2000`, seeds 1 / 2 / 3): duplicates 5.6 /
/// 5.7 / 6.0 -> 4.7 / 4.7 / 4.7%, continuity 98.3 / 98.4 / 98.4 -> 98.4 / 98.2 / 99.1%. Only
/// about 6% of the duplicates arrived during a make-before-break switch.
const PULL_DELAY_RTTS: u32 = 3;
/// A child's pull for an update this node queued for it less than one round trip ago (two
/// when the transport recovers lost updates itself, [`crate::swarm::SwarmConfig`]'s
/// `reliable_updates`) is not answered: the pull crossed the update on its way. The copy needs
/// half a round trip to arrive and the pull half of one to come back; a copy that lost a
/// packet to a retransmitting transport arrives about 1.25 round trips late. Gaps are pulled
/// after [`PULL_DELAY_RTTS`], but a gap this node had too (or an update held back by a lost
/// packet of its own) reaches the child only once this node forwards it, often just as the
/// child's pull or its retry is on its way, and answering sent the update a second time.
/// Measured with a send log in the simulator at 2,000 viewers (`elara-sim run livestream --set
/// viewers=2000 --set duration_s=20`, loss recovery `quic-stream`): 76% of the duplicate
/// updates were such answers, the first copy still in flight or arrived within 50 ms of the
/// pull. Two round trips there: duplicates 4.9 / 4.7 / 5.0 / 4.8% -> 1.9 / 1.8 / 1.9 / 1.8% on
/// seeds 1-4, continuity 99.2 / 98.6 / 99.0 / 99.1% -> 99.0 / 98.7 / 99.0 / 99.1% (one round
/// trip: duplicates 3.0%, continuity 98.9 / 98.5 / 98.8 / 98.0%); 10,000 viewers (seeds 1-4):
/// duplicates 5.5 -> 2.0%, continuity 97.3 / 97.7 / 97.6 / 97.9 -> 97.3 / 98.3 / 96.8 / 97.7%.
/// With lossy links and no retransmission (the harness at 5% loss), two round trips held back
/// repairs of updates that were really lost, and Low viewers of audio missed frames.
/// Only updates queued for that child count (its `Child::sent` window): a
/// pull for one the scheduler dropped for it is answered at once (judged by the forwarding
/// time alone, mean continuity at 10,000 viewers fell to 97.0%).
const CROSSING_RTTS: u32 = 1;
/// ... and never longer than this share of the latency budget: a congested child's round
/// trip can reach the budget, and its repairs were then held back until too late (seed 4 of
/// the 2,000-viewer run: continuity 99.1 -> 97.2% uncapped, 99.1% capped at a quarter).
const CROSSING_BUDGET_SHARE: u32 = 4;
/// Longest group interval a make-before-break switch waits out for the new parent's keyframe.
const MAX_GROUP_WAIT: Duration = Duration::from_secs(10);
/// Children a node must be able to take to count as a strong relay, placed above the nodes
/// that can take fewer.
const STRONG_RELAY: u16 = 2;
/// Redirects to the ends of chains a joiner puts behind its other candidates (see
/// [`SwarmNode::on_join_redirect`]). Measured in `elara-sim run livestream --set viewers=2000
/// --set duration_s=20` (seeds 1 / 2): with 3, video continuity 96.4 / 97.2% against 93.1 /
/// 94.4% without deferring, startup p95 4.0 / 3.3 s against 4.1 / 3.6 s, hops p99 7 / 7
/// against 9 / 9; with 8, 96.5 / 96.7% and startup p95 4.8 / 3.6 s. At 10,000 viewers (seeds
/// 1 / 2) video continuity 75.0 / 83.5% against 81.4 / 78.6%, all frames 89.1 / 89.4% against
/// 91.7 / 90.5%, viewers never started 59 / 7 against 132 / 203.
const MAX_DEFERRALS: u8 = 3;
/// Loss on the link to a parent above which the node looks for a better parent.
const PARENT_LOSS_LIMIT: f32 = 0.3;
/// How long a child asked to move down (rebalance) is counted out of our slots: one still
/// here after that found no place and counts again.
const MOVE_TIMEOUT: Duration = Duration::from_secs(4);

/// Children `id` says it can take (its `Hello`'s `max_children`; 0 before its hello arrived).
fn slots_of(peers: &SmallMap<NodeId, Peer>, id: &NodeId) -> u16 {
    peers.get(id).map_or(0, |p| p.caps.max_children)
}

/// The relays among `ids` a joiner or a mover is sent to, in the order given: the strong ones
/// ([`STRONG_RELAY`] slots or more), or, when there is none, every one that can take a child
/// at all (a chain of one-child relays is the last resort).
fn relay_targets(peers: &SmallMap<NodeId, Peer>, mut ids: Vec<NodeId>) -> Vec<NodeId> {
    ids.retain(|c| slots_of(peers, c) > 0);
    if ids.iter().any(|c| slots_of(peers, c) >= STRONG_RELAY) {
        ids.retain(|c| slots_of(peers, c) >= STRONG_RELAY);
    }
    ids
}

/// Round-trip time measured to `id`, or `initial` before a measurement (or for a stranger).
fn rtt_of(peers: &SmallMap<NodeId, Peer>, id: &NodeId, initial: Duration) -> Duration {
    peers.get(id).map_or(initial, |p| p.rtt_or(initial))
}

impl SwarmNode {
    // ----- joining -------------------------------------------------------------------------

    /// Starts (or restarts) joining `state`'s tree through `candidates`, best first. A current
    /// parent, if any, is kept until the new one accepts (make-before-break).
    pub(crate) fn start_join(&mut self, now: Time, state: StateId, candidates: Vec<NodeId>) {
        let me = self.cfg.id;
        let mut list: Vec<(NodeId, Bytes)> = Vec::with_capacity(candidates.len());
        for c in candidates {
            let parent = self.states.get(&state).and_then(|t| t.parent);
            if c != me
                && Some(c) != parent
                && !self.failed.contains_key(&c)
                && !list.iter().any(|(x, _)| *x == c)
            {
                let addr = self.bootstrap_addr(c);
                list.push((c, addr));
            }
        }
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if list.is_empty() {
            tree.joining = None;
            self.timers
                .set(TimerReason::JoinRetry(state), now + self.cfg.join_timeout);
            return;
        }
        let (target, addr) = list.remove(0);
        tree.joining = Some(Box::new(Joining {
            target,
            sent: false,
            candidates: list,
            redirects: 0,
            climb: false,
            deferrals: 0,
        }));
        self.contact_join_target(now, state, addr);
    }

    /// The request a join attempt sends: a [`Message::RepairRequest`] while the node is
    /// detached because its parent failed (or left), a [`Message::JoinRequest`] otherwise.
    fn join_request(&self, state: StateId) -> Message {
        let orphan = self.states.get(&state).is_some_and(|t| t.is_orphan());
        if orphan {
            Message::RepairRequest { state }
        } else {
            Message::JoinRequest { state }
        }
    }

    /// Sends the join attempt's request to `target`: a repair request twice (see
    /// [`REPAIR_COPIES`]), a join request once.
    fn send_join_request(&mut self, target: NodeId, state: StateId) {
        let request = self.join_request(state);
        let copies = if matches!(request, Message::RepairRequest { .. }) {
            REPAIR_COPIES
        } else {
            1
        };
        for _ in 1..copies {
            self.send_control(target, request.clone());
        }
        self.send_control(target, request);
    }

    fn bootstrap_addr(&self, id: NodeId) -> Bytes {
        self.cfg
            .bootstrap
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.addr.clone())
            .unwrap_or_default()
    }

    /// Sends the join request now if the target is connected, or dials it first.
    fn contact_join_target(&mut self, now: Time, state: StateId, addr: Bytes) {
        let Some(j) = self.states.get_mut(&state).and_then(|t| t.joining.as_mut()) else {
            return;
        };
        let target = j.target;
        let connected = self.peers.get(&target).is_some_and(|p| p.is_connected());
        if connected {
            j.sent = true;
            self.send_join_request(target, state);
            self.timers
                .set(TimerReason::JoinRetry(state), now + self.cfg.join_timeout);
        } else {
            self.dial(now, target, addr);
            self.timers.set(
                TimerReason::JoinRetry(state),
                now + self.cfg.dial_timeout + self.cfg.join_timeout,
            );
        }
    }

    /// Sends join requests that waited for the connection to `peer`.
    pub(crate) fn flush_pending_joins(&mut self, now: Time, peer: NodeId) {
        let mut due = Vec::new();
        for (&s, t) in &mut self.states {
            if let Some(j) = t.joining.as_mut()
                && j.target == peer
                && !j.sent
            {
                j.sent = true;
                due.push(s);
            }
        }
        for s in due {
            self.send_join_request(peer, s);
            self.timers
                .set(TimerReason::JoinRetry(s), now + self.cfg.join_timeout);
        }
    }

    /// Moves a join attempt to its next candidate, or schedules a fresh attempt.
    fn next_candidate(&mut self, now: Time, state: StateId) {
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        let Some(j) = tree.joining.as_mut() else {
            return;
        };
        while !j.candidates.is_empty() {
            let (c, addr) = j.candidates.remove(0);
            if self.failed.contains_key(&c) {
                continue;
            }
            j.target = c;
            j.sent = false;
            self.contact_join_target(now, state, addr);
            return;
        }
        tree.joining = None;
        self.timers
            .set(TimerReason::JoinRetry(state), now + self.cfg.join_timeout);
    }

    /// Fallback parents for a state: the ancestors (closest first), the bootstrap peers, then
    /// the authority. The bootstrap peers come before the authority: a deployment whose
    /// rendezvous hands joiners relays near the root keeps the joins of a crowd off the
    /// publisher's uplink, also when a first try fails.
    fn fallback_candidates(&self, state: StateId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let tree = self.states.get(&state);
        if let Some(t) = tree {
            out.extend(t.path.iter().rev().copied());
        }
        out.extend(self.cfg.bootstrap.iter().map(|b| b.id));
        out.extend(tree.and_then(|t| t.authority));
        out
    }

    pub(crate) fn on_join_retry(&mut self, now: Time, state: StateId) {
        let me = self.cfg.id;
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        if tree.joining.is_some() {
            self.next_candidate(now, state);
        } else if tree.aggregated().is_interested() && !tree.attached(me) && tree.call.is_none() {
            let candidates = self.fallback_candidates(state);
            self.start_join(now, state, candidates);
        }
    }

    /// A join request (`repair`: a [`Message::RepairRequest`], from an orphan of a failure).
    pub(crate) fn on_join_request(
        &mut self,
        now: Time,
        from: NodeId,
        state: StateId,
        repair: bool,
    ) {
        let me = self.cfg.id;
        let capacity = usize::from(self.cfg.caps.max_children);
        let Some(tree) = self.states.get(&state) else {
            self.send_control(
                from,
                Message::JoinRedirect {
                    state,
                    candidates: Vec::new(),
                },
            );
            return;
        };
        // A node re-attaching after its own parent failed still takes children: its subtree
        // stays together and follows it (path updates) once it is back.
        let in_tree = tree.attached(me) || (tree.parent_lost_at.is_some() && !tree.path.is_empty());
        if !in_tree || tree.path.contains(&from) || tree.call.is_some() {
            // Not in the tree (or asked by an ancestor, which must not attach below us): point
            // at what we know of the tree above.
            let candidates = tree
                .path
                .iter()
                .rev()
                .chain(tree.authority.iter())
                .filter(|&&c| c != from && c != me)
                .take(MAX_CANDIDATES)
                .map(|&id| self.peer_info(id, 0))
                .collect();
            self.send_control(from, Message::JoinRedirect { state, candidates });
            return;
        }
        if tree.children.contains_key(&from) {
            self.send_accept(from, state);
            return;
        }
        // Relays near the root, leaves at the edge: a joiner that cannot relay much (fewer
        // than two children) is sent on down while this node has a relay child that can, so
        // that the tree's inner levels are made of the strong uplinks and stay shallow. Only
        // where no strong relay is below (the edge of the tree) does it take a free slot.
        let joiner_cap = slots_of(&self.peers, &from);
        let strong_below = tree
            .children
            .keys()
            .any(|c| *c != from && slots_of(&self.peers, c) >= STRONG_RELAY);
        let taken = tree.slots_taken();
        if taken < capacity && (joiner_cap >= STRONG_RELAY || !strong_below) {
            self.accept_child(now, from, state);
            return;
        }
        // Repair slots: after a relay child failed, its orphans (our grandchildren, or
        // deeper descendants when their grandparent failed too) ask with a repair request.
        // Taking them at once re-attaches them within a round trip (one for a standby, two
        // over a fresh connection); they are moved down a level later, when the tree has
        // settled (make-before-break). Only them: a full node that took every returning joiner
        // or climber would overfill its uplink.
        if repair && !tree.repair_room(now, capacity) {
            // The orphan may have noticed its parent's failure before we did (it hears the
            // parent more often, or our last message from the parent came later): a relay
            // child silent for longer than a live one ever is counts as failed here.
            self.open_repair_for_silent_children(now, state);
        }
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        if repair && tree.repair_room(now, capacity) {
            self.accept_child(now, from, state);
            self.timers
                .set_if_earlier(TimerReason::Rebalance(state), now + self.cfg.initial_rtt);
            return;
        }
        // Full. A joiner that can relay much more than our weakest child takes its place, and
        // that child is asked to move below the joiner once the joiner is attached. Several
        // moves may be under way (a crowd of strong joiners rises to the top at once); each
        // displaces a different child. Climbers too (a strong relay below asking to move up,
        // see [`SwarmNode::on_climb`]): a strong relay that landed below a chain of one-child
        // relays during a join storm swaps places with one of them per climb, where before
        // it stayed below them (`elara-sim run livestream --set viewers=2000 --set
        // duration_s=20`: video continuity 96.4 -> 96.9%). Not an orphan: it re-attaches in a
        // repair slot and is moved down by the rebalance.
        let weakest = tree
            .children
            .iter()
            .filter(|(_, c)| !c.leaving)
            .map(|(&c, _)| (slots_of(&self.peers, &c), c))
            .min();
        if let Some((weak_cap, weak)) = weakest
            && taken >= capacity
            && joiner_cap > weak_cap.saturating_add(1)
            && tree.pending_moves.len() < capacity
            && !repair
        {
            self.accept_child(now, from, state);
            if let Some(t) = self.states.get_mut(&state) {
                if let Some(c) = t.children.get_mut(&weak) {
                    c.leaving = true;
                }
                t.pending_moves.push((weak, from));
            }
            return;
        }
        self.redirect(from, state);
    }

    /// Opens repair slots for every relay child that has gone silent (see
    /// [`SwarmNode::seems_gone`]) and has none open yet; its failure, once detected, opens no
    /// more.
    fn open_repair_for_silent_children(&mut self, now: Time, state: StateId) {
        let window = self.cfg.idle_timeout * 2;
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        let silent: Vec<(NodeId, u16)> = tree
            .children
            .iter()
            .filter(|(_, c)| !c.repair_opened)
            .map(|(&c, _)| (c, slots_of(&self.peers, &c)))
            .filter(|&(c, slots)| slots > 0 && self.seems_gone(now, c))
            .collect();
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        for (c, slots) in silent {
            if let Some(child) = tree.children.get_mut(&c) {
                child.repair_opened = true;
            }
            tree.open_repair_slots(
                now,
                slots.saturating_mul(REPAIR_SLOTS_PER_SLOT),
                now + window,
            );
        }
    }

    fn peer_info(&self, id: NodeId, depth: u16) -> PeerInfo {
        let p = self.peers.get(&id);
        PeerInfo {
            id,
            addr: p.map(|p| p.addr.clone()).unwrap_or_default(),
            spare_kbps: p.map_or(0, |p| p.caps.upload_kbps),
            depth,
            slots: p.map_or(0, |p| p.caps.max_children),
        }
    }

    /// Points a joiner at a few of our children, rotating so that subtrees fill evenly (which
    /// keeps the depth logarithmic), lowest RTT first among them.
    fn redirect(&mut self, from: NodeId, state: StateId) {
        let initial_rtt = self.cfg.initial_rtt;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        let depth = tree.depth() + 1;
        let relays = relay_targets(
            &self.peers,
            tree.children
                .keys()
                .copied()
                .filter(|c| *c != from)
                .collect(),
        );
        let mut picked = Vec::with_capacity(REDIRECT_FANOUT);
        if !relays.is_empty() {
            let start = tree.redirect_cursor % relays.len();
            tree.redirect_cursor = tree.redirect_cursor.wrapping_add(1);
            for i in 0..relays.len().min(REDIRECT_FANOUT) {
                picked.push(relays[(start + i) % relays.len()]);
            }
        }
        // The first pick keeps the rotation; the others are fallbacks ordered by RTT.
        if picked.len() > 2 {
            picked[1..].sort_by_key(|c| rtt_of(&self.peers, c, initial_rtt));
        }
        let candidates = picked.iter().map(|&c| self.peer_info(c, depth)).collect();
        self.send_control(from, Message::JoinRedirect { state, candidates });
    }

    fn send_accept(&mut self, to: NodeId, state: StateId) {
        let me = self.cfg.id;
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        let path = tree.own_path(me);
        self.send_control(
            to,
            Message::JoinAccept {
                state,
                depth: tree.depth(),
                path,
            },
        );
    }

    /// Takes `child` as a child: accept, then start it at the newest keyframe.
    fn accept_child(&mut self, now: Time, child: NodeId, state: StateId) {
        self.timers.cancel(TimerReason::Prune(child));
        if let Some(tree) = self.states.get_mut(&state) {
            tree.children
                .insert(child, Child::new(InterestLevel::Medium, now));
        }
        self.send_accept(child, state);
        // No replay here: a child switching parents make-before-break still receives from
        // its old parent; one that needs the current group asks with an empty pull.
        self.propagate_interest(now, state);
    }

    /// Queues, for a new child, the buffered updates from the newest keyframe on that are
    /// still inside the latency budget, so it starts with a decodable group.
    fn start_child_at_keyframe(&mut self, now: Time, child: NodeId, state: StateId) {
        let since = now.saturating_sub(self.cfg.latency_budget);
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        let replay: Vec<(StateUpdate, u8)> = tree.buffer.since_last_keyframe(since).collect();
        for (u, h) in replay {
            self.schedule_for(now, &u, h, Some(child), None, false);
        }
    }

    /// Moves the newest children above capacity down to other children (each joins there
    /// first and leaves us at a group boundary), all at once, spread over the strong relays
    /// among the children (any relay when there is none). A mover is counted out of the
    /// slots while it moves; one still here at the next check has not found a place and
    /// counts again.
    ///
    /// All at once, not one per check: after a failure a node can hold many orphans above
    /// its capacity (repair slots), and every one of them overloads its uplink until moved.
    /// Moving one per check (every two join timeouts) kept the publisher at 15 children for
    /// 6 slots for over 14 s in `elara-sim run heterogeneous --set viewers=500 --set
    /// duration_s=30 --set 'faults[0].at_s=15'` with weak joiners taking free slots, every
    /// viewer blacked out for a second every 4 s.
    pub(crate) fn on_rebalance(&mut self, now: Time, state: StateId) {
        let capacity = usize::from(self.cfg.caps.max_children);
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        // A mover still here long after it was asked found no place: it counts again.
        for (_, c) in tree.children.iter_mut() {
            if c.moving_since.is_some_and(|t| now - t >= MOVE_TIMEOUT) {
                c.moving_since = None;
            }
        }
        let taken = tree.slots_taken();
        if taken <= capacity {
            return;
        }
        let mut by_age: Vec<(Time, NodeId)> = tree
            .children
            .iter()
            .filter(|(_, c)| c.holds_slot())
            .map(|(&id, c)| (c.since, id))
            .collect();
        by_age.sort_unstable();
        let movers: Vec<NodeId> = by_age[capacity..].iter().map(|&(_, id)| id).collect();
        // Targets: the children that stay and are not silent (a failed relay child may not be
        // detected yet: its orphans are among the movers).
        let relays = relay_targets(
            &self.peers,
            by_age[..capacity]
                .iter()
                .map(|&(_, id)| id)
                .filter(|&id| !self.seems_gone(now, id))
                .collect(),
        );
        if !relays.is_empty() {
            let tree = self.states.get_mut(&state).expect("exists");
            let depth = tree.depth() + 1;
            let mut redirects = Vec::with_capacity(movers.len());
            for mover in movers {
                let target = relays[tree.redirect_cursor % relays.len()];
                tree.redirect_cursor = tree.redirect_cursor.wrapping_add(1);
                if let Some(c) = tree.children.get_mut(&mover) {
                    c.moving_since = Some(now);
                }
                redirects.push((mover, target));
            }
            for (mover, target) in redirects {
                let info = self.peer_info(target, depth);
                self.send_control(
                    mover,
                    Message::JoinRedirect {
                        state,
                        candidates: vec![info],
                    },
                );
            }
        }
        self.timers.set(
            TimerReason::Rebalance(state),
            now + self.cfg.join_timeout * 2,
        );
    }

    pub(crate) fn on_join_accept(
        &mut self,
        now: Time,
        from: NodeId,
        state: StateId,
        path: Vec<NodeId>,
    ) {
        let me = self.cfg.id;
        let Some(tree) = self.states.get_mut(&state) else {
            self.counters.unexpected += 1;
            self.withdraw_interest(from, state);
            return;
        };
        if path.contains(&me) {
            // Attaching here would close a loop (stale paths during a repair).
            let was_parent = tree.parent == Some(from);
            self.counters.loops_broken += 1;
            self.withdraw_interest(from, state);
            if was_parent {
                self.detach(now, state);
                let candidates: Vec<NodeId> = self
                    .states
                    .get(&state)
                    .and_then(|t| t.authority)
                    .into_iter()
                    .collect();
                self.start_join(now, state, candidates);
            }
            return;
        }
        if path.last() != Some(&from) || path.len() >= MAX_PATH {
            self.counters.unexpected += 1;
            return;
        }
        if tree.parent == Some(from) {
            if tree.path != path {
                tree.authority = Some(path[0]);
                tree.path = path;
                self.after_path_change(now, state);
            }
            return;
        }
        if tree.joining.as_ref().is_none_or(|j| j.target != from) {
            // An accept nobody asked for: make sure the sender does not count us as its child.
            self.counters.unexpected += 1;
            self.withdraw_interest(from, state);
            return;
        }
        let old = tree.parent;
        if old.is_some() {
            // The old parent keeps feeding us until the new one delivers a group boundary: the
            // next keyframe is published within one group interval and arrives within the
            // latency budget after that.
            let wait = self.cfg.latency_budget + tree.recv.group_interval.min(MAX_GROUP_WAIT);
            self.timers
                .set(TimerReason::SwitchDeadline(state), now + wait);
        }
        let tree = self.states.get_mut(&state).expect("checked above");
        if let Some(old) = old {
            // Make-before-break: the old parent keeps feeding us until the new one delivers a
            // group boundary (see on_update).
            // A switch cut short by another: the parent of the first switch is left, unless
            // it is where we return to (our withdrawal would reach it after its accept and
            // drop us there while we count it as our parent).
            if let Some(prev) = tree.prev_parent.replace(old)
                && prev != old
                && prev != from
            {
                self.withdraw_interest(prev, state);
            }
        }
        let tree = self.states.get_mut(&state).expect("checked above");
        tree.parent = Some(from);
        tree.switch_at = None;
        tree.authority = Some(path[0]);
        tree.path = path;
        tree.joining = None;
        tree.stale_redirect_from = None;
        tree.metrics.parent_changes += 1;
        tree.resync = tree.recv.floor.is_some();
        tree.detached_since = None;
        if let Some(since) = tree.parent_lost_at.take() {
            tree.reattach_max = tree.reattach_max.max(now - since);
        }
        tree.sent_interest = InterestLevel::None;
        self.timers.cancel(TimerReason::JoinRetry(state));
        self.events.push_back(Event::ParentChanged {
            state,
            old,
            new: Some(from),
        });
        self.health_dirty = true;
        self.propagate_interest(now, state);
        self.after_path_change(now, state);
        self.arm_climb(now, state);
        if old.is_none() && self.states.get(&state).is_some_and(|t| t.call.is_none()) {
            // Nothing flows to us: ask to be started at the newest keyframe.
            self.send_control(
                from,
                Message::Pull {
                    state,
                    seqs: Vec::new(),
                },
            );
        }
    }

    fn arm_climb(&mut self, now: Time, state: StateId) {
        use rand::Rng;
        let jitter = self.rng.random_range(0..CLIMB_INTERVAL.as_micros() as u64);
        self.timers.set(
            TimerReason::Climb(state),
            now + CLIMB_INTERVAL + Duration::from_micros(jitter),
        );
    }

    /// Asks an ancestor above the parent to take us, when we are a strong relay (or below a
    /// one-child relay): it accepts where it has a free slot or a weaker child to move down,
    /// and we switch make-before-break.
    ///
    /// A strong relay asks an ancestor at a random level between the root's children and the
    /// grandparent, and follows that ancestor's redirects while they land it higher than it is
    /// (see `on_join_redirect`), so that a strong relay that landed deep in a join storm (and
    /// its subtree with it) rises to where weaker nodes still hold slots or a cousin branch
    /// has room, in one move, not one level per climb. A node below a one-child relay asks
    /// its grandparent, and a redirect ends its try.
    pub(crate) fn on_climb(&mut self, now: Time, state: StateId) {
        use rand::Rng;
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        let Some(parent) = tree.parent else {
            return;
        };
        self.arm_climb(now, state);
        let tree = self.states.get(&state).expect("exists");
        if tree.joining.is_some()
            || tree.call.is_some()
            || tree.prev_parent.is_some()
            || tree.path.len() < 2
        {
            return;
        }
        let strong = self.cfg.caps.max_children >= STRONG_RELAY;
        if !(strong || slots_of(&self.peers, &parent) < STRONG_RELAY) {
            return;
        }
        let grandparent = tree.path.len() - 2;
        let level = if strong && grandparent > 1 {
            self.rng.random_range(1..=grandparent)
        } else {
            grandparent
        };
        let target = tree.path[level];
        let connected = self.peers.get(&target).is_some_and(|p| p.is_connected());
        if !connected && level == grandparent {
            return;
        }
        let tree = self.states.get_mut(&state).expect("exists");
        tree.joining = Some(Box::new(Joining {
            target,
            sent: false,
            candidates: Vec::new(),
            redirects: 0,
            climb: true,
            deferrals: 0,
        }));
        self.counters.climbs += 1;
        self.contact_join_target(now, state, Bytes::new());
    }

    /// Ends a make-before-break switch: leaves the previous parent.
    pub(crate) fn finish_switch(&mut self, now: Time, state: StateId) {
        self.timers.cancel(TimerReason::SwitchDeadline(state));
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        tree.switch_at = None;
        if let Some(prev) = tree.prev_parent.take() {
            tree.left_parent = Some((prev, now));
            self.withdraw_interest(prev, state);
            self.schedule_prunes(now);
        }
    }

    /// Tells `to` we no longer want `state` from it.
    fn withdraw_interest(&mut self, to: NodeId, state: StateId) {
        self.send_interest(to, state, InterestLevel::None, 0);
    }

    /// Declares our subtree's interest in `state` to `to`, with its height.
    pub(crate) fn send_interest(
        &mut self,
        to: NodeId,
        state: StateId,
        level: InterestLevel,
        height: u8,
    ) {
        self.send_control(
            to,
            Message::Interest {
                state,
                level,
                ttl_ms: 0,
                height,
            },
        );
    }

    /// Our path changed: tell the children, keep standby connections to the nearest ancestors
    /// above the parent ([`STANDBYS`]; so that a parent failure is repaired without a
    /// handshake), and drop connections with no role.
    fn after_path_change(&mut self, now: Time, state: StateId) {
        let me = self.cfg.id;
        let Some(tree) = self.states.get(&state) else {
            return;
        };
        let children: Vec<NodeId> = tree.children.keys().copied().collect();
        let standbys: Vec<NodeId> = standbys(&tree.path).collect();
        let depth = tree.depth();
        let path = tree.own_path(me);
        for c in children {
            self.send_control(
                c,
                Message::JoinAccept {
                    state,
                    depth,
                    path: path.clone(),
                },
            );
        }
        for a in standbys {
            self.dial(now, a, Bytes::new());
        }
        self.schedule_prunes(now);
    }

    pub(crate) fn on_join_redirect(
        &mut self,
        now: Time,
        from: NodeId,
        state: StateId,
        candidates: &[PeerInfo],
    ) {
        let me = self.cfg.id;
        let max_redirects = self.cfg.max_redirects;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if tree.parent == Some(from) && tree.joining.is_none() {
            // Our parent asks us to move (a stronger relay took our place): join there first.
            if let Some(c) = candidates.iter().find(|c| c.id != me) {
                tree.last_switch = Some(now);
                self.start_join(now, state, vec![c.id]);
            }
            return;
        }
        if tree.stale_redirect_from == Some(from) {
            tree.stale_redirect_from = None;
            return;
        }
        let Some(j) = tree.joining.as_mut() else {
            return;
        };
        if j.climb {
            if j.target != from {
                return;
            }
            // The ancestor has no room. A strong relay goes on down the way it points while
            // that still lands higher than where it is (subtrees fill unevenly in a join
            // storm: one branch runs deep while a cousin has free slots); otherwise it stays.
            let depth = tree.path.len();
            let strong = self.cfg.caps.max_children >= STRONG_RELAY;
            j.redirects = j.redirects.saturating_add(1);
            // Our own ancestors are not candidates: climbing asks them directly.
            let next = if strong {
                candidates.iter().find(|c| {
                    usize::from(c.depth) + 1 < depth
                        && c.id != me
                        && !tree.path.contains(&c.id)
                        && !self.failed.contains_key(&c.id)
                })
            } else {
                None
            };
            match next {
                Some(c) if j.redirects <= max_redirects => {
                    j.target = c.id;
                    j.sent = false;
                    let addr = c.addr.clone();
                    self.contact_join_target(now, state, addr);
                }
                _ => {
                    tree.joining = None;
                    self.timers.cancel(TimerReason::JoinRetry(state));
                    self.schedule_prunes(now);
                }
            }
            return;
        }
        if j.target != from {
            return;
        }
        j.redirects = j.redirects.saturating_add(1);
        if j.redirects > max_redirects {
            tree.joining = None;
            self.timers
                .set(TimerReason::JoinRetry(state), now + self.cfg.join_timeout);
            return;
        }
        // Breadth before chains: a redirect offering only nodes that cannot take
        // [`STRONG_RELAY`] children means that subtree has no strong relay below its full
        // nodes, and joining there lengthens a chain of one-child relays (every hop adds delay
        // and a chance to lose a group). Subtrees named by earlier redirects may have room
        // higher up: they are tried first, and the chain stays as the last resort. Not for an
        // orphan, which must re-attach fast.
        let chain_only = candidates.iter().all(|c| c.slots < STRONG_RELAY);
        let orphan = tree.is_orphan();
        let mut fresh: Vec<(NodeId, Bytes)> = candidates
            .iter()
            .filter(|c| c.id != me && c.id != from && !self.failed.contains_key(&c.id))
            .map(|c| (c.id, c.addr.clone()))
            .collect();
        // A candidate we are already connected to saves a handshake.
        fresh.sort_by_key(|(c, _)| !self.peers.get(c).is_some_and(|p| p.is_connected()));
        let Some(j) = self.states.get_mut(&state).and_then(|t| t.joining.as_mut()) else {
            return;
        };
        if fresh.is_empty() {
            self.next_candidate(now, state);
            return;
        }
        if chain_only && !orphan && !j.candidates.is_empty() && j.deferrals < MAX_DEFERRALS {
            j.deferrals += 1;
            j.candidates.append(&mut fresh);
            self.next_candidate(now, state);
            return;
        }
        let (target, addr) = fresh.remove(0);
        fresh.append(&mut j.candidates);
        j.candidates = fresh;
        j.target = target;
        j.sent = false;
        self.contact_join_target(now, state, addr);
    }

    // ----- interest --------------------------------------------------------------------------

    pub(crate) fn on_interest(
        &mut self,
        now: Time,
        from: NodeId,
        state: StateId,
        level: InterestLevel,
        height: u8,
    ) {
        let me = self.cfg.id;
        let in_call = self
            .call
            .as_ref()
            .is_some_and(|c| c.participants.contains(&from));
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if let Some(child) = tree.children.get_mut(&from) {
            if level.is_interested() {
                child.interest = level;
                child.height = height;
            } else {
                tree.children.remove(&from);
                self.schedule_prunes(now);
            }
        } else if level.is_interested() {
            if tree.call.is_some() && tree.is_authority(me) && in_call {
                tree.children.insert(from, Child::new(level, now));
                self.start_child_at_keyframe(now, from, state);
            } else {
                self.counters.unexpected += 1;
                return;
            }
        }
        let tree = self.states.get_mut(&state).expect("exists");
        if let Some(i) = tree.pending_moves.iter().position(|&(_, j)| j == from) {
            let (weak, joiner) = tree.pending_moves.swap_remove(i);
            if tree.children.contains_key(&weak) {
                let info = self.peer_info(joiner, 0);
                self.send_control(
                    weak,
                    Message::JoinRedirect {
                        state,
                        candidates: vec![info],
                    },
                );
            }
        }
        self.propagate_interest(now, state);
    }

    /// Tells the parent when the aggregated interest changed; leaves the tree when nobody here
    /// or below cares any more.
    pub(crate) fn propagate_interest(&mut self, now: Time, state: StateId) {
        let me = self.cfg.id;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if tree.is_authority(me) {
            return;
        }
        let agg = tree.aggregated();
        if !agg.is_interested() {
            tree.joining = None;
        }
        let Some(parent) = tree.parent else {
            return;
        };
        let call = tree.call;
        let height = tree
            .children
            .values()
            .map(|c| c.height.saturating_add(1))
            .max()
            .unwrap_or(0);
        if agg != tree.sent_interest || (agg.is_interested() && height != tree.sent_height) {
            tree.sent_interest = agg;
            tree.sent_height = height;
            self.send_interest(parent, state, agg, height);
        }
        if !agg.is_interested() && call.is_none() {
            self.detach(now, state);
            self.schedule_prunes(now);
        }
    }

    /// Leaves the parent (without telling it: callers do).
    fn detach(&mut self, now: Time, state: StateId) {
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        let old = tree.parent.take();
        tree.switch_at = None;
        if let Some(prev) = tree.prev_parent.take() {
            self.withdraw_interest(prev, state);
        }
        let tree = self.states.get_mut(&state).expect("exists");
        tree.sent_interest = InterestLevel::None;
        if old.is_some() {
            tree.detached_since = Some(now);
            self.events.push_back(Event::ParentChanged {
                state,
                old,
                new: None,
            });
        }
        self.health_dirty = true;
    }

    pub(crate) fn on_quality_request(
        &mut self,
        from: NodeId,
        state: StateId,
        max_layer: u8,
        keyframes_only: bool,
    ) {
        if let Some(c) = self
            .states
            .get_mut(&state)
            .and_then(|t| t.children.get_mut(&from))
        {
            c.max_layer = max_layer;
            c.keyframes_only = keyframes_only;
        } else {
            self.counters.unexpected += 1;
        }
    }

    // ----- forwarding ------------------------------------------------------------------------

    /// Buffers `update` and schedules it for every child (but `except`) whose subtree wants it.
    /// `hops` is the value the outgoing messages carry.
    pub(crate) fn forward(
        &mut self,
        now: Time,
        update: StateUpdate,
        hops: u8,
        except: Option<NodeId>,
        repair: bool,
    ) {
        let cap = self.cfg.repair_buffer;
        let delay = self.cfg.announce_delay;
        let Some(tree) = self.states.get_mut(&update.state) else {
            return;
        };
        tree.last_forward = now;
        let has_children = !tree.children.is_empty();
        // Relays do not pass on deltas whose keyframe they lack: nobody below could use them.
        let decodable = update.is_independent() || tree.recv.received_group == Some(update.group);
        // A keyframe that arrives after deltas of its group (it was repaired) releases the
        // deltas this relay held back for want of it.
        // Of a keyframe cut into fragments, only the one that completed it does: before it,
        // deltas were held back; after it, they were passed on.
        let completes_key = update.keyframe
            && (update.fragment.count == 1 || tree.recv.keyed_by == Some(update.seq));
        let held_back: Vec<(StateUpdate, u8)> = if has_children && completes_key && repair {
            tree.buffer
                .after(update.seq)
                .filter(|(u, _)| u.group == update.group && !u.is_independent())
                .collect()
        } else {
            Vec::new()
        };
        if has_children && decodable {
            self.schedule_for(now, &update, hops, None, except, repair);
            for (u, h) in &held_back {
                self.schedule_for(now, u, *h, None, except, true);
            }
            if !self.timers.is_set(TimerReason::Announce(update.state)) {
                self.timers
                    .set(TimerReason::Announce(update.state), now + delay);
            }
        }
        // Relays and the authority keep the latency budget's worth of updates (for pulls and to
        // start new children at a keyframe). A leaf has nobody to repair: of a video stream it
        // keeps only the current group, so that a child it takes (a repair, say) can start at
        // once; of other streams nothing.
        let me = self.cfg.id;
        let budget = self.cfg.latency_budget;
        if let Some(tree) = self.states.get_mut(&update.state) {
            let relay = !tree.children.is_empty() || tree.is_authority(me);
            if relay || update.kind == elara_core::UpdateKind::Video {
                if !relay && update.starts_group() && update.layer == 0 {
                    tree.buffer.clear();
                }
                tree.buffer.insert(update, hops, now, cap, budget);
            }
        }
    }

    /// Runs the scheduler for `update` over the children that want it (only `only`, when
    /// given; never `except`) and queues the sends it decides. A `repair` (a pulled update, or
    /// one this node only just recovered) is judged by budget and rate alone. Returns how many
    /// sends were queued.
    fn schedule_for(
        &mut self,
        now: Time,
        update: &StateUpdate,
        hops: u8,
        only: Option<NodeId>,
        except: Option<NodeId>,
        repair: bool,
    ) -> usize {
        // A keyframe starts its group for the targets, late or not: judged as a repair it would
        // reach them while the scheduler still counts them in the older group, and every delta
        // after it would be dropped for want of it.
        let repair = repair && !update.keyframe;
        // An update that would reach a child after its budget is useless there (and costs
        // the uplink what live updates need): not sent.
        let slack = self
            .cfg
            .latency_budget
            .saturating_sub(now - update.timestamp);
        let initial_rtt = self.cfg.initial_rtt;
        let mut too_late = 0u64;
        let mut order = std::mem::take(&mut self.fanout);
        // One peer lookup per child. Children whose link is not registered yet (the first
        // update after they came) are registered, in key order, then the targets are listed
        // again.
        let mut unregistered: Vec<NodeId> = Vec::new();
        for attempt in 0..2 {
            let Some(tree) = self.states.get(&update.state) else {
                self.fanout = order;
                return 0;
            };
            order.clear();
            too_late = 0;
            for (c, child) in tree.children.iter() {
                let Some(peer) = self.peers.get(c) else {
                    continue;
                };
                if peer.link_id.is_none() {
                    unregistered.push(*c);
                }
                if only.is_some_and(|o| o != *c) || Some(*c) == except || !child.wants(update) {
                    continue;
                }
                if peer.rtt_or(initial_rtt) / 2 > slack {
                    too_late += 1;
                    continue;
                }
                if let Some(link) = peer.link_id {
                    order.push(((child.height, peer.caps.max_children), link, child.interest));
                }
            }
            if unregistered.is_empty() || attempt == 1 {
                break;
            }
            for c in std::mem::take(&mut unregistered) {
                self.link_for(now, c);
            }
        }
        let (Some(tree), Some(sched)) = (
            self.states.get_mut(&update.state),
            self.scheduler.as_deref_mut(),
        ) else {
            self.fanout = order;
            return 0;
        };
        // Within an interest level the scheduler serves targets in the order given: the children
        // with the deepest subtrees go first (their reported height), then those that can relay
        // most, so a keyframe's fan-out reaches the longest paths before the leaves and the
        // delay it adds does not pile up along them. `elara-sim run livestream --set
        // duration_s=20 --seed N` (10,000 viewers), ordered by relay slots alone before:
        // continuity 97.4 / 95.9 / 96.1 -> 97.3 / 97.7 / 97.6% on seeds 1 / 2 / 3; video on
        // time at depths 7 and 8, 88 -> 94% and 86 -> 93%.
        order.sort_by_key(|&(key, _, _)| std::cmp::Reverse(key));
        let targets = order.iter().map(|&(_, link, interest)| (link, interest));
        let mut decisions = std::mem::take(&mut self.decisions);
        if repair {
            decisions.clear();
            for (link, interest) in targets {
                let d = sched.schedule_repair(now, update, link, interest);
                decisions.push(d);
            }
        } else {
            sched.schedule(now, update, targets, &mut decisions);
        }
        self.counters.too_late_to_forward += too_late;
        let mut sent = 0;
        for d in &decisions {
            let Some(to) = sched.peer(d.link) else {
                continue;
            };
            let send = d.verdict == Verdict::Send;
            if let Some(child) = tree.children.get_mut(&to) {
                if send {
                    child.sent.mark(update.seq);
                }
                if !repair && child.quality != d.quality {
                    child.quality = d.quality;
                    self.events.push_back(Event::QualityChanged {
                        state: update.state,
                        peer: to,
                        quality: d.quality,
                    });
                    self.health_dirty = true;
                }
            }
            if send {
                sent += 1;
                tree.metrics.forwarded += 1;
                self.pacing
                    .push(now + d.delay(), to, d.link, hops, update.clone());
            }
        }
        self.decisions = super::recycle(decisions);
        self.fanout = super::recycle(order);
        sent
    }

    /// True when a paced update may still go to `to` (the child still wants the state and the
    /// track is not muted).
    pub(crate) fn still_wanted(&self, to: NodeId, update: &StateUpdate) -> bool {
        self.states
            .get(&update.state)
            .is_some_and(|t| !t.muted && t.children.get(&to).is_some_and(|c| c.wants(update)))
    }

    // ----- receiving -------------------------------------------------------------------------

    pub(crate) fn on_update(&mut self, now: Time, from: NodeId, hops: u8, update: StateUpdate) {
        let me = self.cfg.id;
        let state = update.state;
        let Some(tree) = self.states.get_mut(&state) else {
            self.counters.unknown_state += 1;
            return;
        };
        if tree.authority != Some(update.source) || tree.is_authority(me) {
            tree.metrics.non_authority += 1;
            return;
        }
        // From the parent, the previous one during a switch, or (for a latency budget) the one
        // a switch left: what it sent before our withdrawal reached it is still on its way.
        let budget = self.cfg.latency_budget;
        if tree.parent != Some(from)
            && tree.prev_parent != Some(from)
            && !tree
                .left_parent
                .is_some_and(|(p, at)| p == from && now < at + budget)
        {
            tree.metrics.not_from_parent += 1;
            return;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.link.updates_received += 1;
        }
        let tree = self.states.get_mut(&state).expect("exists");
        if tree.prev_parent.is_some()
            && tree.parent == Some(from)
            && update.is_independent()
            && tree.switch_at.is_none()
        {
            // The new parent reached a group boundary: break with the old one, once we have
            // everything below it. After a climb the new parent is ahead, and what the old one
            // still has on its way is what we lack: skipped to the boundary and then refused
            // as not from our parent, it was lost, or pulled from the new parent too late. At
            // 10,000 viewers (`elara-sim run livestream --set duration_s=20`) two thirds of
            // the updates refused that way (35,000 in 20 s) were ones the node did not have;
            // from 10 s on, audio lost 0.4-0.6% of its frames and video 2.5%. Waiting for the
            // old parent, and taking what it sent after the switch ended: audio 0.1%, video
            // 1.6-1.8% (seeds 1 / 2).
            if tree.recv.floor.is_some_and(|f| f < update.seq) {
                tree.switch_at = Some(update.seq);
            } else {
                self.finish_switch(now, state);
            }
        }
        let tree = self.states.get_mut(&state).expect("exists");
        match tree.recv.classify(update.seq) {
            Arrival::Duplicate => {
                tree.metrics.duplicates += 1;
                return;
            }
            Arrival::Late => {
                tree.metrics.late += 1;
                // Too late for us, but children wait on their own reorder windows: a relay
                // that dropped it would turn its own give-up into a gap for its whole subtree.
                if !tree.children.is_empty() {
                    self.forward(now, update, hops.saturating_add(1), Some(from), true);
                }
                return;
            }
            Arrival::New => {}
        }
        tree.recv.video |= update.kind == elara_core::UpdateKind::Video;
        if tree.recv.floor.is_none() && !update.is_independent() {
            // The first update is a delta: its keyframe went missing. Look back for it (the
            // pull below asks for it) and resynchronise on it when it comes.
            tree.recv.floor = Some(update.seq.saturating_sub(PULL_BATCH as u64));
            tree.resync = true;
        } else if tree.recv.floor.is_none() && update.keyframe && update.fragment.index > 0 {
            // The first update is a later fragment of a keyframe (it came live before the
            // parent's replay of the earlier ones): start at the keyframe's first fragment.
            tree.recv.floor = Some(update.seq.saturating_sub(u64::from(update.fragment.index)));
        }
        if update.keyframe {
            // A keyframe counts as received once all of its fragments came (the window has
            // already dropped duplicates, so each is counted once).
            let seen = match tree.recv.receiving_key {
                Some((g, n)) if g == update.group => n.saturating_add(1),
                _ => 1,
            };
            if seen >= update.fragment.count {
                tree.recv.received_group = Some(update.group);
                tree.recv.receiving_key = None;
                tree.recv.keyed_by = Some(update.seq);
            } else {
                tree.recv.receiving_key = Some((update.group, seen));
            }
            tree.recv.keyframe_at(update.timestamp);
            // Resynchronise at a keyframe's first fragment: skipping to a later one would
            // give up the fragments before it.
            if tree.resync
                && tree.parent == Some(from)
                && update.starts_group()
                && tree.switch_at.is_none()
            {
                tree.resync = false;
                if update.kind == elara_core::UpdateKind::Video {
                    let skipped = tree.recv.skip_before(update.seq);
                    if skipped > 0 {
                        tree.metrics.skipped += skipped;
                        tree.last_skip = Some(now);
                    }
                }
            }
        }
        let links = hops.saturating_add(1);
        let repair = tree.recv.highest.is_some_and(|h| update.seq < h);
        let mut ready = std::mem::take(&mut self.scratch);
        tree.recv.accept(
            Held {
                update: update.clone(),
                hops: links,
                arrived: now,
            },
            &mut |h| ready.push(h),
        );
        self.forward(now, update, links, Some(from), repair);
        self.deliver_ready(now, state, &mut ready);
        self.scratch = super::recycle(ready);
        self.after_arrival(now, state);
    }

    /// Hands deliverable updates to the application, refusing deltas without their keyframe.
    fn deliver_ready(&mut self, now: Time, state: StateId, ready: &mut Vec<Held>) {
        let Some(tree) = self.states.get_mut(&state) else {
            ready.clear();
            return;
        };
        for h in ready.drain(..) {
            if !tree.own.is_interested() {
                continue;
            }
            let u = h.update;
            if !u.is_independent() && tree.recv.delivered_group != Some(u.group) {
                tree.metrics.undecodable += 1;
                continue;
            }
            if u.keyframe {
                // A keyframe decodes once all of its fragments were delivered, in order (the
                // window delivers in sequence order, so a skipped one breaks the run).
                let next = match tree.recv.delivering_key {
                    _ if u.fragment.index == 0 => Some(1),
                    Some((g, i)) if g == u.group && i == u.fragment.index => Some(i + 1),
                    _ => None,
                };
                tree.recv.delivering_key = next.map(|i| (u.group, i));
                if next == Some(u.fragment.count) {
                    tree.recv.delivered_group = Some(u.group);
                }
            }
            let latency = now - u.timestamp;
            tree.metrics.delivered += 1;
            tree.metrics.record_latency(latency);
            self.events.push_back(Event::Delivered {
                update: u,
                hops: h.hops,
                latency,
            });
        }
        if tree
            .switch_at
            .is_some_and(|k| tree.recv.floor.is_some_and(|f| f >= k))
        {
            self.finish_switch(now, state);
        }
    }

    /// After an arrival: skip gaps that are filtering (keyframes-only subtrees), otherwise
    /// wait for them a reorder window and pull what is missing.
    fn after_arrival(&mut self, now: Time, state: StateId) {
        let window = self.cfg.reorder_window;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if !tree.recv.has_gap() {
            let mut missing = Vec::new();
            tree.recv.missing(1, &mut missing);
            if missing.is_empty() {
                tree.pull_rounds = 0;
            }
            return;
        }
        // A keyframes-only subtree skips what its parent filtered out at once; a gap between
        // the fragments of a keyframe is a loss, repaired like any other.
        if !tree.expects_all() && !tree.recv.gap_inside_keyframe() {
            let mut ready = std::mem::take(&mut self.scratch);
            tree.recv.skip_gap(&mut |h| ready.push(h));
            self.deliver_ready(now, state, &mut ready);
            self.scratch = super::recycle(ready);
            return;
        }
        if let Some(oldest) = tree.recv.oldest_held() {
            let wait = gap_wait(&tree.recv, window, self.cfg.latency_budget);
            self.timers
                .set_if_earlier(TimerReason::Reorder(state), oldest + wait);
        }
        if !self.timers.is_set(TimerReason::PullRetry(state)) {
            // The transport recovers its own losses within about a round trip: a gap is pulled
            // only once it outlived that (pulling at once mostly duplicated updates that were
            // being retransmitted, and the duplicates crowded the parent's uplink).
            let initial = self.cfg.initial_rtt;
            let rtt = tree
                .parent
                .map_or(initial, |p| rtt_of(&self.peers, &p, initial));
            self.timers
                .set(TimerReason::PullRetry(state), now + rtt * PULL_DELAY_RTTS);
        }
    }

    pub(crate) fn on_reorder(&mut self, now: Time, state: StateId) {
        let window = self.cfg.reorder_window;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        let Some(oldest) = tree.recv.oldest_held() else {
            return;
        };
        let wait = gap_wait(&tree.recv, window, self.cfg.latency_budget);
        if oldest + wait > now {
            self.timers.set(TimerReason::Reorder(state), oldest + wait);
            return;
        }
        let mut ready = std::mem::take(&mut self.scratch);
        let skipped = tree.recv.skip_gap(&mut |h| ready.push(h));
        tree.metrics.skipped += skipped;
        tree.last_skip = Some(now);
        tree.pull_rounds = 0;
        self.health_dirty = true;
        self.deliver_ready(now, state, &mut ready);
        self.scratch = super::recycle(ready);
        if let Some(t) = self.states.get(&state)
            && let Some(next) = t.recv.oldest_held()
        {
            let wait = gap_wait(&t.recv, window, self.cfg.latency_budget);
            self.timers.set(TimerReason::Reorder(state), next + wait);
        }
    }

    /// Pulls missing sequence numbers from the parent, and arms a retry.
    pub(crate) fn request_repair(&mut self, now: Time, state: StateId) {
        let initial_rtt = self.cfg.initial_rtt;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        let Some(parent) = tree.parent else {
            return;
        };
        if !tree.expects_all() || tree.pull_rounds >= MAX_PULL_ROUNDS {
            return;
        }
        let mut seqs = Vec::new();
        tree.recv.missing(PULL_BATCH, &mut seqs);
        if seqs.is_empty() {
            tree.pull_rounds = 0;
            return;
        }
        tree.pull_rounds += 1;
        tree.metrics.pulled += seqs.len() as u64;
        let rtt = rtt_of(&self.peers, &parent, initial_rtt);
        let retry = (rtt * 3 / 2).max(Duration::from_millis(5));
        self.timers.set(TimerReason::PullRetry(state), now + retry);
        self.send_control(parent, Message::Pull { state, seqs });
    }

    pub(crate) fn on_pull(&mut self, now: Time, from: NodeId, state: StateId, seqs: &[u64]) {
        let me = self.cfg.id;
        let budget = self.cfg.latency_budget;
        let Some(tree) = self.states.get(&state) else {
            self.counters.unexpected += 1;
            return;
        };
        let Some(child) = tree.children.get(&from) else {
            self.counters.unexpected += 1;
            return;
        };
        if seqs.is_empty() {
            // A new child asks to start: the buffered group from its keyframe on.
            self.start_child_at_keyframe(now, from, state);
            return;
        }
        let mut found: Vec<(StateUpdate, u8)> = Vec::new();
        let mut unavailable = Vec::new();
        let rtts = CROSSING_RTTS + u32::from(self.cfg.reliable_updates);
        let crossing = (rtt_of(&self.peers, &from, self.cfg.initial_rtt) * rtts)
            .min(budget / CROSSING_BUDGET_SHARE);
        let mut crossed = 0;
        for &s in seqs.iter().take(MAX_SEQS) {
            match tree.buffer.get(s) {
                Some((u, h, forwarded)) if now - u.timestamp <= budget && child.wants(&u) => {
                    if child.sent.contains(s) && now < forwarded + crossing {
                        // On its way: a pull that is still missing it comes again.
                        crossed += 1;
                        continue;
                    }
                    found.push((u, h));
                }
                Some(_) => unavailable.push(s),
                // Not held: gone for good if we are past it (or are the authority), otherwise
                // we are still repairing it ourselves and will forward it when it comes.
                None if tree.is_authority(me) || tree.recv.floor.is_some_and(|f| s < f) => {
                    unavailable.push(s)
                }
                None => {}
            }
        }
        if crossed > 0
            && let Some(t) = self.states.get_mut(&state)
        {
            t.metrics.pull_crossed += crossed;
        }
        for (u, h) in found {
            // A repair the scheduler refuses (the link is full, or the group was cut for this
            // child) is as good as gone: saying so lets the child move on at once.
            if self.schedule_for(now, &u, h, Some(from), None, true) == 0 {
                unavailable.push(u.seq);
            } else if let Some(t) = self.states.get_mut(&state) {
                t.metrics.repaired += 1;
            }
        }
        if !unavailable.is_empty() {
            self.send_control(
                from,
                Message::Unavailable {
                    state,
                    seqs: unavailable,
                },
            );
        }
    }

    pub(crate) fn on_unavailable(&mut self, now: Time, from: NodeId, state: StateId, seqs: &[u64]) {
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if tree.parent != Some(from) && tree.prev_parent != Some(from) {
            self.counters.unexpected += 1;
            return;
        }
        let mut ready = std::mem::take(&mut self.scratch);
        let skipped = tree
            .recv
            .give_up(&seqs[..seqs.len().min(MAX_SEQS)], &mut |h| ready.push(h));
        if skipped > 0 {
            tree.metrics.skipped += skipped;
            tree.last_skip = Some(now);
            self.health_dirty = true;
        }
        self.deliver_ready(now, state, &mut ready);
        self.scratch = super::recycle(ready);
    }

    pub(crate) fn on_announce(
        &mut self,
        now: Time,
        from: NodeId,
        state: StateId,
        source: NodeId,
        seqs: &[u64],
    ) {
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if tree.parent != Some(from) || tree.authority != Some(source) {
            self.counters.unexpected += 1;
            return;
        }
        if tree.recv.floor.is_none() {
            return;
        }
        for &s in seqs.iter().take(MAX_SEQS) {
            tree.recv.saw(s);
        }
        if !self.timers.is_set(TimerReason::PullRetry(state)) {
            self.request_repair(now, state);
        }
    }

    /// When a state's stream went quiet, tells children its newest sequence number so that
    /// they notice a lost tail and pull it.
    pub(crate) fn on_announce_timer(&mut self, now: Time, state: StateId) {
        let delay = self.cfg.announce_delay;
        let Some(tree) = self.states.get_mut(&state) else {
            return;
        };
        if tree.last_forward + delay > now {
            self.timers
                .set(TimerReason::Announce(state), tree.last_forward + delay);
            return;
        }
        let (Some(newest), Some(source)) = (tree.buffer.newest(), tree.authority) else {
            return;
        };
        if tree.announced.is_some_and(|a| a >= newest) {
            return;
        }
        tree.announced = Some(newest);
        let children: Vec<NodeId> = tree
            .children
            .iter()
            .filter(|(_, c)| c.interest >= InterestLevel::Medium)
            .map(|(id, _)| *id)
            .collect();
        for c in children {
            self.send_control(
                c,
                Message::Announce {
                    state,
                    source,
                    seqs: vec![newest],
                },
            );
        }
    }

    // ----- repair ----------------------------------------------------------------------------

    /// Repairs every tree that depended on `peer`, which is gone.
    pub(crate) fn repair_after_loss(&mut self, now: Time, peer: NodeId, peer_slots: u16) {
        let ids: Vec<StateId> = self.states.keys().copied().collect();
        let window = self.cfg.idle_timeout * 2;
        for s in ids {
            let tree = self.states.get_mut(&s).expect("listed");
            let removed = tree.children.remove(&peer);
            let was_child = removed.is_some();
            if let Some(child) = removed
                && peer_slots > 0
            {
                // Slots opened while the child was merely silent are not opened twice.
                let slots = if child.repair_opened {
                    0
                } else {
                    peer_slots.saturating_mul(REPAIR_SLOTS_PER_SLOT)
                };
                tree.open_repair_slots(now, slots, now + window);
            }
            if tree.prev_parent == Some(peer) {
                // Nothing more comes from it: the gap below the new parent's boundary is
                // repaired (or skipped) like any other.
                tree.prev_parent = None;
                tree.switch_at = None;
            }
            tree.pending_moves.retain(|&(w, j)| w != peer && j != peer);
            let joining_it = tree.joining.as_ref().is_some_and(|j| j.target == peer);
            if tree.parent == Some(peer) {
                tree.parent = None;
                tree.sent_interest = InterestLevel::None;
                tree.detached_since = Some(now);
                tree.parent_lost_at = Some(now);
                self.events.push_back(Event::ParentChanged {
                    state: s,
                    old: Some(peer),
                    new: None,
                });
                let tree = self.states.get(&s).expect("listed");
                if tree.call.is_none() && tree.aggregated().is_interested() {
                    let mut candidates = self.fallback_candidates(s);
                    candidates.retain(|c| *c != peer);
                    // A failure often takes several relays at once: an ancestor that has gone
                    // silent too is asked last, so the first request goes to one still alive.
                    candidates.sort_by_key(|&c| self.seems_gone(now, c));
                    let pending = tree.joining.as_ref().filter(|j| j.sent).map(|j| j.target);
                    self.start_join(now, s, candidates);
                    if let Some(t) = self.states.get_mut(&s) {
                        t.stale_redirect_from = pending.filter(|&p| {
                            t.joining.as_ref().is_some_and(|j| j.target == p && j.sent)
                        });
                    }
                }
            } else if joining_it {
                self.next_candidate(now, s);
            }
            if was_child {
                self.propagate_interest(now, s);
            }
        }
    }

    /// A parent link losing too much makes the node look for a better parent, keeping the old
    /// one until the new one delivers a group boundary.
    pub(crate) fn check_parent_quality(&mut self, now: Time, peer: NodeId) {
        let Some(loss) = self.peers.get(&peer).map(|p| p.link.loss) else {
            return;
        };
        if loss <= PARENT_LOSS_LIMIT {
            return;
        }
        let hold = self.cfg.idle_timeout * 4;
        let due: Vec<StateId> = self
            .states
            .iter()
            .filter(|(_, t)| {
                t.parent == Some(peer)
                    && t.call.is_none()
                    && t.joining.is_none()
                    && t.last_switch.is_none_or(|l| now - l > hold)
            })
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            let mut candidates = self.fallback_candidates(s);
            candidates.retain(|c| *c != peer);
            if let Some(t) = self.states.get_mut(&s) {
                t.last_switch = Some(now);
            }
            self.start_join(now, s, candidates);
        }
    }
}
