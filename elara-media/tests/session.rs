//! Media sessions driven by a recording handler: the order of callbacks, the effect of each
//! action, and codec negotiation properties.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use elara_core::{NodeId, StateId, Time, UpdateKind};
use elara_media::session::{
    CodecChoice, Direction, ErrorAction, MediaAction, MediaHandler, MediaSession, Negotiation,
    QualityAdjustment, SessionConfig, SessionDescription, SessionError, SessionEvent, SessionState,
    StreamError, resolve_codec,
};
use elara_media::wav::WavReader;
use elara_media::{Codec, ReceiveStats, g711};
use proptest::prelude::*;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    prefer: Vec<Codec>,
    reject_offer: bool,
    on_stream_start: Vec<MediaAction>,
    on_play_complete: VecDeque<Vec<MediaAction>>,
    on_error: Option<ErrorAction>,
    stats_seen: Vec<u64>,
}

impl MediaHandler for Recorder {
    fn init(&mut self) -> Result<(), String> {
        self.log.push("init".into());
        Ok(())
    }
    fn session_start(&mut self, id: &str) -> Result<(), String> {
        self.log.push(format!("session_start {id}"));
        Ok(())
    }
    fn session_stop(&mut self, _id: &str, reason: &str) {
        self.log.push(format!("session_stop {reason}"));
    }
    fn offer(&mut self, offer: &SessionDescription, direction: Direction) -> Negotiation {
        self.log
            .push(format!("offer {direction:?} {:?}", offer.codecs));
        if self.reject_offer {
            Negotiation::Reject("busy".into())
        } else {
            Negotiation::Pass
        }
    }
    fn answer(&mut self, answer: &SessionDescription, direction: Direction) -> Negotiation {
        self.log
            .push(format!("answer {direction:?} {:?}", answer.codecs));
        Negotiation::Pass
    }
    fn codec_negotiation(&mut self, offered: &[Codec], supported: &[Codec]) -> CodecChoice {
        self.log
            .push(format!("codec_negotiation {offered:?} {supported:?}"));
        CodecChoice::Preference(self.prefer.clone())
    }
    fn negotiation_complete(
        &mut self,
        _l: &SessionDescription,
        _r: &SessionDescription,
        codec: Codec,
    ) -> Result<(), String> {
        self.log.push(format!("negotiation_complete {codec}"));
        Ok(())
    }
    fn stream_start(&mut self, _id: &str, direction: Direction) -> Vec<MediaAction> {
        self.log.push(format!("stream_start {direction:?}"));
        self.on_stream_start.clone()
    }
    fn stream_stop(&mut self, _id: &str, reason: &str) {
        self.log.push(format!("stream_stop {reason}"));
    }
    fn stream_error(&mut self, _id: &str, error: &StreamError) -> ErrorAction {
        self.log.push(format!("stream_error {error}"));
        self.on_error
            .clone()
            .unwrap_or(ErrorAction::Stop("error".into()))
    }
    fn stats(&mut self, stats: &ReceiveStats) -> Option<QualityAdjustment> {
        self.log.push("stats".into());
        self.stats_seen.push(stats.packets_received);
        (stats.loss_rate_percent() > 5.0).then_some(QualityAdjustment::SetCodec(Codec::Pcma))
    }
    fn play_complete(&mut self, path: &Path) -> Vec<MediaAction> {
        self.log.push(format!(
            "play_complete {}",
            path.file_name().unwrap().to_string_lossy()
        ));
        self.on_play_complete.pop_front().unwrap_or_default()
    }
    fn media_request(&mut self, request: &str) -> Result<Vec<MediaAction>, String> {
        self.log.push(format!("media_request {request}"));
        match request {
            "mute" => Ok(vec![MediaAction::Pause]),
            "unmute" => Ok(vec![MediaAction::Resume]),
            _ => Err("unknown".into()),
        }
    }
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::new(StateId(3), NodeId::from_u64(1));
    c.supported = vec![Codec::Pcmu, Codec::Pcma];
    c.stats_interval = Duration::from_millis(500);
    c
}

/// Runs the session's timers up to `to` (inclusive), returning the updates sent, each
/// with the time it was sent.
fn run<H: MediaHandler>(s: &mut MediaSession<H>, to: Time) -> Vec<(Time, elara_core::StateUpdate)> {
    let mut sent = Vec::new();
    while let Some(t) = s.poll_timeout().filter(|&t| t <= to) {
        s.handle_timeout(t);
        while let Some(u) = s.poll_transmit() {
            sent.push((t, u));
        }
    }
    sent
}

fn ms(v: u64) -> Time {
    Time::from_millis(v)
}

#[test]
fn callbacks_in_order_and_actions_take_effect() {
    let handler = Recorder {
        prefer: vec![Codec::Opus, Codec::Pcmu],
        on_stream_start: vec![MediaAction::play(sample("speech-8k.wav"))],
        on_play_complete: VecDeque::from([vec![MediaAction::play(sample("speech.opus"))]]),
        ..Recorder::default()
    };
    let mut s = MediaSession::new("call-1", config(), handler).unwrap();
    assert_eq!(s.state(), SessionState::Idle);
    s.start(ms(0)).unwrap();
    let offer = SessionDescription {
        codecs: vec![Codec::Pcma, Codec::Pcmu],
        direction: Direction::Bidirectional,
    };
    let answer = s.receive_offer(ms(0), offer).unwrap();
    assert_eq!(answer.codecs, [Codec::Pcmu]);
    assert_eq!(s.state(), SessionState::Ready);
    s.start_stream(ms(0)).unwrap();
    assert_eq!(s.state(), SessionState::Active);
    assert!(s.is_playing());

    // 0..1 s: PCMU frames of the WAV, every 20 ms, one per update.
    let first = run(&mut s, ms(1000));
    let media: Vec<_> = first
        .iter()
        .filter(|(_, u)| u.kind == UpdateKind::Audio)
        .collect();
    assert_eq!(media.len(), 51); // frames due at 0, 20, ..., 1000 ms
    for (at, u) in &media {
        assert_eq!(*at, u.timestamp, "sent when due");
        assert_eq!(u.payload.len(), 160);
    }
    // The payload is the μ-law encoding of the file's samples.
    let pcm = WavReader::new(std::fs::File::open(sample("speech-8k.wav")).unwrap(), 20)
        .unwrap()
        .read_all(1 << 20)
        .unwrap();
    let mut ulaw = Vec::new();
    g711::encode_ulaw(&pcm[..160 * 51], &mut ulaw);
    let sent: Vec<u8> = media.iter().flat_map(|(_, u)| u.payload.to_vec()).collect();
    assert_eq!(sent, ulaw);

    // Mute via a custom request at 1010 ms: nothing is sent until unmuted at 2010 ms.
    s.request(ms(1010), "mute").unwrap();
    assert!(!s.is_playing());
    assert!(
        run(&mut s, ms(2000))
            .iter()
            .all(|(_, u)| u.kind != UpdateKind::Audio)
    );
    s.request(ms(2010), "unmute").unwrap();
    // Switch to A-law: the next frame (media time 1020 ms, due at 2020 ms) is A-law.
    s.perform(ms(2010), MediaAction::SetCodec(Codec::Pcma));
    let after = run(&mut s, ms(2020));
    let (at, u) = after
        .iter()
        .find(|(_, u)| u.kind == UpdateKind::Audio)
        .unwrap();
    assert_eq!((*at, u.timestamp), (ms(2020), ms(1020)));
    let mut alaw = Vec::new();
    g711::encode_alaw(&pcm[160 * 51..160 * 52], &mut alaw);
    assert_eq!(u.payload.to_vec(), alaw);
    assert!(s.request(ms(2020), "dance").is_err());
    // Receivers learn the switch from a header update that precedes the A-law frame.
    let mut d = elara_media::Depacketizer::new(StateId(3));
    let mut codecs = Vec::new();
    for (at, u) in first.iter().chain(&after) {
        d.push(u.clone(), *at);
        while let Some(x) = d.poll(*at) {
            if let elara_media::Delivery::Header(h) = x {
                codecs.push(h.codec);
            }
        }
    }
    assert_eq!(codecs, [Codec::Pcmu, Codec::Pcma]);

    // The rest of the 3 s file plays until its last frame (media 2980 ms) at 3980 ms; then play_complete returns a Play of an
    // Opus file, which cannot be sent as PCMA: stream_error -> Stop -> the session ends.
    let rest = run(&mut s, ms(10_000));
    let last_audio = rest
        .iter()
        .filter(|(_, u)| u.kind == UpdateKind::Audio)
        .last()
        .unwrap();
    assert_eq!(last_audio.1.timestamp, ms(2980));
    assert_eq!(s.state(), SessionState::Closed);
    // Sequence numbers run on without gaps across everything sent.
    let seqs: Vec<u64> = first
        .iter()
        .chain(&after)
        .chain(&rest)
        .map(|(_, u)| u.seq)
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    // Group ids never go back (a relay keeps the newest group).
    let groups: Vec<u64> = first
        .iter()
        .chain(&after)
        .chain(&rest)
        .map(|(_, u)| u.group.0)
        .collect();
    assert!(groups.windows(2).all(|w| w[0] <= w[1]));

    let log = &s.handler().log;
    let stats_calls = log.iter().filter(|l| *l == "stats").count();
    // Statistics every 500 ms while active: 0.5, 1.0, ..., 3.5 s.
    assert_eq!(stats_calls, 7);
    let non_stats: Vec<&str> = log
        .iter()
        .filter(|l| *l != "stats")
        .map(|l| l.as_str())
        .collect();
    assert_eq!(
        non_stats,
        [
            "init",
            "session_start call-1",
            "offer Inbound [Pcma, Pcmu]",
            "codec_negotiation [Pcma, Pcmu] [Pcmu, Pcma]",
            "answer Outbound [Pcmu]",
            "negotiation_complete pcmu",
            "stream_start Bidirectional",
            "media_request mute",
            "media_request unmute",
            "media_request dance",
            "play_complete speech-8k.wav",
            "stream_error cannot send opus as pcma",
            "stream_stop error",
            "session_stop error",
        ]
    );
    let mut events = Vec::new();
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&SessionEvent::Paused));
    assert!(events.contains(&SessionEvent::Resumed));
    assert!(events.contains(&SessionEvent::PlayComplete(sample("speech-8k.wav"))));
    assert_eq!(
        events.last(),
        Some(&SessionEvent::StateChanged {
            from: SessionState::Terminating,
            to: SessionState::Closed
        })
    );
}

#[test]
fn stats_adjustment_and_stop_action() {
    let handler = Recorder {
        prefer: vec![Codec::Pcmu],
        on_stream_start: vec![MediaAction::play(sample("speech-8k.wav"))],
        ..Recorder::default()
    };
    let mut s = MediaSession::new("call-2", config(), handler).unwrap();
    s.create_offer(ms(0)).unwrap();
    let codec = s
        .receive_answer(
            ms(0),
            SessionDescription {
                codecs: vec![Codec::Pcmu],
                direction: Direction::Inbound,
            },
        )
        .unwrap();
    assert_eq!(codec, Codec::Pcmu);
    s.start_stream(ms(0)).unwrap();
    s.record_stats(ReceiveStats {
        packets_received: 90,
        packets_expected: 100,
        packets_lost: 10,
        ..Default::default()
    });
    run(&mut s, ms(500));
    assert_eq!(s.codec(), Some(Codec::Pcma), "adjustment applied");
    assert_eq!(s.handler().stats_seen, [90]);
    s.perform(ms(600), MediaAction::Stop);
    assert!(!s.is_playing());
    assert!(
        run(&mut s, ms(2000))
            .iter()
            .all(|(_, u)| u.kind != UpdateKind::Audio)
    );
    s.stop(ms(2000), "hangup");
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(s.handler().log.last().unwrap(), "session_stop hangup");
    assert!(s.handler().log.contains(&"stream_stop hangup".to_string()));
}

#[test]
fn no_common_codec_and_rejected_offer_terminate() {
    let handler = Recorder {
        prefer: vec![Codec::Pcmu],
        ..Recorder::default()
    };
    let mut s = MediaSession::new("call-3", config(), handler).unwrap();
    s.create_offer(ms(0)).unwrap();
    let err = s
        .receive_answer(
            ms(0),
            SessionDescription {
                codecs: vec![Codec::Opus],
                direction: Direction::Inbound,
            },
        )
        .unwrap_err();
    assert_eq!(err, SessionError::NoCommonCodec);
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(
        s.handler().log,
        [
            "init",
            "offer Outbound [Pcmu, Pcma]",
            "answer Inbound [Opus]",
            "codec_negotiation [Opus] [Pcmu, Pcma]",
            "session_stop no common codec",
        ]
    );

    let handler = Recorder {
        reject_offer: true,
        ..Recorder::default()
    };
    let mut s = MediaSession::new("call-4", config(), handler).unwrap();
    let offer = SessionDescription {
        codecs: vec![Codec::Pcmu],
        direction: Direction::Outbound,
    };
    assert_eq!(
        s.receive_offer(ms(0), offer),
        Err(SessionError::Rejected("busy".into()))
    );
    assert_eq!(s.state(), SessionState::Closed);
    assert!(matches!(
        s.start_stream(ms(0)),
        Err(SessionError::WrongState { .. })
    ));
}

#[test]
fn retry_replays_a_failed_file_and_continue_ignores() {
    let handler = Recorder {
        prefer: vec![Codec::Pcmu],
        on_stream_start: vec![MediaAction::play("/nonexistent/file.wav")],
        on_error: Some(ErrorAction::Continue),
        ..Recorder::default()
    };
    let mut s = MediaSession::new("call-5", config(), handler).unwrap();
    s.receive_offer(
        ms(0),
        SessionDescription {
            codecs: vec![Codec::Pcmu],
            direction: Direction::Inbound,
        },
    )
    .unwrap();
    s.start_stream(ms(0)).unwrap();
    assert_eq!(
        s.state(),
        SessionState::Active,
        "continue keeps the session"
    );
    assert!(!s.is_playing());
    assert!(
        s.handler()
            .log
            .iter()
            .any(|l| l.starts_with("stream_error media file"))
    );
    s.perform(ms(0), MediaAction::play(sample("speech-8k.wav")));
    let before = run(&mut s, ms(100));
    s.report_error(ms(100), StreamError::Transport("link reset".into()));
    assert!(s.is_playing(), "continue keeps playing");
    // Now retry: the file starts over, on a timeline that runs on.
    s.handler_mut().on_error = Some(ErrorAction::Retry);
    s.report_error(ms(110), StreamError::Transport("link reset".into()));
    let after = run(&mut s, ms(110));
    assert_eq!(before.len(), 7, "header and frames 0..=100 ms");
    assert_eq!(after.len(), 2, "header and first frame again");
    assert_eq!(
        after[1].1.payload, before[1].1.payload,
        "first frame of the file again"
    );
    assert_eq!(after[1].1.timestamp, ms(110));
    assert_eq!(after[0].1.seq, before[6].1.seq + 1);
    assert!(
        after[0].1.group > before[6].1.group,
        "a restarted file opens a newer group"
    );
}

fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(Codec::ALL.to_vec())
}

proptest! {
    #[test]
    fn resolved_codec_is_in_both_lists(
        offered in prop::collection::vec(codec(), 0..6),
        supported in prop::collection::vec(codec(), 0..6),
        pick in codec(),
        prefs in prop::collection::vec(codec(), 0..4),
        kind in 0..3u8,
    ) {
        let choice = match kind {
            0 => CodecChoice::One(pick),
            1 => CodecChoice::Preference(prefs),
            _ => CodecChoice::NoCommonCodec,
        };
        let common = offered.iter().any(|c| supported.contains(c));
        match resolve_codec(&offered, &supported, &choice) {
            Ok(c) => prop_assert!(offered.contains(&c) && supported.contains(&c)),
            Err(SessionError::NoCommonCodec) => prop_assert!(!common),
            Err(SessionError::InvalidCodecChoice(c)) => {
                prop_assert!(common);
                prop_assert!(!(offered.contains(&c) && supported.contains(&c)));
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn default_handler_negotiates_iff_lists_intersect(
        offered in prop::collection::vec(codec(), 0..6),
        supported in prop::collection::vec(codec(), 0..6),
    ) {
        struct Plain;
        impl MediaHandler for Plain {}
        let mut c = config();
        c.supported = supported.clone();
        let mut s = MediaSession::new("p", c, Plain).unwrap();
        let offer = SessionDescription { codecs: offered.clone(), direction: Direction::Inbound };
        let common = offered.iter().any(|c| supported.contains(c));
        match s.receive_offer(Time::ZERO, offer) {
            Ok(answer) => {
                prop_assert!(common);
                let c = answer.codecs[0];
                prop_assert!(offered.contains(&c) && supported.contains(&c));
                prop_assert_eq!(s.codec(), Some(c));
                prop_assert_eq!(s.state(), SessionState::Ready);
            }
            Err(e) => {
                prop_assert!(!common);
                prop_assert_eq!(e, SessionError::NoCommonCodec);
                prop_assert_eq!(s.state(), SessionState::Closed);
            }
        }
    }
}

#[test]
fn handler_can_modify_an_offer_and_an_answer() {
    struct Narrow;
    impl MediaHandler for Narrow {
        fn offer(&mut self, offer: &SessionDescription, _d: Direction) -> Negotiation {
            // Strip PCMU from what the peer offers.
            let codecs = offer
                .codecs
                .iter()
                .copied()
                .filter(|&c| c != Codec::Pcmu)
                .collect();
            Negotiation::Modify(SessionDescription {
                codecs,
                direction: offer.direction,
            })
        }
        fn answer(&mut self, answer: &SessionDescription, _d: Direction) -> Negotiation {
            Negotiation::Modify(SessionDescription {
                codecs: answer.codecs.clone(),
                direction: Direction::Inbound,
            })
        }
    }
    let mut s = MediaSession::new("m", config(), Narrow).unwrap();
    let offer = SessionDescription {
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        direction: Direction::Bidirectional,
    };
    let answer = s.receive_offer(ms(0), offer).unwrap();
    assert_eq!(
        answer,
        SessionDescription {
            codecs: vec![Codec::Pcma],
            direction: Direction::Inbound
        }
    );
    assert_eq!(s.codec(), Some(Codec::Pcma));
}

#[test]
fn a_played_opus_file_arrives_whole_at_a_receiver() {
    use elara_media::{Delivery, Depacketizer, MediaReader};
    struct Announcer;
    impl MediaHandler for Announcer {
        fn stream_start(&mut self, _id: &str, _d: Direction) -> Vec<MediaAction> {
            vec![MediaAction::play(sample("speech.opus"))]
        }
    }
    let mut c = config();
    c.supported = vec![Codec::Opus];
    let mut s = MediaSession::new("announce", c, Announcer).unwrap();
    s.receive_offer(
        ms(5_000),
        SessionDescription {
            codecs: vec![Codec::Opus],
            direction: Direction::Inbound,
        },
    )
    .unwrap();
    s.start_stream(ms(5_000)).unwrap();
    let mut d = Depacketizer::new(StateId(3));
    let mut got = Vec::new();
    for (at, u) in run(&mut s, ms(60_000)) {
        d.push(u, at);
        while let Some(x) = d.poll(at) {
            if let Delivery::Frame(f) = x {
                got.push((f.frame.pts, f.frame.data));
            }
        }
    }
    let original: Vec<_> = MediaReader::open(sample("speech.opus"))
        .unwrap()
        .map(|f| f.unwrap())
        .map(|f| (f.pts, f.data))
        .collect();
    assert_eq!(original.len(), 501);
    assert_eq!(got, original, "every packet, with its granule position");
    let mut events = Vec::new();
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&SessionEvent::PlayComplete(sample("speech.opus"))));
}
