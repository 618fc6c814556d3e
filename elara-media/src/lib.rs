//! # elara-media
//!
//! Real media files in, keyframe-aware [`elara_core::StateUpdate`]s across the swarm, valid files
//! out — plus the receive side (reordering, reassembly, jitter buffer, statistics), G.711, and
//! media sessions with codec negotiation and an application [`MediaHandler`].
//!
//! File I/O happens only at the edges (readers over [`std::io::Read`], writers over
//! [`std::io::Write`]); everything else is sans-IO: time is an [`elara_core::Time`] argument, no
//! clock is read, no thread spawned, no socket touched.
//!
//! ```
//! use elara_core::{NodeId, StateId};
//! use elara_media::{Delivery, Depacketizer, MediaReader, MediaWriter, Packetizer, PacketizerConfig};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/testsrc-vp9.ivf");
//! let mut reader = MediaReader::open(path)?;
//! let config = PacketizerConfig::new(StateId(1), NodeId::from_u64(7));
//! let mut packetizer = Packetizer::new(config, reader.header().clone());
//! let mut depacketizer = Depacketizer::new(StateId(1));
//! let mut updates = Vec::new();
//! for frame in reader.by_ref() {
//!     packetizer.push(&frame?, &mut updates)?;
//! }
//! packetizer.finish(&mut updates);
//! let mut written = None;
//! for update in updates {
//!     depacketizer.push(update, elara_core::Time::ZERO);
//! }
//! while let Some(delivery) = depacketizer.poll(elara_core::Time::MAX) {
//!     match delivery {
//!         Delivery::Header(h) => written = Some(MediaWriter::new(Vec::new(), &h)?),
//!         Delivery::Frame(f) => written.as_mut().unwrap().write_frame(&f.frame)?,
//!         Delivery::End { end_pts } => {
//!             let bytes = written.take().unwrap().finish(Some(end_pts))?;
//!             assert_eq!(bytes, std::fs::read(path)?);
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod annexb;
pub mod call;

pub mod codec;
mod error;
mod file;
mod frame;
pub mod g711;
pub mod ivf;
pub mod jitter;

pub mod ogg;
pub mod opus;
pub mod packet;
pub mod session;

pub mod stats;
mod track;
pub mod wav;

pub use codec::Codec;
pub use error::{MediaError, Result};
pub use file::{MediaReader, MediaWriter, ReadOptions};
pub use frame::{MediaFrame, Timebase};

pub use jitter::{JitterBuffer, JitterConfig, LatePolicy, MediaReceiver, Playout, ReceiverEvent};
pub use packet::{Delivery, Depacketizer, Packetizer, PacketizerConfig, ReceivedFrame};
pub use session::{
    MediaAction, MediaHandler, MediaSession, SessionConfig, SessionEvent, SessionState,
};

pub use stats::ReceiveStats;
pub use track::{ContainerConfig, TrackHeader};
