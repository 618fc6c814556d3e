//! Tree building: the cost of growing a relay tree one join at a time, and the depth it
//! reaches. Depth is latency (every hop adds a relay's queueing and an RTT), and the cost of a
//! join bounds how fast a swarm can absorb a flash crowd.
//!
//! ELARA's capacity-aware tree takes the shallowest free slot from an ordered set (O(log N)
//! per join) and stays breadth-balanced; the original `TreeTopology` searches depth-first from
//! the root on every join, so its joins cost O(depth) and its depth grows linearly with N —
//! which is why it is only measured up to 4,000 nodes here (at 100,000 one build takes
//! minutes). The depths are printed once per size.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elara_benches::node_id;
use elara_core::NodeId;
use elara_diffusion::PropagationTopology;

const FANOUT: u32 = 8;

fn elara_tree(n: u64) -> PropagationTopology {
    let mut t = PropagationTopology::tree(NodeId::from_u64(0), FANOUT).expect("fanout > 0");
    for i in 1..n {
        t.add_node(node_id(i), FANOUT)
            .expect("room in a full-fanout tree");
    }
    t
}

fn original_tree(n: u64) -> original::TreeTopology {
    let mut t = original::TreeTopology::new(original_core::NodeId::new(0), FANOUT as usize);
    for i in 1..n {
        t.add_node(original_core::NodeId::new(i));
    }
    t
}

fn tree_building(c: &mut Criterion) {
    let mut group = c.benchmark_group("tree_build_fanout8");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for n in [1_000u64, 4_000] {
        let t = original_tree(n);
        let depth = (1..n)
            .map(|i| t.depth(original_core::NodeId::new(i)))
            .max()
            .unwrap_or(0);
        eprintln!("original-0.2.0 tree of {n} nodes, fanout {FANOUT}: depth {depth}");
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("original-0.2.0", n), &n, |b, &n| {
            b.iter(|| black_box(original_tree(n)))
        });
    }
    for n in [1_000u64, 4_000, 100_000] {
        let t = elara_tree(n);
        eprintln!(
            "elara tree of {n} nodes, fanout {FANOUT}: depth {}",
            t.max_depth()
        );
        assert!(t.max_depth() <= 7);
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("elara", n), &n, |b, &n| {
            b.iter(|| black_box(elara_tree(n)))
        });
    }
    group.finish();
}

criterion_group!(benches, tree_building);
criterion_main!(benches);
