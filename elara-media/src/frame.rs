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
        let den = u64::from(self.den);
        if let Some(p) = ticks.checked_mul(u64::from(self.num) * 1_000_000)
            && let Some(p) = p.checked_add(den / 2)
        {
            return Time::from_micros(p / den);
        }
        let us = (u128::from(ticks) * u128::from(self.num) * 1_000_000 + u128::from(self.den) / 2)
            / u128::from(self.den);
        Time::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Microseconds → ticks, rounded to nearest (saturating). Exact inverse of
    /// [`Timebase::to_time`] whenever a tick lasts at least one microsecond.
    pub fn to_ticks(self, time: Time) -> u64 {
        // Fast path in 64 bits when nothing can overflow (any realistic stream).
        let scale64 = u64::from(self.num) * 1_000_000;
        if let Some(p) = time.as_micros().checked_mul(u64::from(self.den))
            && let Some(p) = p.checked_add(scale64 / 2)
        {
            return p / scale64;
        }
        let scale = u128::from(self.num) * 1_000_000;
        let ticks = (u128::from(time.as_micros()) * u128::from(self.den) + scale / 2) / scale;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ticks_round_trip_through_microseconds(ticks in any::<u64>(), den in 1..=1_000_000u32) {
            let tb = Timebase::new(1, den).unwrap();
            let t = tb.to_time(ticks);
            if t != Time::MAX {
                prop_assert_eq!(tb.to_ticks(t), ticks);
            }
        }
    }

    #[test]
    fn known_values() {
        let tb = Timebase::new(1, 30).unwrap();
        assert_eq!(tb.to_time(60), Time::from_secs(2));
        assert_eq!(tb.to_time(1), Time::from_micros(33_333));
        assert_eq!(tb.to_ticks(Time::from_micros(33_333)), 1);
        let opus = Timebase::new(1, 48_000).unwrap();
        assert_eq!(opus.to_time(960), Time::from_millis(20));
        // Saturates instead of overflowing.
        assert_eq!(Timebase::new(1, 1).unwrap().to_time(u64::MAX), Time::MAX);
        assert_eq!(
            Timebase::new(1, 1_000_000).unwrap().to_ticks(Time::MAX),
            u64::MAX
        );
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
