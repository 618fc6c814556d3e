//! Repairs and the scheduler's own quality cuts: once the scheduler skipped a delta for a
//! target (the rest of that group cannot decode there), a pull for the group's deltas is
//! refused instead of re-sending what the cut was meant to save.

use bytes::Bytes;
use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
use elara_diffusion::DropReason;
use elara_diffusion::scheduler::{LinkStats, PropagationScheduler, SchedulerConfig, Verdict};

fn video(seq: u64, group: u64, key: bool, bytes: usize) -> StateUpdate {
    // Group g is published at (g - 1) * 400 ms.
    let at = Time::from_millis((group - 1) * 400);
    let u = StateUpdate::new(StateId(1), NodeId::from_u64(9), seq, at)
        .with_kind(UpdateKind::Video)
        .with_group(GroupId(group))
        .with_payload(Bytes::from(vec![0u8; bytes]));
    if key { u.keyframe() } else { u }
}

#[test]
fn a_cut_group_is_not_repaired_but_the_next_group_is() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let now = Time::ZERO;
    let a = s.add_link(now, NodeId::from_u64(1));
    let stats = LinkStats {
        send_rate_estimate: 20_000,
        ..LinkStats::default()
    };
    s.link_feedback(now, a, stats).unwrap();
    let target = [(a, InterestLevel::Critical)];
    let mut out = Vec::new();
    s.schedule(now, &video(0, 1, true, 5000), target, &mut out);
    assert!(out[0].is_send());
    let mut cut = None;
    for seq in 1..=6 {
        s.schedule(now, &video(seq, 1, false, 1000), target, &mut out);
        if out[0].verdict == Verdict::Drop(DropReason::FramesSkipped) {
            cut = Some(seq);
            break;
        }
    }
    let cut = cut.expect("the slow link makes the scheduler cut group 1");
    // The target pulls the skipped delta: refused, the group stays cut.
    let d = s.schedule_repair(now, &video(cut, 1, false, 1000), a, InterestLevel::Critical);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::FramesSkipped));
    // The next group starts afresh, and a hole in it is repaired.
    let later = Time::from_millis(400);
    s.schedule(later, &video(20, 2, true, 1000), target, &mut out);
    assert!(out[0].is_send(), "{:?}", out[0]);
    let d = s.schedule_repair(later, &video(21, 2, false, 100), a, InterestLevel::Critical);
    assert_eq!(d.verdict, Verdict::Send, "{d:?}");
}
