//! Frames as read from and written to containers, and the timebases their timestamps use.

use bytes::Bytes;
use elara_core::Time;

use crate::error::{MediaError, Result};

/// A rational clock: one tick lasts `num / den` seconds (IVF's `1/30`, Ogg Opus's `1/48000`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Timebase {
    /// Numerator (seconds per tick, top).
    pub num: u32,
    /// Denominator (seconds per tick, bottom).
    pub den: u32,
}

impl Timebase {
    /// A timebase of `num / den` seconds per tick; both must be non-zero.
    pub fn new(num: u32, den: u32) -> Result<Self> {
        if num == 0 {
            return Err(MediaError::Invalid {
                what: "timebase numerator",
                value: 0,
            });
        }
        if den == 0 {
            return Err(MediaError::Invalid {
                what: "timebase denominator",
                value: 0,
            });
        }
        Ok(Timebase { num, den })
    }

    /// Ticks → microseconds, rounded to nearest (saturating).
    pub fn to_time(self, ticks: u64) -> Time {
        let us = (u128::from(ticks) * u128::from(self.num) * 1_000_000 + u128::from(self.den) / 2)
            / u128::from(self.den);
        Time::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Microseconds → ticks, rounded to nearest (saturating). Exact inverse of
    /// [`Timebase::to_time`] whenever a tick lasts at least one microsecond.
    pub fn to_ticks(self, time: Time) -> u64 {
        let scale = u128::from(self.num) * 1_000_000;
        let ticks = (u128::from(time.as_micros()) * u128::from(self.den) + scale / 2) / scale;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// One coded frame: an Opus packet, a VP8/VP9 frame, an AV1 temporal unit, an H.264 access unit
/// (with its start codes), or a block of PCM samples.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MediaFrame {
    /// Presentation timestamp in ticks of the track's [`Timebase`] (for Ogg Opus: the granule
    /// position where the packet starts, pre-skip included).
    pub pts: u64,
    /// `pts` in microseconds.
    pub timestamp: Time,
    /// Length in ticks when the container or codec states it (Opus, PCM); 0 when unknown.
    pub duration: u64,
    /// True when the frame decodes without earlier frames, judged from the bitstream.
    pub keyframe: bool,
    /// The coded bytes.
    pub data: Bytes,
}
