//! Reads a sample file, cuts it into state updates, sends them over a simulated lossy,
//! jittery path (deterministic: seeded), receives them through the depacketizer and jitter
//! buffer, writes what played to a new file, and prints the receive statistics.
//!
//! ```text
//! cargo run -p elara-media --example relay_file -- [INPUT] [OUTPUT] [LOSS_PERCENT] [SEED]
//! ```
//! Defaults: `samples/testsrc-vp8.ivf`, `$TMPDIR/relayed.<ext>`, 1 % loss, seed 7. The written
//! file plays in ffmpeg; with 0 % loss it is byte-identical to the input (Ogg Opus: same packets
//! and granule positions).

use std::path::PathBuf;
use std::time::Duration;

use elara_core::{NodeId, StateId, Time};
use elara_media::jitter::{JitterConfig, MediaReceiver, Playout, ReceiverEvent};
use elara_media::{MediaReader, MediaWriter, Packetizer, PacketizerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/testsrc-vp8.ivf"
        ))
    });
    let ext = input
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("bin")
        .to_owned();
    let output = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("relayed.{ext}")));
    let loss: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(7);

    // Sender: read and packetize.
    let mut reader = MediaReader::open(&input)?;
    let header = reader.header().clone();
    let state = StateId(1);
    let mut packetizer = Packetizer::new(PacketizerConfig::new(state, NodeId::from_u64(1)), header);
    let mut updates = Vec::new();
    let mut frames = 0usize;
    let mut bytes = 0usize;
    for frame in reader.by_ref() {
        let frame = frame?;
        frames += 1;
        bytes += frame.data.len();
        packetizer.push(&frame, &mut updates)?;
    }
    packetizer.finish(&mut updates);
    println!(
        "read {frames} {} frames ({bytes} bytes) from {} -> {} updates",
        reader.header().codec,
        input.display(),
        updates.len()
    );

    // The path: 20 ms base delay, up to 15 ms jitter (so updates reorder), `loss` % dropped.
    // Control updates (header, end) are sent reliably, as a transport would.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut arrivals = Vec::with_capacity(updates.len());
    let mut dropped = 0;
    for u in updates {
        let control = u.kind == elara_core::UpdateKind::Control;
        if !control && rng.random_bool((loss / 100.0).clamp(0.0, 1.0)) {
            dropped += 1;
            continue;
        }
        let delay = Duration::from_micros(20_000 + rng.random_range(0..15_000));
        arrivals.push((u.timestamp + delay, u));
    }
    arrivals.sort_by_key(|(at, u)| (*at, u.seq));
    println!("path dropped {dropped} updates, reordered the rest by jitter");

    // Receiver: depacketizer + jitter buffer, driven by arrival times and its own timers.
    let config = JitterConfig {
        target_delay: Duration::from_millis(60),
        ..JitterConfig::default()
    };
    let mut rx = MediaReceiver::new(state, config);
    let mut writer = None;
    let (mut played, mut concealed) = (0usize, 0usize);
    let mut handle =
        |rx: &mut MediaReceiver, now: Time| -> Result<(), Box<dyn std::error::Error>> {
            while let Some(event) = rx.poll(now) {
                match event {
                    ReceiverEvent::Header(h) if writer.is_none() => {
                        writer = Some(MediaWriter::create(&output, &h)?);
                    }
                    ReceiverEvent::Play(Playout::Frame(f)) => {
                        played += 1;
                        if let Some(w) = writer.as_mut() {
                            w.write_frame(&f.frame)?;
                        }
                    }
                    ReceiverEvent::Play(Playout::Conceal { .. }) => concealed += 1,
                    ReceiverEvent::End { end_pts } => {
                        if let Some(w) = writer.take() {
                            w.finish(Some(end_pts))?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        };
    for (at, update) in arrivals {
        while let Some(t) = rx.poll_timeout().filter(|&t| t <= at) {
            handle(&mut rx, t)?;
        }
        rx.push(update, at);
        handle(&mut rx, at)?;
    }
    // Play out the rest; after the end of the stream the receiver has no more timers.
    while let Some(t) = rx.poll_timeout() {
        handle(&mut rx, t)?;
    }
    let s = rx.stats();
    println!(
        "wrote {played} frames to {} ({concealed} slots concealed)",
        output.display()
    );
    println!(
        "updates: received {} expected {} lost {} ({:.2} %) duplicate {}; jitter {:.2} ms",
        s.packets_received,
        s.packets_expected,
        s.packets_lost,
        s.loss_rate_percent(),
        s.packets_duplicate,
        s.jitter_us / 1000.0
    );
    println!(
        "frames: delivered {} late {} concealed {} dropped as undecodable {}",
        s.frames_delivered, s.frames_late, s.frames_concealed, s.frames_dropped
    );
    Ok(())
}
