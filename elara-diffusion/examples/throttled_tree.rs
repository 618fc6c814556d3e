//! Schedules two seconds of a 30 frames/s video stream (a keyframe every second, frames with an
//! enhancement layer) plus audio from the root of a relay tree whose three subtrees want the
//! video at High, Medium and Low interest; the links to the Medium and Low subtrees are
//! throttled alike. Prints who got what: the Low subtree steps down first.
//!
//! `cargo run -p elara-diffusion --example throttled_tree`

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use elara_core::{GroupId, InterestLevel, NodeId, StateId, StateUpdate, Time, UpdateKind};
use elara_diffusion::scheduler::{LinkStats, PropagationScheduler, SchedulerConfig, Verdict};
use elara_diffusion::{InterestMap, PropagationTopology, Quality};

fn main() {
    let video = StateId(1);
    let audio = StateId(2);
    let root = NodeId::from_u64(0);
    let start = Time::from_secs(10);

    // Viewers declare interest; the tree aggregates it towards the root.
    let mut interests = InterestMap::new();
    let mut tree = PropagationTopology::tree(root, 3).expect("fanout > 0");
    for i in 1..=12u64 {
        let id = NodeId::from_u64(i);
        tree.add_node(id, 3).expect("room in the tree");
        // Breadth-first placement: 1..=3 under the root, then 4..=6 under 1, 7..=9 under 2,
        // 10..=12 under 3.
        let subtree = if i <= 3 { i } else { (i - 4) / 3 + 1 };
        let level = match subtree {
            1 => InterestLevel::High,
            2 => InterestLevel::Medium,
            _ => InterestLevel::Low,
        };
        interests
            .declare(start, id, video, level, None)
            .expect("within limits");
        interests
            .declare(start, id, audio, InterestLevel::Medium, None)
            .expect("within limits");
    }
    for (id, level) in interests.interested(video, start) {
        tree.set_interest(id, video, level).expect("node in tree");
    }
    for (id, level) in interests.interested(audio, start) {
        tree.set_interest(id, audio, level).expect("node in tree");
    }

    // The root's scheduler: one link per child; the links to children 2 and 3 carry 30 kB/s,
    // less than the ~38 kB/s of video and audio.
    let mut sched = PropagationScheduler::new(SchedulerConfig::default());
    let children: Vec<NodeId> = tree.children(root).collect();
    for (k, &child) in children.iter().enumerate() {
        let link = sched.add_link(start, child);
        let rate = if k == 0 { 1_000_000 } else { 30_000 };
        let stats = LinkStats {
            send_rate_estimate: rate,
            ..LinkStats::default()
        };
        sched
            .link_feedback(start, link, stats)
            .expect("link just added");
        for state in [video, audio] {
            let level = tree.effective_interest(child, state);
            sched
                .set_target(state, link, level)
                .expect("link just added");
        }
    }

    let mut out = Vec::new();
    let mut report: BTreeMap<NodeId, (u32, u32, Quality)> = BTreeMap::new();
    for frame in 0..60u64 {
        let now = start + Duration::from_millis(frame * 33);
        let base = StateUpdate::new(video, root, frame * 2, now)
            .with_kind(UpdateKind::Video)
            .with_group(GroupId(1 + frame / 30))
            .with_payload(Bytes::from(vec![0u8; 1100]));
        let base = if frame % 30 == 0 {
            base.keyframe()
        } else {
            base
        };
        let enhancement = base.clone().with_layer(1);
        let voice = StateUpdate::new(audio, root, frame, now)
            .with_kind(UpdateKind::Audio)
            .with_payload(Bytes::from(vec![0u8; 120]));
        for update in [&voice, &base, &enhancement] {
            sched.schedule_registered(now, update, &mut out);
            for d in &out {
                let peer = sched.peer(d.link).expect("live link");
                if update.kind == UpdateKind::Video {
                    let e = report.entry(peer).or_insert((0, 0, Quality::Full));
                    match d.verdict {
                        Verdict::Send => e.0 += 1,
                        Verdict::Drop(_) => e.1 += 1,
                    }
                    e.2 = e.2.max(d.quality);
                }
                if d.is_send() {
                    sched
                        .on_sent(now + d.delay(), d.link, update)
                        .expect("live link");
                }
            }
        }
    }

    println!("child  subtree interest  video sent  dropped  lowest quality");
    for (peer, (sent, dropped, quality)) in &report {
        println!(
            "{:>5}  {:>16}  {sent:>10}  {dropped:>7}  {quality:?}",
            peer.prefix_u64(),
            tree.effective_interest(*peer, video).name(),
        );
    }
    let stats = sched.stats();
    println!(
        "\nsent {} updates ({} bytes); p50 latency {:?}, p99 {:?}",
        stats.sent,
        stats.bytes_sent,
        stats.latency.percentile(0.5),
        stats.latency.percentile(0.99)
    );
    for (reason, n) in stats.drops().filter(|(_, n)| *n > 0) {
        println!("dropped {n:>4} as {reason}");
    }
}
