//! Interest registration: the cost of recording who wants what, per entry, when 100,000
//! viewers declare interest in one state (a stream going live). The original's
//! `InterestMap::register` keeps a nested `HashMap` per state plus a `HashSet` per node; ELARA's
//! `InterestMap::declare` interns the node once and appends to the state's dense vectors.
//! Each iteration builds a fresh map of 100,000 entries; throughput is in entries per second.
//!
//! `elara` starts from `InterestMap::new()` and pays for every growth of its tables, like the
//! original. `elara-reserved` first calls `InterestMap::reserve_nodes(100_000)` — what a node
//! does when it knows the audience size ahead (restoring after a restart, or a relay taking
//! over a subtree whose size it was told) — so it measures the per-entry path alone, without
//! the node table's rehashing; the original has no equivalent call.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elara_benches::{declare_all, node_id, register_all_original};
use elara_core::Time;

const N: u64 = 100_000;

fn registration(c: &mut Criterion) {
    let mut group = c.benchmark_group("interest_registration");
    group.throughput(Throughput::Elements(N));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    let original_ids: Vec<_> = (1..=N).map(original_core::NodeId::new).collect();
    group.bench_with_input(BenchmarkId::new("original-0.2.0", N), &N, |b, _| {
        b.iter_batched(
            original::InterestMap::new,
            |map| black_box(register_all_original(map, &original_ids)),
            BatchSize::LargeInput,
        )
    });

    let ids: Vec<_> = (1..=N).map(node_id).collect();
    let now = Time::from_secs(1);
    group.bench_with_input(BenchmarkId::new("elara", N), &N, |b, _| {
        b.iter_batched(
            elara_diffusion::InterestMap::new,
            |map| black_box(declare_all(map, &ids, now)),
            BatchSize::LargeInput,
        )
    });
    group.bench_with_input(BenchmarkId::new("elara-reserved", N), &N, |b, _| {
        b.iter_batched(
            || {
                let mut map = elara_diffusion::InterestMap::new();
                map.reserve_nodes(N as usize);
                map
            },
            |map| black_box(declare_all(map, &ids, now)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, registration);
criterion_main!(benches);
