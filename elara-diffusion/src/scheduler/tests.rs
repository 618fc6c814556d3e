use super::*;
use bytes::Bytes;
use elara_core::{Fragment, GroupId};

const S: StateId = StateId(1);

fn n(i: u64) -> NodeId {
    NodeId::from_u64(i)
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn video(seq: u64, group: u64, at: Time, key: bool) -> StateUpdate {
    let u = StateUpdate::new(S, n(0), seq, at)
        .with_kind(UpdateKind::Video)
        .with_group(GroupId(group))
        .with_payload(Bytes::from(vec![0u8; 1000]));
    if key { u.keyframe() } else { u }
}

fn rate(bytes_per_sec: u64) -> LinkStats {
    LinkStats {
        send_rate_estimate: bytes_per_sec,
        ..LinkStats::default()
    }
}

/// A scheduler with one link of 10 kB/s whose bucket holds 1 kB: one 1-kB update fills it.
fn slow_link() -> (PropagationScheduler, LinkId) {
    let cfg = SchedulerConfig {
        min_burst_bytes: 1000,
        ..SchedulerConfig::default()
    };
    let mut s = PropagationScheduler::new(cfg);
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(10_000)).unwrap();
    (s, a)
}

fn verdicts(out: &[Decision]) -> Vec<Verdict> {
    out.iter().map(|d| d.verdict).collect()
}

#[test]
fn decisions_are_ordered_by_interest_and_cover_every_target() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let links: Vec<_> = (1..=6).map(|i| s.add_link(t(0), n(i))).collect();
    let levels = [
        InterestLevel::Low,
        InterestLevel::High,
        InterestLevel::None,
        InterestLevel::Medium,
        InterestLevel::Critical,
        InterestLevel::Low,
    ];
    let targets: Vec<_> = links.iter().copied().zip(levels).collect();
    let mut out = Vec::new();
    let sum = s.schedule(t(0), &video(0, 1, t(0), true), targets, &mut out);
    assert_eq!(out.len(), 5, "the None target gets no decision");
    assert_eq!(sum.send, 5);
    let got: Vec<_> = out.iter().map(|d| d.interest).collect();
    use InterestLevel::*;
    assert_eq!(got, vec![Critical, High, Medium, Low, Low]);
    assert!(out.iter().all(|d| d.priority == Priority::High));
    assert!(
        out.iter()
            .all(|d| d.quality == Quality::Full && d.delay_micros == 0)
    );
}

#[test]
fn priority_puts_control_and_audio_before_deltas() {
    let base = StateUpdate::new(S, n(0), 0, t(0));
    assert_eq!(
        priority_of(&base.clone().with_kind(UpdateKind::Control)),
        Priority::Urgent
    );
    assert_eq!(
        priority_of(&base.clone().with_kind(UpdateKind::Audio)),
        Priority::High
    );
    assert_eq!(priority_of(&video(0, 0, t(0), true)), Priority::High);
    assert_eq!(priority_of(&video(0, 0, t(0), false)), Priority::Normal);
    assert_eq!(
        priority_of(&video(0, 0, t(0), false).with_priority(Priority::Urgent)),
        Priority::Urgent
    );
}

#[test]
fn pacing_delay_grows_and_rate_limit_drops_what_cannot_arrive_in_budget() {
    let (mut s, a) = slow_link();
    let mut out = Vec::new();
    let mut last_delay = 0;
    let mut seen_rate_limit = false;
    for seq in 0..10 {
        // Audio: independent, so only the budget (500 ms) limits it.
        let u = StateUpdate::new(S, n(0), seq, t(0))
            .with_kind(UpdateKind::Audio)
            .with_payload(Bytes::from(vec![0u8; 1000]));
        s.schedule(t(0), &u, [(a, InterestLevel::High)], &mut out);
        match out[0].verdict {
            Verdict::Send => {
                assert!(out[0].delay_micros >= last_delay);
                last_delay = out[0].delay_micros;
                assert!(out[0].delay() <= Duration::from_millis(500));
            }
            Verdict::Drop(r) => {
                assert_eq!(r, DropReason::RateLimited);
                seen_rate_limit = true;
            }
        }
    }
    assert!(last_delay > 0);
    assert!(seen_rate_limit);
    // Time passes: the bucket refills and audio flows again without delay.
    let u = StateUpdate::new(S, n(0), 99, t(2_000)).with_kind(UpdateKind::Audio);
    s.schedule(t(2_000), &u, [(a, InterestLevel::High)], &mut out);
    assert_eq!(out[0].verdict, Verdict::Send);
    assert_eq!(out[0].delay_micros, 0);
}

#[test]
fn lower_interest_steps_down_first_on_a_shared_uplink() {
    let cfg = SchedulerConfig {
        uplink_rate: Some(40_000),
        min_burst_bytes: 2_000,
        burst: Duration::from_millis(10),
        ..SchedulerConfig::default()
    };
    let mut s = PropagationScheduler::new(cfg);
    let hi = s.add_link(t(0), n(1));
    let lo = s.add_link(t(0), n(2));
    let targets = [(hi, InterestLevel::High), (lo, InterestLevel::Low)];
    let mut out = Vec::new();
    let mut hi_sent = 0;
    let mut lo_sent = 0;
    let mut lo_quality = Quality::Full;
    // 30 frames/s of 1 kB to two targets = 60 kB/s over a 40 kB/s uplink.
    for f in 0..60u64 {
        let now = t(f * 33);
        let u = video(f, 1 + f / 30, now, f % 30 == 0);
        s.schedule(now, &u, targets, &mut out);
        for d in &out {
            if d.is_send() {
                if d.link == hi {
                    hi_sent += 1;
                } else {
                    lo_sent += 1;
                }
            }
            if d.link == lo {
                lo_quality = lo_quality.max(d.quality);
            }
        }
    }
    assert!(hi_sent > lo_sent, "high {hi_sent} low {lo_sent}");
    assert!(
        hi_sent >= 55,
        "high interest keeps (nearly) everything: {hi_sent}"
    );
    assert!(lo_quality >= Quality::ReducedFrames);
    assert!(s.stats().dropped(DropReason::FramesSkipped) > 0);
    // Both got both keyframes: a viewer is degraded, never cut off.
    let keys = s.stats().dropped(DropReason::RateLimited);
    assert_eq!(keys, 0);
}

#[test]
fn enhancement_layers_go_before_deltas() {
    let cfg = SchedulerConfig {
        min_burst_bytes: 1_000,
        burst: Duration::from_millis(1),
        ..SchedulerConfig::default()
    };
    let mut s = PropagationScheduler::new(cfg);
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(5_000)).unwrap();
    let mut out = Vec::new();
    s.schedule(
        t(0),
        &video(0, 1, t(0), true),
        [(a, InterestLevel::Medium)],
        &mut out,
    );
    assert!(out[0].is_send());
    // A base-layer delta then its enhancement layer, with the bucket in debt.
    let base = video(1, 1, t(0), false);
    s.schedule(t(0), &base, [(a, InterestLevel::Medium)], &mut out);
    let first = out[0];
    let enh = video(1, 1, t(0), false).with_layer(1);
    s.schedule(t(0), &enh, [(a, InterestLevel::Medium)], &mut out);
    assert!(first.is_send(), "{first:?}");
    assert_eq!(first.quality, Quality::BaseLayer);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::LayerSkipped));
    // Once a layer is cut, the rest of the group's enhancement is cut too, even with room.
    let later = video(2, 1, t(400), false).with_layer(1);
    s.schedule(t(400), &later, [(a, InterestLevel::Medium)], &mut out);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::LayerSkipped));
    // The base layer still flows.
    s.schedule(
        t(400),
        &video(2, 1, t(400), false),
        [(a, InterestLevel::Medium)],
        &mut out,
    );
    assert!(out[0].is_send());
}

#[test]
fn never_a_delta_without_its_keyframe() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    let mut out = Vec::new();
    // Stalled link with a full transport queue: the keyframe cannot go.
    let stalled = LinkStats {
        queued_bytes: 10_000,
        ..rate(0)
    };
    s.link_feedback(t(0), a, stalled).unwrap();
    s.schedule(
        t(0),
        &video(0, 1, t(0), true),
        [(a, InterestLevel::Critical)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::RateLimited));
    // The link recovers, but the group's deltas are useless to this target.
    s.link_feedback(t(10), a, rate(10_000_000)).unwrap();
    for seq in 1..5 {
        s.schedule(
            t(10),
            &video(seq, 1, t(10), false),
            [(a, InterestLevel::Critical)],
            &mut out,
        );
        assert_eq!(out[0].verdict, Verdict::Drop(DropReason::MissingKeyframe));
    }
    // The next group starts with a keyframe, and its deltas flow.
    s.schedule(
        t(20),
        &video(5, 2, t(20), true),
        [(a, InterestLevel::Critical)],
        &mut out,
    );
    assert!(out[0].is_send());
    s.schedule(
        t(20),
        &video(6, 2, t(20), false),
        [(a, InterestLevel::Critical)],
        &mut out,
    );
    assert!(out[0].is_send());
    // A late delta of group 1 is superseded.
    s.schedule(
        t(21),
        &video(4, 1, t(21), false),
        [(a, InterestLevel::Critical)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::Superseded));
    // A link that joins mid-group gets nothing until the next keyframe.
    let b = s.add_link(t(22), n(2));
    s.schedule(
        t(22),
        &video(7, 2, t(22), false),
        [(b, InterestLevel::High)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::MissingKeyframe));
}

#[test]
fn a_lost_keyframe_fragment_blocks_the_group() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    let mut out = Vec::new();
    let frag = |i| video(0, 1, t(0), true).with_fragment(Fragment { index: i, count: 2 });
    s.schedule(t(0), &frag(0), [(a, InterestLevel::High)], &mut out);
    assert!(out[0].is_send());
    s.on_send_failed(t(0), a, &frag(0)).unwrap();
    // Fragment 1 is useless without fragment 0, and so are the deltas.
    s.schedule(t(0), &frag(1), [(a, InterestLevel::High)], &mut out);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::MissingKeyframe));
    s.schedule(
        t(1),
        &video(1, 1, t(1), false),
        [(a, InterestLevel::High)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::MissingKeyframe));
    assert_eq!(s.stats().dropped(DropReason::SendFailed), 1);
}

#[test]
fn a_keyframe_admitted_by_its_first_fragment_goes_whole_however_late() {
    // 10 kB/s and a 500-ms budget: the first 1-kB fragment fits, the next ones would arrive
    // past the budget. Part of a keyframe decodes nothing, so once the first fragment went
    // the rest go too (late); a delta past the budget is still dropped.
    let (mut s, a) = slow_link();
    let mut out = Vec::new();
    let frag = |i| {
        video(i, 1, t(0), true).with_fragment(Fragment {
            index: i as u16,
            count: 8,
        })
    };
    for i in 0..8 {
        s.schedule(t(0), &frag(i), [(a, InterestLevel::High)], &mut out);
        assert_eq!(out[0].verdict, Verdict::Send, "fragment {i}");
    }
    assert!(
        out[0].delay() > Duration::from_millis(500),
        "the last fragment was not past the budget: {:?}",
        out[0].delay()
    );
    s.schedule(
        t(0),
        &video(8, 1, t(0), false),
        [(a, InterestLevel::High)],
        &mut out,
    );
    assert!(!out[0].is_send(), "a delta past the budget was sent");
}

#[test]
fn stale_and_superseded_updates_are_dropped_not_queued() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let links: Vec<_> = (1..=3)
        .map(|i| (s.add_link(t(0), n(i)), InterestLevel::Medium))
        .collect();
    s.configure_state(
        S,
        StateConfig {
            latency_budget: Duration::from_millis(100),
        },
    )
    .unwrap();
    let mut out = Vec::new();
    // Produced at 0, scheduled at 150 ms: over the 100 ms budget.
    let sum = s.schedule(
        t(150),
        &video(0, 1, t(0), true),
        links.iter().copied(),
        &mut out,
    );
    assert_eq!(sum.dropped, 3);
    assert!(
        out.iter()
            .all(|d| d.verdict == Verdict::Drop(DropReason::Stale))
    );
    assert_eq!(s.stats().dropped(DropReason::Stale), 3);
    s.schedule(
        t(200),
        &video(1, 2, t(200), true),
        links.iter().copied(),
        &mut out,
    );
    assert!(out.iter().all(Decision::is_send));
    s.schedule(
        t(201),
        &video(0, 1, t(199), false),
        links.iter().copied(),
        &mut out,
    );
    assert!(
        out.iter()
            .all(|d| d.verdict == Verdict::Drop(DropReason::Superseded))
    );
    assert_eq!(s.stats().dropped(DropReason::Superseded), 3);
}

#[test]
fn feedback_sets_the_rate_and_queue_counts_as_debt() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(1_000_000)).unwrap();
    let info = s.link_info(t(0), a).unwrap();
    assert_eq!(info.rate, 1_000_000);
    assert_eq!(info.tokens, 100_000); // 100 ms burst
    let queued = LinkStats {
        queued_bytes: 150_000,
        ..rate(1_000_000)
    };
    s.link_feedback(t(0), a, queued).unwrap();
    assert_eq!(s.link_info(t(0), a).unwrap().tokens, -50_000);
    let mut out = Vec::new();
    let u = StateUpdate::new(S, n(0), 0, t(0)).with_payload(Bytes::from(vec![0u8; 1000]));
    s.schedule(t(0), &u, [(a, InterestLevel::High)], &mut out);
    assert!(out[0].is_send());
    // 50 kB of debt + the update at 1 MB/s: about 51 ms of pacing.
    let ms = out[0].delay().as_millis();
    assert!((50..=52).contains(&ms), "{ms}");
}

#[test]
fn zero_rate_link_drops_everything_until_feedback() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(0)).unwrap();
    let mut out = Vec::new();
    // Drain the burst left from the initial rate.
    for seq in 0..3 {
        let u = StateUpdate::new(S, n(0), seq, t(0)).with_payload(Bytes::from(vec![0u8; 100_000]));
        s.schedule(t(0), &u, [(a, InterestLevel::Critical)], &mut out);
    }
    assert_eq!(verdicts(&out), vec![Verdict::Drop(DropReason::RateLimited)]);
    s.link_feedback(t(1), a, rate(1_000_000)).unwrap();
    let u = StateUpdate::new(S, n(0), 9, t(1000)).with_payload(Bytes::from(vec![0u8; 100]));
    s.schedule(t(1000), &u, [(a, InterestLevel::Critical)], &mut out);
    assert!(out[0].is_send());
}

#[test]
fn bad_input_has_defined_results() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    assert_eq!(
        s.configure_state(
            S,
            StateConfig {
                latency_budget: Duration::ZERO
            }
        ),
        Err(SchedulerError::ZeroLatencyBudget)
    );
    let a = s.add_link(t(0), n(1));
    assert_eq!(
        s.add_link(t(0), n(1)),
        a,
        "adding a peer twice returns its link"
    );
    assert!(s.remove_link(a));
    assert!(!s.remove_link(a), "removing an absent link is a no-op");
    assert_eq!(
        s.link_feedback(t(0), a, rate(1)),
        Err(SchedulerError::UnknownLink(a))
    );
    assert_eq!(
        s.on_sent(t(0), a, &video(0, 1, t(0), true)),
        Err(SchedulerError::UnknownLink(a))
    );
    let mut out = Vec::new();
    s.schedule(
        t(0),
        &video(0, 1, t(0), true),
        [(a, InterestLevel::High)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::UnknownLink));
    // The slot is reused with a new generation; the stale handle stays refused.
    let b = s.add_link(t(0), n(2));
    assert_eq!(b.index(), a.index());
    assert_ne!(a, b);
    assert_eq!(s.peer(a), None);
    assert_eq!(s.peer(b), Some(n(2)));
    s.schedule(
        t(0),
        &video(1, 1, t(0), false),
        [(b, InterestLevel::High)],
        &mut out,
    );
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::MissingKeyframe));
}

#[test]
fn sends_are_counted_with_latency() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    let u = video(0, 1, t(0), true);
    let mut out = Vec::new();
    s.schedule(t(1), &u, [(a, InterestLevel::High)], &mut out);
    s.on_sent(t(21), a, &u).unwrap();
    let st = s.stats();
    assert_eq!(st.sent, 1);
    assert_eq!(st.scheduled, 1);
    assert_eq!(st.bytes_sent, u.wire_len() as u64);
    assert_eq!(st.latency.max(), Duration::from_millis(21));
    assert_eq!(
        s.link_info(t(0), a).unwrap().bytes_sent,
        u.wire_len() as u64
    );
}

#[test]
fn registered_targets_follow_interest_changes_and_link_removal() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let links: Vec<_> = (1..=4).map(|i| s.add_link(t(0), n(i))).collect();
    use InterestLevel::*;
    for (&l, level) in links.iter().zip([Low, High, Medium, Low]) {
        assert_eq!(s.set_target(S, l, level), Ok(InterestLevel::None));
    }
    assert_eq!(s.target(S, links[1]), High);
    let mut out = Vec::new();
    let sum = s.schedule_registered(t(0), &video(0, 1, t(0), true), &mut out);
    assert_eq!(sum.send, 4);
    let order: Vec<_> = out.iter().map(|d| d.interest).collect();
    assert_eq!(order, vec![High, Medium, Low, Low]);
    // Raise one, withdraw another.
    assert_eq!(s.set_target(S, links[0], Critical), Ok(Low));
    assert_eq!(s.set_target(S, links[2], InterestLevel::None), Ok(Medium));
    s.schedule_registered(t(1), &video(1, 1, t(1), false), &mut out);
    let got: Vec<_> = out.iter().map(|d| (d.link, d.interest)).collect();
    assert_eq!(
        got,
        vec![(links[0], Critical), (links[1], High), (links[3], Low)]
    );
    // A removed link leaves every target list; its slot's next owner starts clean.
    assert!(s.remove_link(links[1]));
    assert_eq!(
        s.set_target(S, links[1], High),
        Err(SchedulerError::UnknownLink(links[1]))
    );
    s.schedule_registered(t(2), &video(2, 1, t(2), false), &mut out);
    assert_eq!(out.len(), 2);
    let fresh = s.add_link(t(3), n(9));
    assert_eq!(s.target(S, fresh), InterestLevel::None);
    s.set_target(S, fresh, High).unwrap();
    s.schedule_registered(t(3), &video(3, 1, t(3), false), &mut out);
    let d = out.iter().find(|d| d.link == fresh).unwrap();
    assert_eq!(d.verdict, Verdict::Drop(DropReason::MissingKeyframe));
}

#[test]
fn both_entry_points_decide_alike() {
    let mk = || {
        let mut s = PropagationScheduler::new(SchedulerConfig {
            uplink_rate: Some(60_000),
            ..SchedulerConfig::default()
        });
        let links: Vec<_> = (1..=20).map(|i| s.add_link(t(0), n(i))).collect();
        (s, links)
    };
    let (mut a, links) = mk();
    let (mut b, _) = mk();
    let level = |i: usize| InterestLevel::from_u8((i % 4) as u8 + 1).unwrap();
    for (i, &l) in links.iter().enumerate() {
        b.set_target(S, l, level(i)).unwrap();
    }
    let targets: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(i, &l)| (l, level(i)))
        .collect();
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    for f in 0..40u64 {
        let now = t(f * 33);
        let u = video(f, 1 + f / 15, now, f % 15 == 0).with_layer((f % 2) as u8);
        a.schedule(now, &u, targets.iter().copied(), &mut oa);
        b.schedule_registered(now, &u, &mut ob);
        let key = |d: &Decision| (std::cmp::Reverse(d.interest), d.link.index());
        oa.sort_by_key(key);
        ob.sort_by_key(key);
        assert_eq!(oa, ob, "frame {f}");
    }
    assert_eq!(a.stats(), b.stats());
    assert!(a.stats().dropped_total() > 0);
}

#[test]
fn deltas_leave_room_for_the_next_keyframe() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(20_000)).unwrap();
    let big_key = video(0, 1, t(0), true).with_payload(Bytes::from(vec![0u8; 5000]));
    let mut out = Vec::new();
    s.schedule(t(0), &big_key, [(a, InterestLevel::Critical)], &mut out);
    assert!(out[0].is_send());
    let mut verdicts = Vec::new();
    for seq in 1..=4 {
        s.schedule(
            t(0),
            &video(seq, 1, t(0), false),
            [(a, InterestLevel::Critical)],
            &mut out,
        );
        verdicts.push(out[0].verdict);
    }
    // The fourth delta would still arrive within the budget, but then a keyframe as large as
    // the last one could not: it is dropped, and the next keyframe fits.
    assert_eq!(&verdicts[..3], &[Verdict::Send; 3]);
    assert_eq!(verdicts[3], Verdict::Drop(DropReason::FramesSkipped));
    let next_key = video(5, 2, t(0), true).with_payload(Bytes::from(vec![0u8; 5000]));
    s.schedule(t(0), &next_key, [(a, InterestLevel::Critical)], &mut out);
    assert!(out[0].is_send(), "{:?}", out[0]);
    assert!(out[0].delay() <= Duration::from_millis(500));
}

#[test]
fn repairs_skip_group_bookkeeping_but_not_budget_or_rate() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    let mut out = Vec::new();
    s.schedule(
        t(0),
        &video(0, 1, t(0), true),
        [(a, InterestLevel::High)],
        &mut out,
    );
    s.schedule(
        t(100),
        &video(9, 2, t(100), true),
        [(a, InterestLevel::High)],
        &mut out,
    );
    // A hole in group 1 is repaired even though group 2 has started.
    let d = s.schedule_repair(t(110), &video(3, 1, t(90), false), a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Send);
    // Too old for the budget: dropped.
    let d = s.schedule_repair(t(900), &video(4, 1, t(95), false), a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::Stale));
    // A stalled link cannot carry it within the budget.
    let stalled = LinkStats {
        queued_bytes: 1_000_000,
        ..rate(0)
    };
    s.link_feedback(t(901), a, stalled).unwrap();
    let d = s.schedule_repair(t(901), &video(5, 2, t(900), false), a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::RateLimited));
    assert!(s.remove_link(a));
    let d = s.schedule_repair(t(902), &video(6, 2, t(900), false), a, InterestLevel::High);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::UnknownLink));
}

/// The fast path (`fast_run`) decides exactly what the general path (`decide_one`) decides:
/// two schedulers fed the same random workload, one forced through the general path, give
/// the same decisions, pacers, tracks and statistics. Hundreds of targets (several batches),
/// slow, stalled and queued links, a shared uplink, keyframes, deltas, enhancement layers,
/// fragments, audio, late updates, failures, interest changes and link churn.
#[test]
fn the_fast_path_decides_like_the_general_path() {
    use rand::{Rng, SeedableRng};
    for seed in 0..6u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cfg = SchedulerConfig {
            uplink_rate: if seed % 3 == 2 {
                None
            } else {
                Some(rng.random_range(2_000_000..12_000_000))
            },
            ..SchedulerConfig::default()
        };
        let mut fast = PropagationScheduler::new(cfg);
        let mut general = PropagationScheduler::new(cfg);
        general.general_only = true;
        let mut links = Vec::new();
        let levels = [
            InterestLevel::Low,
            InterestLevel::Medium,
            InterestLevel::High,
            InterestLevel::Critical,
        ];
        for i in 0..300u64 {
            let a = fast.add_link(t(0), n(i + 1));
            let b = general.add_link(t(0), n(i + 1));
            assert_eq!(a, b);
            links.push(a);
        }
        let feedback = |rng: &mut rand_chacha::ChaCha8Rng| LinkStats {
            send_rate_estimate: match rng.random_range(0..10) {
                0 => 0,
                1..=2 => rng.random_range(5_000..60_000),
                _ => rng.random_range(200_000..3_000_000),
            },
            queued_bytes: if rng.random_bool(0.1) {
                rng.random_range(0..50_000)
            } else {
                0
            },
            ..LinkStats::default()
        };
        for &l in &links {
            let st = feedback(&mut rng);
            fast.link_feedback(t(0), l, st).unwrap();
            general.link_feedback(t(0), l, st).unwrap();
            let level = levels[rng.random_range(0..4)];
            fast.set_target(S, l, level).unwrap();
            general.set_target(S, l, level).unwrap();
        }
        let (mut of, mut og) = (Vec::new(), Vec::new());
        let mut group = 1;
        for frame in 0..400u64 {
            let now = t(frame * 33);
            if frame % 25 == 0 {
                group += 1;
            }
            let payload = rng.random_range(300..2_500);
            let mut u = StateUpdate::new(
                S,
                n(0),
                frame,
                now - Duration::from_millis(rng.random_range(0..60)),
            )
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(group))
            .with_payload(Bytes::from(vec![0u8; payload]));
            match rng.random_range(0..20) {
                0 => u = u.with_layer(1),
                1 => u = u.with_kind(UpdateKind::Audio),
                2 => u = u.with_group(GroupId(group.saturating_sub(1))),
                3 => u = u.keyframe().with_fragment(Fragment { index: 1, count: 2 }),
                _ => {}
            }
            if frame % 25 == 0 {
                u = u.keyframe();
            }
            let registered = rng.random_bool(0.5);
            if registered {
                fast.schedule_registered(now, &u, &mut of);
                general.schedule_registered(now, &u, &mut og);
            } else {
                let targets: Vec<_> = links
                    .iter()
                    .map(|&l| (l, levels[(l.index() + frame as usize) % 4]))
                    .collect();
                fast.schedule(now, &u, targets.iter().copied(), &mut of);
                general.schedule(now, &u, targets.iter().copied(), &mut og);
            }
            assert_eq!(of, og, "seed {seed} frame {frame}");
            // Outcomes, feedback, interest and link churn, the same on both sides.
            for _ in 0..3 {
                if let Some(d) = of.get(rng.random_range(0..of.len().max(1)))
                    && d.is_send()
                {
                    fast.on_send_failed(now, d.link, &u).unwrap();
                    general.on_send_failed(now, d.link, &u).unwrap();
                }
            }
            let l = links[rng.random_range(0..links.len())];
            let st = feedback(&mut rng);
            fast.link_feedback(now, l, st).unwrap();
            general.link_feedback(now, l, st).unwrap();
            let level = levels[rng.random_range(0..4)];
            fast.set_target(S, l, level).unwrap();
            general.set_target(S, l, level).unwrap();
            if rng.random_bool(0.05) {
                let k = rng.random_range(0..links.len());
                assert!(fast.remove_link(links[k]));
                assert!(general.remove_link(links[k]));
                let peer = n(1_000 + frame);
                let a = fast.add_link(now, peer);
                assert_eq!(a, general.add_link(now, peer));
                fast.set_target(S, a, InterestLevel::Medium).unwrap();
                general.set_target(S, a, InterestLevel::Medium).unwrap();
                links[k] = a;
            }
        }
        assert_eq!(fast.stats(), general.stats(), "seed {seed}");
        let sends = fast.stats().scheduled;
        assert!(sends > 10_000, "seed {seed}: the workload sends ({sends})");
        assert!(
            fast.stats().dropped_total() > 1_000,
            "seed {seed}: and drops"
        );
        for &l in &links {
            assert_eq!(
                fast.link_info(t(20_000), l),
                general.link_info(t(20_000), l)
            );
        }
        assert_eq!(fast.states[0].tracks, general.states[0].tracks);
    }
}

#[test]
fn a_cut_group_reports_fewer_frames_until_the_next_keyframe() {
    let mut s = PropagationScheduler::new(SchedulerConfig::default());
    let a = s.add_link(t(0), n(1));
    s.link_feedback(t(0), a, rate(20_000)).unwrap();
    let mut out = Vec::new();
    let target = [(a, InterestLevel::Low)];
    s.schedule(t(0), &video(0, 1, t(0), true), target, &mut out);
    assert!(out[0].is_send());
    // Deltas at the same instant until the slow link's pressure cuts the group.
    let mut sent = 0;
    let mut seq = 1;
    loop {
        s.schedule(t(0), &video(seq, 1, t(0), false), target, &mut out);
        seq += 1;
        if !out[0].is_send() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0, "some deltas got through before the cut");
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::FramesSkipped));
    // Much later the bucket is full again, but the group stays cut: the target receives
    // fewer frames, whatever the pressure, until the next keyframe.
    s.schedule(t(450), &video(seq, 1, t(450), false), target, &mut out);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::FramesSkipped));
    assert_eq!(out[0].quality, Quality::ReducedFrames);
    s.schedule(t(460), &video(seq + 1, 2, t(460), true), target, &mut out);
    assert!(out[0].is_send());
    assert_eq!(out[0].quality, Quality::Full);
}

/// The registered targets of state slot `s`, as `schedule` targets in the order
/// `schedule_registered` decides them.
fn registered(sched: &PropagationScheduler, s: usize) -> Vec<(LinkId, InterestLevel)> {
    (1..5)
        .rev()
        .flat_map(|l| {
            sched.states[s].targets[l]
                .iter()
                .map(|d| (d.link, d.interest))
        })
        .collect()
}

/// Every track of every state, read where it is stored.
fn all_tracks(sched: &mut PropagationScheduler) -> Vec<Vec<Track>> {
    (0..sched.states.len())
        .map(|s| {
            (0..sched.pacers.len())
                .map(|i| *sched.track_mut(s, i))
                .collect()
        })
        .collect()
}

/// The pools of the designated state (pacers and tracks in registration order, see `Pool`)
/// change where the scheduler keeps things, not what it decides: a scheduler whose targets
/// are registered (the first state's pooled, a second state's not) decides like one that never
/// registers a target and lists the same targets in the same order to `schedule` — through
/// random interleavings of registration changes, link removal and slot reuse, feedback,
/// sends, failures, repairs, and both schedule calls, with the same pacers, tracks and
/// statistics after each step. The unpooled side runs its general path in odd seeds.
#[test]
fn pooled_pacers_and_tracks_decide_like_link_indexed_ones() {
    use rand::{Rng, SeedableRng};
    const S2: StateId = StateId(2);
    let levels = [
        InterestLevel::None,
        InterestLevel::Low,
        InterestLevel::Medium,
        InterestLevel::High,
        InterestLevel::Critical,
    ];
    for seed in 0..8u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + seed);
        let cfg = SchedulerConfig {
            uplink_rate: (seed % 2 == 0).then(|| rng.random_range(1_000_000..8_000_000)),
            ..SchedulerConfig::default()
        };
        let (mut reg, mut plain) = (
            PropagationScheduler::new(cfg),
            PropagationScheduler::new(cfg),
        );
        plain.general_only = seed % 2 == 1;
        for sched in [&mut reg, &mut plain] {
            for state in [S, S2] {
                let budget = StateConfig {
                    latency_budget: Duration::from_millis(400),
                };
                sched.configure_state(state, budget).unwrap();
            }
        }
        let mut links = Vec::new();
        let mut next_peer = 1;
        let (mut or, mut op) = (Vec::new(), Vec::new());
        let mut group = 1;
        let mut removed = Vec::new();
        for step in 0..1_500u64 {
            let now = t(step * 5);
            match rng.random_range(0..12) {
                0..=1 if links.len() < 120 => {
                    let a = reg.add_link(now, n(next_peer));
                    assert_eq!(a, plain.add_link(now, n(next_peer)));
                    next_peer += 1;
                    links.push(a);
                }
                2..=3 if !links.is_empty() => {
                    let l = links[rng.random_range(0..links.len())];
                    let state = if rng.random_bool(0.7) { S } else { S2 };
                    let level = levels[rng.random_range(0..5)];
                    reg.set_target(state, l, level).unwrap();
                }
                4 if !links.is_empty() => {
                    let k = rng.random_range(0..links.len());
                    let l = links.swap_remove(k);
                    assert!(reg.remove_link(l));
                    assert!(plain.remove_link(l));
                    removed.push(l);
                }
                5 if !links.is_empty() => {
                    let l = links[rng.random_range(0..links.len())];
                    let st = LinkStats {
                        send_rate_estimate: match rng.random_range(0..8) {
                            0 => 0,
                            1..=2 => rng.random_range(5_000..60_000),
                            _ => rng.random_range(200_000..3_000_000),
                        },
                        queued_bytes: if rng.random_bool(0.2) {
                            rng.random_range(0..40_000)
                        } else {
                            0
                        },
                        ..LinkStats::default()
                    };
                    reg.link_feedback(now, l, st).unwrap();
                    plain.link_feedback(now, l, st).unwrap();
                }
                6 if !links.is_empty() => {
                    let l = links[rng.random_range(0..links.len())];
                    let u = video(step, group, now, false);
                    let level = levels[rng.random_range(1..5)];
                    let a = reg.schedule_repair(now, &u, l, level);
                    assert_eq!(a, plain.schedule_repair(now, &u, l, level), "seed {seed}");
                }
                _ => {
                    if rng.random_bool(0.05) {
                        group += 1;
                    }
                    let state = if rng.random_bool(0.8) { S } else { S2 };
                    let mut u = video(step, group, now, step % 40 == 0)
                        .with_payload(Bytes::from(vec![0u8; rng.random_range(200..3_000)]));
                    u.state = state;
                    match rng.random_range(0..12) {
                        0 => u = u.with_layer(1),
                        1 => u = u.with_kind(UpdateKind::Audio),
                        2 => u = u.keyframe(),
                        _ => {}
                    }
                    let s = reg.state_slots[&state] as usize;
                    let mut targets = registered(&reg, s);
                    if rng.random_bool(0.3) {
                        // The registered side through `schedule` too (a stale handle or two).
                        targets.extend(removed.iter().rev().take(2).map(|&l| (l, levels[2])));
                        reg.schedule(now, &u, targets.iter().copied(), &mut or);
                    } else {
                        reg.schedule_registered(now, &u, &mut or);
                    }
                    plain.schedule(now, &u, targets.iter().copied(), &mut op);
                    assert_eq!(or, op, "seed {seed} step {step}");
                    for d in or.iter().filter(|d| d.is_send()) {
                        if rng.random_bool(0.1) {
                            reg.on_send_failed(now, d.link, &u).unwrap();
                            plain.on_send_failed(now, d.link, &u).unwrap();
                        } else {
                            reg.on_sent(now, d.link, &u).unwrap();
                            plain.on_sent(now, d.link, &u).unwrap();
                        }
                    }
                }
            }
            if step % 50 == 0 {
                for &l in &links {
                    assert_eq!(reg.link_info(now, l), plain.link_info(now, l));
                }
                assert_eq!(all_tracks(&mut reg), all_tracks(&mut plain), "seed {seed}");
            }
        }
        assert_eq!(reg.stats(), plain.stats(), "seed {seed}");
        let pooled: usize = reg.pools.iter().map(|p| p.pacers.len()).sum();
        assert!(pooled > 10, "seed {seed}: targets were pooled ({pooled})");
        let sends = reg.stats().scheduled;
        assert!(sends > 2_000, "seed {seed}: the workload sends ({sends})");
        assert!(reg.stats().dropped_total() > 500, "seed {seed}: and drops");
    }
}
