//! A wall-time cross-check of the interest-registration workload, outside criterion: builds
//! `rounds` maps of 100,000 viewers of one state (ELARA with `e`, ELARA after
//! `reserve_nodes(100_000)` with `r`, the original 0.2.0 with `o`) exactly as
//! `benches/interest.rs` does, times each fill alone with `Instant` and prints the minimum and
//! the median over the rounds. On a shared machine the minimum is the figure least disturbed
//! by other processes; running two builds of it alternately compares them under the same
//! load. It is not the benchmark of record (`cargo bench -p elara-benches --bench interest`
//! is), and it takes the map's drop out of the loop the same way criterion's `iter_batched`
//! does.
//!
//! `cargo run --release -p elara-benches --example interest_time -- [e|r|o] [rounds]`
use std::time::Instant;

use elara_benches::{declare_all, node_id, register_all_original};
use elara_core::Time;

const N: u64 = 100_000;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let rounds: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(50);
    let ids: Vec<_> = (1..=N).map(node_id).collect();
    let original_ids: Vec<_> = (1..=N).map(original_core::NodeId::new).collect();
    let now = Time::from_secs(1);
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        if which == "o" {
            let map = original::InterestMap::new();
            let t = Instant::now();
            let map = register_all_original(map, &original_ids);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            drop(std::hint::black_box(map));
        } else {
            let mut map = elara_diffusion::InterestMap::new();
            if which == "r" {
                map.reserve_nodes(N as usize);
            }
            let t = Instant::now();
            let map = declare_all(map, &ids, now);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            drop(std::hint::black_box(map));
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{which}: min {:.3} ms, median {:.3} ms over {} fills",
        times[0],
        times[times.len() / 2],
        times.len()
    );
}
