//! The two scheduler additions the swarm node needs: repairs that bypass group bookkeeping
//! (but not the budget or the rate), and deltas that leave room for the next keyframe.

use std::time::Duration;

use bytes::Bytes;
use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
use elara_diffusion::scheduler::{LinkStats, PropagationScheduler, SchedulerConfig, Verdict};
use elara_diffusion::stats::DropReason;

fn video(seq: u64, gop: u64, at: Time, bytes: usize) -> StateUpdate {
    let u = StateUpdate::new(StateId(1), NodeId::from_u64(9), seq, at)
        .with_kind(UpdateKind::Video)
        .with_group(GroupId(seq / gop))
        .with_payload(Bytes::from(vec![0u8; bytes]));
    if seq.is_multiple_of(gop) {
        u.keyframe()
    } else {
        u
    }
}

#[test]
fn a_repair_of_an_older_group_is_sent_but_not_when_stale_or_too_slow() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let now = Time::from_secs(1);
    let a = s.add_link(now, NodeId::from_u64(1));
    let mut out = Vec::new();
    for seq in 0..6 {
        s.schedule(
            now,
            &video(seq, 3, now, 500),
            [(a, InterestLevel::High)],
            &mut out,
        );
    }
    let old_delta = video(1, 3, now, 500);
    s.schedule(now, &old_delta, [(a, InterestLevel::High)], &mut out);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::Superseded));
    let d = s.schedule_repair(now, &old_delta, a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Send);
    let late = now + Duration::from_secs(5);
    let d = s.schedule_repair(late, &old_delta, a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::Stale));
    let stalled = LinkStats {
        send_rate_estimate: 0,
        ..LinkStats::default()
    };
    s.link_feedback(now, a, stalled).unwrap();
    let d = s.schedule_repair(now, &video(2, 3, now, 50_000), a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::RateLimited));
}

#[test]
fn on_a_slow_link_deltas_leave_room_for_every_keyframe() {
    let mut s = PropagationScheduler::new(SchedulerConfig {
        default_latency_budget: Duration::from_secs(1),
        ..SchedulerConfig::default()
    });
    let t0 = Time::from_secs(1);
    let a = s.add_link(t0, NodeId::from_u64(1));
    let slow = LinkStats {
        send_rate_estimate: 7_500,
        ..LinkStats::default()
    };
    s.link_feedback(t0, a, slow).unwrap();
    let mut out = Vec::new();
    let (mut keys, mut deltas) = (0, 0);
    for seq in 0..150u64 {
        let at = t0 + Duration::from_millis(33 * seq);
        let u = video(seq, 15, at, if seq % 15 == 0 { 3_000 } else { 800 });
        s.schedule(at, &u, [(a, InterestLevel::High)], &mut out);
        if out[0].is_send() {
            if u.keyframe {
                keys += 1;
            } else {
                deltas += 1;
            }
        } else {
            assert!(!u.keyframe, "keyframe {seq} dropped: {:?}", out[0].verdict);
        }
    }
    assert_eq!(keys, 10);
    assert!(deltas < 140, "the slow link carried every delta");
}
