//! # elara-diffusion
//!
//! Interest-driven diffusion for ELARA, sans-IO: this crate decides *who gets which update, when,
//! at which quality*, and never touches a socket, a clock or a thread. Time is a value passed in
//! ([`elara_core::Time`]); what to send is handed back to the caller.
//!
//! * [`InterestMap`]: who wants which state, at which level, until when (TTL by the `now`
//!   passed in), in about 58 bytes per viewer at a million viewers;
//! * [`PropagationTopology`]: the diffusion graph (star, capacity-aware breadth-balanced tree,
//!   mesh) with incremental interest aggregation: a relay's effective interest is the strongest
//!   interest in its subtree.
#![deny(missing_docs)]

pub mod interest;
pub mod topology;

pub use interest::{InterestChange, InterestError, InterestMap};
pub use topology::{PropagationTopology, Shape, TopologyError};
