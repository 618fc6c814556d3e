//! Group mode: an 8-participant call, muting another participant and oneself.

mod swarm_common;

use std::time::Duration;

use bytes::Bytes;
use elara_core::{
    GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, Time, TrackInfo, UpdateKind,
};
use elara_diffusion::harness::{Harness, LinkProfile};
use elara_diffusion::swarm::{Event, PublishError};
use swarm_common::*;

const CALL: u64 = 99;

fn audio(p: u64) -> StateId {
    StateId(p * 10 + 1)
}
fn video(p: u64) -> StateId {
    StateId(p * 10 + 2)
}

fn tracks(p: u64) -> Vec<TrackInfo> {
    vec![
        TrackInfo {
            state: audio(p),
            kind: UpdateKind::Audio,
            codec: 1,
            priority: Priority::High,
        },
        TrackInfo {
            state: video(p),
            kind: UpdateKind::Video,
            codec: 2,
            priority: Priority::Normal,
        },
    ]
}

/// One tick: every participant publishes an audio frame and a video frame.
fn tick(h: &mut Harness, parts: &[u64], seq: u64) {
    let now = h.now();
    for &p in parts {
        let id = NodeId::from_u64(p);
        let a = StateUpdate::new(audio(p), id, seq, now)
            .with_kind(UpdateKind::Audio)
            .with_priority(Priority::High)
            .with_payload(Bytes::from_static(&[1; 160]));
        let mut v = StateUpdate::new(video(p), id, seq, now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(seq / 10))
            .with_payload(Bytes::from(vec![
                2;
                if seq.is_multiple_of(10) {
                    2_000
                } else {
                    600
                }
            ]));
        if seq.is_multiple_of(10) {
            v = v.keyframe();
        }
        match h.node_mut(id).publish(now, a) {
            Ok(()) | Err(PublishError::Muted(_)) => {}
            Err(e) => panic!("{e}"),
        }
        h.node_mut(id).publish(now, v).unwrap();
    }
    h.run_for(Duration::from_millis(33));
}

fn seqs(h: &Harness, who: u64, state: StateId) -> Vec<u64> {
    delivered(h, NodeId::from_u64(who), state)
        .iter()
        .map(|g| g.seq)
        .collect()
}

#[test]
fn eight_participants_hear_and_see_everyone_and_mutes_stop_flows_within_one_rtt() {
    let parts: Vec<u64> = (1..=8).collect();
    let ids: Vec<NodeId> = parts.iter().map(|&p| NodeId::from_u64(p)).collect();
    let mut h = Harness::new(8, LinkProfile::wan());
    for &p in &parts {
        h.add_node(config(p, 8, None, 1000));
        h.node_mut(NodeId::from_u64(p))
            .join_call(Time::ZERO, CALL, &ids, tracks(p));
    }
    h.run_for(Duration::from_millis(500));
    for &p in &parts {
        let offered = h
            .events(NodeId::from_u64(p))
            .iter()
            .filter(|e| matches!(e, Event::TrackOffered { .. }))
            .count();
        assert_eq!(offered, 14, "participant {p} was offered {offered} tracks");
        assert_eq!(h.node(NodeId::from_u64(p)).connected_peers().count(), 7);
        // One connection per pair, dialled by the lower id.
        let dialled: Vec<u64> = h
            .events(NodeId::from_u64(p))
            .iter()
            .filter_map(|e| match e {
                Event::Connect { peer, .. } => Some(peer.prefix_u64()),
                _ => None,
            })
            .collect();
        assert_eq!(
            dialled,
            (p + 1..=8).collect::<Vec<_>>(),
            "participant {p} dialled"
        );
    }
    for seq in 0..30 {
        tick(&mut h, &parts, seq);
    }
    h.run_for(Duration::from_millis(200));
    for &r in &parts {
        for &p in parts.iter().filter(|&&p| p != r) {
            assert_eq!(
                seqs(&h, r, audio(p)),
                (0..30).collect::<Vec<_>>(),
                "{r} <- audio {p}"
            );
            assert_eq!(
                seqs(&h, r, video(p)),
                (0..30).collect::<Vec<_>>(),
                "{r} <- video {p}"
            );
        }
    }

    // Participant 3 mutes participant 5's video; participant 6 mutes its own audio.
    h.record_sends(true);
    let t_mute = h.now();
    h.node_mut(NodeId::from_u64(3))
        .declare_interest(t_mute, video(5), InterestLevel::None);
    h.node_mut(NodeId::from_u64(6))
        .set_muted(t_mute, audio(6), true);
    for seq in 30..60 {
        tick(&mut h, &parts, seq);
    }
    h.run_for(Duration::from_millis(200));
    let rtt = Duration::from_millis(40);
    let (p5, p3, p6) = (
        NodeId::from_u64(5),
        NodeId::from_u64(3),
        NodeId::from_u64(6),
    );
    let late_video: Vec<_> = h
        .sends()
        .iter()
        .filter(|s| s.from == p5 && s.to == p3 && s.state == video(5) && s.at > t_mute + rtt)
        .collect();
    assert!(
        late_video.is_empty(),
        "5 kept sending its video to 3: {late_video:?}"
    );
    let any_audio_6 = h
        .sends()
        .iter()
        .any(|s| s.from == p6 && s.state == audio(6));
    assert!(!any_audio_6, "6 sent its muted audio");
    // Everything else keeps flowing.
    assert_eq!(seqs(&h, 3, audio(5)), (0..60).collect::<Vec<_>>());
    assert_eq!(seqs(&h, 4, video(5)), (0..60).collect::<Vec<_>>());
    assert!(
        h.sends()
            .iter()
            .any(|s| s.from == p5 && s.to == p3 && s.state == audio(5))
    );

    // Unmuting brings the video back from the next decodable point.
    let t_unmute = h.now();
    h.node_mut(p3)
        .declare_interest(t_unmute, video(5), InterestLevel::High);
    for seq in 60..80 {
        tick(&mut h, &parts, seq);
    }
    h.run_for(Duration::from_millis(200));
    let back = delivered(&h, p3, video(5));
    assert!(
        back.iter().any(|g| g.seq >= 70),
        "video 5 did not come back to 3"
    );
    assert_decodable(&back, p3);
}
