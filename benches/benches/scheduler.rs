//! Scheduler throughput, ELARA against the original `elara-diffusion` 0.2.0, same workload, same
//! run: a star of V receivers (10 % High / 60 % Medium / 30 % Low interest), one update per
//! call, a decision for every receiver. This is the hot path of a broadcaster or a relay: its
//! cost per receiver bounds how many viewers one node can feed.
//!
//! `original-0.2.0`: `PropagationScheduler::schedule(&update)` over its `InterestMap` and
//! topology (it allocates a fresh `Vec` of decisions, sorts it, and enforces no bandwidth).
//! `elara`: `PropagationScheduler::schedule_registered` over the targets registered from the
//! topology's aggregated interest (a swarm node updates them when interest changes, not per
//! update), with a GCRA pacer (token bucket) per link fed by feedback (one link in ten slower
//! than the stream), a shared uplink that carries about 90 % of the full-quality demand, and
//! quality selection (quality rungs, deltas cut for the receivers that cannot keep up, never
//! a delta without its keyframe) over a 30 frames/s stream of base-layer updates with a
//! keyframe per second — into a reused buffer. Throughput is in decisions (elements) per
//! second.
//!
//! The group `scheduler_star_resolve` (ELARA only) measures the general entry point instead:
//! the topology's targets listed for every update and resolved to links by hash lookup, then
//! `PropagationScheduler::schedule`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elara_benches::{ElaraStar, OriginalStar};

fn scheduler(c: &mut Criterion) {
    for v in [100u64, 1_000, 10_000, 100_000] {
        let mut group = c.benchmark_group("scheduler_star");
        group.throughput(Throughput::Elements(v));
        group.sample_size(if v >= 100_000 { 10 } else { 20 });
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));

        let original = OriginalStar::new(v);
        assert_eq!(original.step().len() as u64, v);
        group.bench_with_input(BenchmarkId::new("original-0.2.0", v), &v, |b, _| {
            b.iter(|| black_box(original.step()))
        });
        drop(original);

        let mut elara = ElaraStar::new(v);
        assert_eq!(elara.step() as u64, v);
        group.bench_with_input(BenchmarkId::new("elara", v), &v, |b, _| {
            b.iter(|| black_box(elara.step()))
        });
        group.finish();

        let mut group = c.benchmark_group("scheduler_star_resolve");
        group.throughput(Throughput::Elements(v));
        group.sample_size(if v >= 100_000 { 10 } else { 20 });
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        assert_eq!(elara.step_resolving() as u64, v);
        group.bench_with_input(BenchmarkId::new("elara", v), &v, |b, _| {
            b.iter(|| black_box(elara.step_resolving()))
        });
        group.finish();
    }
}

criterion_group!(benches, scheduler);
criterion_main!(benches);
