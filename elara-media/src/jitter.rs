//! The playout side: a jitter buffer that releases frames at a steady delay after their capture
//! timestamps, conceals missing slots, and applies a policy to late frames; and
//! [`MediaReceiver`], the whole receive pipeline (depacketizer + jitter buffer + statistics).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use elara_core::{StateId, StateUpdate, Time};

use crate::packet::{Delivery, Depacketizer, ReceivedFrame};
use crate::stats::ReceiveStats;
use crate::track::TrackHeader;

/// What to do with a frame that arrives after its playout time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum LatePolicy {
    /// Discard it (its slot was concealed or is being played past).
    #[default]
    Drop,
    /// Play it at once if nothing later was played yet (its slot is not concealed).
    Deliver,
}

/// Jitter buffer settings.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct JitterConfig {
    /// Delay between the first frame's arrival and its playout; later frames keep the same
    /// offset from their timestamps. Default 60 ms.
    pub target_delay: Duration,
    /// Late-frame policy. Default [`LatePolicy::Drop`].
    pub late_policy: LatePolicy,
    /// Frame interval, when known (e.g. 20 ms audio); learned from played frames otherwise.
    pub frame_interval: Option<Duration>,
    /// Most consecutive slots concealed while no later frame is buffered (so the end of a
    /// stream is not concealed forever). Default 25.
    pub max_conceal_run: u32,
    /// Most frames held; when full the oldest is dropped (counted late). Default 512.
    pub max_frames: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            target_delay: Duration::from_millis(60),
            late_policy: LatePolicy::Drop,
            frame_interval: None,
            max_conceal_run: 25,
            max_frames: 512,
        }
    }
}

/// What the player should do next.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Playout {
    /// Play this frame now.
    Frame(ReceivedFrame),
    /// Nothing arrived for the slot at `timestamp`: conceal `duration` of media.
    Conceal {
        /// The missing slot's timestamp.
        timestamp: Time,
        /// Its length.
        duration: Duration,
    },
}

/// Releases frames at `arrival(first) + target_delay + (timestamp − timestamp(first))`.
///
/// Feed it with [`JitterBuffer::insert`] and drain it with [`JitterBuffer::poll`] at
/// [`JitterBuffer::poll_timeout`].
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    base: Option<(Time, Time)>,
    frames: BTreeMap<Time, ReceivedFrame>,
    last_played: Option<Time>,
    interval: Option<Duration>,
    conceal_run: u32,
    delivered: u64,
    late: u64,
    concealed: u64,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        JitterBuffer {
            config,
            base: None,
            frames: BTreeMap::new(),
            last_played: None,
            interval: config.frame_interval,
            conceal_run: 0,
            delivered: 0,
            late: 0,
            concealed: 0,
        }
    }

    /// When the frame with `timestamp` is due (`None` before the first frame).
    pub fn playout_time(&self, timestamp: Time) -> Option<Time> {
        let (ts0, at0) = self.base?;
        Some(at0 + self.config.target_delay + timestamp.saturating_since(ts0))
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Takes a complete frame that arrived at `now`.
    pub fn insert(&mut self, frame: ReceivedFrame, now: Time) {
        let ts = frame.frame.timestamp;
        let (ts0, _) = *self.base.get_or_insert((ts, now));
        let already_past = self.last_played.is_some_and(|lp| ts <= lp) || ts < ts0;
        let deadline = self.playout_time(ts).unwrap_or(Time::MAX);
        if already_past {
            self.late += 1;
            return;
        }
        if now > deadline {
            self.late += 1;
            if self.config.late_policy == LatePolicy::Drop {
                return;
            }
        }
        if self.frames.contains_key(&ts) {
            return;
        }
        if self.frames.len() >= self.config.max_frames.max(1) {
            self.frames.pop_first();
            self.late += 1;
        }
        self.frames.insert(ts, frame);
    }

    /// When the slot at `slot` must be concealed: no buffered frame falls in it (`first` is the
    /// earliest buffered timestamp) and concealment is allowed; `None` otherwise.
    fn conceal_due(&self, first: Option<Time>, slot: Time, interval: Duration) -> Option<Time> {
        let gap = first.is_none_or(|ts| ts > slot + interval / 2);
        let may_conceal = first.is_some() || self.conceal_run < self.config.max_conceal_run;
        if gap && may_conceal {
            self.playout_time(slot)
        } else {
            None
        }
    }

    fn next_slot(&self) -> Option<(Time, Duration)> {
        let interval = self.interval?;
        Some((self.last_played? + interval, interval))
    }

    /// The next thing to play at `now`, if any is due.
    pub fn poll(&mut self, now: Time) -> Option<Playout> {
        let first = self.frames.first_key_value().map(|(&ts, _)| ts);
        if let Some((slot, interval)) = self.next_slot()
            && self
                .conceal_due(first, slot, interval)
                .is_some_and(|t| now >= t)
        {
            self.last_played = Some(slot);
            self.concealed += 1;
            self.conceal_run += 1;
            return Some(Playout::Conceal {
                timestamp: slot,
                duration: interval,
            });
        }
        let ts = first?;
        if now < self.playout_time(ts)? {
            return None;
        }
        let (_, frame) = self.frames.pop_first()?;
        if self.config.frame_interval.is_none()
            && let Some(lp) = self.last_played
        {
            let d = ts - lp;
            if !d.is_zero() && self.interval.is_none_or(|i| d < i) {
                self.interval = Some(d);
            }
        }
        self.last_played = Some(ts);
        self.conceal_run = 0;
        self.delivered += 1;
        Some(Playout::Frame(frame))
    }

    /// When [`JitterBuffer::poll`] will next have something to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let first = self.frames.first_key_value().map(|(&ts, _)| ts);
        let frame = first.and_then(|ts| self.playout_time(ts));
        let conceal = self
            .next_slot()
            .and_then(|(slot, interval)| self.conceal_due(first, slot, interval));
        match (frame, conceal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fills the frame fields of `stats`: delivered, late, concealed.
    pub fn fill(&self, stats: &mut ReceiveStats) {
        stats.frames_delivered = self.delivered;
        stats.frames_late = self.late;
        stats.frames_concealed = self.concealed;
    }
}

/// What a [`MediaReceiver`] hands the application.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ReceiverEvent {
    /// The track header arrived (or changed): open the output.
    Header(TrackHeader),
    /// Play this.
    Play(Playout),
    /// The stream ended and everything before it was played; the last frame ends at `end_pts`.
    /// Nothing is played after it.
    End {
        /// End of the last frame in the track's timebase.
        end_pts: u64,
    },
}

/// The whole receive side of one track: [`Depacketizer`] → [`JitterBuffer`], with
/// [`ReceiveStats`].
///
/// Driving contract: call [`MediaReceiver::push`] for every update received, then
/// [`MediaReceiver::poll`] until it returns `None`; call `poll` again no later than
/// [`MediaReceiver::poll_timeout`].
#[derive(Debug)]
pub struct MediaReceiver {
    depacketizer: Depacketizer,
    jitter: JitterBuffer,
    events: VecDeque<ReceiverEvent>,
    end: Option<u64>,
    finished: bool,
}

impl MediaReceiver {
    /// A receiver for `state`; gaps in the sequence are given up after the jitter buffer's
    /// target delay (a later repair could not be played anyway).
    pub fn new(state: StateId, jitter: JitterConfig) -> Self {
        MediaReceiver {
            depacketizer: Depacketizer::new(state).with_reorder(64, jitter.target_delay),
            jitter: JitterBuffer::new(jitter),
            events: VecDeque::new(),
            end: None,
            finished: false,
        }
    }

    /// Replaces the depacketizer (e.g. one with another reorder window).
    pub fn with_depacketizer(mut self, depacketizer: Depacketizer) -> Self {
        self.depacketizer = depacketizer;
        self
    }

    /// Takes one update received at `now`.
    pub fn push(&mut self, update: StateUpdate, now: Time) {
        self.depacketizer.push(update, now);
        self.drain_depacketizer(now);
    }

    fn drain_depacketizer(&mut self, now: Time) {
        while let Some(d) = self.depacketizer.poll(now) {
            match d {
                Delivery::Header(h) => self.events.push_back(ReceiverEvent::Header(h)),
                Delivery::Frame(f) => self.jitter.insert(f, now),
                Delivery::End { end_pts } => self.end = Some(end_pts),
            }
        }
    }

    /// The next event at `now`.
    pub fn poll(&mut self, now: Time) -> Option<ReceiverEvent> {
        self.drain_depacketizer(now);
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.finished {
            return None;
        }
        if self.end.is_some() {
            // Play out what is buffered, without concealing past the end.
            if self.jitter.is_empty() {
                self.finished = true;
                return self
                    .end
                    .take()
                    .map(|end_pts| ReceiverEvent::End { end_pts });
            }
            return loop {
                match self.jitter.poll(now)? {
                    Playout::Conceal { .. } if self.jitter.is_empty() => continue,
                    p => break Some(ReceiverEvent::Play(p)),
                }
            };
        }
        self.jitter.poll(now).map(ReceiverEvent::Play)
    }

    /// When to call [`MediaReceiver::poll`] next.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.finished {
            return None;
        }
        if self.end.is_some() && self.jitter.is_empty() {
            return Some(Time::ZERO);
        }
        match (self.depacketizer.poll_timeout(), self.jitter.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Packet and frame statistics so far.
    pub fn stats(&self) -> ReceiveStats {
        let mut s = self.depacketizer.stats();
        self.jitter.fill(&mut s);
        s
    }

    /// The last track header received.
    pub fn header(&self) -> Option<&TrackHeader> {
        self.depacketizer.header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MediaFrame;
    use bytes::Bytes;
    use elara_core::{GroupId, UpdateKind};

    fn frame(ts_ms: u64) -> ReceivedFrame {
        ReceivedFrame {
            frame: MediaFrame {
                pts: ts_ms,
                timestamp: Time::from_millis(ts_ms),
                duration: 0,
                keyframe: true,
                data: Bytes::from_static(b"x"),
            },
            group: GroupId(0),
            layer: 0,
            kind: UpdateKind::Audio,
            arrival: Time::ZERO,
        }
    }

    fn ms(v: u64) -> Time {
        Time::from_millis(v)
    }

    fn drain(jb: &mut JitterBuffer, now: Time) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = jb.poll(now) {
            out.push(match p {
                Playout::Frame(f) => format!("play {}", f.frame.timestamp.as_millis()),
                Playout::Conceal { timestamp, .. } => format!("conceal {}", timestamp.as_millis()),
            });
        }
        out
    }

    #[test]
    fn plays_at_target_delay_conceals_gaps_and_drops_late_frames() {
        // 20 ms audio, 60 ms target delay. Frame 0 arrives at 1000 ms: playout = 1060 + ts.
        let config = JitterConfig {
            frame_interval: Some(Duration::from_millis(20)),
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(config);
        jb.insert(frame(0), ms(1000));
        jb.insert(frame(20), ms(1030)); // jittered but early enough (due 1080)
        jb.insert(frame(60), ms(1050)); // reordered ahead of 40
        assert_eq!(jb.poll_timeout(), Some(ms(1060)));
        assert!(drain(&mut jb, ms(1059)).is_empty());
        assert_eq!(drain(&mut jb, ms(1060)), ["play 0"]);
        assert_eq!(drain(&mut jb, ms(1080)), ["play 20"]);
        // 40 is due at 1100 and missing: concealed, then 60 plays at 1120.
        assert_eq!(drain(&mut jb, ms(1100)), ["conceal 40"]);
        // 40 arrives at 1105: its slot is gone -> late, dropped.
        jb.insert(frame(40), ms(1105));
        assert_eq!(drain(&mut jb, ms(1120)), ["play 60"]);
        // 80 arrives at 1150, after its playout time 1140: late, dropped by policy.
        jb.insert(frame(80), ms(1150));
        // 100 arrives on time; slot 80 is concealed first.
        jb.insert(frame(100), ms(1151));
        assert_eq!(drain(&mut jb, ms(1160)), ["conceal 80", "play 100"]);
        let mut s = ReceiveStats::default();
        jb.fill(&mut s);
        assert_eq!(
            (s.frames_delivered, s.frames_late, s.frames_concealed),
            (4, 2, 2)
        );
    }

    #[test]
    fn deliver_policy_plays_late_frame_if_slot_still_open() {
        let config = JitterConfig {
            late_policy: LatePolicy::Deliver,
            frame_interval: Some(Duration::from_millis(20)),
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(config);
        jb.insert(frame(0), ms(0)); // due 60
        assert_eq!(drain(&mut jb, ms(60)), ["play 0"]);
        // 20 due at 80 arrives at 85 with nobody having polled since: delivered, counted late.
        jb.insert(frame(20), ms(85));
        assert_eq!(drain(&mut jb, ms(85)), ["play 20"]);
        let mut s = ReceiveStats::default();
        jb.fill(&mut s);
        assert_eq!(
            (s.frames_delivered, s.frames_late, s.frames_concealed),
            (2, 1, 0)
        );
    }

    #[test]
    fn learns_interval_and_stops_concealing_after_a_run() {
        let config = JitterConfig {
            max_conceal_run: 3,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(config);
        jb.insert(frame(0), ms(0));
        jb.insert(frame(33), ms(10));
        assert_eq!(drain(&mut jb, ms(100)), ["play 0", "play 33"]);
        // Nothing more: three slots concealed, then silence.
        assert_eq!(
            drain(&mut jb, ms(10_000)),
            ["conceal 66", "conceal 99", "conceal 132"]
        );
        assert_eq!(jb.poll_timeout(), None);
    }
}
