//! Interest registration: the cost of recording who wants what, per entry, when 100,000
//! viewers declare interest in one state (a stream going live). The original's
//! `InterestMap::register` keeps a nested `HashMap` per state plus a `HashSet` per node; ELARA's
//! `InterestMap::declare` interns the node once and appends to the state's dense vectors.
//! Each iteration builds a fresh map of 100,000 entries; throughput is in entries per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elara_benches::{level_of, node_id, original_level_of};
use elara_core::{StateId, Time};

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
            |mut map| {
                for (i, &node) in original_ids.iter().enumerate() {
                    map.register(original::InterestDeclaration::new(
                        node,
                        1,
                        original_level_of(i as u64 + 1),
                    ));
                }
                black_box(map)
            },
            BatchSize::LargeInput,
        )
    });

    let ids: Vec<_> = (1..=N).map(node_id).collect();
    let now = Time::from_secs(1);
    group.bench_with_input(BenchmarkId::new("elara", N), &N, |b, _| {
        b.iter_batched(
            elara_diffusion::InterestMap::new,
            |mut map| {
                for (i, &node) in ids.iter().enumerate() {
                    map.declare(now, node, StateId(1), level_of(i as u64 + 1), None)
                        .expect("within limits");
                }
                black_box(map)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, registration);
criterion_main!(benches);
