//! Steady-state scheduling allocates nothing: a counting global allocator watches
//! `PropagationScheduler::schedule` and `schedule_registered` at 10,000 receivers with rate limiting (per link and a
//! shared uplink) and quality selection active, over keyframes, deltas, enhancement layers,
//! audio, stale and superseded updates, and send reports.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
use elara_diffusion::scheduler::{LinkStats, PropagationScheduler, SchedulerConfig};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const V: u64 = 10_000;

#[test]
fn steady_state_scheduling_allocates_nothing_at_10k_receivers() {
    let video = StateId(1);
    let audio = StateId(2);
    let source = NodeId::from_u64(0);
    let cfg = SchedulerConfig {
        uplink_rate: Some(50_000_000),
        ..SchedulerConfig::default()
    };
    let mut sched = PropagationScheduler::new(cfg);
    let start = Time::from_secs(1);
    let mut targets = Vec::new();
    for i in 1..=V {
        let link = sched.add_link(start, NodeId::from_u64(i));
        let rate = if i % 3 == 0 { 50_000 } else { 2_000_000 };
        let stats = LinkStats {
            send_rate_estimate: rate,
            ..LinkStats::default()
        };
        sched.link_feedback(start, link, stats).unwrap();
        let level = match i % 10 {
            0 => InterestLevel::High,
            1..=6 => InterestLevel::Medium,
            _ => InterestLevel::Low,
        };
        targets.push((link, level));
        // Audio goes through the registered-target entry point.
        sched.set_target(audio, link, level).unwrap();
    }
    let payload = Bytes::from(vec![7u8; 1200]);
    let frame = |seq: u64, now: Time| {
        let group = 1 + seq / 30;
        let u = StateUpdate::new(video, source, seq, now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(group))
            .with_layer((seq % 2) as u8)
            .with_payload(payload.clone());
        if seq.is_multiple_of(30) {
            u.keyframe()
        } else {
            u
        }
    };
    let mut out = Vec::with_capacity(V as usize);
    let run = |sched: &mut PropagationScheduler, from: u64, to: u64, out: &mut Vec<_>| {
        let mut sends = 0;
        for seq in from..to {
            let now = start + Duration::from_millis(seq * 33);
            let u = frame(seq, now);
            sends += sched.schedule(now, &u, targets.iter().copied(), out).send;
            let a = StateUpdate::new(audio, source, seq, now).with_kind(UpdateKind::Audio);
            sched.schedule_registered(now, &a, out);
            // A stale frame and a superseded one.
            let old = frame(seq, now - Duration::from_secs(2));
            sched.schedule(now, &old, targets.iter().copied(), out);
            if seq > 40 {
                sched.schedule(now, &frame(seq - 40, now), targets.iter().copied(), out);
            }
            // Report a few sends and a failure.
            for d in out.iter().take(3) {
                sched.on_sent(now, d.link, &a).unwrap();
            }
            sched.on_send_failed(now, targets[5].0, &u).unwrap();
        }
        sends
    };
    // Warm-up: states and buffers reach their size.
    run(&mut sched, 0, 5, &mut out);
    let before = ALLOCS.load(Ordering::Relaxed);
    let sends = run(&mut sched, 5, 95, &mut out);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "{allocs} allocations in 360 schedule calls");
    // The workload did exercise rate limiting and quality selection.
    let stats = sched.stats();
    assert!(sends > 0);
    assert!(stats.dropped_total() > 0);
    assert!(stats.dropped(elara_diffusion::DropReason::Stale) > 0);
    assert!(stats.dropped(elara_diffusion::DropReason::Superseded) > 0);
    let quality_drops = stats.dropped(elara_diffusion::DropReason::LayerSkipped)
        + stats.dropped(elara_diffusion::DropReason::FramesSkipped);
    assert!(quality_drops > 0, "{stats:?}");
}
