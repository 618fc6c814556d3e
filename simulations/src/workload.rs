//! Workloads: the frames every publisher sends, generated before the run so that every protocol
//! sees exactly the same stream.
//!
//! A video frame larger than the scenario's `fragment_bytes` is published as several updates
//! (fragments with consecutive sequence numbers), as `elara-media`'s packetizer cuts frames;
//! the cut is coarser than its 1,200 bytes, which keeps event counts tractable. Metrics count
//! a frame once every one of its fragments has arrived. Each fragment is one *unit*: units are
//! numbered over the whole run, frame by frame, so a frame's fragments are consecutive units.

use elara_core::{Priority, StateId, UpdateKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{AudioSpec, VideoMode, VideoSpec};

/// One published frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Publish time, µs.
    pub time_us: u64,
    /// Payload bytes.
    pub size: u32,
    /// Index of its track.
    pub track: u16,
    /// Starts a group (video) — audio frames are never keyframes but always independent.
    pub keyframe: bool,
    /// Sequence number within the track (from 0).
    pub seq: u32,
    /// Group number within the track (video: count of keyframes before it, minus one).
    pub group: u32,
    /// Updates (fragments) it is published as, sequence numbers `seq..seq + parts`.
    pub parts: u16,
    /// Its first unit (fragment) in the run's numbering.
    pub unit: u32,
}

impl Frame {
    /// Payload bytes of fragment `index`: equal cuts of the frame, the last one shorter.
    pub fn part_len(&self, index: u16) -> usize {
        let cut = self.size.div_ceil(u32::from(self.parts));
        (self.size - cut * u32::from(index)).min(cut) as usize
    }
}

/// A published update resolved to its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRef {
    /// Frame index.
    pub frame: u32,
    /// Unit index.
    pub unit: u32,
}

/// One track: a state with an authority.
#[derive(Clone, Debug)]
pub struct Track {
    /// The state id.
    pub state: StateId,
    /// Node index of the authority.
    pub authority: u32,
    /// Video (keyframe-led groups) or audio.
    pub video: bool,
    /// The track's frame indices in publish order.
    pub by_seq: Vec<u32>,
    /// Frame index of each update sequence number (one per fragment).
    pub seq_frame: Vec<u32>,
    /// Frame index of each group's keyframe (video).
    pub keyframes: Vec<u32>,
}

/// Every frame of a run, sorted by publish time.
#[derive(Clone, Debug, Default)]
pub struct FrameLog {
    /// Frames in publish order.
    pub frames: Vec<Frame>,
    /// Tracks; a track's index is `state.0 - 1`.
    pub tracks: Vec<Track>,
    /// Units (fragments) of all frames.
    pub units: u32,
}

/// The state id of track `i`.
pub fn state_of_track(i: usize) -> StateId {
    StateId(i as u64 + 1)
}

/// Size of a CBR keyframe for `v`, bytes.
pub fn keyframe_bytes(v: &VideoSpec) -> f64 {
    let gop = (v.fps * v.keyframe_interval_s).round().max(1.0);
    let gop_bytes = v.bitrate_kbps * 1000.0 / 8.0 * (gop / v.fps);
    gop_bytes / (gop - 1.0 + v.keyframe_ratio) * v.keyframe_ratio
}

/// One track's frames before merging: (time, size, keyframe).
pub type RawFrames = Vec<(u64, u32, bool)>;

/// Synthetic CBR/VBR video from `start_us` to `end_us`.
pub fn synthetic_video(
    v: &VideoSpec,
    start_us: u64,
    end_us: u64,
    rng: &mut ChaCha8Rng,
) -> RawFrames {
    let gop = (v.fps * v.keyframe_interval_s).round().max(1.0) as u64;
    let kf = keyframe_bytes(v);
    let delta = kf / v.keyframe_ratio;
    let mut out = Vec::new();
    let mut k: u64 = 0;
    loop {
        let t = start_us + (k as f64 * 1e6 / v.fps).round() as u64;
        if t >= end_us {
            break;
        }
        let key = k.is_multiple_of(gop);
        let mut size = if key { kf } else { delta };
        if v.mode == VideoMode::Vbr {
            // Log-normal around the CBR size, mean preserved.
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let s = v.vbr_spread;
            size *= (s * z - s * s / 2.0).exp();
        }
        let size = size
            .round()
            .clamp(1.0, elara_core::wire::MAX_PAYLOAD as f64) as u32;
        out.push((t, size, key));
        k += 1;
    }
    out
}

/// Synthetic constant-rate audio (Opus-like) from `start_us` to `end_us`.
pub fn synthetic_audio(a: &AudioSpec, start_us: u64, end_us: u64) -> RawFrames {
    let size = (a.bitrate_kbps * a.frame_ms / 8.0).round().max(1.0) as u32;
    let step = a.frame_ms * 1000.0;
    let mut out = Vec::new();
    let mut k: u64 = 0;
    loop {
        let t = start_us + (k as f64 * step).round() as u64;
        if t >= end_us {
            break;
        }
        out.push((t, size, false));
        k += 1;
    }
    out
}

/// Repeats a recorded frame sequence (times relative to its first frame) to fill
/// `start_us..end_us`. `period_us` is the recording's length (the gap after its last frame is
/// one average frame interval).
pub fn loop_recording(rec: &[(u64, u32, bool)], start_us: u64, end_us: u64) -> RawFrames {
    let mut out = Vec::new();
    if rec.is_empty() {
        return out;
    }
    let first = rec[0].0;
    let last = rec[rec.len() - 1].0;
    let span = last - first;
    let step = if rec.len() > 1 {
        span / (rec.len() as u64 - 1)
    } else {
        20_000
    };
    let period = span + step.max(1);
    let mut base = start_us;
    'outer: loop {
        for &(t, size, key) in rec {
            let at = base + (t - first);
            if at >= end_us {
                break 'outer;
            }
            // Each repetition starts with the recording's first frame: when it is a keyframe the
            // loop stays decodable.
            out.push((at, size.min(elara_core::wire::MAX_PAYLOAD as u32), key));
        }
        base += period;
    }
    out
}

impl FrameLog {
    /// Merges tracks' raw frames into the time-sorted log. `tracks` gives each track's authority
    /// node and whether it is video; video frames above `fragment_bytes` (0: none) are cut.
    pub fn build(raw: Vec<(u32, bool, RawFrames)>, fragment_bytes: u32) -> FrameLog {
        let mut frames = Vec::new();
        let mut tracks = Vec::new();
        for (i, (authority, video, list)) in raw.into_iter().enumerate() {
            let mut group: i64 = -1;
            let mut seq: u32 = 0;
            for (t, size, key) in list {
                let key = video && key;
                if key {
                    group += 1;
                }
                let parts = if video && fragment_bytes > 0 {
                    size.div_ceil(fragment_bytes).clamp(1, u32::from(u16::MAX)) as u16
                } else {
                    1
                };
                frames.push(Frame {
                    time_us: t,
                    size,
                    track: i as u16,
                    keyframe: key,
                    seq,
                    group: group.max(0) as u32,
                    parts,
                    unit: 0,
                });
                seq += u32::from(parts);
            }
            tracks.push(Track {
                state: state_of_track(i),
                authority,
                video,
                by_seq: Vec::new(),
                seq_frame: Vec::new(),
                keyframes: Vec::new(),
            });
        }
        frames.sort_by_key(|f| (f.time_us, f.track, f.seq));
        let mut units: u32 = 0;
        for (idx, f) in frames.iter_mut().enumerate() {
            f.unit = units;
            units += u32::from(f.parts);
            let t = &mut tracks[f.track as usize];
            t.by_seq.push(idx as u32);
            t.seq_frame
                .extend(std::iter::repeat_n(idx as u32, usize::from(f.parts)));
            if f.keyframe {
                t.keyframes.push(idx as u32);
            }
        }
        FrameLog {
            frames,
            tracks,
            units,
        }
    }

    /// The frame index of `(state, seq)`, if such a frame was published.
    pub fn index(&self, state: StateId, seq: u64) -> Option<UnitRef> {
        let t = self
            .tracks
            .get(usize::try_from(state.0.checked_sub(1)?).ok()?)?;
        let frame = *t.seq_frame.get(usize::try_from(seq).ok()?)?;
        let f = &self.frames[frame as usize];
        Some(UnitRef {
            frame,
            unit: f.unit + (seq as u32 - f.seq),
        })
    }

    /// The frame index of the keyframe that `frame` depends on (itself for keyframes; `None` for
    /// independent frames and for deltas before the first keyframe).
    pub fn keyframe_of(&self, frame: u32) -> Option<u32> {
        let f = &self.frames[frame as usize];
        let t = &self.tracks[f.track as usize];
        if !t.video {
            return None;
        }
        let k = *t.keyframes.get(f.group as usize)?;
        (self.frames[k as usize].seq <= f.seq).then_some(k)
    }

    /// Update kind and link priority of a frame.
    pub fn kind_of(&self, frame: &Frame) -> (UpdateKind, Priority) {
        if self.tracks[frame.track as usize].video {
            if frame.keyframe {
                (UpdateKind::Video, Priority::High)
            } else {
                (UpdateKind::Video, Priority::Normal)
            }
        } else {
            (UpdateKind::Audio, Priority::High)
        }
    }

    /// Average bit rate of one publisher's tracks, bit/s, payload plus update framing.
    pub fn publisher_rate_bps(&self, authority: u32, duration_us: u64) -> f64 {
        let bytes: u64 = self
            .frames
            .iter()
            .filter(|f| self.tracks[f.track as usize].authority == authority)
            .map(|f| u64::from(f.size) + elara_core::wire::UPDATE_OVERHEAD as u64)
            .sum();
        bytes as f64 * 8.0 / (duration_us.max(1) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cbr_video_hits_its_bitrate_and_keyframe_interval() {
        let v = VideoSpec::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let frames = synthetic_video(&v, 0, 10_000_000, &mut rng);
        assert_eq!(frames.len(), 300);
        let bytes: u64 = frames.iter().map(|f| u64::from(f.1)).sum();
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((kbps - 2500.0).abs() < 10.0, "{kbps}");
        assert_eq!(frames.iter().filter(|f| f.2).count(), 5);
        assert!(frames[0].2 && frames[60].2 && !frames[59].2);
    }

    #[test]
    fn vbr_keeps_the_mean_rate() {
        let v = VideoSpec {
            mode: VideoMode::Vbr,
            ..VideoSpec::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let frames = synthetic_video(&v, 0, 60_000_000, &mut rng);
        let bytes: u64 = frames.iter().map(|f| u64::from(f.1)).sum();
        let kbps = bytes as f64 * 8.0 / 60.0 / 1000.0;
        assert!((kbps - 2500.0).abs() < 150.0, "{kbps}");
        assert!(
            frames
                .windows(2)
                .any(|w| !w[0].2 && !w[1].2 && w[0].1 != w[1].1)
        );
    }

    #[test]
    fn log_indexes_frames_and_keyframes() {
        let v = VideoSpec::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let video = synthetic_video(&v, 0, 4_000_000, &mut rng);
        let audio = synthetic_audio(&AudioSpec::default(), 0, 4_000_000);
        let log = FrameLog::build(vec![(0, true, video), (0, false, audio)], 0);
        assert_eq!(log.frames.len(), 120 + 200);
        assert_eq!(log.units, 120 + 200);
        assert!(log.frames.windows(2).all(|w| w[0].time_us <= w[1].time_us));
        let i = log.index(StateId(1), 61).unwrap().frame;
        let k = log.keyframe_of(i).unwrap();
        assert_eq!(log.frames[k as usize].seq, 60);
        assert_eq!(
            log.index(StateId(2), 10).map(|i| log.keyframe_of(i.frame)),
            Some(None)
        );
        assert_eq!(log.index(StateId(3), 0), None);
        assert_eq!(log.index(StateId(1), 10_000), None);
    }

    #[test]
    fn large_video_frames_are_cut_into_consecutive_fragments() {
        // Two keyframes of 40,000 bytes and a delta of 10,000, cut at 16,384 bytes: the
        // keyframes take three sequence numbers and units each, the delta one; audio is whole.
        let video = vec![
            (0, 40_000, true),
            (33_000, 10_000, false),
            (66_000, 40_000, true),
        ];
        let audio = vec![(10_000, 120, false)];
        let log = FrameLog::build(vec![(0, true, video), (0, false, audio)], 16_384);
        let parts: Vec<u16> = log.frames.iter().map(|f| f.parts).collect();
        assert_eq!(parts, vec![3, 1, 1, 3]);
        assert_eq!(log.units, 8);
        let key = log.frames[0];
        assert_eq!(
            (0..3).map(|i| key.part_len(i)).collect::<Vec<_>>(),
            vec![13_334, 13_334, 13_332]
        );
        // Video seqs: 0-2 the first keyframe, 3 the delta, 4-6 the second keyframe.
        let second = log.index(StateId(1), 5).unwrap();
        assert_eq!(log.frames[second.frame as usize].seq, 4);
        assert_eq!(second.unit, log.frames[second.frame as usize].unit + 1);
        let delta = log.index(StateId(1), 3).unwrap();
        assert_eq!(log.keyframe_of(delta.frame), Some(0));
        assert_eq!(log.index(StateId(1), 7), None);
        assert_eq!(log.index(StateId(2), 0).map(|u| u.frame), Some(1));
    }

    #[test]
    fn recordings_loop_to_fill_the_duration() {
        let rec = vec![
            (1000, 500, true),
            (34_333, 100, false),
            (67_666, 100, false),
        ];
        let out = loop_recording(&rec, 0, 300_000);
        assert_eq!(out.len(), 10);
        assert!(out[3].2 && out[3].0 == 99_999);
    }
}
