//! Media sessions: an application [`MediaHandler`] called at the points of a session's life,
//! and the [`MediaSession`] state machine that calls it and carries out the [`MediaAction`]s it
//! returns (play a file, stop, pause, resume, set the codec).
//!
//! States: [`SessionState::Idle`] → `Negotiating` → `Ready` → `Active` → `Terminating` →
//! `Closed`. The session is sans-IO except for one edge: a `Play` action opens the file it
//! names (through [`MediaReader`]). Everything else takes `now` as an argument.
//!
//! Driving contract: feed it with [`MediaSession::start`], [`MediaSession::receive_offer`] or
//! [`MediaSession::create_offer`] + [`MediaSession::receive_answer`],
//! [`MediaSession::start_stream`], [`MediaSession::record_stats`],
//! [`MediaSession::report_error`], [`MediaSession::request`] and [`MediaSession::stop`]; drain
//! it with [`MediaSession::poll_transmit`] (updates to publish) and
//! [`MediaSession::poll_event`]; call [`MediaSession::handle_timeout`] at
//! [`MediaSession::poll_timeout`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use elara_core::{NodeId, StateId, StateUpdate, Time};
use thiserror::Error;

use crate::codec::Codec;
use crate::error::MediaError;
use crate::file::MediaReader;
use crate::frame::MediaFrame;
use crate::g711;
use crate::packet::{Packetizer, PacketizerConfig};
use crate::stats::ReceiveStats;
use crate::track::{ContainerConfig, TrackHeader};
use crate::wav::pcm16_samples;

/// Which way media flows in a session or stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Towards this node.
    Inbound,
    /// From this node.
    Outbound,
    /// Both ways.
    Bidirectional,
}

/// The capabilities one side states in an offer or answer (ELARA's counterpart of SDP).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionDescription {
    /// Codecs, most preferred first.
    pub codecs: Vec<Codec>,
    /// Direction of media as seen by the side that wrote the description.
    pub direction: Direction,
}

impl SessionDescription {
    /// The codec bit set (`elara_core::Capabilities::codecs`).
    pub fn codec_bits(&self) -> u32 {
        self.codecs.iter().fold(0, |b, c| b | c.bit())
    }
}

/// A handler's verdict on an offer or answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Negotiation {
    /// Use it as it is.
    Pass,
    /// Use this instead.
    Modify(SessionDescription),
    /// Refuse it; the session terminates.
    Reject(String),
}

/// A handler's codec choice.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CodecChoice {
    /// This codec (it must be in both lists).
    One(Codec),
    /// The first of these that is in both lists.
    Preference(Vec<Codec>),
    /// The lists share no codec.
    NoCommonCodec,
}

/// What a handler asks for when a stream fails.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ErrorAction {
    /// Start the current playback again.
    Retry,
    /// Ignore the error.
    Continue,
    /// Terminate the session.
    Stop(String),
}

/// A quality change a handler asks for after seeing statistics.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum QualityAdjustment {
    /// Switch the session to this codec.
    SetCodec(Codec),
    /// Ask the sender for at most this rate (kbit/s).
    TargetRate(u32),
    /// Ask for keyframes only (video under heavy loss).
    KeyframesOnly,
}

/// Options of a `Play` action.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PlayOptions {
    /// Play the file this many extra times.
    pub repeat: u32,
}

/// An action a handler returns for the session to carry out.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MediaAction {
    /// Play a media file into the session's outgoing track.
    Play {
        /// The file.
        path: PathBuf,
        /// Options.
        options: PlayOptions,
    },
    /// Stop playback.
    Stop,
    /// Pause playback (muting oneself: nothing is sent).
    Pause,
    /// Resume paused playback where it stopped.
    Resume,
    /// Send PCM sources as this codec from now on (Opus, PCMU or PCMA).
    SetCodec(Codec),
}

impl MediaAction {
    /// `Play` with default options.
    pub fn play(path: impl Into<PathBuf>) -> Self {
        MediaAction::Play {
            path: path.into(),
            options: PlayOptions::default(),
        }
    }
}

/// Why a stream failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A file could not be opened or read.
    #[error("media file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: MediaError,
    },
    /// The file's codec cannot be sent as the session's codec (no transcoder).
    #[error("cannot send {from} as {to}")]
    Transcode {
        /// The file's codec.
        from: Codec,
        /// The session's codec.
        to: Codec,
    },
    /// The transport or the application reported a failure.
    #[error("{0}")]
    Transport(String),
}

/// The application's side of a media session: every method has a default, so a handler
/// implements only what it cares about. The handler value is its own state.
pub trait MediaHandler {
    /// The session was created. `Err` stops it before it starts.
    fn init(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The session is being established.
    fn session_start(&mut self, _session_id: &str) -> Result<(), String> {
        Ok(())
    }
    /// The session is terminating.
    fn session_stop(&mut self, _session_id: &str, _reason: &str) {}
    /// An offer, received (`Inbound`) or about to be sent (`Outbound`).
    fn offer(&mut self, _offer: &SessionDescription, _direction: Direction) -> Negotiation {
        Negotiation::Pass
    }
    /// An answer, received (`Inbound`) or about to be sent (`Outbound`).
    fn answer(&mut self, _answer: &SessionDescription, _direction: Direction) -> Negotiation {
        Negotiation::Pass
    }
    /// Chooses the codec; by default the first offered codec that is supported.
    fn codec_negotiation(&mut self, offered: &[Codec], supported: &[Codec]) -> CodecChoice {
        match offered.iter().find(|c| supported.contains(c)) {
            Some(&c) => CodecChoice::One(c),
            None => CodecChoice::NoCommonCodec,
        }
    }
    /// Negotiation finished with these descriptions and codec. `Err` terminates the session.
    fn negotiation_complete(
        &mut self,
        _local: &SessionDescription,
        _remote: &SessionDescription,
        _codec: Codec,
    ) -> Result<(), String> {
        Ok(())
    }
    /// Media is about to flow.
    fn stream_start(&mut self, _session_id: &str, _direction: Direction) -> Vec<MediaAction> {
        Vec::new()
    }
    /// Media stopped flowing.
    fn stream_stop(&mut self, _session_id: &str, _reason: &str) {}
    /// A stream failed; by default the session stops.
    fn stream_error(&mut self, _session_id: &str, error: &StreamError) -> ErrorAction {
        ErrorAction::Stop(error.to_string())
    }
    /// Periodic statistics (every [`SessionConfig::stats_interval`] while active).
    fn stats(&mut self, _stats: &ReceiveStats) -> Option<QualityAdjustment> {
        None
    }
    /// A `Play` finished (all repeats).
    fn play_complete(&mut self, _path: &Path) -> Vec<MediaAction> {
        Vec::new()
    }
    /// A custom request from the application.
    fn media_request(&mut self, _request: &str) -> Result<Vec<MediaAction>, String> {
        Err("unsupported request".to_owned())
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SessionState {
    /// Created, not negotiating yet.
    Idle,
    /// An offer is out or being answered.
    Negotiating,
    /// Negotiated; media may start.
    Ready,
    /// Media flows.
    Active,
    /// Shutting down.
    Terminating,
    /// Done; nothing more happens.
    Closed,
}

/// Session settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionConfig {
    /// Codecs this side supports, most preferred first.
    pub supported: Vec<Codec>,
    /// Direction of this side's media.
    pub direction: Direction,
    /// How often the handler gets statistics while active. Default 1 s.
    pub stats_interval: Duration,
    /// The outgoing track's state id.
    pub state: StateId,
    /// This node (the outgoing track's authority).
    pub source: NodeId,
    /// Largest update payload. Default 1200.
    pub max_payload: usize,
}

impl SessionConfig {
    /// Defaults: Opus, PCMU, PCMA, bidirectional, statistics every second.
    pub fn new(state: StateId, source: NodeId) -> Self {
        SessionConfig {
            supported: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            direction: Direction::Bidirectional,
            stats_interval: Duration::from_secs(1),
            state,
            source,
            max_payload: 1200,
        }
    }
}

/// Why a session call failed.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The call is not valid in the current state.
    #[error("{call} is not valid in state {state:?}")]
    WrongState {
        /// The call.
        call: &'static str,
        /// The state the session was in.
        state: SessionState,
    },
    /// The handler refused (init, start, offer, answer, negotiation).
    #[error("rejected by the handler: {0}")]
    Rejected(String),
    /// The two sides share no codec.
    #[error("no common codec")]
    NoCommonCodec,
    /// The handler chose a codec that is not in both lists.
    #[error("handler chose {0}, which is not offered and supported")]
    InvalidCodecChoice(Codec),
}

/// Resolves a handler's [`CodecChoice`] against the two lists: the result is always a codec in
/// both lists, or [`SessionError::NoCommonCodec`] exactly when they share none.
pub fn resolve_codec(
    offered: &[Codec],
    supported: &[Codec],
    choice: &CodecChoice,
) -> Result<Codec, SessionError> {
    let common = |c: &Codec| offered.contains(c) && supported.contains(c);
    if !offered.iter().any(common) {
        return Err(SessionError::NoCommonCodec);
    }
    match choice {
        CodecChoice::One(c) if common(c) => Ok(*c),
        CodecChoice::One(c) => Err(SessionError::InvalidCodecChoice(*c)),
        CodecChoice::Preference(list) => match list.iter().find(|c| common(c)) {
            Some(&c) => Ok(c),
            // An empty preference states none: take the first common offered codec.
            None if list.is_empty() => first_common(offered, &common),
            None => Err(SessionError::InvalidCodecChoice(list[0])),
        },
        // The handler claims none although the lists intersect: fall back to the first common
        // offered codec rather than fail a call that can work.
        CodecChoice::NoCommonCodec => first_common(offered, &common),
    }
}

fn first_common(
    offered: &[Codec],
    common: &impl Fn(&Codec) -> bool,
) -> Result<Codec, SessionError> {
    offered
        .iter()
        .copied()
        .find(|c| common(c))
        .ok_or(SessionError::NoCommonCodec)
}

/// What the session tells the application.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The state changed.
    StateChanged {
        /// Previous state.
        from: SessionState,
        /// New state.
        to: SessionState,
    },
    /// Negotiation chose this codec.
    CodecSelected(Codec),
    /// Playback of a file started.
    PlayStarted(PathBuf),
    /// Playback paused.
    Paused,
    /// Playback resumed.
    Resumed,
    /// Playback stopped before its end.
    PlayStopped(PathBuf),
    /// Playback of a file finished.
    PlayComplete(PathBuf),
    /// The handler asked for a quality change after statistics.
    QualityAdjustment(QualityAdjustment),
    /// A stream error occurred, and what the handler decided.
    StreamError {
        /// The error text.
        error: String,
        /// The handler's decision.
        action: ErrorAction,
    },
}

#[derive(Debug)]
struct Playback {
    path: PathBuf,
    options: PlayOptions,
    plays_left: u32,
    reader: MediaReader<BufReader<File>>,
    packetizer: Packetizer,
    source_codec: Codec,
    send_codec: Codec,
    /// `now` at which the first frame's timestamp is due.
    origin: Time,
    first_ts: Option<Time>,
    /// Timestamp of the first frame on the track's timeline (time since the stream started),
    /// so a new file, a repeat or a retry continues the timeline instead of restarting it.
    base_ts: Time,
    next: Option<MediaFrame>,
    paused_at: Option<Time>,
}

/// One media session driven by a [`MediaHandler`] (see the [module docs](self)).
#[derive(Debug)]
pub struct MediaSession<H> {
    id: String,
    config: SessionConfig,
    handler: H,
    state: SessionState,
    codec: Option<Codec>,
    local: Option<SessionDescription>,
    remote: Option<SessionDescription>,
    stats: ReceiveStats,
    next_stats: Option<Time>,
    playback: Option<Playback>,
    next_seq: u64,
    next_group: u64,
    active_since: Time,
    out: VecDeque<StateUpdate>,
    events: VecDeque<SessionEvent>,
}

impl<H: MediaHandler> MediaSession<H> {
    /// Creates the session and calls [`MediaHandler::init`].
    pub fn new(
        id: impl Into<String>,
        config: SessionConfig,
        mut handler: H,
    ) -> Result<Self, SessionError> {
        handler.init().map_err(SessionError::Rejected)?;
        Ok(MediaSession {
            id: id.into(),
            config,
            handler,
            state: SessionState::Idle,
            codec: None,
            local: None,
            remote: None,
            stats: ReceiveStats::default(),
            next_stats: None,
            playback: None,
            next_seq: 0,
            next_group: 0,
            active_since: Time::ZERO,
            out: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The negotiated (or since set) codec.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The handler (to inspect its state).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably (to change its state between calls).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// True while a file plays and is not paused.
    pub fn is_playing(&self) -> bool {
        self.playback
            .as_ref()
            .is_some_and(|p| p.paused_at.is_none())
    }

    fn set_state(&mut self, to: SessionState) {
        if self.state != to {
            self.events.push_back(SessionEvent::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    fn expect(&self, call: &'static str, state: SessionState) -> Result<(), SessionError> {
        if self.state == state {
            Ok(())
        } else {
            Err(SessionError::WrongState {
                call,
                state: self.state,
            })
        }
    }

    fn fail(&mut self, now: Time, err: SessionError) -> SessionError {
        self.terminate(now, &err.to_string());
        err
    }

    /// Establishes the session ([`MediaHandler::session_start`]); stays `Idle`.
    pub fn start(&mut self, now: Time) -> Result<(), SessionError> {
        self.expect("start", SessionState::Idle)?;
        let id = self.id.clone();
        if let Err(e) = self.handler.session_start(&id) {
            return Err(self.fail(now, SessionError::Rejected(e)));
        }
        Ok(())
    }

    /// Answers a remote offer: `offer` → codec negotiation → `answer` → `negotiation_complete`;
    /// `Idle` → `Negotiating` → `Ready`. Returns the answer to send.
    pub fn receive_offer(
        &mut self,
        now: Time,
        offer: SessionDescription,
    ) -> Result<SessionDescription, SessionError> {
        self.expect("receive_offer", SessionState::Idle)?;
        self.set_state(SessionState::Negotiating);
        let offer = match self.handler.offer(&offer, Direction::Inbound) {
            Negotiation::Pass => offer,
            Negotiation::Modify(d) => d,
            Negotiation::Reject(r) => return Err(self.fail(now, SessionError::Rejected(r))),
        };
        let codec = self.negotiate(now, &offer.codecs)?;
        let answer = SessionDescription {
            codecs: vec![codec],
            direction: self.config.direction,
        };
        let answer = match self.handler.answer(&answer, Direction::Outbound) {
            Negotiation::Pass => answer,
            Negotiation::Modify(d) => d,
            Negotiation::Reject(r) => return Err(self.fail(now, SessionError::Rejected(r))),
        };
        self.complete_negotiation(now, answer.clone(), offer, codec)?;
        Ok(answer)
    }

    /// Makes an offer from the supported codecs (after [`MediaHandler::offer`]);
    /// `Idle` → `Negotiating`.
    pub fn create_offer(&mut self, now: Time) -> Result<SessionDescription, SessionError> {
        self.expect("create_offer", SessionState::Idle)?;
        self.set_state(SessionState::Negotiating);
        let offer = SessionDescription {
            codecs: self.config.supported.clone(),
            direction: self.config.direction,
        };
        let offer = match self.handler.offer(&offer, Direction::Outbound) {
            Negotiation::Pass => offer,
            Negotiation::Modify(d) => d,
            Negotiation::Reject(r) => return Err(self.fail(now, SessionError::Rejected(r))),
        };
        self.local = Some(offer.clone());
        Ok(offer)
    }

    /// Takes the remote answer to [`MediaSession::create_offer`]; `Negotiating` → `Ready`.
    pub fn receive_answer(
        &mut self,
        now: Time,
        answer: SessionDescription,
    ) -> Result<Codec, SessionError> {
        self.expect("receive_answer", SessionState::Negotiating)?;
        let answer = match self.handler.answer(&answer, Direction::Inbound) {
            Negotiation::Pass => answer,
            Negotiation::Modify(d) => d,
            Negotiation::Reject(r) => return Err(self.fail(now, SessionError::Rejected(r))),
        };
        let codec = self.negotiate(now, &answer.codecs)?;
        let local = self.local.clone().unwrap_or(SessionDescription {
            codecs: self.config.supported.clone(),
            direction: self.config.direction,
        });
        self.complete_negotiation(now, local, answer, codec)?;
        Ok(codec)
    }

    fn negotiate(&mut self, now: Time, offered: &[Codec]) -> Result<Codec, SessionError> {
        let supported = self.config.supported.clone();
        let choice = self.handler.codec_negotiation(offered, &supported);
        resolve_codec(offered, &supported, &choice).map_err(|e| self.fail(now, e))
    }

    fn complete_negotiation(
        &mut self,
        now: Time,
        local: SessionDescription,
        remote: SessionDescription,
        codec: Codec,
    ) -> Result<(), SessionError> {
        if let Err(e) = self.handler.negotiation_complete(&local, &remote, codec) {
            return Err(self.fail(now, SessionError::Rejected(e)));
        }
        self.local = Some(local);
        self.remote = Some(remote);
        self.codec = Some(codec);
        self.events.push_back(SessionEvent::CodecSelected(codec));
        self.set_state(SessionState::Ready);
        Ok(())
    }

    /// Starts media: `Ready` → `Active`, then carries out what
    /// [`MediaHandler::stream_start`] returns. Statistics are due one interval later.
    pub fn start_stream(&mut self, now: Time) -> Result<(), SessionError> {
        self.expect("start_stream", SessionState::Ready)?;
        self.set_state(SessionState::Active);
        self.active_since = now;
        self.next_stats = Some(now + self.config.stats_interval);
        let id = self.id.clone();
        let actions = self.handler.stream_start(&id, self.config.direction);
        self.run_actions(now, actions);
        Ok(())
    }

    /// Replaces the statistics handed to the handler at the next interval.
    pub fn record_stats(&mut self, stats: ReceiveStats) {
        self.stats = stats;
    }

    /// Reports a stream failure; the handler decides (retry, continue, stop).
    pub fn report_error(&mut self, now: Time, error: StreamError) {
        let id = self.id.clone();
        let action = self.handler.stream_error(&id, &error);
        self.events.push_back(SessionEvent::StreamError {
            error: error.to_string(),
            action: action.clone(),
        });
        match action {
            ErrorAction::Retry => {
                if let Some(p) = self.playback.take() {
                    let options = PlayOptions {
                        repeat: p.plays_left.saturating_sub(1),
                    };
                    self.retire(&p);
                    self.play(now, p.path, options);
                }
            }
            ErrorAction::Continue => {}
            ErrorAction::Stop(reason) => self.terminate(now, &reason),
        }
    }

    /// A custom request ([`MediaHandler::media_request`]); its actions are carried out.
    pub fn request(&mut self, now: Time, request: &str) -> Result<(), SessionError> {
        match self.handler.media_request(request) {
            Ok(actions) => {
                self.run_actions(now, actions);
                Ok(())
            }
            Err(e) => Err(SessionError::Rejected(e)),
        }
    }

    /// Carries out one action as if a handler had returned it.
    pub fn perform(&mut self, now: Time, action: MediaAction) {
        self.run_actions(now, vec![action]);
    }

    fn run_actions(&mut self, now: Time, actions: Vec<MediaAction>) {
        for a in actions {
            if matches!(self.state, SessionState::Terminating | SessionState::Closed) {
                return;
            }
            match a {
                MediaAction::Play { path, options } => self.play(now, path, options),
                MediaAction::Stop => {
                    if let Some(p) = self.playback.take() {
                        self.retire(&p);
                        self.events.push_back(SessionEvent::PlayStopped(p.path));
                    }
                }
                MediaAction::Pause => {
                    if let Some(p) = self.playback.as_mut()
                        && p.paused_at.is_none()
                    {
                        p.paused_at = Some(now);
                        self.events.push_back(SessionEvent::Paused);
                    }
                }
                MediaAction::Resume => {
                    if let Some(p) = self.playback.as_mut()
                        && let Some(at) = p.paused_at.take()
                    {
                        p.origin += now - at;
                        self.events.push_back(SessionEvent::Resumed);
                    }
                }
                MediaAction::SetCodec(c) => {
                    self.codec = Some(c);
                    if let Some(p) = self.playback.as_mut()
                        && p.source_codec == Codec::Pcm16
                        && p.send_codec != c
                    {
                        match p.reader.header().clone() {
                            h @ TrackHeader {
                                container: ContainerConfig::Wav(_),
                                ..
                            } if matches!(c, Codec::Pcmu | Codec::Pcma) => {
                                p.send_codec = c;
                                // Receivers learn the new codec from the header that now
                                // precedes the next frame.
                                let header = TrackHeader { codec: c, ..h };
                                if let Err(e) = p.packetizer.set_header(header) {
                                    let path = p.path.clone();
                                    self.playback = None;
                                    self.report_error(now, StreamError::File { path, source: e });
                                }
                            }
                            _ => {
                                let from = Codec::Pcm16;
                                self.report_error(now, StreamError::Transcode { from, to: c });
                            }
                        }
                    }
                    self.events.push_back(SessionEvent::CodecSelected(c));
                }
            }
        }
    }

    /// Remembers where a finished playback left the track's numbering.
    fn retire(&mut self, p: &Playback) {
        self.next_seq = p.packetizer.next_seq();
        self.next_group = p.packetizer.next_group();
    }

    fn play(&mut self, now: Time, path: PathBuf, options: PlayOptions) {
        if let Some(p) = self.playback.take() {
            self.retire(&p);
            self.events.push_back(SessionEvent::PlayStopped(p.path));
        }
        let base = Time::ZERO + (now - self.active_since);
        match self.open(now, &path, options, options.repeat + 1, base) {
            Ok(p) => {
                self.playback = Some(p);
                self.events.push_back(SessionEvent::PlayStarted(path));
            }
            Err(e) => self.report_error(now, e),
        }
    }

    fn open(
        &self,
        now: Time,
        path: &Path,
        options: PlayOptions,
        plays_left: u32,
        base_ts: Time,
    ) -> Result<Playback, StreamError> {
        let file_err = |source| StreamError::File {
            path: path.to_owned(),
            source,
        };
        let reader = MediaReader::open(path).map_err(file_err)?;
        let header = reader.header().clone();
        let source_codec = header.codec;
        let send_codec = match source_codec {
            Codec::Pcm16 => self.codec.unwrap_or(Codec::Pcmu),
            c => c,
        };
        let out_header = match (source_codec, send_codec) {
            (Codec::Pcm16, Codec::Pcmu | Codec::Pcma) => match &header.container {
                ContainerConfig::Wav(f) if f.channels == 1 && f.sample_rate == 8000 => {
                    TrackHeader {
                        codec: send_codec,
                        ..header
                    }
                }
                _ => {
                    return Err(file_err(MediaError::Unsupported {
                        what: "G.711 needs 8 kHz mono PCM",
                    }));
                }
            },
            (Codec::Pcm16, to) => {
                return Err(StreamError::Transcode {
                    from: Codec::Pcm16,
                    to,
                });
            }
            _ => header,
        };
        if source_codec.is_audio()
            && source_codec != Codec::Pcm16
            && self.codec.is_some_and(|c| c != source_codec)
        {
            let to = self.codec.unwrap_or(source_codec);
            return Err(StreamError::Transcode {
                from: source_codec,
                to,
            });
        }
        let mut config = PacketizerConfig::new(self.config.state, self.config.source);
        config.max_payload = self.config.max_payload;
        config.first_seq = self.next_seq;
        config.first_group = self.next_group;
        Ok(Playback {
            path: path.to_owned(),
            options,
            plays_left,
            reader,
            packetizer: Packetizer::new(config, out_header),
            source_codec,
            send_codec,
            origin: now,
            first_ts: None,
            base_ts,
            next: None,
            paused_at: None,
        })
    }

    /// Ends the session: `stream_stop` (when media flowed), `session_stop`, then `Closed`.
    pub fn stop(&mut self, now: Time, reason: &str) {
        self.terminate(now, reason);
    }

    fn terminate(&mut self, _now: Time, reason: &str) {
        if matches!(self.state, SessionState::Terminating | SessionState::Closed) {
            return;
        }
        let was_active = self.state == SessionState::Active;
        self.set_state(SessionState::Terminating);
        let id = self.id.clone();
        if was_active {
            self.handler.stream_stop(&id, reason);
        }
        if let Some(p) = self.playback.take() {
            self.events.push_back(SessionEvent::PlayStopped(p.path));
        }
        self.handler.session_stop(&id, reason);
        self.next_stats = None;
        self.set_state(SessionState::Closed);
    }

    /// Runs what is due at `now`: statistics for the handler, playback frames.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.state != SessionState::Active {
            return;
        }
        if let Some(t) = self.next_stats
            && now >= t
        {
            let stats = self.stats;
            if let Some(adj) = self.handler.stats(&stats) {
                if let QualityAdjustment::SetCodec(c) = adj {
                    self.run_actions(now, vec![MediaAction::SetCodec(c)]);
                }
                self.events.push_back(SessionEvent::QualityAdjustment(adj));
            }
            // Next interval from the scheduled time, skipping any missed ones.
            let mut next = t + self.config.stats_interval;
            while next <= now {
                next += self.config.stats_interval;
            }
            self.next_stats = Some(next);
        }
        self.pump_playback(now);
    }

    fn pump_playback(&mut self, now: Time) {
        loop {
            let Some(p) = self.playback.as_mut() else {
                return;
            };
            if p.paused_at.is_some() {
                return;
            }
            if p.next.is_none() {
                match p.reader.next_frame() {
                    Ok(Some(f)) => p.next = Some(f),
                    Ok(None) => {
                        self.finish_play(now);
                        continue;
                    }
                    Err(source) => {
                        let path = p.path.clone();
                        self.playback = None;
                        self.report_error(now, StreamError::File { path, source });
                        return;
                    }
                }
            }
            let Some(f) = p.next.as_ref() else { return };
            let first = *p.first_ts.get_or_insert(f.timestamp);
            let due = p.origin + (f.timestamp - first);
            if now < due {
                return;
            }
            let Some(mut f) = p.next.take() else { return };
            f.timestamp = p.base_ts + (f.timestamp - first);
            if p.source_codec == Codec::Pcm16 {
                f = transcode_pcm(&f, p.send_codec);
            }
            let mut updates = Vec::new();
            if let Err(e) = p.packetizer.push(&f, &mut updates) {
                let path = p.path.clone();
                self.playback = None;
                self.report_error(now, StreamError::File { path, source: e });
                return;
            }
            self.out.extend(updates);
        }
    }

    fn finish_play(&mut self, now: Time) {
        let Some(p) = self.playback.take() else {
            return;
        };
        self.retire(&p);
        if p.plays_left > 1 {
            // Repeat; the track's timeline runs on.
            let base = Time::ZERO + (now - self.active_since);
            match self.open(now, &p.path, p.options, p.plays_left - 1, base) {
                Ok(np) => {
                    self.playback = Some(np);
                    return;
                }
                Err(e) => {
                    self.report_error(now, e);
                    return;
                }
            }
        }
        self.events
            .push_back(SessionEvent::PlayComplete(p.path.clone()));
        let actions = self.handler.play_complete(&p.path);
        self.run_actions(now, actions);
    }

    /// When [`MediaSession::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.state != SessionState::Active {
            return None;
        }
        let frame = self.playback.as_ref().and_then(|p| {
            if p.paused_at.is_some() {
                return None;
            }
            match (&p.next, p.first_ts) {
                (Some(f), Some(first)) => Some(p.origin + (f.timestamp - first)),
                _ => Some(p.origin),
            }
        });
        match (self.next_stats, frame) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next update to publish on the outgoing track.
    pub fn poll_transmit(&mut self) -> Option<StateUpdate> {
        self.out.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }
}

/// PCM16 little-endian → G.711 (PCMU/PCMA) frame; other codecs leave the frame as it is.
fn transcode_pcm(frame: &MediaFrame, to: Codec) -> MediaFrame {
    let encode: fn(i16) -> u8 = match to {
        Codec::Pcmu => g711::linear_to_ulaw,
        Codec::Pcma => g711::linear_to_alaw,
        _ => return frame.clone(),
    };
    let data: Vec<u8> = pcm16_samples(&frame.data).map(encode).collect();
    MediaFrame {
        data: Bytes::from(data),
        ..frame.clone()
    }
}
