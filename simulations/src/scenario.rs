//! Scenario files: TOML describing who takes part, what is streamed, over which links, with
//! which churn and faults.
//!
//! Loading goes file → TOML table → `--set key=value` overrides → typed [`Scenario`] (every
//! unknown or mistyped field is reported with its dotted path) → [`Scenario::validate`]
//! (impossible settings are refused with the field and the reason).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a scenario could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The scenario file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The scenario file.
        file: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A field is unknown, missing, or has the wrong type.
    #[error("{file}: field `{field}`: {problem}")]
    Field {
        /// The scenario file.
        file: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A `--set key=value` override is malformed.
    #[error("--set {arg}: {problem}")]
    Override {
        /// The override as given.
        arg: String,
        /// What is wrong.
        problem: String,
    },
}

/// What kind of session a scenario simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// One broadcaster, many viewers.
    Livestream,
    /// A group call: every participant publishes audio and video and watches the others.
    Call,
}

/// Shares of viewers per interest level (normalised; they need not sum to 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterestMix {
    /// Share at `Critical`.
    pub critical: f64,
    /// Share at `High`.
    pub high: f64,
    /// Share at `Medium`.
    pub medium: f64,
    /// Share at `Low` (keyframes only).
    pub low: f64,
}

impl Default for InterestMix {
    fn default() -> Self {
        InterestMix {
            critical: 0.0,
            high: 0.3,
            medium: 0.5,
            low: 0.2,
        }
    }
}

/// How video frame sizes are produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoMode {
    /// Every delta the same size, keyframes `keyframe_ratio` times larger.
    Cbr,
    /// Sizes vary randomly around the CBR sizes by `vbr_spread`.
    Vbr,
    /// Frame sizes and timing from a video file (IVF or H.264 Annex B) via `elara-media`.
    File,
}

/// Smallest fragment size a scenario may ask for: smaller ones multiply the events.
pub const MIN_FRAGMENT_BYTES: u32 = 1_000;

/// The video track of each publisher.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSpec {
    /// Publish video at all.
    pub enabled: bool,
    /// How sizes are produced.
    pub mode: VideoMode,
    /// Average bit rate in kbit/s (synthetic modes).
    pub bitrate_kbps: f64,
    /// Frames per second (synthetic modes).
    pub fps: f64,
    /// Seconds between keyframes (synthetic modes).
    pub keyframe_interval_s: f64,
    /// Size of a keyframe relative to a delta.
    pub keyframe_ratio: f64,
    /// Relative spread of VBR sizes (0.3 = ±30% typical).
    pub vbr_spread: f64,
    /// Frames larger than this many bytes are cut into fragments of at most this size, as
    /// `elara-media`'s packetizer cuts them (consecutive sequence numbers, every fragment of a
    /// keyframe flagged as one), so that relays pass a keyframe on piece by piece instead of
    /// holding it whole at every hop. 0 sends every frame whole. The packetizer's 1,200-byte
    /// cuts would multiply the simulator's events several times for little difference.
    pub fragment_bytes: u32,
    /// The media file for `mode = "file"` (relative to the scenario file).
    pub file: Option<PathBuf>,
}

impl Default for VideoSpec {
    fn default() -> Self {
        VideoSpec {
            enabled: true,
            mode: VideoMode::Cbr,
            bitrate_kbps: 2500.0,
            fps: 30.0,
            keyframe_interval_s: 2.0,
            keyframe_ratio: 6.0,
            vbr_spread: 0.3,
            fragment_bytes: 0,
            file: None,
        }
    }
}

/// The audio track of each publisher (Opus-like: fixed-duration frames).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSpec {
    /// Publish audio at all.
    pub enabled: bool,
    /// Bit rate in kbit/s (synthetic).
    pub bitrate_kbps: f64,
    /// Frame duration in milliseconds.
    pub frame_ms: f64,
    /// An Ogg Opus file whose packet sizes and durations are replayed (relative to the scenario).
    pub file: Option<PathBuf>,
}

impl Default for AudioSpec {
    fn default() -> Self {
        AudioSpec {
            enabled: true,
            bitrate_kbps: 32.0,
            frame_ms: 20.0,
            file: None,
        }
    }
}

/// What each publisher sends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// The video track.
    pub video: VideoSpec,
    /// The audio track.
    pub audio: AudioSpec,
}

/// One class of access links: a share of the nodes with given capacities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityClass {
    /// Share of nodes in this class.
    pub share: f64,
    /// Download capacity in Mbit/s.
    pub down_mbps: f64,
    /// Upload capacity in Mbit/s.
    pub up_mbps: f64,
}

/// Access link capacities of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Download capacity in Mbit/s.
    pub down_mbps: f64,
    /// Upload capacity in Mbit/s.
    pub up_mbps: f64,
}

/// Gilbert-Elliott bursty loss on each node's access link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// Per packet probability of entering the bad state.
    pub p_enter: f64,
    /// Per packet probability of leaving the bad state.
    pub p_exit: f64,
    /// Loss probability while in the bad state.
    pub loss: f64,
}

/// What happens to a lost packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// QUIC streams: the lost part is retransmitted one RTT later (the frame is late, not lost),
    /// up to 4 attempts.
    QuicStream,
    /// Datagrams: a lost frame is gone.
    None,
}

/// The network model's settings; unset fields come from the preset.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    /// A named preset: `lan`, `broadband`, `cellular`, `satellite`.
    pub preset: Option<String>,
    /// Mean one-way latency between two nodes, milliseconds.
    pub mean_one_way_ms: Option<f64>,
    /// Mean of the exponential per-packet jitter, milliseconds.
    pub jitter_ms: Option<f64>,
    /// Independent random loss per packet.
    pub loss: Option<f64>,
    /// Bursty loss; `None` keeps the preset's.
    pub burst: Option<BurstSpec>,
    /// Disable bursty loss even if the preset has it.
    pub no_burst: bool,
    /// Queue length of each access link, in milliseconds of its capacity.
    pub queue_ms: Option<f64>,
    /// Capacity classes of viewers/participants.
    pub capacity: Option<Vec<CapacityClass>>,
    /// Capacity of the broadcaster (livestream).
    pub broadcaster: Option<Capacity>,
    /// Loss recovery.
    pub recovery: Option<Recovery>,
    /// How long until a crashed peer is noticed by its neighbours (QUIC idle timeout), ms.
    pub failure_detect_ms: Option<f64>,
}

/// Joins and leaves as Poisson processes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnSpec {
    /// Share of viewers leaving per minute (0.2 = 20%/min); leavers are replaced by new viewers
    /// at the same rate, so the population stays stable.
    pub leave_per_min: f64,
    /// Additional joins per second.
    pub join_per_s: f64,
    /// Share of leaves that are crashes rather than graceful.
    pub crash_share: f64,
    /// Churn starts at this time (seconds).
    pub start_s: f64,
}

/// A flash crowd: many viewers joining over a short time.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashCrowd {
    /// Viewers that join.
    pub viewers: u32,
    /// When the crowd starts arriving (seconds).
    pub start_s: f64,
    /// Over how many seconds they arrive (uniformly at random).
    pub over_s: f64,
}

/// A fault injected at a given time.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// A share of the viewers crash at once.
    MassFailure {
        /// When (seconds).
        at_s: f64,
        /// Share of viewers that crash.
        fraction: f64,
    },
    /// The nodes split into two sides that cannot reach each other, then heal.
    Partition {
        /// When the partition starts (seconds).
        at_s: f64,
        /// When it heals (seconds).
        heal_s: f64,
        /// Share of viewers cut off from the broadcaster's side.
        fraction: f64,
    },
}

impl Fault {
    /// When the fault strikes.
    pub fn at_s(&self) -> f64 {
        match self {
            Fault::MassFailure { at_s, .. } | Fault::Partition { at_s, .. } => *at_s,
        }
    }
}

/// The play-out model used for continuity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayoutSpec {
    /// A frame counts as on time if delivered within this many ms of its publish time.
    pub deadline_ms: f64,
}

impl Default for PlayoutSpec {
    fn default() -> Self {
        PlayoutSpec {
            deadline_ms: 1000.0,
        }
    }
}

/// Settings of the random push gossip baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSpec {
    /// Peers each node pushes every new update to.
    pub fanout: u32,
    /// Peers each node keeps in its partial view.
    pub view: u32,
}

impl Default for GossipSpec {
    fn default() -> Self {
        GossipSpec {
            fanout: 4,
            view: 12,
        }
    }
}

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// One line saying what it is.
    #[serde(default)]
    pub description: String,
    /// Livestream or call.
    pub kind: ScenarioKind,
    /// Seconds of streaming.
    #[serde(default = "default_duration")]
    pub duration_s: f64,
    /// Seconds simulated after the stream ends so that late frames can arrive.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Default seed (`--seed` overrides).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Livestream: viewers present from the start (they join over the first `join_over_s`).
    #[serde(default)]
    pub viewers: u32,
    /// Livestream: initial viewers join uniformly over this many seconds.
    #[serde(default = "default_join_over")]
    pub join_over_s: f64,
    /// Call: total nodes in the call (participants plus listeners).
    #[serde(default)]
    pub nodes: u32,
    /// Call: how many nodes publish audio and video.
    #[serde(default)]
    pub participants: u32,
    /// Protocols to run, side by side: `elara`, `star`, `gossip`, `elara-0.2`.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<String>,
    /// Interest mix of viewers (calls: of participants towards each other).
    #[serde(default)]
    pub interest: InterestMix,
    /// What is published.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// The network.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Churn.
    #[serde(default)]
    pub churn: ChurnSpec,
    /// A flash crowd.
    #[serde(default)]
    pub flash_crowd: Option<FlashCrowd>,
    /// Faults.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Play-out model.
    #[serde(default)]
    pub playout: PlayoutSpec,
    /// Gossip baseline settings.
    #[serde(default)]
    pub gossip: GossipSpec,
    /// Interval of link feedback to nodes, ms.
    #[serde(default = "default_feedback")]
    pub feedback_ms: f64,
    /// Whom a joining viewer contacts first.
    #[serde(default)]
    pub bootstrap: Bootstrap,
}

/// Whom a joining viewer is given to contact first (its bootstrap peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// The publisher (the first track's authority): every join starts at the root. A
    /// publisher's uplink carries one redirect and one hello per joiner besides the stream,
    /// which at thousands of joins a second leaves no room for the stream.
    #[default]
    Publisher,
    /// A tracker that the strong relays near the root register with (as a deployment's
    /// rendezvous service would): each joiner gets one of the relays with room for two or
    /// more children at depth 1 or 2, at random, and joins down from there; the publisher
    /// while fewer than a dozen such relays exist. Protocols without a tree (the baselines)
    /// always get the publisher.
    Tracker,
}

fn default_duration() -> f64 {
    60.0
}
fn default_drain() -> f64 {
    3.0
}
fn default_seed() -> u64 {
    1
}
fn default_join_over() -> f64 {
    2.0
}
fn default_feedback() -> f64 {
    250.0
}
fn default_protocols() -> Vec<String> {
    crate::PROTOCOLS.iter().map(|s| s.to_string()).collect()
}

/// A bounded, impossible-settings check: `field`, `problem`.
type Invalid = (String, String);

fn positive(field: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err((field.into(), format!("must be a positive number (got {v})")))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err((field.into(), format!("must be zero or positive (got {v})")))
    }
}

fn probability(field: &str, v: f64) -> Result<(), Invalid> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err((field.into(), format!("must be between 0 and 1 (got {v})")))
    }
}

/// Largest number of nodes a scenario may ask for.
pub const MAX_NODES: u64 = 4_000_000;

impl Scenario {
    /// Reads, overrides and validates a scenario file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.to_owned(),
            source,
        })?;
        let mut scenario = Self::parse(path, &text, overrides)?;
        scenario.resolve_paths(path);
        Ok(scenario)
    }

    /// Parses scenario text (`file` is used in error messages only).
    pub fn parse(file: &Path, text: &str, overrides: &[String]) -> Result<Scenario, ScenarioError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ScenarioError::Syntax {
                    file: file.to_owned(),
                    message: e.to_string().trim().replace('\n', " "),
                })?;
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let scenario: Scenario = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let field = e.path().to_string();
                ScenarioError::Field {
                    file: file.to_owned(),
                    field: if field == "." {
                        "(top level)".into()
                    } else {
                        field
                    },
                    problem: e.into_inner().to_string(),
                }
            })?;
        scenario
            .validate()
            .map_err(|(field, problem)| ScenarioError::Field {
                file: file.to_owned(),
                field,
                problem,
            })?;
        Ok(scenario)
    }

    fn resolve_paths(&mut self, scenario_file: &Path) {
        let dir = scenario_file.parent().unwrap_or(Path::new("."));
        for file in [&mut self.workload.video.file, &mut self.workload.audio.file]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }

    /// Total nodes the scenario creates over its lifetime (publishers, viewers, joiners).
    pub fn total_nodes_estimate(&self) -> u64 {
        let churn_joins = (self.churn.leave_per_min / 60.0 * f64::from(self.viewers)
            + self.churn.join_per_s)
            * self.duration_s;
        let flash = self.flash_crowd.as_ref().map_or(0, |f| f.viewers);
        match self.kind {
            ScenarioKind::Livestream => {
                1 + u64::from(self.viewers) + u64::from(flash) + churn_joins.max(0.0) as u64
            }
            ScenarioKind::Call => u64::from(self.nodes) + churn_joins.max(0.0) as u64,
        }
    }

    /// Refuses impossible or inconsistent settings, naming the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        positive("duration_s", self.duration_s)?;
        non_negative("drain_s", self.drain_s)?;
        non_negative("join_over_s", self.join_over_s)?;
        positive("feedback_ms", self.feedback_ms)?;
        positive("playout.deadline_ms", self.playout.deadline_ms)?;
        if self.duration_s > 86_400.0 {
            return Err(("duration_s".into(), "longer than a day".into()));
        }
        match self.kind {
            ScenarioKind::Livestream => {
                if self.viewers == 0 && self.flash_crowd.is_none() && self.churn.join_per_s <= 0.0 {
                    return Err((
                        "viewers".into(),
                        "a livestream needs viewers (or a flash crowd, or joins)".into(),
                    ));
                }
                if self.participants != 0 || self.nodes != 0 {
                    return Err((
                        "participants".into(),
                        "`nodes` and `participants` are for calls; a livestream has `viewers`"
                            .into(),
                    ));
                }
            }
            ScenarioKind::Call => {
                if self.participants < 2 {
                    return Err((
                        "participants".into(),
                        format!(
                            "a call needs at least 2 participants (got {})",
                            self.participants
                        ),
                    ));
                }
                if self.nodes == 0 {
                    return Err((
                        "nodes".into(),
                        "a call needs `nodes` (at least the participants)".into(),
                    ));
                }
                if self.participants > self.nodes {
                    return Err((
                        "participants".into(),
                        format!(
                            "more participants ({}) than nodes ({})",
                            self.participants, self.nodes
                        ),
                    ));
                }
                if self.participants > 64 {
                    return Err((
                        "participants".into(),
                        "calls are limited to 64 participants".into(),
                    ));
                }
                if self.flash_crowd.is_some() {
                    return Err((
                        "flash_crowd".into(),
                        "only livestreams have flash crowds".into(),
                    ));
                }
            }
        }
        if self.total_nodes_estimate() > MAX_NODES {
            return Err((
                "viewers".into(),
                format!("the scenario would create more than {MAX_NODES} nodes"),
            ));
        }
        if self.protocols.is_empty() {
            return Err(("protocols".into(), "name at least one protocol".into()));
        }
        for (i, p) in self.protocols.iter().enumerate() {
            if !crate::PROTOCOLS.contains(&p.as_str()) {
                return Err((
                    format!("protocols[{i}]"),
                    format!(
                        "unknown protocol `{p}` (known: {})",
                        crate::PROTOCOLS.join(", ")
                    ),
                ));
            }
        }
        let m = &self.interest;
        for (name, v) in [
            ("interest.critical", m.critical),
            ("interest.high", m.high),
            ("interest.medium", m.medium),
            ("interest.low", m.low),
        ] {
            non_negative(name, v)?;
        }
        if m.critical + m.high + m.medium + m.low <= 0.0 {
            return Err(("interest".into(), "all shares are zero".into()));
        }
        let v = &self.workload.video;
        if v.enabled {
            if v.fragment_bytes != 0 && v.fragment_bytes < MIN_FRAGMENT_BYTES {
                return Err((
                    "workload.video.fragment_bytes".into(),
                    format!(
                        "{} bytes is below {MIN_FRAGMENT_BYTES} (0 sends frames whole)",
                        v.fragment_bytes
                    ),
                ));
            }
            match v.mode {
                VideoMode::Cbr | VideoMode::Vbr => {
                    positive("workload.video.bitrate_kbps", v.bitrate_kbps)?;
                    positive("workload.video.fps", v.fps)?;
                    if v.fps > 240.0 {
                        return Err((
                            "workload.video.fps".into(),
                            format!("{} fps is above 240", v.fps),
                        ));
                    }
                    positive("workload.video.keyframe_interval_s", v.keyframe_interval_s)?;
                    if v.keyframe_ratio < 1.0 || !v.keyframe_ratio.is_finite() {
                        return Err((
                            "workload.video.keyframe_ratio".into(),
                            format!("must be at least 1 (got {})", v.keyframe_ratio),
                        ));
                    }
                    probability("workload.video.vbr_spread", v.vbr_spread)?;
                    let kf = crate::workload::keyframe_bytes(v);
                    if kf > elara_core::wire::MAX_PAYLOAD as f64 {
                        return Err((
                            "workload.video.bitrate_kbps".into(),
                            format!(
                                "keyframes would be {kf:.0} bytes, above the wire limit of {} \
                                 (one frame is one update in the simulator)",
                                elara_core::wire::MAX_PAYLOAD
                            ),
                        ));
                    }
                }
                VideoMode::File => {
                    if v.file.is_none() {
                        return Err((
                            "workload.video.file".into(),
                            "mode = \"file\" needs a file".into(),
                        ));
                    }
                }
            }
        }
        let a = &self.workload.audio;
        if a.enabled && a.file.is_none() {
            positive("workload.audio.bitrate_kbps", a.bitrate_kbps)?;
            positive("workload.audio.frame_ms", a.frame_ms)?;
            if a.frame_ms < 2.5 {
                return Err(("workload.audio.frame_ms".into(), "below 2.5 ms".into()));
            }
        }
        if !v.enabled && !a.enabled {
            return Err((
                "workload".into(),
                "neither video nor audio is enabled".into(),
            ));
        }
        crate::network::LinkModel::from_spec(&self.network).map(|_| ())?;
        let c = &self.churn;
        non_negative("churn.leave_per_min", c.leave_per_min)?;
        non_negative("churn.join_per_s", c.join_per_s)?;
        probability("churn.crash_share", c.crash_share)?;
        non_negative("churn.start_s", c.start_s)?;
        if c.leave_per_min > 60.0 {
            return Err((
                "churn.leave_per_min".into(),
                "more than 60 per minute".into(),
            ));
        }
        if let Some(f) = &self.flash_crowd {
            if f.viewers == 0 {
                return Err(("flash_crowd.viewers".into(), "must be at least 1".into()));
            }
            non_negative("flash_crowd.start_s", f.start_s)?;
            non_negative("flash_crowd.over_s", f.over_s)?;
        }
        for (i, f) in self.faults.iter().enumerate() {
            match f {
                Fault::MassFailure { at_s, fraction } => {
                    non_negative(&format!("faults[{i}].at_s"), *at_s)?;
                    probability(&format!("faults[{i}].fraction"), *fraction)?;
                }
                Fault::Partition {
                    at_s,
                    heal_s,
                    fraction,
                } => {
                    non_negative(&format!("faults[{i}].at_s"), *at_s)?;
                    probability(&format!("faults[{i}].fraction"), *fraction)?;
                    if heal_s <= at_s {
                        return Err((
                            format!("faults[{i}].heal_s"),
                            format!("heals at {heal_s} s, before it starts at {at_s} s"),
                        ));
                    }
                }
            }
        }
        if self.gossip.fanout == 0 {
            return Err(("gossip.fanout".into(), "must be at least 1".into()));
        }
        if self.gossip.view < self.gossip.fanout {
            return Err(("gossip.view".into(), "must be at least the fanout".into()));
        }
        Ok(())
    }
}

/// Applies one `key.path=value` override to the raw table. The value is read as TOML
/// (`3`, `0.5`, `true`, `"text"`, `[1, 2]`); anything else is taken as a string.
fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ScenarioError> {
    let bad = |problem: &str| ScenarioError::Override {
        arg: arg.to_owned(),
        problem: problem.to_owned(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("empty key"));
    }
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").ok_or_else(|| bad("no value"))?,
        Err(_) => toml::Value::String(raw.to_owned()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(|| bad("empty key"))?;
    let mut cur = table;
    for p in parts {
        let (name, index) = split_index(p).map_err(|e| bad(&e))?;
        let entry = cur
            .entry(name.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let entry = match index {
            None => entry,
            Some(i) => entry
                .as_array_mut()
                .and_then(|a| a.get_mut(i))
                .ok_or_else(|| bad(&format!("`{name}` has no element {i}")))?,
        };
        cur = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("`{p}` is not a table")))?;
    }
    let (name, index) = split_index(last).map_err(|e| bad(&e))?;
    match index {
        None => {
            cur.insert(name.to_owned(), value);
        }
        Some(i) => {
            let slot = cur
                .get_mut(name)
                .and_then(|v| v.as_array_mut())
                .and_then(|a| a.get_mut(i))
                .ok_or_else(|| bad(&format!("`{name}` has no element {i}")))?;
            *slot = value;
        }
    }
    Ok(())
}

/// `name[3]` → (`name`, Some(3)); `name` → (`name`, None).
fn split_index(part: &str) -> Result<(&str, Option<usize>), String> {
    match part.split_once('[') {
        None => Ok((part, None)),
        Some((name, rest)) => {
            let idx = rest
                .strip_suffix(']')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad index in `{part}`"))?;
            Ok((name, Some(idx)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"t\"\nkind = \"livestream\"\nviewers = 10\n";

    fn parse(text: &str, overrides: &[&str]) -> Result<Scenario, ScenarioError> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Scenario::parse(Path::new("t.toml"), text, &o)
    }

    #[test]
    fn minimal_scenario_gets_defaults_and_overrides() {
        let s = parse(MINIMAL, &["viewers=25", "network.preset=cellular"]).unwrap();
        assert_eq!(s.viewers, 25);
        assert_eq!(s.network.preset.as_deref(), Some("cellular"));
        assert_eq!(s.duration_s, 60.0);
    }

    #[test]
    fn errors_name_file_field_and_problem() {
        let e = parse(
            MINIMAL,
            &["network.capacity=[{share=1.0, down_mbps=10, up_mbps=0}]"],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.toml") && e.contains("network.capacity[0].up_mbps"),
            "{e}"
        );
        let e = parse(MINIMAL, &["duration_s=\"long\""])
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `duration_s`"), "{e}");
        let e = parse(MINIMAL, &["network.mean_one_way_ms=-5"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("network.mean_one_way_ms") && e.contains("-5"),
            "{e}"
        );
        let e = parse(MINIMAL, &["colour=3"]).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let call = "name=\"c\"\nkind=\"call\"\nnodes=4\nparticipants=8\n";
        let e = parse(call, &[]).unwrap_err().to_string();
        assert!(e.contains("more participants (8) than nodes (4)"), "{e}");
        let e = parse("name = [", &[]).unwrap_err().to_string();
        assert!(e.contains("t.toml: not valid TOML"), "{e}");
        let e = parse(MINIMAL, &["protocols=[\"carrier-pigeon\"]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("protocols[0]"), "{e}");
        assert!(parse(MINIMAL, &["novalue"]).is_err());
        let with_fault = "name=\"f\"\nkind=\"livestream\"\nviewers=5\n[[faults]]\nkind=\"mass_failure\"\nat_s=30\nfraction=0.2\n";
        let s = parse(with_fault, &["faults[0].at_s=2"]).unwrap();
        assert_eq!(s.faults[0].at_s(), 2.0);
        let e = parse(with_fault, &["faults[3].at_s=2"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no element 3"), "{e}");
    }
}
