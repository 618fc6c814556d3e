//! # elara-diffusion
//!
//! Interest-driven diffusion for ELARA, sans-IO: this crate decides *who gets which update, when,
//! at which quality*, and never touches a socket, a clock or a thread. Time is a value passed in
//! ([`elara_core::Time`]); what to send is handed back to the caller.
//!
//! * [`InterestMap`]: who wants which state, at which level, until when (TTL by the `now`
//!   passed in), in about 59 bytes per viewer at a million viewers;
//! * [`PropagationTopology`]: the diffusion graph (star, capacity-aware breadth-balanced tree,
//!   mesh) with incremental interest aggregation: a relay's effective interest is the strongest
//!   interest in its subtree;
//! * [`PropagationScheduler`]: per update, one [`Decision`] per neighbour whose subtree wants it,
//!   ordered by interest, rate-limited per link from congestion feedback, quality-degraded
//!   (lower layer, fewer frames, keyframes only) when a link cannot carry everything, and never
//!   sending a delta whose keyframe the target did not get; allocation-free in steady state;
//! * [`PropagationStats`]: sends, drops by [`DropReason`], bytes, latency percentiles;
//! * [`BandwidthAllocator`]: per-receiver allocation of a link's estimated bandwidth with
//!   decrease negotiation, force-lowering by priority and probing (after Membrane's
//!   `ConnectionAllocator`);
//! * [`swarm::SwarmNode`]: the state machine every node runs (membership, one diffusion tree
//!   per state, interest aggregation, forwarding through the scheduler, repair, group calls),
//!   driven by `handle_message` / `handle_timeout` / `poll_transmit` / `poll_event` /
//!   `poll_timeout` — see its module for the driving contract;
//! * [`harness::Harness`]: a deterministic in-memory network of swarm nodes (per-link latency,
//!   loss, bandwidth; seeded) for tests and experiments.
#![deny(missing_docs)]

pub mod allocator;
pub mod harness;
mod hash;
pub mod interest;
pub mod scheduler;
pub mod stats;
pub mod swarm;
pub mod topology;

pub use allocator::{AllocatorEvent, BandwidthAllocator};
pub use interest::{InterestChange, InterestError, InterestMap};
pub use scheduler::{
    Decision, LinkId, LinkStats, PropagationScheduler, Quality, SchedulerConfig, StateConfig,
    Verdict,
};
pub use stats::{DropReason, PropagationStats};
pub use topology::{PropagationTopology, Shape, TopologyError};
