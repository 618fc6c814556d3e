//! Read → packetize → depacketize → write, for every committed sample, and ffmpeg's verdict on
//! what was written.

use std::path::{Path, PathBuf};
use std::process::Command;

use elara_core::{NodeId, StateId, Time};
use elara_media::{
    Codec, Delivery, Depacketizer, MediaReader, MediaWriter, Packetizer, PacketizerConfig,
};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The path of ffmpeg; fails the test with a clear message when it is not installed.
fn ffmpeg() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("ffmpeg"))
            .find(|p| p.is_file())
    });
    found.expect(
        "ffmpeg is required by the elara-media round-trip tests (apt-get install ffmpeg; \
         .ci/run installs it)",
    )
}

/// Sends every frame of `path` through packetizer and depacketizer (with `max_payload`) and
/// writes what comes out; returns the written bytes and the number of frames.
fn relay(path: &Path, max_payload: usize) -> (Vec<u8>, usize) {
    let mut reader = MediaReader::open(path).unwrap();
    let mut config = PacketizerConfig::new(StateId(9), NodeId::from_u64(1));
    config.max_payload = max_payload;
    let mut packetizer = Packetizer::new(config, reader.header().clone());
    let mut depacketizer = Depacketizer::new(StateId(9));
    let mut updates = Vec::new();
    let mut frames_in = 0;
    for frame in reader.by_ref() {
        packetizer.push(&frame.unwrap(), &mut updates).unwrap();
        frames_in += 1;
    }
    packetizer.finish(&mut updates);
    assert!(updates.iter().all(|u| u.payload.len() <= max_payload));
    let mut writer = None;
    let mut out = None;
    let mut frames_out = 0;
    for (i, u) in updates.into_iter().enumerate() {
        depacketizer.push(u, Time::from_micros(i as u64));
        while let Some(d) = depacketizer.poll(Time::from_micros(i as u64)) {
            match d {
                Delivery::Header(h) => {
                    if writer.is_none() {
                        writer = Some(MediaWriter::new(Vec::new(), &h).unwrap());
                    }
                }
                Delivery::Frame(f) => {
                    frames_out += 1;
                    writer.as_mut().unwrap().write_frame(&f.frame).unwrap();
                }
                Delivery::End { end_pts } => {
                    out = Some(writer.take().unwrap().finish(Some(end_pts)).unwrap());
                }
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(frames_in, frames_out);
    let stats = depacketizer.stats();
    assert_eq!(stats.packets_lost, 0);
    assert_eq!(stats.frames_dropped, 0);
    (out.expect("end of stream delivered"), frames_in)
}

fn ffmpeg_decodes(path: &Path) {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffmpeg complained about {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ffmpeg_output(args: &[&str], path: &Path, tail: &[&str]) -> Vec<u8> {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(args)
        .arg("-i")
        .arg(path)
        .args(tail)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn byte_identical(name: &str, ext: &str) {
    let original = std::fs::read(sample(name)).unwrap();
    for payload in [1200, 64 * 1024] {
        let (written, frames) = relay(&sample(name), payload);
        assert!(frames > 0);
        assert!(
            written == original,
            "{name} via payload {payload}: written file differs"
        );
        let path = out_dir().join(format!("{name}.{payload}.{ext}"));
        std::fs::write(&path, &written).unwrap();
        ffmpeg_decodes(&path);
    }
}

#[test]
fn annex_b_h264_is_byte_identical_and_decodes() {
    byte_identical("testsrc.h264", "h264");
}

#[test]
fn ivf_vp8_is_byte_identical_and_decodes() {
    byte_identical("testsrc-vp8.ivf", "ivf");
}

#[test]
fn ivf_vp9_is_byte_identical_and_decodes() {
    byte_identical("testsrc-vp9.ivf", "ivf");
}

#[test]
fn ivf_av1_is_byte_identical_and_decodes() {
    byte_identical("testsrc-av1.ivf", "ivf");
}

#[test]
fn ogg_opus_keeps_packets_granules_and_samples() {
    let (written, frames) = relay(&sample("speech.opus"), 1200);
    assert_eq!(frames, 501); // 10 s + pre-skip: the last packet is end-trimmed
    let path = out_dir().join("speech.relayed.opus");
    std::fs::write(&path, &written).unwrap();
    // Stronger than required: for this sample the pagination (50 packets a page) matches
    // ffmpeg's, so even the bytes are identical.
    assert!(
        written == std::fs::read(sample("speech.opus")).unwrap(),
        "ogg bytes differ"
    );
    ffmpeg_decodes(&path);
    // Per-packet hashes (with pts/dts/duration from the granule positions) must match.
    let hashes = |p: &Path| {
        ffmpeg_output(
            &[],
            p,
            &["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"],
        )
    };
    let a = hashes(&sample("speech.opus"));
    let b = hashes(&path);
    assert!(!a.is_empty());
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    // Same decoded samples.
    let pcm = |p: &Path| ffmpeg_output(&[], p, &["-f", "s16le", "-ac", "1", "-"]);
    let (pa, pb) = (pcm(&sample("speech.opus")), pcm(&path));
    assert!(pa.len() > 48_000);
    assert!(pa == pb, "decoded samples differ");
    // And the headers survive verbatim.
    let ra = MediaReader::open(sample("speech.opus")).unwrap();
    let rb = MediaReader::open(&path).unwrap();
    assert_eq!(ra.header(), rb.header());
}

#[test]
fn keyframes_come_every_two_seconds_in_every_video_sample() {
    for (name, frames, codec) in [
        ("testsrc.h264", 300, Codec::H264),
        ("testsrc-vp8.ivf", 300, Codec::Vp8),
        ("testsrc-vp9.ivf", 120, Codec::Vp9),
        ("testsrc-av1.ivf", 120, Codec::Av1),
    ] {
        let mut reader = MediaReader::open(sample(name)).unwrap();
        assert_eq!(reader.header().codec, codec);
        let all: Vec<_> = reader.by_ref().map(|f| f.unwrap()).collect();
        assert_eq!(all.len(), frames, "{name}");
        let keys: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<usize> = (0..frames).step_by(60).collect();
        assert_eq!(keys, expected, "{name}");
        assert_eq!(all[60].timestamp, Time::from_secs(2), "{name}");
    }
}

/// Hands out at most a few bytes per read, to exercise every buffer boundary.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn tiny_reads_give_the_same_frames() {
    for name in [
        "testsrc.h264",
        "testsrc-vp9.ivf",
        "speech.opus",
        "speech-8k.wav",
    ] {
        let bytes = std::fs::read(sample(name)).unwrap();
        let whole: Vec<_> = MediaReader::new(&bytes[..])
            .unwrap()
            .map(|f| f.unwrap())
            .collect();
        let trickled: Vec<_> = MediaReader::new(Trickle {
            data: &bytes,
            step: 0,
        })
        .unwrap()
        .map(|f| f.unwrap())
        .collect();
        assert!(!whole.is_empty());
        assert_eq!(whole, trickled, "{name}");
    }
}

#[test]
fn every_h264_keyframe_carries_its_parameter_sets() {
    let mut keys = 0;
    for f in MediaReader::open(sample("testsrc.h264")).unwrap() {
        let f = f.unwrap();
        let au = elara_media::codec::h264_access_unit(&f.data).unwrap();
        assert_eq!(au.slices, 1, "one slice per picture");
        assert_eq!(f.keyframe, au.idr);
        if f.keyframe {
            keys += 1;
            assert!(au.is_random_access_point());
        } else {
            assert!(!au.sps && !au.pps);
        }
    }
    assert_eq!(keys, 5);
}
