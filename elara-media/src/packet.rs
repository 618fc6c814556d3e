//! Frames ↔ [`StateUpdate`]s.
//!
//! The [`Packetizer`] turns each frame into one update, or — video only — several when it
//! exceeds the payload size (numbered with [`Fragment`]), and marks every update with its group (the GOP: a video
//! keyframe starts one; audio groups are runs of frames), keyframe flag, timestamp, layer, kind
//! and priority (audio and keyframes [`Priority::High`], video deltas [`Priority::Normal`]). One
//! track carries one media type. A small control update carrying the [`TrackHeader`] precedes the
//! first frame and every group, so a receiver joining late can rebuild the file; a last control
//! update marks the end of the stream.
//!
//! The [`Depacketizer`] undoes it on the receiving side: it puts updates back in sequence order
//! (holding a bounded reorder window), drops duplicates, declares gaps lost after a window or a
//! delay, reassembles fragments, and — when a frame is incomplete or a video delta's keyframe is
//! missing — drops everything up to the next keyframe. It emits complete, decodable frames only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use elara_core::{Fragment, GroupId, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind};

use crate::codec::{Codec, opus_packet_samples};
use crate::error::{MediaError, Result};
use crate::frame::MediaFrame;
use crate::stats::{PacketStats, ReceiveStats};
use crate::track::{ContainerConfig, TrackHeader};

const TAG_HEADER: u8 = 1;
const TAG_END: u8 = 2;

/// How a [`Packetizer`] labels and cuts a track's frames.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PacketizerConfig {
    /// The track's state id.
    pub state: StateId,
    /// The track's authority (this node).
    pub source: NodeId,
    /// Largest payload per update; larger video frames are fragmented (audio frames never
    /// are). Default 1200 bytes.
    pub max_payload: usize,
    /// Scalability layer written on every update. Default 0.
    pub layer: u8,
    /// Audio frames per group (audio frames are independent; groups let relays supersede old
    /// audio). Default 50 (one second of 20 ms frames).
    pub audio_group_frames: u32,
    /// Priority of audio frames and video keyframes. Default [`Priority::High`].
    pub keyframe_priority: Priority,
    /// Priority of video deltas. Default [`Priority::Normal`]; a screen share raises it.
    pub delta_priority: Priority,
    /// Sequence number of the first update. Default 0.
    pub first_seq: u64,
    /// Group id of the first group. Default 0. A track that switches packetizers (a new file
    /// in a session) continues both numberings, so relays see its newest group as newest.
    pub first_group: u64,
}

impl PacketizerConfig {
    /// Defaults for the track `state` published by `source`.
    pub fn new(state: StateId, source: NodeId) -> Self {
        PacketizerConfig {
            state,
            source,
            max_payload: 1200,
            layer: 0,
            audio_group_frames: 50,
            keyframe_priority: Priority::High,
            delta_priority: Priority::Normal,
            first_seq: 0,
            first_group: 0,
        }
    }
}

/// Cuts a track's frames into [`StateUpdate`]s (see the [module docs](self)).
#[derive(Debug)]
pub struct Packetizer {
    config: PacketizerConfig,
    kind: UpdateKind,
    header: Bytes,
    seq: u64,
    group: u64,
    header_pending: bool,
    frames: u64,
    frames_in_group: u32,
    end_pts: u64,
    last_timestamp: Time,
}

impl Packetizer {
    /// A packetizer for a track described by `header`.
    pub fn new(config: PacketizerConfig, header: TrackHeader) -> Self {
        let mut h = BytesMut::new();
        h.put_u8(TAG_HEADER);
        h.put_slice(&header.encode());
        Packetizer {
            kind: header.codec.kind(),
            config,
            header: h.freeze(),
            seq: config.first_seq,
            group: config.first_group,
            header_pending: false,
            frames: 0,
            frames_in_group: 0,
            end_pts: 0,
            last_timestamp: Time::ZERO,
        }
    }

    /// Sequence number the next update will get.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Group the last frame went into.
    pub fn group(&self) -> GroupId {
        GroupId(self.group)
    }

    /// The group id a packetizer taking over this track should start with.
    pub fn next_group(&self) -> u64 {
        if self.frames == 0 {
            self.group
        } else {
            self.group.saturating_add(1)
        }
    }

    /// Replaces the track header (e.g. the codec of a PCM source changed from PCMU to PCMA);
    /// the next frame is preceded by it, and audio starts a new group there. The media type of
    /// a track cannot change.
    pub fn set_header(&mut self, header: TrackHeader) -> Result<()> {
        if header.codec.kind() != self.kind {
            return Err(MediaError::Unsupported {
                what: "changing a track's media type",
            });
        }
        let mut h = BytesMut::new();
        h.put_u8(TAG_HEADER);
        h.put_slice(&header.encode());
        self.header = h.freeze();
        self.header_pending = true;
        if self.kind != UpdateKind::Video {
            self.frames_in_group = 0;
        }
        Ok(())
    }

    /// Appends the updates carrying `frame` to `out` (and a header update when the frame starts
    /// a group). Fails only when a video frame needs more than `u16::MAX` fragments or an audio
    /// frame exceeds the wire's payload cap.
    pub fn push(&mut self, frame: &MediaFrame, out: &mut Vec<StateUpdate>) -> Result<()> {
        let video = self.kind == UpdateKind::Video;
        // Audio frames are never cut: one frame, one update (bounded by the wire's payload cap).
        let max = if video {
            self.config.max_payload.max(1)
        } else {
            elara_core::wire::MAX_PAYLOAD
        };
        if !video && frame.data.len() > max {
            return Err(MediaError::too_large("audio frame", frame.data.len(), max));
        }
        let count = frame.data.len().div_ceil(max).max(1);
        let count = u16::try_from(count).map_err(|_| {
            MediaError::too_large("frame size", frame.data.len(), max * usize::from(u16::MAX))
        })?;
        let starts_group = if video {
            frame.keyframe
        } else {
            self.frames_in_group == 0 || self.frames_in_group >= self.config.audio_group_frames
        };
        if starts_group {
            if self.frames > 0 {
                self.group += 1;
            }
            self.frames_in_group = 0;
        }
        if starts_group || self.frames == 0 || self.header_pending {
            self.header_pending = false;
            let header = self.header.clone();
            self.push_control(header, frame.timestamp, out);
        }
        self.frames += 1;
        self.frames_in_group += 1;
        self.end_pts = frame.pts.saturating_add(frame.duration);
        self.last_timestamp = frame.timestamp;
        let keyframe = if video { frame.keyframe } else { starts_group };
        let priority = if !video || frame.keyframe {
            self.config.keyframe_priority
        } else {
            self.config.delta_priority
        };
        out.reserve(usize::from(count));
        for index in 0..count {
            let start = usize::from(index) * max;
            let end = (start + max).min(frame.data.len());
            let payload = if count == 1 {
                frame.data.clone()
            } else {
                frame.data.slice(start..end)
            };
            out.push(StateUpdate {
                state: self.config.state,
                source: self.config.source,
                seq: self.seq,
                group: GroupId(self.group),
                timestamp: frame.timestamp,
                keyframe,
                layer: self.config.layer,
                priority,
                kind: self.kind,
                fragment: Fragment { index, count },
                payload,
            });
            self.seq += 1;
        }
        Ok(())
    }

    /// Appends the end-of-stream update (it carries where the last frame ends, in ticks).
    pub fn finish(&mut self, out: &mut Vec<StateUpdate>) {
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(TAG_END);
        b.put_u64_le(self.end_pts);
        let t = self.last_timestamp;
        self.push_control(b.freeze(), t, out);
    }

    fn push_control(&mut self, payload: Bytes, timestamp: Time, out: &mut Vec<StateUpdate>) {
        let max = self.config.max_payload.max(1);
        let count = payload.len().div_ceil(max).clamp(1, usize::from(u16::MAX)) as u16;
        for index in 0..count {
            let start = usize::from(index) * max;
            let end = if index + 1 == count {
                payload.len()
            } else {
                start + max
            };
            out.push(StateUpdate {
                state: self.config.state,
                source: self.config.source,
                seq: self.seq,
                group: GroupId(self.group),
                timestamp,
                keyframe: false,
                layer: self.config.layer,
                priority: Priority::Urgent,
                kind: UpdateKind::Control,
                fragment: Fragment { index, count },
                payload: payload.slice(start..end),
            });
            self.seq += 1;
        }
    }
}

/// A complete frame out of the [`Depacketizer`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReceivedFrame {
    /// The frame; `pts` in the track's timebase once a header was received (microseconds
    /// before), `duration` from the codec where it states one (Opus, PCM).
    pub frame: MediaFrame,
    /// The group it belongs to.
    pub group: GroupId,
    /// Its layer.
    pub layer: u8,
    /// Audio or video.
    pub kind: UpdateKind,
    /// When its last fragment arrived.
    pub arrival: Time,
}

/// What the [`Depacketizer`] emits, in stream order.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// The track header (first time, and whenever it changes).
    Header(TrackHeader),
    /// A complete, decodable frame.
    Frame(ReceivedFrame),
    /// The stream ended; its last frame ends at `end_pts` ticks.
    End {
        /// End of the last frame, in the track's timebase.
        end_pts: u64,
    },
}

#[derive(Debug)]
struct Assembly {
    first: StateUpdate,
    next: u16,
}

/// Most updates the reorder buffer holds before declaring the oldest gap lost.
pub const MAX_PENDING_UPDATES: usize = 4096;
/// Largest frame reassembled (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;
const MAX_LOST_REMEMBERED: usize = 4096;

/// Reorders, reassembles and keyframe-gates the updates of one track (see the
/// [module docs](self)). Whole audio frames are independent and are handed on as soon as they
/// arrive (a jitter buffer orders them by timestamp); everything else waits for its turn in
/// sequence order.
///
/// Drive it with [`Depacketizer::push`] for every update received and drain it with
/// [`Depacketizer::poll`]; call `poll` again at [`Depacketizer::poll_timeout`] so gaps are
/// declared lost on time. `poll(Time::MAX)` flushes everything at the end of input.
#[derive(Debug)]
pub struct Depacketizer {
    state: StateId,
    reorder_window: u64,
    reorder_delay: Duration,
    next_seq: Option<u64>,
    hold_since: Option<Time>,
    pending: BTreeMap<u64, (StateUpdate, Time, bool)>,
    lost: BTreeSet<u64>,
    assembly: Option<Assembly>,
    scratch: BytesMut,
    waiting_keyframe: bool,
    current_group: Option<GroupId>,
    header: Option<TrackHeader>,
    out: VecDeque<Delivery>,
    packets: PacketStats,
    frames_dropped: u64,
    foreign: u64,
}

impl Depacketizer {
    /// A depacketizer for the track `state`, with a reorder window of 64 updates and 100 ms.
    pub fn new(state: StateId) -> Self {
        Depacketizer {
            state,
            reorder_window: 64,
            reorder_delay: Duration::from_millis(100),
            next_seq: None,
            hold_since: None,
            pending: BTreeMap::new(),
            lost: BTreeSet::new(),
            assembly: None,
            scratch: BytesMut::new(),
            waiting_keyframe: true,
            current_group: None,
            header: None,
            out: VecDeque::new(),
            packets: PacketStats::default(),
            frames_dropped: 0,
            foreign: 0,
        }
    }

    /// Sets how far ahead (in updates) and how long a gap may stay open before it is declared
    /// lost.
    pub fn with_reorder(mut self, window: u64, delay: Duration) -> Self {
        self.reorder_window = window.max(1);
        self.reorder_delay = delay;
        self
    }

    /// The last track header received.
    pub fn header(&self) -> Option<&TrackHeader> {
        self.header.as_ref()
    }

    /// Updates ignored because they belong to another state.
    pub fn foreign_updates(&self) -> u64 {
        self.foreign
    }

    /// Packet statistics and frames dropped as undecodable (frame playout fields are the jitter
    /// buffer's).
    pub fn stats(&self) -> ReceiveStats {
        let mut s = ReceiveStats::default();
        self.packets.fill(&mut s);
        s.frames_dropped = self.frames_dropped;
        s
    }

    /// Takes one update received at `now`.
    pub fn push(&mut self, update: StateUpdate, now: Time) {
        if update.state != self.state {
            self.foreign += 1;
            return;
        }
        let seq = update.seq;
        if self.next_seq.is_none() {
            // The packetizer opens every group with a header: a receiver whose first update is
            // one starts there; otherwise it holds what arrives for the reorder delay so that
            // earlier updates overtaken on the way are not lost.
            if self.pending.is_empty()
                && update.kind == UpdateKind::Control
                && update.fragment.index == 0
            {
                self.start_at(seq);
            } else {
                self.hold_since.get_or_insert(now);
            }
        }
        if let Some(next) = self.next_seq
            && seq < next
        {
            if self.lost.remove(&seq) {
                // Arrived after its gap was given up: counts as received, too late to use.
                self.packets.on_packet(seq, update.timestamp, now);
            } else {
                self.packets.on_duplicate();
            }
            return;
        }
        if self.pending.contains_key(&seq) {
            self.packets.on_duplicate();
            return;
        }
        self.packets.on_packet(seq, update.timestamp, now);
        if Some(seq) == self.next_seq && self.pending.is_empty() {
            // In order with nothing held: the common case skips the reorder buffer.
            self.next_seq = Some(seq.saturating_add(1));
            self.process(update, now);
            return;
        }
        // Whole audio frames stand alone: hand them on at once (the jitter buffer orders them)
        // and keep only their place in the sequence.
        let immediate = update.kind == UpdateKind::Audio && update.fragment == Fragment::WHOLE;
        if immediate {
            let payload = update.payload.clone();
            self.complete(update.clone(), payload, now);
        }
        self.pending.insert(seq, (update, now, immediate));
        self.release(now);
    }

    /// Starts the sequence at `seq`. The window before it is remembered as "never seen", so a
    /// straggler from there counts as received late rather than as a duplicate.
    fn start_at(&mut self, seq: u64) {
        self.next_seq = Some(seq);
        self.hold_since = None;
        for s in seq.saturating_sub(self.reorder_window.min(MAX_LOST_REMEMBERED as u64))..seq {
            self.lost.insert(s);
        }
    }

    /// The next delivery, after releasing what `now` allows.
    pub fn poll(&mut self, now: Time) -> Option<Delivery> {
        self.release(now);
        self.out.pop_front()
    }

    /// When an open gap will be declared lost, if one is open.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.next_seq.is_none() {
            return self.hold_since.map(|t| t + self.reorder_delay);
        }
        let (&first, &(_, arrival, _)) = self.pending.first_key_value()?;
        (Some(first) != self.next_seq).then(|| arrival + self.reorder_delay)
    }

    fn release(&mut self, now: Time) {
        if self.next_seq.is_none() {
            let Some((&first, _)) = self.pending.first_key_value() else {
                return;
            };
            let last = self.pending.last_key_value().map_or(first, |(&k, _)| k);
            let since = self.hold_since.unwrap_or(now);
            if last - first >= self.reorder_window
                || self.pending.len() >= MAX_PENDING_UPDATES
                || now >= since + self.reorder_delay
            {
                self.start_at(first);
            } else {
                return;
            }
        }
        while let Some((&first, &(_, arrival, _))) = self.pending.first_key_value() {
            let Some(next) = self.next_seq else { return };
            if first == next {
                if let Some((_, (u, at, delivered))) = self.pending.pop_first() {
                    self.next_seq = Some(next.saturating_add(1));
                    if delivered {
                        if let Some(a) = self.assembly.take() {
                            self.drop_frame(a.first.kind);
                        }
                    } else {
                        self.process(u, at);
                    }
                }
                continue;
            }
            let last = self.pending.last_key_value().map_or(first, |(&k, _)| k);
            let overdue = now >= arrival + self.reorder_delay;
            if last - next >= self.reorder_window
                || self.pending.len() >= MAX_PENDING_UPDATES
                || overdue
            {
                for s in first.saturating_sub(MAX_LOST_REMEMBERED as u64).max(next)..first {
                    self.lost.insert(s);
                }
                while self.lost.len() > MAX_LOST_REMEMBERED {
                    self.lost.pop_first();
                }
                self.on_loss();
                self.next_seq = Some(first);
                continue;
            }
            return;
        }
    }

    fn on_loss(&mut self) {
        if let Some(a) = self.assembly.take() {
            self.drop_frame(a.first.kind);
        }
        self.waiting_keyframe = true;
    }

    fn drop_frame(&mut self, kind: UpdateKind) {
        if kind != UpdateKind::Control {
            self.frames_dropped += 1;
        }
        if kind == UpdateKind::Video {
            self.waiting_keyframe = true;
        }
    }

    fn process(&mut self, u: StateUpdate, arrival: Time) {
        let Fragment { index, count } = u.fragment;
        if count == 0 || index >= count {
            self.drop_frame(u.kind);
            return;
        }
        if index == 0 {
            if let Some(a) = self.assembly.take() {
                self.drop_frame(a.first.kind);
            }
            if count == 1 {
                let payload = u.payload.clone();
                self.complete(u, payload, arrival);
            } else {
                // One reassembly buffer, reused: once the previous frame's bytes are dropped,
                // `reserve` reclaims its allocation instead of allocating anew.
                let expected = u
                    .payload
                    .len()
                    .saturating_mul(usize::from(count))
                    .min(MAX_FRAME);
                self.scratch.clear();
                self.scratch.reserve(expected);
                self.scratch.extend_from_slice(&u.payload);
                self.assembly = Some(Assembly { first: u, next: 1 });
            }
            return;
        }
        let Some(mut a) = self.assembly.take() else {
            // A middle fragment without its start: the start was lost (already counted).
            return;
        };
        let f = &a.first;
        if index != a.next
            || count != f.fragment.count
            || u.timestamp != f.timestamp
            || u.kind != f.kind
            || self.scratch.len() + u.payload.len() > MAX_FRAME
        {
            self.drop_frame(f.kind);
            return;
        }
        self.scratch.extend_from_slice(&u.payload);
        a.next += 1;
        if a.next == count {
            let data = self.scratch.split().freeze();
            self.complete(a.first, data, arrival);
        } else {
            self.assembly = Some(a);
        }
    }

    fn complete(&mut self, first: StateUpdate, data: Bytes, arrival: Time) {
        match first.kind {
            UpdateKind::Control => self.control(&data),
            UpdateKind::Video => {
                if first.keyframe {
                    self.waiting_keyframe = false;
                    self.current_group = Some(first.group);
                } else if self.waiting_keyframe || self.current_group != Some(first.group) {
                    self.frames_dropped += 1;
                    return;
                }
                self.emit(first, data, arrival);
            }
            _ => self.emit(first, data, arrival),
        }
    }

    fn emit(&mut self, first: StateUpdate, data: Bytes, arrival: Time) {
        let (pts, duration) = match &self.header {
            Some(h) => {
                let duration = match (&h.codec, &h.container) {
                    (Codec::Opus, _) => opus_packet_samples(&data).map_or(0, u64::from),
                    (Codec::Pcm16, ContainerConfig::Wav(f)) => {
                        (data.len() / (2 * usize::from(f.channels.max(1)))) as u64
                    }
                    _ => 0,
                };
                (h.timebase.to_ticks(first.timestamp), duration)
            }
            None => (first.timestamp.as_micros(), 0),
        };
        self.out.push_back(Delivery::Frame(ReceivedFrame {
            frame: MediaFrame {
                pts,
                timestamp: first.timestamp,
                duration,
                keyframe: first.keyframe,
                data,
            },
            group: first.group,
            layer: first.layer,
            kind: first.kind,
            arrival,
        }));
    }

    fn control(&mut self, data: &[u8]) {
        match data.split_first() {
            Some((&TAG_HEADER, rest)) => {
                if let Ok(h) = TrackHeader::decode(rest)
                    && self.header.as_ref() != Some(&h)
                {
                    self.header = Some(h.clone());
                    self.out.push_back(Delivery::Header(h));
                }
            }
            Some((&TAG_END, rest)) if rest.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(rest);
                self.out.push_back(Delivery::End {
                    end_pts: u64::from_le_bytes(b),
                });
            }
            _ => {}
        }
    }
}
