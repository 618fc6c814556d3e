//! # elara-core
//!
//! The vocabulary every other ELARA crate speaks: node and state identifiers, [`Time`] as a value
//! passed in (never read from a clock), [`InterestLevel`] and [`Priority`], the [`StateUpdate`]
//! that carries one piece of state from its authority to the nodes that care, and the versioned,
//! bounded, incremental wire codec for [`Message`]s.
//!
//! This crate performs no I/O, spawns nothing and never reads the clock: it is the bottom of the
//! sans-IO stack (`elara-core` ← `elara-diffusion` ← `elara-transport`).
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use elara_core::{Message, NodeId, StateId, StateUpdate, Time, wire};
//!
//! let update = StateUpdate::new(StateId(7), NodeId::from_u64(1), 42, Time::from_millis(20))
//!     .with_payload(Bytes::from_static(b"frame"))
//!     .keyframe();
//! let msg = Message::Update { hops: 0, update };
//! let mut buf = BytesMut::new();
//! msg.encode(&mut buf);
//! let (decoded, used) = wire::decode(&buf.freeze()).unwrap();
//! assert_eq!(decoded, msg);
//! assert!(used > 0);
//! ```
#![deny(missing_docs)]

mod error;
mod id;
mod interest;
mod time;
mod update;
pub mod wire;

pub use error::DecodeError;
pub use id::{GroupId, NodeId, StateId};
pub use interest::{InterestLevel, Priority};
pub use time::Time;
pub use update::{Fragment, StateUpdate, UpdateKind};
pub use wire::{Capabilities, Message, PeerInfo, TrackInfo};
