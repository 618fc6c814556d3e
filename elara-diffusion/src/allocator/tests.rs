use super::*;
use AllocatorEvent::*;

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn track() -> TrackVariants {
    TrackVariants::new(StateId(1), vec![100_000, 300_000, 600_000]).unwrap()
}

fn opts(priority: u8, negotiable: bool) -> ReceiverOptions {
    ReceiverOptions {
        priority,
        negotiable,
    }
}

fn drain(a: &mut BandwidthAllocator) -> Vec<AllocatorEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn granted(receiver: u64, bitrate: u64) -> AllocatorEvent {
    Granted {
        receiver: ReceiverId(receiver),
        bitrate,
        forced: false,
    }
}

fn forced(receiver: u64, bitrate: u64) -> AllocatorEvent {
    Granted {
        receiver: ReceiverId(receiver),
        bitrate,
        forced: true,
    }
}

const A: ReceiverId = ReceiverId(1);
const B: ReceiverId = ReceiverId(2);
const C: ReceiverId = ReceiverId(3);

#[test]
fn requests_that_fit_are_granted() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    assert_eq!(a.allocation(A), Some(0));
    a.request_allocation(t(0), A, 600_000).unwrap();
    assert_eq!(drain(&mut a), vec![granted(1, 600_000)]);
    // Demand is capped at the best variant.
    a.request_allocation(t(1), A, 5_000_000).unwrap();
    assert_eq!(drain(&mut a), vec![granted(1, 600_000)]);
    // A decrease is always granted at once.
    a.request_allocation(t(2), A, 100_000).unwrap();
    assert_eq!(drain(&mut a), vec![granted(1, 100_000)]);
    assert_eq!(a.allocated(), 100_000);
}

#[test]
fn accepted_decrease_frees_room_for_a_higher_priority_request() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    a.register(t(0), B, track(), opts(5, false)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    a.request_allocation(t(0), B, 300_000).unwrap();
    drain(&mut a);
    // B wants 600k: 100k free, so A (negotiable, lower priority) is asked to step down.
    a.request_allocation(t(10), B, 600_000).unwrap();
    // Demand (1.2M) exceeds the estimate meanwhile, so the link is probed too.
    assert_eq!(
        drain(&mut a),
        vec![
            DecreaseRequested { receiver: A },
            ProbeStart {
                target: 1_200_000,
                padding: 1_200_000
            }
        ]
    );
    assert_eq!(a.allocation(B), Some(300_000), "B waits");
    // The Membrane flow: accept, then at once request less, then both are granted.
    a.decrease_response(t(20), A, DecreaseResponse::Accept)
        .unwrap();
    assert!(drain(&mut a).is_empty());
    a.request_allocation(t(20), A, 300_000).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![granted(1, 300_000), granted(2, 600_000), ProbeStop]
    );
    assert_eq!(a.allocated(), 900_000);
}

#[test]
fn rejection_moves_on_and_the_requester_gets_what_fits() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    a.register(t(0), B, track(), opts(2, true)).unwrap();
    a.register(t(0), C, track(), opts(9, true)).unwrap();
    a.request_allocation(t(0), A, 300_000).unwrap();
    a.request_allocation(t(0), B, 300_000).unwrap();
    a.request_allocation(t(0), C, 300_000).unwrap();
    drain(&mut a);
    // C wants 600k (needs 200k more, 100k free): A is asked first (lowest priority).
    a.request_allocation(t(10), C, 600_000).unwrap();
    let ev = drain(&mut a);
    assert_eq!(ev[0], DecreaseRequested { receiver: A });
    assert!(
        matches!(ev[1], ProbeStart { .. }),
        "demand exceeds the estimate: {ev:?}"
    );
    a.decrease_response(t(11), A, DecreaseResponse::Reject)
        .unwrap();
    // Next candidate.
    assert_eq!(drain(&mut a), vec![DecreaseRequested { receiver: B }]);
    a.decrease_response(t(12), B, DecreaseResponse::Reject)
        .unwrap();
    // Nobody left to ask: C gets the best variant that fits (300k + 100k free -> 300k, no
    // change, so no grant); the probe goes on.
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.allocation(C), Some(300_000));
    assert!(a.is_probing());
    // Answering twice is refused.
    assert_eq!(
        a.decrease_response(t(13), B, DecreaseResponse::Reject),
        Err(AllocatorError::UnexpectedResponse(B))
    );
}

#[test]
fn silence_counts_as_rejection_at_the_deadline() {
    let cfg = AllocatorConfig::default();
    let mut a = BandwidthAllocator::new(cfg, 700_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    a.register(t(0), B, track(), opts(5, true)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    drain(&mut a);
    a.request_allocation(t(0), B, 300_000).unwrap();
    let ev = drain(&mut a);
    assert_eq!(ev[0], DecreaseRequested { receiver: A });
    assert!(matches!(ev[1], ProbeStart { .. }));
    let deadline = t(0) + cfg.negotiation_timeout;
    assert_eq!(a.poll_timeout(), Some(deadline));
    a.handle_timeout(t(100)).unwrap();
    assert!(drain(&mut a).is_empty(), "not yet");
    a.handle_timeout(deadline).unwrap();
    // B gets the best variant in the 100k left.
    assert_eq!(drain(&mut a), vec![granted(2, 100_000)]);
}

#[test]
fn estimate_drop_negotiates_then_forces_by_priority() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 2_000_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    a.register(t(0), B, track(), opts(2, false)).unwrap();
    a.register(t(0), C, track(), opts(9, false)).unwrap();
    for r in [A, B, C] {
        a.request_allocation(t(0), r, 600_000).unwrap();
    }
    drain(&mut a);
    // 1.8M allocated, the estimate falls to 1.2M: the negotiable A is asked first.
    a.update_bandwidth_estimate(t(10), 1_200_000).unwrap();
    let ev = drain(&mut a);
    assert_eq!(ev[0], DecreaseRequested { receiver: A });
    assert!(matches!(ev[1], ProbeStart { .. }));
    // A accepts and steps down one variant: 300k freed, 300k still over, so A (still the only
    // negotiable receiver) is asked again.
    a.decrease_response(t(11), A, DecreaseResponse::Accept)
        .unwrap();
    a.request_allocation(t(11), A, 300_000).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![granted(1, 300_000), DecreaseRequested { receiver: A }]
    );
    // This time it refuses: negotiation is exhausted, so the lowest priority is force-lowered
    // until the allocations fit, and the stronger B and C keep theirs.
    a.decrease_response(t(12), A, DecreaseResponse::Reject)
        .unwrap();
    assert_eq!(drain(&mut a), vec![forced(1, 0)]);
    assert_eq!(a.allocation(B), Some(600_000));
    assert_eq!(a.allocation(C), Some(600_000));
    assert!(a.allocated() <= a.estimate());
}

#[test]
fn estimate_drop_without_negotiable_receivers_forces_lowest_priority_first() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 2_000_000);
    a.register(t(0), A, track(), opts(1, false)).unwrap();
    a.register(t(0), B, track(), opts(5, false)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    a.request_allocation(t(0), B, 600_000).unwrap();
    drain(&mut a);
    a.update_bandwidth_estimate(t(10), 900_000).unwrap();
    let ev = drain(&mut a);
    // 300k over: A (priority 1) steps down one variant; B keeps its allocation.
    assert_eq!(ev[0], forced(1, 300_000));
    assert_eq!(a.allocation(B), Some(600_000));
    assert!(a.allocated() <= 900_000);
    // Demand (1.2M) exceeds the estimate: probe.
    assert!(matches!(ev.last(), Some(ProbeStart { .. })));
}

#[test]
fn probing_stops_when_the_estimate_covers_demand_and_waiting_requests_are_granted() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 400_000);
    a.register(t(0), A, track(), opts(3, false)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    let ev = drain(&mut a);
    assert_eq!(ev[0], granted(1, 300_000));
    let ProbeStart { target, padding } = ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(target, 600_000);
    assert_eq!(padding, 600_000, "nothing sent yet");
    assert!(a.is_probing());
    // Usage is measured from buffer_sent.
    for ms in (0..1000).step_by(20) {
        a.buffer_sent(t(ms), A, 750).unwrap(); // 750 B every 20 ms = 300 kb/s
    }
    assert_eq!(a.usage(t(1000), A), Some(300_000));
    // The probe is re-aimed every interval while demand is unmet.
    a.handle_timeout(t(1000)).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![ProbeStart {
            target: 600_000,
            padding: 300_000
        }]
    );
    // The probe found room: A's request is satisfied at its next ask, probing stops.
    a.update_bandwidth_estimate(t(1100), 800_000).unwrap();
    a.request_allocation(t(1100), A, 600_000).unwrap();
    let ev = drain(&mut a);
    assert!(ev.contains(&granted(1, 600_000)), "{ev:?}");
    assert!(ev.contains(&ProbeStop), "{ev:?}");
    assert!(!a.is_probing());
}

#[test]
fn zero_estimate_lowers_everyone_to_nothing() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
    a.register(t(0), A, track(), opts(1, false)).unwrap();
    a.register(t(0), B, track(), opts(2, false)).unwrap();
    a.request_allocation(t(0), A, 300_000).unwrap();
    a.request_allocation(t(0), B, 600_000).unwrap();
    drain(&mut a);
    a.update_bandwidth_estimate(t(1), 0).unwrap();
    let ev = drain(&mut a);
    assert!(ev.contains(&forced(1, 0)), "{ev:?}");
    assert!(ev.contains(&forced(2, 0)), "{ev:?}");
    assert_eq!(a.allocated(), 0);
    assert!(a.is_probing());
}

#[test]
fn negotiability_is_per_receiver_and_changeable() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 900_000);
    a.register(t(0), A, track(), opts(1, false)).unwrap();
    a.register(t(0), B, track(), opts(5, false)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    drain(&mut a);
    a.request_allocation(t(0), B, 600_000).unwrap();
    // A is not negotiable: B gets what fits (300k) at once, and its unmet demand is probed for.
    let ev = drain(&mut a);
    assert_eq!(ev[0], granted(2, 300_000));
    assert!(matches!(ev[1], ProbeStart { .. }));
    // Once A becomes negotiable, B's unmet demand makes the allocator ask it.
    a.set_negotiable(t(2), A, true).unwrap();
    assert_eq!(drain(&mut a), vec![DecreaseRequested { receiver: A }]);
}

#[test]
fn bad_input_is_refused_without_change() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 1_000_000);
    assert_eq!(
        TrackVariants::new(StateId(1), vec![0, 0]),
        Err(AllocatorError::NoVariants)
    );
    assert_eq!(
        a.request_allocation(t(0), A, 1),
        Err(AllocatorError::UnknownReceiver(A))
    );
    assert_eq!(
        a.buffer_sent(t(0), A, 1),
        Err(AllocatorError::UnknownReceiver(A))
    );
    assert_eq!(
        a.unregister(t(0), A),
        Err(AllocatorError::UnknownReceiver(A))
    );
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    assert_eq!(
        a.register(t(0), A, track(), opts(1, true)),
        Err(AllocatorError::DuplicateReceiver(A))
    );
    assert_eq!(
        a.decrease_response(t(0), A, DecreaseResponse::Accept),
        Err(AllocatorError::UnexpectedResponse(A))
    );
    a.request_allocation(t(0), A, 300_000).unwrap();
    drain(&mut a);
    a.update_bandwidth_estimate(t(0), 200_000).unwrap();
    let ev = drain(&mut a);
    assert_eq!(ev[0], DecreaseRequested { receiver: A });
    assert!(a.is_probing());
    // Destroying hands back what is queued and stops the probe.
    assert_eq!(a.destroy(), vec![ProbeStop]);
    assert_eq!(
        a.request_allocation(t(1), A, 1),
        Err(AllocatorError::Destroyed)
    );
    assert_eq!(a.handle_timeout(t(1)), Err(AllocatorError::Destroyed));
}

#[test]
fn unregistering_frees_room_for_waiting_requests() {
    let mut a = BandwidthAllocator::new(AllocatorConfig::default(), 900_000);
    a.register(t(0), A, track(), opts(1, true)).unwrap();
    a.register(t(0), B, track(), opts(5, true)).unwrap();
    a.request_allocation(t(0), A, 600_000).unwrap();
    drain(&mut a);
    a.request_allocation(t(0), B, 600_000).unwrap();
    assert_eq!(drain(&mut a)[0], DecreaseRequested { receiver: A });
    a.unregister(t(1), A).unwrap();
    assert_eq!(drain(&mut a), vec![granted(2, 600_000), ProbeStop]);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Under any sequence of inputs no grant exceeds the track's best variant, and once
        /// negotiation has settled the allocations fit the estimate.
        #[test]
        fn allocations_stay_within_the_estimate(
            ops in proptest::collection::vec((0..6u8, 0..4u64, 0..4_000_000u64), 1..80)
        ) {
            let cfg = AllocatorConfig::default();
            let mut a = BandwidthAllocator::new(cfg, 1_000_000);
            let mut now = t(0);
            for id in 0..4u64 {
                a.register(now, ReceiverId(id), track(), opts(id as u8, id % 2 == 0)).unwrap();
            }
            for (op, id, x) in ops {
                let r = ReceiverId(id);
                now += Duration::from_millis(10);
                match op {
                    0 | 1 => { a.request_allocation(now, r, x).unwrap(); }
                    2 => { a.update_bandwidth_estimate(now, x / 2).unwrap(); }
                    3 => { let _ = a.decrease_response(now, r, if x % 2 == 0 { DecreaseResponse::Accept } else { DecreaseResponse::Reject }); }
                    4 => { a.buffer_sent(now, r, x % 2000).unwrap(); }
                    _ => { now += Duration::from_secs(1); a.handle_timeout(now).unwrap(); }
                }
                while let Some(ev) = a.poll_event() {
                    if let Granted { bitrate, .. } = ev {
                        prop_assert!(bitrate <= track().max());
                    }
                }
            }
            // Let every negotiation time out (each round may ask the next receiver), then the
            // estimate must hold.
            for _ in 0..6 {
                now += Duration::from_secs(10);
                a.handle_timeout(now).unwrap();
                while a.poll_event().is_some() {}
            }
            prop_assert!(a.allocated() <= a.estimate(), "{} > {}", a.allocated(), a.estimate());
        }
    }
}
