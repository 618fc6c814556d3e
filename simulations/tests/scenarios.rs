//! Every bundled scenario, scaled down to run in seconds in a debug build, plus determinism and
//! the delivery invariants for every protocol.

use std::path::{Path, PathBuf};

use elara_simulations::report::Report;
use elara_simulations::scenario::Scenario;

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn run(name: &str, seed: u64, overrides: &[&str]) -> Report {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let s = Scenario::load(&scenario_path(name), &o).unwrap();
    elara_simulations::run(s, seed, o, 1, &|_, _, _| {}).unwrap()
}

fn assert_invariants(r: &Report) {
    for run in &r.runs {
        let c = &run.counters;
        assert_eq!(
            c.violations_duplicate_delivery, 0,
            "{}: an update was delivered twice",
            run.protocol
        );
        assert_eq!(
            c.violations_missing_keyframe, 0,
            "{}: a delta was delivered without its keyframe",
            run.protocol
        );
        assert_eq!(c.decode_errors, 0, "{}: undecodable bytes", run.protocol);
        assert_eq!(c.unknown_deliveries, 0, "{}: phantom update", run.protocol);
        // Ratios of expected frames: what is counted as delivered must have been expected
        // (a viewer that leaves expects frames published up to its leave minus the deadline).
        for l in &run.levels {
            for (name, v) in [
                ("delivery", l.delivery_ratio),
                ("continuity", l.continuity),
                ("video continuity", l.video_continuity),
            ] {
                assert!(
                    (0.0..=1.0).contains(&v),
                    "{} {}: {name} {v} out of [0, 1]",
                    run.protocol,
                    l.level
                );
            }
        }
    }
}

fn level<'a>(
    r: &'a Report,
    protocol: &str,
    level: &str,
) -> &'a elara_simulations::report::LevelReport {
    r.runs
        .iter()
        .find(|x| x.protocol == protocol)
        .and_then(|x| x.levels.iter().find(|l| l.level == level))
        .unwrap_or_else(|| panic!("no {protocol}/{level} in report"))
}

#[test]
fn same_seed_gives_byte_identical_json_and_another_seed_differs() {
    let o = ["viewers=25", "duration_s=3", "drain_s=1"];
    let a = serde_json::to_string(&run("livestream", 5, &o)).unwrap();
    let b = serde_json::to_string(&run("livestream", 5, &o)).unwrap();
    assert_eq!(a, b);
    // The protocols run side by side on threads: the same report.
    let owned: Vec<String> = o.iter().map(|s| s.to_string()).collect();
    let s = Scenario::load(&scenario_path("livestream"), &owned).unwrap();
    let threaded = elara_simulations::run(s, 5, owned, 3, &|_, _, _| {}).unwrap();
    assert_eq!(a, serde_json::to_string(&threaded).unwrap());
    let c = serde_json::to_string(&run("livestream", 6, &o)).unwrap();
    assert_ne!(a, c);
}

/// A run split over threads (its nodes in shards exchanging what they did at each other at
/// window ends) gives the report of the single-threaded run, byte for byte, whatever the
/// thread count: with churn, a partition and its heal, a mass failure, the tracker bootstrap
/// and bursty loss, with every protocol.
#[test]
fn a_run_split_over_threads_reports_exactly_what_one_thread_does() {
    let cases: [(&str, &[&str]); 5] = [
        ("churn", &["viewers=60", "duration_s=6"]),
        ("partition", &["viewers=60", "duration_s=8"]),
        (
            "heterogeneous",
            &["viewers=60", "duration_s=6", "faults[0].at_s=3"],
        ),
        ("lossy", &["viewers=60", "duration_s=4"]),
        (
            "livestream",
            &[
                "viewers=80",
                "duration_s=4",
                "bootstrap=\"tracker\"",
                "protocols=[\"elara\"]",
            ],
        ),
    ];
    for (name, o) in cases {
        let owned: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        let report = |threads: usize| {
            let s = Scenario::load(&scenario_path(name), &owned).unwrap();
            let r = elara_simulations::run(s, 3, owned.clone(), threads, &|_, _, _| {}).unwrap();
            serde_json::to_string(&r).unwrap()
        };
        let one = report(1);
        let protocols = Scenario::load(&scenario_path(name), &owned)
            .unwrap()
            .protocols
            .len();
        // Enough threads that every protocol's nodes are split over two and then three.
        for shards in [2, 3] {
            assert_eq!(one, report(shards * protocols), "{name}: {shards} shards");
        }
    }
}

#[test]
fn small_livestream_on_a_clean_lan_delivers_everything_with_every_protocol() {
    let r = run(
        "livestream",
        1,
        &[
            "viewers=20",
            "duration_s=4",
            "network.preset=lan",
            "network.mean_one_way_ms=5",
            "network.loss=0",
        ],
    );
    assert_invariants(&r);
    for p in ["elara", "star", "elara-0.2"] {
        let l = level(&r, p, "high");
        assert!(l.delivery_ratio > 0.99, "{p}: {l:?}");
        assert!(l.latency_p99_ms < 1000.0, "{p}: {l:?}");
    }
    // Gossip pushes every frame to several peers: duplicates are its cost.
    assert!(
        r.runs
            .iter()
            .find(|x| x.protocol == "gossip")
            .unwrap()
            .duplicate_ratio
            > 0.5
    );
}

#[test]
fn fragmented_keyframes_are_counted_once_whole_with_every_protocol() {
    // Keyframes (about 58 kB at 2.5 Mbit/s) cut at 16 kB into four updates: on a clean LAN
    // every protocol delivers every frame, each counted once all of its fragments are in, and
    // no delta counts before its whole keyframe.
    let lan = [
        "viewers=20",
        "duration_s=4",
        "network.preset=lan",
        "network.mean_one_way_ms=5",
        "network.loss=0",
    ];
    let whole = run("livestream", 1, &lan);
    let mut cut_o = lan.to_vec();
    cut_o.push("workload.video.fragment_bytes=16384");
    let cut = run("livestream", 1, &cut_o);
    assert_invariants(&cut);
    // Frames expected over every viewer of a protocol.
    let expected = |r: &Report, p: &str| -> f64 {
        let run = r.runs.iter().find(|x| x.protocol == p).unwrap();
        run.levels.iter().map(|l| l.expected_frames as f64).sum()
    };
    for p in ["elara", "star", "elara-0.2"] {
        // The same frames, give or take where playback started (over all 20 viewers: one of
        // the three High viewers starting a group later moves the High count by 8%).
        let (we, ce) = (expected(&whole, p), expected(&cut, p));
        assert!(
            (ce - we).abs() <= we * 0.05,
            "{p}: {ce} frames expected, {we} whole"
        );
        let c = level(&cut, p, "high");
        assert!(c.video_continuity > 0.99, "{p}: {c:?}");
    }
    let updates = |r: &Report| {
        let run = r.runs.iter().find(|x| x.protocol == "star").unwrap();
        run.counters.messages
    };
    assert!(
        updates(&cut) > updates(&whole),
        "fragments travel as more messages"
    );
}

#[test]
fn star_fails_when_the_audience_outgrows_the_broadcaster_uplink() {
    // 60 viewers x 2.6 Mbit/s is far above a 20 Mbit/s uplink.
    let r = run(
        "livestream",
        2,
        &[
            "viewers=60",
            "duration_s=4",
            "network.loss=0",
            "protocols=[\"star\", \"elara-0.2\"]",
        ],
    );
    assert_invariants(&r);
    let star = level(&r, "star", "medium");
    assert!(star.continuity < 0.8, "{star:?}");
    let tree = r.runs.iter().find(|x| x.protocol == "elara-0.2").unwrap();
    assert!(
        tree.hops_max >= 3,
        "0.2.0's depth-first tree goes deep: {}",
        tree.hops_max
    );
}

#[test]
fn calls_of_8_run_with_every_protocol() {
    let r = run(
        "call8",
        3,
        &["duration_s=3", "network.preset=lan", "network.loss=0"],
    );
    assert_invariants(&r);
    let elara = level(&r, "elara", "high");
    assert!(elara.delivery_ratio > 0.9, "{elara:?}");
}

#[test]
fn call_of_32_runs() {
    let r = run(
        "call32",
        3,
        &["duration_s=2", "protocols=[\"elara\", \"star\"]"],
    );
    assert_invariants(&r);
    assert_eq!(r.nodes, 32);
}

#[test]
fn flash_crowd_churn_lossy_heterogeneous_and_partition_run_small() {
    for (name, extra) in [
        (
            "flash_crowd",
            vec![
                "flash_crowd.viewers=30",
                "flash_crowd.start_s=0.5",
                "flash_crowd.over_s=2",
                "duration_s=4",
            ],
        ),
        (
            "churn",
            vec![
                "viewers=30",
                "duration_s=6",
                "churn.leave_per_min=6",
                "churn.start_s=1",
            ],
        ),
        ("lossy", vec!["viewers=30", "duration_s=3"]),
        (
            "heterogeneous",
            vec!["viewers=30", "duration_s=4", "faults[0].at_s=2"],
        ),
        ("partition", vec![]),
    ] {
        let mut o: Vec<&str> = extra;
        if name == "partition" {
            o = vec!["viewers=30", "duration_s=5"];
        }
        let r = run(name, 4, &o);
        assert_invariants(&r);
        assert!(!r.runs.is_empty(), "{name}");
    }
}

/// The scale scenarios say what issue #4 measures (a 100,000-viewer 60 s and a 1,000,000-viewer
/// 10 s livestream of 2.5 Mbit/s video at 30 fps with a keyframe every 2 s plus 20 ms audio) and
/// run, scaled down, with the protocols they select.
#[test]
fn scale_scenarios_describe_the_issue_runs_and_run_small() {
    for (name, viewers, duration) in [("scale-100k", 100_000, 60.0), ("scale-1m", 1_000_000, 10.0)]
    {
        let s = Scenario::load(&scenario_path(name), &[]).unwrap();
        assert_eq!(s.viewers, viewers, "{name}");
        assert_eq!(s.duration_s, duration, "{name}");
        let v = &s.workload.video;
        assert!(v.enabled && s.workload.audio.enabled, "{name}");
        assert_eq!(
            (v.bitrate_kbps, v.fps, v.keyframe_interval_s),
            (2500.0, 30.0, 2.0)
        );
        assert_eq!(s.workload.audio.frame_ms, 20.0);
        let r = run(name, 2, &["viewers=20", "duration_s=2", "join_over_s=0.5"]);
        assert_invariants(&r);
        let names: Vec<&str> = r.runs.iter().map(|x| x.protocol.as_str()).collect();
        assert_eq!(names, s.protocols, "{name}");
    }
}

#[test]
fn mass_failure_is_repaired_and_reported() {
    let r = run(
        "heterogeneous",
        9,
        &[
            "viewers=40",
            "duration_s=8",
            "faults[0].at_s=3",
            "protocols=[\"elara\", \"elara-0.2\"]",
        ],
    );
    assert_invariants(&r);
    for run in &r.runs {
        assert_eq!(run.repair.len(), 1);
        let rep = &run.repair[0];
        assert!(
            rep.fault.contains("mass failure at 3.0 s (8 nodes)"),
            "{rep:?}"
        );
        assert!(rep.viewers >= 25, "{rep:?}");
        assert!(
            rep.never_repaired < rep.viewers,
            "{}: {rep:?}",
            run.protocol
        );
        assert!(rep.p50_ms > 0.0, "{rep:?}");
    }
}

#[test]
fn viewers_bootstrapped_by_the_tracker_join_below_the_root_and_play() {
    // With the tracker, joiners after the first dozen strong relays near the root start there
    // instead of at the publisher: the publisher's uplink carries less besides the stream,
    // and viewers still play.
    let base = [
        "viewers=150",
        "duration_s=3",
        "join_over_s=1",
        "workload.video.bitrate_kbps=100",
        "protocols=[\"elara\"]",
    ];
    let with = |b: &str| {
        let mut o = base.to_vec();
        o.push(b);
        let r = run("livestream", 1, &o);
        assert_invariants(&r);
        r
    };
    let publisher = with("bootstrap=\"publisher\"");
    let tracker = with("bootstrap=\"tracker\"");
    let (p, t) = (&publisher.runs[0], &tracker.runs[0]);
    assert!(
        t.upload.publisher_kbps < p.upload.publisher_kbps,
        "publisher upload {} kbit/s with the tracker, {} without",
        t.upload.publisher_kbps,
        p.upload.publisher_kbps
    );
    assert!(
        t.levels[0].continuity > 0.9,
        "continuity {}",
        t.levels[0].continuity
    );
}

/// The error the bundled livestream scenario gets with the one `--set` override given.
fn livestream_refused(override_: &str) -> String {
    Scenario::load(&scenario_path("livestream"), &[override_.to_owned()])
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_scenarios_are_refused_with_file_field_and_problem() {
    let dir = std::env::temp_dir().join("elara-sim-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "name = \"bad\"\nkind = \"livestream\"\nviewers = 10\n[network]\nbroadcaster = { down_mbps = 10, up_mbps = 0 }\n",
    )
    .unwrap();
    let e = Scenario::load(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("bad.toml"), "{e}");
    assert!(e.contains("network.broadcaster.up_mbps"), "{e}");
    assert!(e.contains("above zero"), "{e}");
    let e = livestream_refused("workload.video.fragment_bytes=100");
    assert!(
        e.contains("workload.video.fragment_bytes") && e.contains("below 1000"),
        "{e}"
    );
    let e = livestream_refused("bootstrap=\"random\"");
    assert!(
        e.contains("bootstrap") && e.contains("publisher") && e.contains("tracker"),
        "{e}"
    );
    let e = Scenario::load(&dir.join("missing.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.toml") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn real_media_workload_replays_the_sample_files() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../elara-media/samples");
    let video = elara_simulations::read_media(&samples.join("testsrc.h264"), true).unwrap();
    // 10 s at 30 fps with an IDR every 2 s.
    assert_eq!(video.len(), 300);
    assert_eq!(video.iter().filter(|f| f.2).count(), 5);
    assert!(video[0].2 && video[60].2);
    let audio = elara_simulations::read_media(&samples.join("speech.opus"), false).unwrap();
    assert!(
        audio.windows(2).all(|w| w[1].0 - w[0].0 == 20_000),
        "20 ms packets"
    );
    let e = elara_simulations::read_media(&samples.join("speech.opus"), true).unwrap_err();
    assert!(
        e.contains("audio file where the scenario expects video"),
        "{e}"
    );
    let r = run("media_livestream", 1, &["viewers=15", "duration_s=3"]);
    assert_invariants(&r);
    assert!(
        r.stream_kbps > 300.0 && r.stream_kbps < 700.0,
        "{}",
        r.stream_kbps
    );
}
