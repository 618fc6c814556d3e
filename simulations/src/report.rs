//! Reports: the JSON written by `elara-sim run --json`, the terminal table, and `compare`.
//!
//! The JSON holds no wall-clock values and no hash-map iteration order: the same scenario and seed
//! give byte-identical files.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{round2, round4};

/// Quality for the viewers at one interest level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelReport {
    /// The level's name.
    pub level: String,
    /// Viewers at this level (strongest interest).
    pub viewers: u64,
    /// Frames expected by them.
    pub expected_frames: u64,
    /// Share of expected frames delivered.
    pub delivery_ratio: f64,
    /// Share of expected frames delivered before their play-out deadline.
    pub continuity: f64,
    /// The same for video frames alone (audio frames are many and small, so the overall
    /// continuity can hide a video stream that stalls).
    #[serde(default)]
    pub video_continuity: f64,
    /// Latency median, ms.
    pub latency_p50_ms: f64,
    /// Latency 95th percentile, ms.
    pub latency_p95_ms: f64,
    /// Latency 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Startup delay median, ms.
    pub startup_p50_ms: f64,
    /// Startup delay 95th percentile, ms.
    pub startup_p95_ms: f64,
    /// Longest startup delay, ms.
    pub startup_max_ms: f64,
    /// Viewers present for more than 5 s that never started playing.
    pub never_started: u64,
    /// Duplicate updates received / unique updates received.
    pub duplicate_ratio: f64,
}

/// A summary of a distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Distribution {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Distribution {
    /// Summary of sorted values, each multiplied by `scale`.
    pub fn of_sorted(v: &[f64], scale: f64) -> Distribution {
        if v.is_empty() {
            return Distribution::default();
        }
        let q = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            round2(v[i] * scale)
        };
        Distribution {
            mean: round2(v.iter().sum::<f64>() / v.len() as f64 * scale),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: q(1.0),
        }
    }
}

/// Upload per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadReport {
    /// Viewers' upload rates, kbit/s.
    pub viewers: Distribution,
    /// The broadcaster's upload (calls: mean over participants), kbit/s.
    pub publisher_kbps: f64,
    /// The same as a multiple of one publisher's stream rate.
    pub publisher_x_stream: f64,
    /// CDF of viewers' upload, (kbit/s, fraction).
    pub cdf: Series,
}

/// Repair after one fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Which fault.
    pub fault: String,
    /// Surviving viewers considered.
    pub viewers: u64,
    /// Median time to the first delivery of a frame published after the fault (or heal), ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Viewers that never got such a frame.
    pub never_repaired: u64,
}

/// A labelled series of points (for plots).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Label.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

/// Raw counters of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes of update messages.
    pub update_bytes: u64,
    /// Bytes of every other message.
    pub control_bytes: u64,
    /// Bytes resent by loss recovery.
    pub retransmitted_bytes: u64,
    /// Messages dropped at a full uplink queue.
    pub uplink_drops: u64,
    /// Messages dropped at a full downlink queue.
    pub downlink_drops: u64,
    /// Loss events (a lost transmission attempt).
    pub losses: u64,
    /// Messages lost for good.
    pub lost_messages: u64,
    /// Messages to a dead or cut-off node.
    pub unreachable: u64,
    /// Messages to an id that is no node.
    pub bad_destination: u64,
    /// Messages that arrived on a connection the receiver had closed.
    pub closed_connection: u64,
    /// Messages that failed to decode.
    pub decode_errors: u64,
    /// Deliveries of updates the node did not ask for.
    pub unwanted_deliveries: u64,
    /// Deliveries of updates that were never published.
    pub unknown_deliveries: u64,
    /// Invariant: an update delivered twice to the same node.
    pub violations_duplicate_delivery: u64,
    /// Invariant: a video delta delivered before its keyframe.
    pub violations_missing_keyframe: u64,
}

impl Counters {
    /// Adds `other`'s counts to these (the shards of one run).
    pub fn add(&mut self, other: &Counters) {
        self.events += other.events;
        self.messages += other.messages;
        self.update_bytes += other.update_bytes;
        self.control_bytes += other.control_bytes;
        self.retransmitted_bytes += other.retransmitted_bytes;
        self.uplink_drops += other.uplink_drops;
        self.downlink_drops += other.downlink_drops;
        self.losses += other.losses;
        self.lost_messages += other.lost_messages;
        self.unreachable += other.unreachable;
        self.bad_destination += other.bad_destination;
        self.closed_connection += other.closed_connection;
        self.decode_errors += other.decode_errors;
        self.unwanted_deliveries += other.unwanted_deliveries;
        self.unknown_deliveries += other.unknown_deliveries;
        self.violations_duplicate_delivery += other.violations_duplicate_delivery;
        self.violations_missing_keyframe += other.violations_missing_keyframe;
    }
}

/// One protocol's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Protocol name.
    pub protocol: String,
    /// Per interest level, strongest first.
    pub levels: Vec<LevelReport>,
    /// Duplicate ratio over all nodes.
    pub duplicate_ratio: f64,
    /// Control bytes / all bytes.
    pub control_overhead: f64,
    /// Upload.
    pub upload: UploadReport,
    /// Median hops of delivered updates.
    pub hops_p50: u64,
    /// 99th percentile hops.
    pub hops_p99: u64,
    /// Most hops.
    pub hops_max: u64,
    /// Repair per fault.
    pub repair: Vec<RepairReport>,
    /// On-time delivery per second of stream, per level.
    pub delivery_over_time: Vec<Series>,
    /// Latency CDF per level, (ms, fraction).
    pub latency_cdf: Vec<Series>,
    /// Counters.
    pub counters: Counters,
    /// The protocol's own counters summed over nodes (drops by reason, repairs, ...).
    pub protocol_counters: BTreeMap<String, u64>,
}

/// The report of a whole `run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The seed.
    pub seed: u64,
    /// Nodes planned over the run.
    pub nodes: u64,
    /// Seconds streamed.
    pub duration_s: f64,
    /// One publisher's stream rate, kbit/s.
    pub stream_kbps: f64,
    /// Network preset.
    pub network: String,
    /// Overrides applied.
    pub overrides: Vec<String>,
    /// Results per protocol, in the scenario's order.
    pub runs: Vec<RunReport>,
}

impl Report {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (seed {}): {} nodes, {:.0} s, stream {:.0} kbit/s, network {}",
            self.scenario, self.seed, self.nodes, self.duration_s, self.stream_kbps, self.network
        );
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "protocol",
            "level",
            "viewers",
            "deliver",
            "contin.",
            "video",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "start p95",
            "dup"
        );
        for r in &self.runs {
            for l in &r.levels {
                // Startup is attributed to a viewer's strongest level; "-" when none started.
                let startup = if l.startup_max_ms == 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:.0}", l.startup_p95_ms)
                };
                let _ = writeln!(
                    s,
                    "{:<10} {:<8} {:>7} {:>7.2}% {:>7.2}% {:>7.2}% {:>8.0} {:>8.0} {:>8.0} {:>9} {:>6.1}%",
                    r.protocol,
                    l.level,
                    l.viewers,
                    l.delivery_ratio * 100.0,
                    l.continuity * 100.0,
                    l.video_continuity * 100.0,
                    l.latency_p50_ms,
                    l.latency_p95_ms,
                    l.latency_p99_ms,
                    startup,
                    l.duplicate_ratio * 100.0
                );
            }
        }
        let _ = writeln!(
            s,
            "\n{:<10} {:>8} {:>8} {:>11} {:>11} {:>13} {:>9} {:>9} {:>9}",
            "protocol",
            "control",
            "dup",
            "up p50 kbps",
            "up p99 kbps",
            "publisher",
            "hops p99",
            "hops max",
            "drops"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:<10} {:>7.2}% {:>7.1}% {:>11.0} {:>11.0} {:>6.1}x strm {:>9} {:>9} {:>9}",
                r.protocol,
                r.control_overhead * 100.0,
                r.duplicate_ratio * 100.0,
                r.upload.viewers.p50,
                r.upload.viewers.p99,
                r.upload.publisher_x_stream,
                r.hops_p99,
                r.hops_max,
                r.counters.uplink_drops + r.counters.downlink_drops
            );
            for rep in &r.repair {
                let _ = writeln!(
                    s,
                    "           repair after {}: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms, never {}",
                    rep.fault, rep.p50_ms, rep.p95_ms, rep.max_ms, rep.never_repaired
                );
            }
            let c = &r.counters;
            if c.violations_duplicate_delivery + c.violations_missing_keyframe > 0 {
                let _ = writeln!(
                    s,
                    "           INVARIANT VIOLATIONS: {} duplicate deliveries, {} deltas without keyframe",
                    c.violations_duplicate_delivery, c.violations_missing_keyframe
                );
            }
        }
        s
    }
}

/// Direction of a metric.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

fn metrics_of(r: &RunReport) -> Vec<(String, f64, Better)> {
    let mut v = Vec::new();
    for l in &r.levels {
        let p = |m: &str| format!("{}.{}", l.level, m);
        v.push((p("delivery_ratio"), l.delivery_ratio, Better::Higher));
        v.push((p("continuity"), l.continuity, Better::Higher));
        v.push((p("video_continuity"), l.video_continuity, Better::Higher));
        v.push((p("latency_p50_ms"), l.latency_p50_ms, Better::Lower));
        v.push((p("latency_p99_ms"), l.latency_p99_ms, Better::Lower));
        v.push((p("startup_p95_ms"), l.startup_p95_ms, Better::Lower));
        v.push((p("duplicate_ratio"), l.duplicate_ratio, Better::Lower));
    }
    v.push(("control_overhead".into(), r.control_overhead, Better::Lower));
    v.push(("duplicate_ratio".into(), r.duplicate_ratio, Better::Lower));
    v.push((
        "upload_p99_kbps".into(),
        r.upload.viewers.p99,
        Better::Lower,
    ));
    v.push((
        "publisher_x_stream".into(),
        r.upload.publisher_x_stream,
        Better::Lower,
    ));
    v.push(("hops_p99".into(), r.hops_p99 as f64, Better::Lower));
    for (i, rep) in r.repair.iter().enumerate() {
        v.push((format!("repair[{i}].p95_ms"), rep.p95_ms, Better::Lower));
    }
    v
}

/// Compares two reports: per protocol present in both, each metric with its change and whether
/// it got better or worse. Returns the text and the number of metrics that got worse.
pub fn compare(a: &Report, b: &Report) -> (String, usize) {
    let mut s = String::new();
    let mut worse = 0;
    let _ = writeln!(
        s,
        "A: {} (seed {}, {} nodes)   B: {} (seed {}, {} nodes)",
        a.scenario, a.seed, a.nodes, b.scenario, b.seed, b.nodes
    );
    let _ = writeln!(
        s,
        "{:<10} {:<28} {:>12} {:>12} {:>10}  verdict",
        "protocol", "metric", "A", "B", "change"
    );
    for ra in &a.runs {
        let Some(rb) = b.runs.iter().find(|r| r.protocol == ra.protocol) else {
            let _ = writeln!(s, "{:<10} only in A", ra.protocol);
            continue;
        };
        let mb = metrics_of(rb);
        for (name, va, dir) in metrics_of(ra) {
            let Some((_, vb, _)) = mb.iter().find(|m| m.0 == name) else {
                continue;
            };
            let diff = vb - va;
            let tol = (va.abs().max(vb.abs()) * 0.01).max(1e-4);
            let verdict = if diff.abs() <= tol {
                "same"
            } else if (diff > 0.0) == (dir == Better::Higher) {
                "better"
            } else {
                worse += 1;
                "WORSE"
            };
            let _ = writeln!(
                s,
                "{:<10} {:<28} {:>12} {:>12} {:>+10}  {verdict}",
                ra.protocol,
                name,
                round4(va),
                round4(*vb),
                round4(diff)
            );
        }
    }
    for rb in &b.runs {
        if !a.runs.iter().any(|r| r.protocol == rb.protocol) {
            let _ = writeln!(s, "{:<10} only in B", rb.protocol);
        }
    }
    (s, worse)
}
