//! Per-receiver bandwidth allocation on one link: [`BandwidthAllocator`].
//!
//! After the design of Membrane's WebRTC `ConnectionAllocator`, as a sans-IO state machine. The
//! allocator shares a link's estimated bandwidth among the *receivers* behind it (one per track a
//! peer receives: its audio, its video) and negotiates with them:
//!
//! * **create / destroy**: [`BandwidthAllocator::new`] with an initial estimate;
//!   [`BandwidthAllocator::destroy`] ends it and hands back what was still queued.
//! * **register**: a receiver registers with its track (the bitrates of its variants) and its
//!   options (priority, negotiability); it holds no allocation until it asks.
//! * **buffer_sent**: every buffer sent to a receiver is accounted, so the allocator knows the
//!   real usage (for probing).
//! * **bandwidth estimate**: [`BandwidthAllocator::update_bandwidth_estimate`] from the
//!   transport's congestion controller.
//! * **request / grant**: a receiver asks for an allocation
//!   ([`BandwidthAllocator::request_allocation`]) and is answered with
//!   [`AllocatorEvent::Granted`], which it must obey. A grant can also *force-lower* a receiver
//!   without negotiation (`forced: true`).
//! * **negotiation**: when a request does not fit, or the estimate drops below what is
//!   allocated, the allocator sends [`AllocatorEvent::DecreaseRequested`] to *negotiable*
//!   receivers, lowest priority first. A receiver answers with
//!   [`BandwidthAllocator::decrease_response`]: on `Accept` it must at once request a lower
//!   allocation; on `Reject` (or no answer within the negotiation timeout) the allocator moves
//!   on. What negotiation cannot free is taken by force-lowering the lowest-priority receivers.
//! * **probing**: when receivers want more than the estimate allows, the allocator asks the
//!   transport to probe ([`AllocatorEvent::ProbeStart`]) towards the demand, and stops
//!   ([`AllocatorEvent::ProbeStop`]) when the estimate covers it or the demand goes away.
//!
//! # Driving contract
//!
//! Feed it with the calls above, passing `now`; drain [`BandwidthAllocator::poll_event`] after
//! each call; call [`BandwidthAllocator::handle_timeout`] at (or after)
//! [`BandwidthAllocator::poll_timeout`]. Message flow for a decrease, as in the Membrane design:
//!
//! ```text
//! allocator -> receiver A : DecreaseRequested
//! (allocator -> transport : ProbeStart, while demand exceeds the estimate)
//! receiver A -> allocator : decrease_response(Accept)
//! receiver A -> allocator : request_allocation(lower)
//! allocator -> receiver A : Granted(lower)
//! allocator -> receiver B : Granted(what B asked for)
//! ```
//!
//! ```
//! use elara_core::{StateId, Time};
//! use elara_diffusion::allocator::{
//!     AllocatorConfig, AllocatorEvent, BandwidthAllocator, DecreaseResponse, ReceiverId,
//!     ReceiverOptions, TrackVariants,
//! };
//!
//! let now = Time::from_secs(1);
//! let mut alloc = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
//! let video = TrackVariants::new(StateId(1), vec![200_000, 500_000, 900_000]).unwrap();
//! let (low, high) = (ReceiverId(1), ReceiverId(2));
//! alloc.register(now, low, video.clone(), ReceiverOptions { priority: 1, negotiable: true }).unwrap();
//! alloc.register(now, high, video, ReceiverOptions { priority: 5, negotiable: false }).unwrap();
//! alloc.request_allocation(now, low, 900_000).unwrap();
//! assert_eq!(alloc.poll_event(), Some(AllocatorEvent::Granted { receiver: low, bitrate: 900_000, forced: false }));
//! // The high-priority receiver wants 500 kb/s: only 100 kb/s are free, so the low one is asked.
//! alloc.request_allocation(now, high, 500_000).unwrap();
//! assert_eq!(alloc.poll_event(), Some(AllocatorEvent::DecreaseRequested { receiver: low }));
//! // Meanwhile demand (1.4 Mb/s) exceeds the estimate, so the link is probed.
//! assert!(matches!(alloc.poll_event(), Some(AllocatorEvent::ProbeStart { .. })));
//! alloc.decrease_response(now, low, DecreaseResponse::Accept).unwrap();
//! alloc.request_allocation(now, low, 500_000).unwrap();
//! assert_eq!(alloc.poll_event(), Some(AllocatorEvent::Granted { receiver: low, bitrate: 500_000, forced: false }));
//! assert_eq!(alloc.poll_event(), Some(AllocatorEvent::Granted { receiver: high, bitrate: 500_000, forced: false }));
//! assert_eq!(alloc.poll_event(), Some(AllocatorEvent::ProbeStop));
//! ```
//!
//! # Bad input
//!
//! Unknown receivers, duplicate registrations, a response nobody asked for, a track without
//! variants and calls after [`BandwidthAllocator::destroy`] are refused with a typed
//! [`AllocatorError`] and change nothing. A zero estimate is valid: every receiver is lowered
//! (negotiating first) to nothing, and the allocator probes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use elara_core::{StateId, Time};

/// Identifies a receiver (one track delivered to one peer), chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ReceiverId(pub u64);

/// The track a receiver takes: its state and the bitrates (bits per second) of its variants,
/// lowest first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TrackVariants {
    /// The state (track) delivered.
    pub state: StateId,
    variants: Vec<u64>,
}

impl TrackVariants {
    /// A track with these variant bitrates (sorted and deduplicated). At least one variant
    /// with a non-zero rate is required.
    pub fn new(state: StateId, mut variants: Vec<u64>) -> Result<Self, AllocatorError> {
        variants.retain(|&v| v > 0);
        variants.sort_unstable();
        variants.dedup();
        if variants.is_empty() {
            return Err(AllocatorError::NoVariants);
        }
        Ok(TrackVariants { state, variants })
    }

    /// Variant bitrates, lowest first.
    pub fn variants(&self) -> &[u64] {
        &self.variants
    }

    /// The best variant at or below `bitrate` (0 when even the lowest does not fit).
    pub fn fit(&self, bitrate: u64) -> u64 {
        self.variants
            .iter()
            .rev()
            .find(|&&v| v <= bitrate)
            .copied()
            .unwrap_or(0)
    }

    /// The next variant below `bitrate` (0 below the lowest).
    pub fn below(&self, bitrate: u64) -> u64 {
        self.variants
            .iter()
            .rev()
            .find(|&&v| v < bitrate)
            .copied()
            .unwrap_or(0)
    }

    /// The highest variant.
    pub fn max(&self) -> u64 {
        *self.variants.last().unwrap_or(&0)
    }
}

/// How a receiver takes part in allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReceiverOptions {
    /// Higher is more important: lowered last, and may ask lower priorities to step down.
    pub priority: u8,
    /// Whether the receiver can and may be asked to lower its allocation. Non-negotiable
    /// receivers are only ever force-lowered, as a last resort.
    pub negotiable: bool,
}

/// A receiver's answer to [`AllocatorEvent::DecreaseRequested`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecreaseResponse {
    /// It will lower its allocation: a lower [`BandwidthAllocator::request_allocation`] follows
    /// at once.
    Accept,
    /// It will not.
    Reject,
}

/// What the allocator tells receivers and the transport.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllocatorEvent {
    /// The receiver's allocation is now `bitrate` bits per second; it must comply. `forced`
    /// marks a force-lowering without (or after failed) negotiation.
    Granted {
        /// The receiver.
        receiver: ReceiverId,
        /// Its allocation, bits per second.
        bitrate: u64,
        /// True when the allocation was lowered without the receiver's consent.
        forced: bool,
    },
    /// Please lower your allocation (answer with [`BandwidthAllocator::decrease_response`]).
    DecreaseRequested {
        /// The receiver asked.
        receiver: ReceiverId,
    },
    /// Probe the link towards `target` bits per second: send `padding` bits per second of
    /// padding on top of what receivers use.
    ProbeStart {
        /// The rate the probe aims for.
        target: u64,
        /// Padding to add to the measured usage.
        padding: u64,
    },
    /// Stop probing.
    ProbeStop,
}

/// Why an allocator call was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocatorError {
    /// The receiver is not registered.
    #[error("unknown receiver {0:?}")]
    UnknownReceiver(ReceiverId),
    /// The receiver is already registered.
    #[error("receiver {0:?} is already registered")]
    DuplicateReceiver(ReceiverId),
    /// A decrease response from a receiver that was not asked to decrease.
    #[error("receiver {0:?} was not asked to decrease")]
    UnexpectedResponse(ReceiverId),
    /// A track needs at least one variant with a non-zero bitrate.
    #[error("a track needs at least one non-zero variant")]
    NoVariants,
    /// The allocator was destroyed.
    #[error("the allocator was destroyed")]
    Destroyed,
}

/// Allocator settings.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct AllocatorConfig {
    /// How long a receiver has to answer a decrease request (and, after accepting, to request
    /// less) before the allocator treats it as a rejection.
    pub negotiation_timeout: Duration,
    /// How often probing is re-evaluated while it runs.
    pub probe_interval: Duration,
    /// A probe aims at most this factor above the current estimate.
    pub probe_factor: f64,
    /// Window over which `buffer_sent` usage is measured.
    pub usage_window: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            negotiation_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            probe_factor: 1.5,
            usage_window: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug)]
struct Receiver {
    track: TrackVariants,
    options: ReceiverOptions,
    allocation: u64,
    /// What it last asked for (its demand).
    requested: u64,
    /// Bytes sent in the current and the previous usage window.
    bytes_now: u64,
    bytes_prev: u64,
    window_start: Time,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Negotiation {
    /// Asked to decrease; answer due by the deadline.
    Asked { deadline: Time },
    /// Accepted; its lower request is due by the deadline.
    Accepted { deadline: Time },
}

/// The allocator for one link. See the [module documentation](self).
#[derive(Debug)]
pub struct BandwidthAllocator {
    config: AllocatorConfig,
    estimate: u64,
    receivers: BTreeMap<ReceiverId, Receiver>,
    negotiations: BTreeMap<ReceiverId, Negotiation>,
    /// Receivers that rejected (or timed out) in the current round; not asked again until the
    /// situation changes.
    declined: BTreeSet<ReceiverId>,
    probing: Option<(u64, Time)>,
    events: VecDeque<AllocatorEvent>,
    destroyed: bool,
}

impl BandwidthAllocator {
    /// Creates an allocator for a link whose bandwidth is estimated at `estimate` bits per
    /// second.
    pub fn new(config: AllocatorConfig, estimate: u64) -> Self {
        BandwidthAllocator {
            config,
            estimate,
            receivers: BTreeMap::new(),
            negotiations: BTreeMap::new(),
            declined: BTreeSet::new(),
            probing: None,
            events: VecDeque::new(),
            destroyed: false,
        }
    }

    /// Ends the allocator: returns the events still queued, followed by
    /// [`AllocatorEvent::ProbeStop`] if a probe was running. Every later call is refused.
    pub fn destroy(&mut self) -> Vec<AllocatorEvent> {
        if self.probing.take().is_some() {
            self.events.push_back(AllocatorEvent::ProbeStop);
        }
        self.destroyed = true;
        self.receivers.clear();
        self.negotiations.clear();
        self.events.drain(..).collect()
    }

    fn alive(&self) -> Result<(), AllocatorError> {
        if self.destroyed {
            Err(AllocatorError::Destroyed)
        } else {
            Ok(())
        }
    }

    /// The current estimate, bits per second.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// Sum of all allocations.
    pub fn allocated(&self) -> u64 {
        self.receivers.values().map(|r| r.allocation).sum()
    }

    /// A receiver's allocation.
    pub fn allocation(&self, receiver: ReceiverId) -> Option<u64> {
        self.receivers.get(&receiver).map(|r| r.allocation)
    }

    /// True while a probe runs.
    pub fn is_probing(&self) -> bool {
        self.probing.is_some()
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<AllocatorEvent> {
        self.events.pop_front()
    }

    /// When [`BandwidthAllocator::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let neg = self.negotiations.values().map(|n| match *n {
            Negotiation::Asked { deadline } | Negotiation::Accepted { deadline } => deadline,
        });
        let probe = self.probing.map(|(_, at)| at);
        neg.chain(probe).min()
    }

    /// Registers a receiver with its track and options. It holds no allocation until it
    /// requests one.
    pub fn register(
        &mut self,
        now: Time,
        receiver: ReceiverId,
        track: TrackVariants,
        options: ReceiverOptions,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        if self.receivers.contains_key(&receiver) {
            return Err(AllocatorError::DuplicateReceiver(receiver));
        }
        self.receivers.insert(
            receiver,
            Receiver {
                track,
                options,
                allocation: 0,
                requested: 0,
                bytes_now: 0,
                bytes_prev: 0,
                window_start: now,
            },
        );
        Ok(())
    }

    /// Removes a receiver; its allocation is freed for waiting requests.
    pub fn unregister(&mut self, now: Time, receiver: ReceiverId) -> Result<(), AllocatorError> {
        self.alive()?;
        if self.receivers.remove(&receiver).is_none() {
            return Err(AllocatorError::UnknownReceiver(receiver));
        }
        self.negotiations.remove(&receiver);
        self.declined.remove(&receiver);
        self.settle(now);
        Ok(())
    }

    /// Changes whether a receiver may be asked to decrease.
    pub fn set_negotiable(
        &mut self,
        now: Time,
        receiver: ReceiverId,
        negotiable: bool,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        let r = self
            .receivers
            .get_mut(&receiver)
            .ok_or(AllocatorError::UnknownReceiver(receiver))?;
        r.options.negotiable = negotiable;
        if negotiable {
            self.declined.remove(&receiver);
            self.settle(now);
        }
        Ok(())
    }

    /// Accounts a buffer of `bytes` sent to `receiver`.
    pub fn buffer_sent(
        &mut self,
        now: Time,
        receiver: ReceiverId,
        bytes: u64,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        let window = self.config.usage_window;
        let r = self
            .receivers
            .get_mut(&receiver)
            .ok_or(AllocatorError::UnknownReceiver(receiver))?;
        roll_window(r, now, window);
        r.bytes_now += bytes;
        Ok(())
    }

    /// Measured usage of `receiver` over the last full usage window, bits per second.
    pub fn usage(&self, now: Time, receiver: ReceiverId) -> Option<u64> {
        let r = self.receivers.get(&receiver)?;
        Some(usage_of(r, now, self.config.usage_window))
    }

    /// Measured usage of all receivers, bits per second.
    pub fn total_usage(&self, now: Time) -> u64 {
        self.receivers
            .values()
            .map(|r| usage_of(r, now, self.config.usage_window))
            .sum()
    }

    /// A new bandwidth estimate from the transport, bits per second. When allocations exceed
    /// it, receivers are lowered by priority (negotiating first); when it grows, waiting
    /// requests are granted; probing starts or stops with the unmet demand.
    pub fn update_bandwidth_estimate(
        &mut self,
        now: Time,
        estimate: u64,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        let grew = estimate > self.estimate;
        self.estimate = estimate;
        if grew {
            // A new situation: receivers that declined may be asked again later.
            self.declined.clear();
        }
        self.settle(now);
        Ok(())
    }

    /// A receiver asks for `bitrate` bits per second (its demand, capped at its best variant).
    /// A decrease is granted at once; an increase when it fits, else after negotiation with
    /// lower-priority receivers, else as far as it fits.
    pub fn request_allocation(
        &mut self,
        now: Time,
        receiver: ReceiverId,
        bitrate: u64,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        let r = self
            .receivers
            .get_mut(&receiver)
            .ok_or(AllocatorError::UnknownReceiver(receiver))?;
        let want = bitrate.min(r.track.max());
        r.requested = want;
        self.negotiations.remove(&receiver);
        let current = r.allocation;
        let free = self.estimate.saturating_sub(self.allocated());
        // A decrease is granted at once, an increase if it fits; otherwise the demand stays
        // unmet and `settle` negotiates for it.
        if want <= current + free {
            self.grant(receiver, want, false);
        }
        self.settle(now);
        Ok(())
    }

    /// A receiver's answer to a decrease request.
    pub fn decrease_response(
        &mut self,
        now: Time,
        receiver: ReceiverId,
        response: DecreaseResponse,
    ) -> Result<(), AllocatorError> {
        self.alive()?;
        match self.negotiations.get(&receiver) {
            Some(Negotiation::Asked { .. }) => {}
            _ => return Err(AllocatorError::UnexpectedResponse(receiver)),
        }
        match response {
            DecreaseResponse::Accept => {
                let deadline = now + self.config.negotiation_timeout;
                self.negotiations
                    .insert(receiver, Negotiation::Accepted { deadline });
            }
            DecreaseResponse::Reject => {
                self.negotiations.remove(&receiver);
                self.declined.insert(receiver);
                self.settle(now);
            }
        }
        Ok(())
    }

    /// Expires negotiation deadlines (a silent receiver counts as having rejected) and
    /// re-evaluates probing.
    pub fn handle_timeout(&mut self, now: Time) -> Result<(), AllocatorError> {
        self.alive()?;
        let expired: Vec<ReceiverId> = self
            .negotiations
            .iter()
            .filter(|(_, n)| match **n {
                Negotiation::Asked { deadline } | Negotiation::Accepted { deadline } => {
                    deadline <= now
                }
            })
            .map(|(&r, _)| r)
            .collect();
        for r in expired {
            self.negotiations.remove(&r);
            self.declined.insert(r);
        }
        if let Some((_, at)) = self.probing
            && at <= now
        {
            // Re-aim the probe on schedule.
            self.probing = None;
        }
        self.settle(now);
        Ok(())
    }

    fn grant(&mut self, receiver: ReceiverId, bitrate: u64, forced: bool) {
        if let Some(r) = self.receivers.get_mut(&receiver) {
            r.allocation = bitrate;
            self.events.push_back(AllocatorEvent::Granted {
                receiver,
                bitrate,
                forced,
            });
        }
    }

    /// Receivers whose demand exceeds their allocation, strongest priority first.
    fn unmet(&self) -> Vec<ReceiverId> {
        let mut v: Vec<(std::cmp::Reverse<u8>, ReceiverId)> = self
            .receivers
            .iter()
            .filter(|(_, r)| r.requested > r.allocation)
            .map(|(&id, r)| (std::cmp::Reverse(r.options.priority), id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Brings allocations, unmet demand, negotiations and probing in line with the estimate.
    /// The heart of the state machine; every input ends here.
    fn settle(&mut self, now: Time) {
        // 1. Unmet demand that now fits is granted, strongest priority first.
        for r in self.unmet() {
            let rec = &self.receivers[&r];
            let free = self.estimate.saturating_sub(self.allocated());
            if rec.requested <= rec.allocation + free {
                let want = rec.requested;
                self.grant(r, want, false);
            }
        }
        // 2. How much must be freed: over-allocation, plus what unmet demand needs.
        let allocated = self.allocated();
        let over = allocated.saturating_sub(self.estimate);
        let unmet = self.unmet();
        let need: u64 = unmet
            .iter()
            .map(|r| {
                let rec = &self.receivers[r];
                rec.requested - rec.allocation
            })
            .sum::<u64>()
            .saturating_sub(self.estimate.saturating_sub(allocated));
        let deficit = over + need;
        // Only receivers weaker than the strongest one wanting room are asked (anyone when the
        // link is over its estimate).
        let ceiling = if over > 0 {
            u8::MAX
        } else {
            unmet.first().map_or(0, |&r| self.priority(r))
        };
        if deficit > 0 {
            // 3. Negotiate: ask negotiable receivers, lowest priority first, until the
            // decreases in flight would cover the deficit.
            let mut in_flight: u64 = self.negotiations.keys().map(|r| self.step_down(*r)).sum();
            let mut candidates: Vec<(u8, ReceiverId)> = self
                .receivers
                .iter()
                .filter(|(id, r)| {
                    r.options.negotiable
                        && r.allocation > 0
                        && r.options.priority < ceiling
                        && !self.negotiations.contains_key(id)
                        && !self.declined.contains(id)
                        && (over > 0 || r.requested <= r.allocation)
                })
                .map(|(&id, r)| (r.options.priority, id))
                .collect();
            candidates.sort();
            for (_, id) in candidates {
                if in_flight >= deficit {
                    break;
                }
                in_flight += self.step_down(id);
                let deadline = now + self.config.negotiation_timeout;
                self.negotiations
                    .insert(id, Negotiation::Asked { deadline });
                self.events
                    .push_back(AllocatorEvent::DecreaseRequested { receiver: id });
            }
            // 4. Nothing left to negotiate: force, then give unmet demand what fits.
            if self.negotiations.is_empty() {
                if over > 0 {
                    self.force_lower(over);
                }
                for r in self.unmet() {
                    let rec = &self.receivers[&r];
                    let free = self.estimate.saturating_sub(self.allocated());
                    let fit = rec.track.fit((rec.allocation + free).min(rec.requested));
                    if fit > rec.allocation {
                        self.grant(r, fit, false);
                    }
                }
            }
        }
        self.update_probe(now);
    }

    fn priority(&self, r: ReceiverId) -> u8 {
        self.receivers.get(&r).map_or(0, |r| r.options.priority)
    }

    /// What asking `r` to step down one variant frees.
    fn step_down(&self, r: ReceiverId) -> u64 {
        self.receivers.get(&r).map_or(0, |rec| {
            rec.allocation - rec.track.below(rec.allocation).min(rec.allocation)
        })
    }

    /// Force-lowers receivers, lowest priority first, one variant at a time, until `over` is
    /// freed.
    fn force_lower(&mut self, mut over: u64) {
        let mut order: Vec<(u8, ReceiverId)> = self
            .receivers
            .iter()
            .filter(|(_, r)| r.allocation > 0)
            .map(|(&id, r)| (r.options.priority, id))
            .collect();
        order.sort();
        for (_, id) in order {
            if over == 0 {
                break;
            }
            let (alloc, track) = {
                let r = &self.receivers[&id];
                (r.allocation, r.track.clone())
            };
            let mut new = alloc;
            while over > alloc - new && new > 0 {
                new = track.below(new);
            }
            over -= (alloc - new).min(over);
            self.grant(id, new, true);
        }
    }

    fn update_probe(&mut self, now: Time) {
        let demand: u64 = self
            .receivers
            .values()
            .map(|r| r.requested.max(r.allocation))
            .sum();
        let unmet = demand > self.estimate;
        match (unmet, self.probing) {
            (true, None) => {
                let cap = (self.estimate as f64 * self.config.probe_factor) as u64;
                let target = demand.min(cap.max(self.min_variant_sum()));
                let padding = target.saturating_sub(self.total_usage(now));
                self.probing = Some((target, now + self.config.probe_interval));
                self.events
                    .push_back(AllocatorEvent::ProbeStart { target, padding });
            }
            (false, Some(_)) => {
                self.probing = None;
                self.events.push_back(AllocatorEvent::ProbeStop);
            }
            _ => {}
        }
    }

    /// The sum of every receiver's lowest variant: a probe from a zero estimate aims at least
    /// there.
    fn min_variant_sum(&self) -> u64 {
        self.receivers
            .values()
            .filter(|r| r.requested > 0)
            .map(|r| r.track.variants()[0])
            .sum()
    }
}

fn roll_window(r: &mut Receiver, now: Time, window: Duration) {
    let elapsed = now - r.window_start;
    if elapsed >= window * 2 {
        r.bytes_prev = 0;
        r.bytes_now = 0;
        r.window_start = now;
    } else if elapsed >= window {
        r.bytes_prev = r.bytes_now;
        r.bytes_now = 0;
        r.window_start += window;
    }
}

fn usage_of(r: &Receiver, now: Time, window: Duration) -> u64 {
    let elapsed = now - r.window_start;
    let secs = window.as_secs_f64().max(1e-6);
    let bytes = if elapsed >= window * 2 {
        0
    } else if elapsed >= window {
        r.bytes_now
    } else {
        r.bytes_prev
    };
    (bytes as f64 * 8.0 / secs) as u64
}

#[cfg(test)]
mod tests;
