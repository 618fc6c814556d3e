//! The group-call model: participants and their tracks, who connects to whom, and muting.
//!
//! A [`Call`] is sans-IO: it takes the call offers (hellos) other participants broadcast and
//! the user's wishes, and hands back [`CallOutput`]s for the driver: connect to a peer (the
//! lower id of each pair initiates), declare or withdraw interest in a track (muting another
//! participant withdraws interest in their audio, so the sender's link stops carrying it), start
//! or stop sending a local track (muting oneself stops sending). A screen share is a separate
//! video track with a higher priority than a camera.

use std::collections::{BTreeMap, VecDeque};

use elara_core::{InterestLevel, Message, NodeId, Priority, StateId, Time, TrackInfo, UpdateKind};

use crate::codec::Codec;
use crate::packet::PacketizerConfig;

/// Most tracks one participant may publish (the wire's limit).
pub const MAX_TRACKS: usize = elara_core::wire::MAX_TRACKS;

/// What a track is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum TrackRole {
    /// Voice.
    Microphone,
    /// Camera video.
    Camera,
    /// Screen share: video that outranks a camera.
    ScreenShare,
}

impl TrackRole {
    /// The update kind of the role's media.
    pub const fn kind(self) -> UpdateKind {
        match self {
            TrackRole::Microphone => UpdateKind::Audio,
            TrackRole::Camera | TrackRole::ScreenShare => UpdateKind::Video,
        }
    }

    /// The track priority announced in offers: voice and screen share `High`, camera `Normal`.
    pub const fn priority(self) -> Priority {
        match self {
            TrackRole::Microphone | TrackRole::ScreenShare => Priority::High,
            TrackRole::Camera => Priority::Normal,
        }
    }

    /// The interest a participant declares by default in another's track of this role.
    pub const fn default_interest(self) -> InterestLevel {
        match self {
            TrackRole::Microphone | TrackRole::ScreenShare => InterestLevel::High,
            TrackRole::Camera => InterestLevel::Medium,
        }
    }

    /// The role of a track as offered: audio is a microphone, video above `Normal` priority a
    /// screen share, other video a camera.
    pub fn of(info: &TrackInfo) -> TrackRole {
        match info.kind {
            UpdateKind::Audio => TrackRole::Microphone,
            _ if info.priority > Priority::Normal => TrackRole::ScreenShare,
            _ => TrackRole::Camera,
        }
    }
}

/// One of this node's tracks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LocalTrack {
    /// As offered to the others.
    pub info: TrackInfo,
    /// What it is for.
    pub role: TrackRole,
    /// False while muted (nothing is sent).
    pub sending: bool,
}

impl LocalTrack {
    /// A packetizer configuration for this track: a screen share sends its deltas at `High`
    /// and keyframes at `Urgent`, above every camera.
    pub fn packetizer_config(&self, me: NodeId) -> PacketizerConfig {
        let mut c = PacketizerConfig::new(self.info.state, me);
        if self.role == TrackRole::ScreenShare {
            c.keyframe_priority = Priority::Urgent;
            c.delta_priority = Priority::High;
        }
        c
    }
}

/// Another participant as this node sees them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Participant {
    /// Their id.
    pub id: NodeId,
    /// Their offered tracks.
    pub tracks: Vec<TrackInfo>,
    /// True when this node muted them (no interest in their audio).
    pub muted: bool,
    /// When their first offer arrived.
    pub joined_at: Time,
}

/// What the driver must do for the call.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CallOutput {
    /// Broadcast this message to the call (this node's offer: its hello).
    Broadcast(Message),
    /// Open the connection to this participant (this node has the lower id of the pair).
    Connect(NodeId),
    /// Declare this interest in a track (`InterestLevel::None` withdraws it).
    Interest {
        /// The track.
        state: StateId,
        /// The level.
        level: InterestLevel,
    },
    /// Start publishing a local track.
    StartSending(StateId),
    /// Stop publishing a local track.
    StopSending(StateId),
    /// A participant joined.
    Joined(NodeId),
    /// A participant left; interest in their tracks was withdrawn.
    Left(NodeId),
}

/// Why a call operation failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The participant is not in the call.
    #[error("unknown participant {0}")]
    UnknownParticipant(NodeId),
    /// The track is not one of this node's.
    #[error("unknown track {0}")]
    UnknownTrack(StateId),
    /// Too many tracks.
    #[error("at most {MAX_TRACKS} tracks")]
    TooManyTracks,
}

/// One node's view of a group call (see the [module docs](self)).
#[derive(Debug)]
pub struct Call {
    id: u64,
    me: NodeId,
    tracks: BTreeMap<StateId, LocalTrack>,
    participants: BTreeMap<NodeId, Participant>,
    out: VecDeque<CallOutput>,
}

impl Call {
    /// Joins call `id` as `me`.
    pub fn new(id: u64, me: NodeId) -> Self {
        Call {
            id,
            me,
            tracks: BTreeMap::new(),
            participants: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Adds a local track and returns its state id (derived from this node's id and the track
    /// number, so it is stable across restarts); it starts sending at once.
    pub fn add_track(&mut self, role: TrackRole, codec: Codec) -> Result<StateId, CallError> {
        if self.tracks.len() >= MAX_TRACKS {
            return Err(CallError::TooManyTracks);
        }
        let n = (0..)
            .find(|n| !self.tracks.contains_key(&self.track_state(*n)))
            .unwrap_or(0);
        let state = self.track_state(n);
        let info = TrackInfo {
            state,
            kind: role.kind(),
            codec: codec.as_u8(),
            priority: role.priority(),
        };
        self.tracks.insert(
            state,
            LocalTrack {
                info,
                role,
                sending: true,
            },
        );
        self.out.push_back(CallOutput::StartSending(state));
        Ok(state)
    }

    fn track_state(&self, n: u64) -> StateId {
        StateId(self.me.prefix_u64().wrapping_mul(0x100).wrapping_add(n))
    }

    /// Removes a local track (stops sending it).
    pub fn remove_track(&mut self, state: StateId) -> Result<(), CallError> {
        self.tracks
            .remove(&state)
            .ok_or(CallError::UnknownTrack(state))?;
        self.out.push_back(CallOutput::StopSending(state));
        Ok(())
    }

    /// This node's tracks.
    pub fn tracks(&self) -> impl Iterator<Item = &LocalTrack> {
        self.tracks.values()
    }

    /// The other participants, by id.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values()
    }

    /// This node's offer (its hello): broadcast when joining and whenever tracks change.
    pub fn offer(&mut self) {
        let tracks = self.tracks.values().map(|t| t.info).collect();
        self.out
            .push_back(CallOutput::Broadcast(Message::CallOffer {
                call: self.id,
                tracks,
            }));
    }

    /// Takes a participant's offer. A new participant is joined (and connected to when this
    /// node has the lower id); interest is declared in each of their tracks not yet known.
    pub fn handle_offer(&mut self, now: Time, from: NodeId, call: u64, tracks: &[TrackInfo]) {
        if call != self.id || from == self.me {
            return;
        }
        let tracks: Vec<TrackInfo> = tracks.iter().take(MAX_TRACKS).copied().collect();
        let me = self.me;
        let is_new = !self.participants.contains_key(&from);
        let p = self
            .participants
            .entry(from)
            .or_insert_with(|| Participant {
                id: from,
                tracks: Vec::new(),
                muted: false,
                joined_at: now,
            });
        let old = std::mem::replace(&mut p.tracks, tracks);
        let muted = p.muted;
        if is_new {
            self.out.push_back(CallOutput::Joined(from));
            if me < from {
                self.out.push_back(CallOutput::Connect(from));
            }
        }
        for t in &old {
            if !self.participants[&from]
                .tracks
                .iter()
                .any(|n| n.state == t.state)
            {
                self.out.push_back(CallOutput::Interest {
                    state: t.state,
                    level: InterestLevel::None,
                });
            }
        }
        let new: Vec<TrackInfo> = self.participants[&from]
            .tracks
            .iter()
            .filter(|t| !old.iter().any(|o| o.state == t.state))
            .copied()
            .collect();
        for t in new {
            let level = interest_for(&t, muted);
            self.out.push_back(CallOutput::Interest {
                state: t.state,
                level,
            });
        }
    }

    /// A participant left (or its connection ended): interest in its tracks is withdrawn.
    pub fn handle_leave(&mut self, from: NodeId) {
        if let Some(p) = self.participants.remove(&from) {
            for t in p.tracks {
                self.out.push_back(CallOutput::Interest {
                    state: t.state,
                    level: InterestLevel::None,
                });
            }
            self.out.push_back(CallOutput::Left(from));
        }
    }

    /// Mutes (`true`) or unmutes this node's audio: its microphone tracks stop or start sending.
    pub fn mute_self(&mut self, muted: bool) {
        for t in self.tracks.values_mut() {
            if t.role == TrackRole::Microphone && t.sending == muted {
                t.sending = !muted;
                let state = t.info.state;
                self.out.push_back(if muted {
                    CallOutput::StopSending(state)
                } else {
                    CallOutput::StartSending(state)
                });
            }
        }
    }

    /// True while the local track `state` is being sent.
    pub fn is_sending(&self, state: StateId) -> bool {
        self.tracks.get(&state).is_some_and(|t| t.sending)
    }

    /// Mutes (`true`) or unmutes another participant for this node: interest in their audio
    /// is withdrawn (or restored), so nothing of it is sent towards this node.
    pub fn mute(&mut self, who: NodeId, muted: bool) -> Result<(), CallError> {
        let p = self
            .participants
            .get_mut(&who)
            .ok_or(CallError::UnknownParticipant(who))?;
        if p.muted == muted {
            return Ok(());
        }
        p.muted = muted;
        for t in p.tracks.iter().filter(|t| t.kind == UpdateKind::Audio) {
            self.out.push_back(CallOutput::Interest {
                state: t.state,
                level: interest_for(t, muted),
            });
        }
        Ok(())
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }
}

fn interest_for(t: &TrackInfo, muted: bool) -> InterestLevel {
    if muted && t.kind == UpdateKind::Audio {
        InterestLevel::None
    } else {
        TrackRole::of(t).default_interest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut Call) -> Vec<CallOutput> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    #[test]
    fn tracks_offer_and_screen_share_outranks_camera() {
        let mut c = Call::new(9, NodeId::from_u64(5));
        let mic = c.add_track(TrackRole::Microphone, Codec::Opus).unwrap();
        let cam = c.add_track(TrackRole::Camera, Codec::Vp8).unwrap();
        let screen = c.add_track(TrackRole::ScreenShare, Codec::Av1).unwrap();
        assert!(mic != cam && cam != screen);
        c.offer();
        let out = drain(&mut c);
        assert_eq!(
            out[..3],
            [
                CallOutput::StartSending(mic),
                CallOutput::StartSending(cam),
                CallOutput::StartSending(screen),
            ]
        );
        let CallOutput::Broadcast(Message::CallOffer { call: 9, tracks }) = &out[3] else {
            panic!("expected an offer, got {:?}", out[3]);
        };
        assert_eq!(tracks.len(), 3);
        let by_state = |s| tracks.iter().find(|t| t.state == s).unwrap();
        assert!(by_state(screen).priority > by_state(cam).priority);
        assert_eq!(TrackRole::of(by_state(screen)), TrackRole::ScreenShare);
        assert_eq!(TrackRole::of(by_state(cam)), TrackRole::Camera);
        let tracks: Vec<_> = c.tracks().copied().collect();
        let screen_track = tracks.iter().find(|t| t.info.state == screen).unwrap();
        let cam_track = tracks.iter().find(|t| t.info.state == cam).unwrap();
        let me = NodeId::from_u64(5);
        assert!(
            screen_track.packetizer_config(me).delta_priority
                > cam_track.packetizer_config(me).delta_priority
        );
    }

    #[test]
    fn lower_id_connects_and_interest_follows_roles_and_muting() {
        let me = NodeId::from_u64(5);
        let mut c = Call::new(1, me);
        let mut other = Call::new(1, NodeId::from_u64(9));
        let their_mic = other.add_track(TrackRole::Microphone, Codec::Opus).unwrap();
        let their_cam = other.add_track(TrackRole::Camera, Codec::H264).unwrap();
        let tracks: Vec<TrackInfo> = other.tracks().map(|t| t.info).collect();
        c.handle_offer(Time::from_millis(1), NodeId::from_u64(9), 1, &tracks);
        assert_eq!(
            drain(&mut c),
            [
                CallOutput::Joined(NodeId::from_u64(9)),
                CallOutput::Connect(NodeId::from_u64(9)),
                CallOutput::Interest {
                    state: their_mic,
                    level: InterestLevel::High
                },
                CallOutput::Interest {
                    state: their_cam,
                    level: InterestLevel::Medium
                },
            ]
        );
        // A repeated hello changes nothing; a higher id does not connect to a lower one.
        c.handle_offer(Time::from_millis(2), NodeId::from_u64(9), 1, &tracks);
        assert!(drain(&mut c).is_empty());
        c.handle_offer(Time::from_millis(2), NodeId::from_u64(2), 1, &[]);
        assert_eq!(drain(&mut c), [CallOutput::Joined(NodeId::from_u64(2))]);
        // Another call's offer is ignored.
        c.handle_offer(Time::from_millis(2), NodeId::from_u64(3), 2, &tracks);
        assert!(drain(&mut c).is_empty());

        // Muting them withdraws interest in their audio only; unmuting restores it.
        c.mute(NodeId::from_u64(9), true).unwrap();
        assert_eq!(
            drain(&mut c),
            [CallOutput::Interest {
                state: their_mic,
                level: InterestLevel::None
            }]
        );
        c.mute(NodeId::from_u64(9), false).unwrap();
        assert_eq!(
            drain(&mut c),
            [CallOutput::Interest {
                state: their_mic,
                level: InterestLevel::High
            }]
        );
        assert_eq!(
            c.mute(NodeId::from_u64(77), true),
            Err(CallError::UnknownParticipant(NodeId::from_u64(77)))
        );

        // They drop the camera: interest withdrawn. Then they leave.
        c.handle_offer(Time::from_millis(3), NodeId::from_u64(9), 1, &tracks[..1]);
        assert_eq!(
            drain(&mut c),
            [CallOutput::Interest {
                state: their_cam,
                level: InterestLevel::None
            }]
        );
        c.handle_leave(NodeId::from_u64(9));
        assert_eq!(
            drain(&mut c),
            [
                CallOutput::Interest {
                    state: their_mic,
                    level: InterestLevel::None
                },
                CallOutput::Left(NodeId::from_u64(9)),
            ]
        );
        assert_eq!(c.participants().count(), 1);
    }

    #[test]
    fn mute_self_stops_sending_audio_only() {
        let mut c = Call::new(1, NodeId::from_u64(5));
        let mic = c.add_track(TrackRole::Microphone, Codec::Pcmu).unwrap();
        let cam = c.add_track(TrackRole::Camera, Codec::Vp8).unwrap();
        drain(&mut c);
        c.mute_self(true);
        assert_eq!(drain(&mut c), [CallOutput::StopSending(mic)]);
        assert!(!c.is_sending(mic) && c.is_sending(cam));
        c.mute_self(true);
        assert!(drain(&mut c).is_empty());
        c.mute_self(false);
        assert_eq!(drain(&mut c), [CallOutput::StartSending(mic)]);
        assert!(c.is_sending(mic));
    }
}
