//! A quick side-by-side of the star scheduler workload without criterion: prints the mean time
//! per call for ELARA and for the original 0.2.0 over a few rounds, and ELARA's drop counts.
//! Useful under `valgrind --tool=cachegrind` to count instructions per decision.
//!
//! `cargo run --release -p elara-benches --example scheduler_probe -- [V] [e|o|r|both] [iterations]`
//! (`r`: ELARA's `schedule` with the targets listed per call, the `scheduler_star_resolve` group).
fn main() {
    let v: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10_000);
    let which = std::env::args().nth(2).unwrap_or_default();
    let iters: u32 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(300);
    let mut e = elara_benches::ElaraStar::new(v);
    let o = elara_benches::OriginalStar::new(v);
    for round in 0..3 {
        let t = std::time::Instant::now();
        if which != "o" {
            for _ in 0..iters {
                if which == "r" {
                    std::hint::black_box(e.step_resolving());
                } else {
                    std::hint::black_box(e.step());
                }
            }
        }
        let el = t.elapsed() / iters;
        let t = std::time::Instant::now();
        if which != "e" && which != "r" {
            for _ in 0..iters {
                std::hint::black_box(o.step());
            }
        }
        let or = t.elapsed() / iters;
        println!(
            "round {round}: elara {el:?} original {or:?} ratio {:.1}",
            or.as_secs_f64() / el.as_secs_f64()
        );
    }
    let st = e.scheduler().stats();
    println!(
        "scheduled {} dropped {:?}",
        st.scheduled,
        st.drops().filter(|d| d.1 > 0).collect::<Vec<_>>()
    );
}
