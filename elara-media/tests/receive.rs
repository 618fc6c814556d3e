//! The receive side against hand-computed sequences: loss, duplication, reordering,
//! fragmentation, keyframe gating, and the statistics that result.

use std::time::Duration;

use bytes::Bytes;
use elara_core::{Fragment, GroupId, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind};
use elara_media::jitter::{JitterConfig, MediaReceiver, Playout, ReceiverEvent};
use elara_media::{
    Codec, ContainerConfig, Delivery, Depacketizer, MediaFrame, Packetizer, PacketizerConfig,
    Timebase, TrackHeader,
};
use proptest::test_runner::TestCaseError;

const STATE: StateId = StateId(5);

fn video_header() -> TrackHeader {
    TrackHeader {
        codec: Codec::H264,
        timebase: Timebase::new(1, 30).unwrap(),
        container: ContainerConfig::AnnexB,
    }
}

/// Frames of `len` bytes, one every 1/30 s, a keyframe every `gop` frames.
fn video_frames(n: u64, gop: u64, len: usize) -> Vec<MediaFrame> {
    let tb = Timebase::new(1, 30).unwrap();
    (0..n)
        .map(|i| MediaFrame {
            pts: i,
            timestamp: tb.to_time(i),
            duration: 1,
            keyframe: i % gop == 0,
            data: Bytes::from(vec![i as u8; len]),
        })
        .collect()
}

fn packetize(frames: &[MediaFrame], max_payload: usize) -> Vec<StateUpdate> {
    let mut config = PacketizerConfig::new(STATE, NodeId::from_u64(1));
    config.max_payload = max_payload;
    let mut p = Packetizer::new(config, video_header());
    let mut out = Vec::new();
    for f in frames {
        p.push(f, &mut out).unwrap();
    }
    out
}

fn delivered_frames(d: &mut Depacketizer, now: Time) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(x) = d.poll(now) {
        if let Delivery::Frame(f) = x {
            out.push(f.frame.pts);
        }
    }
    out
}

#[test]
fn packetizer_labels_groups_keyframes_priorities_and_fragments() {
    let frames = video_frames(6, 3, 2500);
    let updates = packetize(&frames, 1000);
    // Per group: 1 header update + 3 frames x 3 fragments.
    assert_eq!(updates.len(), 2 * (1 + 9));
    let seqs: Vec<u64> = updates.iter().map(|u| u.seq).collect();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    let h = &updates[0];
    assert_eq!(
        (h.kind, h.priority, h.group),
        (UpdateKind::Control, Priority::Urgent, GroupId(0))
    );
    let key = &updates[1];
    assert!(key.keyframe);
    assert_eq!(
        (key.kind, key.priority),
        (UpdateKind::Video, Priority::High)
    );
    assert_eq!(key.fragment, Fragment { index: 0, count: 3 });
    assert_eq!(updates[3].payload.len(), 500);
    let delta = &updates[4];
    assert!(!delta.keyframe);
    assert_eq!(
        (delta.priority, delta.group),
        (Priority::Normal, GroupId(0))
    );
    assert_eq!(updates[11].group, GroupId(1));
    assert!(updates[11].keyframe);
    assert_eq!(updates[11].timestamp, Time::from_millis(100));
}

#[test]
fn audio_gets_one_frame_per_update_high_priority() {
    let header = TrackHeader {
        codec: Codec::Pcmu,
        timebase: Timebase::new(1, 8000).unwrap(),
        container: ContainerConfig::AnnexB,
    };
    let mut config = PacketizerConfig::new(STATE, NodeId::from_u64(1));
    config.audio_group_frames = 2;
    let mut p = Packetizer::new(config, header);
    let mut out = Vec::new();
    for i in 0..4u64 {
        let f = MediaFrame {
            pts: i * 160,
            timestamp: Time::from_millis(i * 20),
            duration: 160,
            keyframe: true,
            data: Bytes::from(vec![0xff; 160]),
        };
        p.push(&f, &mut out).unwrap();
    }
    // A 2000-byte audio frame stays whole even with 1200-byte payloads.
    p.push(
        &MediaFrame {
            pts: 640,
            timestamp: Time::from_millis(80),
            duration: 160,
            keyframe: true,
            data: Bytes::from(vec![0x55; 2000]),
        },
        &mut out,
    )
    .unwrap();
    let media: Vec<_> = out.iter().filter(|u| u.kind == UpdateKind::Audio).collect();
    assert_eq!(media.len(), 5);
    assert_eq!(media[4].payload.len(), 2000);
    assert!(
        media
            .iter()
            .all(|u| u.priority == Priority::High && u.fragment == Fragment::WHOLE)
    );
    let groups: Vec<u64> = media.iter().map(|u| u.group.0).collect();
    assert_eq!(groups, [0, 0, 1, 1, 2]);
    let keys: Vec<bool> = media.iter().map(|u| u.keyframe).collect();
    assert_eq!(keys, [true, false, true, false, true]);
}

#[test]
fn lost_fragment_drops_frame_and_deltas_until_next_keyframe() {
    // 9 frames, keyframe every 3, 2 fragments each; seqs: group g starts at 7g with the header.
    let updates = packetize(&video_frames(9, 3, 1500), 1000);
    assert_eq!(updates.len(), 3 * 7);
    let mut d = Depacketizer::new(STATE);
    let t = Time::from_millis(1);
    for u in updates.iter().cloned() {
        // Lose the second fragment of frame 1 (group 0: header 0, f0 1-2, f1 3-4, f2 5-6).
        if u.seq == 4 {
            continue;
        }
        d.push(u, t);
    }
    // Gap at 4 stays open within the window until flushed.
    let got = delivered_frames(&mut d, Time::MAX);
    // Frame 1 incomplete, frame 2 depends on it: dropped; group 1 and 2 are whole.
    assert_eq!(got, [0, 3, 4, 5, 6, 7, 8]);
    let s = d.stats();
    assert_eq!(
        (s.packets_received, s.packets_expected, s.packets_lost),
        (20, 21, 1)
    );
    assert_eq!(s.frames_dropped, 2);
}

#[test]
fn reordering_within_window_and_duplicates_are_harmless() {
    let updates = packetize(&video_frames(6, 3, 1500), 1000);
    let mut order: Vec<usize> = (0..updates.len()).collect();
    order.swap(2, 5);
    order.swap(8, 9);
    let mut d = Depacketizer::new(STATE);
    let mut got = Vec::new();
    for (i, &k) in order.iter().enumerate() {
        let now = Time::from_millis(i as u64);
        d.push(updates[k].clone(), now);
        if i % 4 == 0 {
            d.push(updates[k].clone(), now); // duplicate
        }
        got.extend(delivered_frames(&mut d, now));
    }
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    let s = d.stats();
    assert_eq!(s.packets_received, updates.len() as u64);
    assert_eq!(s.packets_duplicate, order.len().div_ceil(4) as u64);
    assert_eq!(s.packets_lost, 0);
}

#[test]
fn gap_is_given_up_after_the_reorder_delay_and_a_late_arrival_counts_as_received() {
    let updates = packetize(&video_frames(3, 3, 100), 1000);
    // seqs: 0 header, 1..=3 frames 0..=2
    let mut d = Depacketizer::new(STATE).with_reorder(64, Duration::from_millis(50));
    d.push(updates[0].clone(), Time::from_millis(0));
    d.push(updates[1].clone(), Time::from_millis(0));
    d.push(updates[3].clone(), Time::from_millis(10));
    assert_eq!(delivered_frames(&mut d, Time::from_millis(10)), [0]);
    assert_eq!(d.poll_timeout(), Some(Time::from_millis(60)));
    assert!(delivered_frames(&mut d, Time::from_millis(59)).is_empty());
    // At 60 ms seq 2 is given up; frame 2 is a delta whose predecessor is gone: dropped.
    assert!(delivered_frames(&mut d, Time::from_millis(60)).is_empty());
    d.push(updates[2].clone(), Time::from_millis(70));
    d.push(updates[2].clone(), Time::from_millis(71));
    let s = d.stats();
    assert_eq!(
        (s.packets_received, s.packets_lost, s.packets_duplicate),
        (4, 0, 1)
    );
    assert_eq!(s.frames_dropped, 1);
}

#[test]
fn receiver_plays_out_with_stats_on_a_hand_computed_audio_sequence() {
    // 20 ms PCMU frames, 1 update each (plus a header update first and an end update last).
    // Sent at their timestamps; network delay 30 ms except seq 3 (+45 ms, reordered after
    // seq 4); seq 5 lost; seq 6 duplicated.
    let header = TrackHeader {
        codec: Codec::Pcmu,
        timebase: Timebase::new(1, 8000).unwrap(),
        container: ContainerConfig::AnnexB,
    };
    let mut p = Packetizer::new(PacketizerConfig::new(STATE, NodeId::from_u64(1)), header);
    let mut ups = Vec::new();
    for i in 0..8u64 {
        let f = MediaFrame {
            pts: i * 160,
            timestamp: Time::from_millis(i * 20),
            duration: 160,
            keyframe: true,
            data: Bytes::from(vec![0x7f; 160]),
        };
        p.push(&f, &mut ups).unwrap();
    }
    p.finish(&mut ups);
    // seq 0 header (ts 0), seq 1+i = frame i (ts 20i), seq 9 end (ts 140).
    assert_eq!(ups.len(), 10);
    let config = JitterConfig {
        target_delay: Duration::from_millis(40),
        frame_interval: Some(Duration::from_millis(20)),
        ..JitterConfig::default()
    };
    let mut rx = MediaReceiver::new(STATE, config);
    let arrive = |seq: u64| Time::from_millis(ups[seq as usize].timestamp.as_millis() + 30);
    let schedule: Vec<(u64, Time)> = vec![
        (0, arrive(0)),
        (1, arrive(1)),
        (2, arrive(2)),
        (4, arrive(4)),
        (3, Time::from_millis(arrive(3).as_millis() + 45)),
        (6, arrive(6)),
        (6, arrive(6)),
        (7, arrive(7)),
        (8, arrive(8)),
        (9, arrive(9)),
    ];
    let mut log = Vec::new();
    let events = |rx: &mut MediaReceiver, now: Time, log: &mut Vec<String>| {
        while let Some(e) = rx.poll(now) {
            log.push(match e {
                ReceiverEvent::Header(_) => format!("{} header", now.as_millis()),
                ReceiverEvent::Play(Playout::Frame(f)) => {
                    format!("{} play {}", now.as_millis(), f.frame.timestamp.as_millis())
                }
                ReceiverEvent::Play(Playout::Conceal { timestamp, .. }) => {
                    format!("{} conceal {}", now.as_millis(), timestamp.as_millis())
                }
                other => format!("{other:?}"),
            });
        }
    };
    for (seq, at) in schedule {
        // Run every timer due before this arrival.
        while let Some(t) = rx.poll_timeout().filter(|&t| t <= at) {
            events(&mut rx, t, &mut log);
        }
        rx.push(ups[seq as usize].clone(), at);
        events(&mut rx, at, &mut log);
    }
    while let Some(t) = rx.poll_timeout().filter(|&t| t <= Time::from_millis(400)) {
        events(&mut rx, t, &mut log);
    }
    // Playout = first arrival (frame 0 at 30) + 40 + ts = 70 + ts.
    // Frame 2 (ts 40, seq 3) arrives at 115 > due 110: its slot is concealed at 110, and the
    // frame is late. Frame 4 (ts 80, seq 5) is lost: slot 80 is concealed at 150. The end is
    // reported once the buffer has played out, with no concealment after it.
    assert_eq!(
        log,
        [
            "30 header",
            "70 play 0",
            "90 play 20",
            "110 conceal 40",
            "130 play 60",
            "150 conceal 80",
            "170 play 100",
            "190 play 120",
            "210 play 140",
            "End { end_pts: 1280 }",
        ]
    );
    let s = rx.stats();
    assert_eq!(s.packets_received, 9); // seqs 0..=9 but 5
    assert_eq!(s.packets_expected, 10);
    assert_eq!(s.packets_lost, 1);
    assert_eq!(s.packets_duplicate, 1);
    assert!((s.loss_rate_percent() - 10.0).abs() < 1e-9);
    assert_eq!(
        (s.frames_delivered, s.frames_late, s.frames_concealed),
        (6, 1, 2)
    );
    // Transit is 30 ms for all but seq 3 (75 ms). Arrival order 0,1,2,4,3,6,7,8,9:
    // |D| = 0,0,0,45,45,0,0,0 (ms) after the first packet.
    let mut j = 0.0f64;
    for d in [0.0, 0.0, 0.0, 45_000.0, 45_000.0, 0.0, 0.0, 0.0] {
        j += (d - j) / 16.0;
    }
    assert!((s.jitter_us - j).abs() < 1e-6, "{} vs {}", s.jitter_us, j);
}

#[test]
fn hostile_fragment_counts_are_bounded() {
    // A first fragment claiming 65535 fragments of 1 MiB must not reserve 64 GiB, and frames
    // beyond the reassembly cap are dropped.
    let mut d = Depacketizer::new(STATE);
    let big = Bytes::from(vec![0u8; 1 << 20]);
    for i in 0..20u16 {
        let u = StateUpdate::new(STATE, NodeId::from_u64(1), u64::from(i), Time::ZERO)
            .with_kind(UpdateKind::Video)
            .with_fragment(Fragment {
                index: i,
                count: u16::MAX,
            })
            .with_payload(big.clone())
            .keyframe();
        d.push(u, Time::ZERO);
    }
    assert!(d.poll(Time::MAX).is_none());
    assert_eq!(d.stats().frames_dropped, 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Whatever the path does (drop, duplicate, delay), what comes out is a subsequence of what
    /// went in, byte for byte, in order, and every delta comes after its own group's keyframe
    /// with no frame of that group missing before it.
    #[test]
    fn depacketizer_emits_only_complete_decodable_frames_in_order(
        drops in proptest::collection::vec(proptest::bool::weighted(0.05), 200),
        dups in proptest::collection::vec(proptest::bool::weighted(0.05), 200),
        delays in proptest::collection::vec(0..40u64, 200),
        payload in 200..3000usize,
    ) {
        let frames = video_frames(40, 10, 2500);
        let updates = packetize(&frames, payload);
        let mut arrivals = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let k = i % 200;
            if drops[k] {
                continue;
            }
            let at = u.timestamp.as_millis() + delays[k];
            arrivals.push((at, i, u.clone()));
            if dups[k] {
                arrivals.push((at + 3, i, u.clone()));
            }
        }
        arrivals.sort_by_key(|(at, i, _)| (*at, *i));
        let mut d = Depacketizer::new(STATE).with_reorder(64, Duration::from_millis(30));
        let mut got = Vec::new();
        for (at, _, u) in arrivals {
            let now = Time::from_millis(at);
            d.push(u, now);
            while let Some(x) = d.poll(now) {
                if let Delivery::Frame(f) = x {
                    got.push(f);
                }
            }
        }
        while let Some(x) = d.poll(Time::MAX) {
            if let Delivery::Frame(f) = x {
                got.push(f);
            }
        }
        let mut last: Option<u64> = None;
        let tb = Timebase::new(1, 30).unwrap();
        for f in &got {
            // (`pts` is in microseconds until a header arrived; the timestamp always works.)
            let i = tb.to_ticks(f.frame.timestamp);
            let original = &frames[i as usize];
            proptest::prop_assert_eq!(&f.frame.data, &original.data);
            proptest::prop_assert_eq!(f.frame.keyframe, original.keyframe);
            proptest::prop_assert!(last.is_none_or(|l| i > l), "out of order");
            if !original.keyframe {
                // The previous frame of the same group was delivered just before it.
                proptest::prop_assert_eq!(last, Some(i - 1), "delta {} without its predecessor", i);
            }
            last = Some(i);
        }
        let s = d.stats();
        proptest::prop_assert_eq!(s.packets_lost, s.packets_expected - s.packets_received);
        // Nothing lost and nothing later than the reorder window: every frame comes out. (A
        // packet delayed past the window is given up, and its frame with it, by design.)
        if !drops.iter().any(|&x| x) && delays.iter().all(|&d| d < 30) {
            proptest::prop_assert_eq!(got.len(), frames.len());
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// The receiver's timers always make progress: polling at `poll_timeout` never leaves the
    /// same deadline in place, so a driver loop cannot spin.
    #[test]
    fn receiver_timers_always_progress(
        drops in proptest::collection::vec(proptest::bool::weighted(0.1), 128),
        delays in proptest::collection::vec(0..80u64, 128),
        target in 0..100u64,
        audio in proptest::bool::ANY,
    ) {
        let updates = if audio {
            let header = TrackHeader {
                codec: Codec::Pcmu,
                timebase: Timebase::new(1, 8000).unwrap(),
                container: ContainerConfig::AnnexB,
            };
            let mut p = Packetizer::new(PacketizerConfig::new(STATE, NodeId::from_u64(1)), header);
            let mut out = Vec::new();
            for i in 0..100u64 {
                let f = MediaFrame {
                    pts: i * 160,
                    timestamp: Time::from_millis(i * 20),
                    duration: 160,
                    keyframe: true,
                    data: Bytes::from(vec![1; 160]),
                };
                p.push(&f, &mut out).unwrap();
            }
            p.finish(&mut out);
            out
        } else {
            let mut p = Packetizer::new(PacketizerConfig::new(STATE, NodeId::from_u64(1)), video_header());
            let mut out = Vec::new();
            for f in video_frames(60, 15, 2000) {
                p.push(&f, &mut out).unwrap();
            }
            p.finish(&mut out);
            out
        };
        let mut arrivals: Vec<(u64, StateUpdate)> = updates
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drops[i % 128])
            .map(|(i, u)| (u.timestamp.as_millis() + delays[i % 128], u))
            .collect();
        arrivals.sort_by_key(|(at, u)| (*at, u.seq));
        let config = JitterConfig {
            target_delay: Duration::from_millis(target),
            ..JitterConfig::default()
        };
        let mut rx = MediaReceiver::new(STATE, config);
        let mut steps = 0u32;
        let mut drive = |rx: &mut MediaReceiver, until: Time| -> Result<(), TestCaseError> {
            while let Some(t) = rx.poll_timeout().filter(|&t| t <= until) {
                while rx.poll(t).is_some() {}
                let again = rx.poll_timeout();
                proptest::prop_assert!(again != Some(t), "timer at {:?} made no progress", t);
                steps += 1;
                proptest::prop_assert!(steps < 100_000);
            }
            Ok(())
        };
        for (at, u) in arrivals {
            let now = Time::from_millis(at);
            drive(&mut rx, now)?;
            rx.push(u, now);
            while rx.poll(now).is_some() {}
        }
        drive(&mut rx, Time::from_secs(3600))?;
    }
}
