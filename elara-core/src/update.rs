use bytes::Bytes;

use crate::{GroupId, NodeId, Priority, StateId, Time};

/// What an update carries; the scheduler orders control and audio before video deltas and never
/// sends a delta whose group's keyframe a receiver did not get.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum UpdateKind {
    /// Application state (chat, game state, metadata): every update stands alone.
    #[default]
    Data = 0,
    /// Control state (mute, layout, call membership).
    Control = 1,
    /// An audio frame (every frame decodes on its own).
    Audio = 2,
    /// A video frame: a keyframe starts a group, deltas depend on it.
    Video = 3,
}

impl UpdateKind {
    /// From the wire tag.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => UpdateKind::Data,
            1 => UpdateKind::Control,
            2 => UpdateKind::Audio,
            3 => UpdateKind::Video,
            _ => return None,
        })
    }
}

/// Position of an update within a fragmented frame: fragment `index` of `count` (`0` of `1` for
/// an unfragmented frame).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fragment {
    /// Zero-based fragment index.
    pub index: u16,
    /// Number of fragments the frame was cut into (at least 1).
    pub count: u16,
}

impl Fragment {
    /// An unfragmented frame.
    pub const WHOLE: Fragment = Fragment { index: 0, count: 1 };

    /// True for the last (or only) fragment of a frame.
    pub const fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

impl Default for Fragment {
    fn default() -> Self {
        Fragment::WHOLE
    }
}

/// One update of a piece of state, travelling from the state's authority (`source`) to the nodes
/// that care about it.
///
/// Cloning is cheap: the payload is a reference-counted [`Bytes`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StateUpdate {
    /// The state this update belongs to.
    pub state: StateId,
    /// The state's authority; updates claiming another source are dropped by relays.
    pub source: NodeId,
    /// Sequence number, increasing by one per update of this state from this source.
    pub seq: u64,
    /// The group (GOP) this update starts or depends on.
    pub group: GroupId,
    /// When the authority produced the update (its capture or publish time).
    pub timestamp: Time,
    /// True when this update starts a group and decodes without earlier updates.
    pub keyframe: bool,
    /// Scalability layer (0 = base layer); receivers on a weak link get only the lower layers.
    pub layer: u8,
    /// Urgency on the link.
    pub priority: Priority,
    /// What the payload is.
    pub kind: UpdateKind,
    /// Fragment position when a large frame was cut into several updates.
    pub fragment: Fragment,
    /// The opaque payload (an encoded media frame, a state delta, ...).
    pub payload: Bytes,
}

impl StateUpdate {
    /// A data update with an empty payload in group 0, layer 0, normal priority.
    pub fn new(state: StateId, source: NodeId, seq: u64, timestamp: Time) -> Self {
        StateUpdate {
            state,
            source,
            seq,
            group: GroupId(0),
            timestamp,
            keyframe: false,
            layer: 0,
            priority: Priority::Normal,
            kind: UpdateKind::Data,
            fragment: Fragment::WHOLE,
            payload: Bytes::new(),
        }
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: Bytes) -> Self {
        self.payload = payload;
        self
    }
    /// Sets the group.
    pub fn with_group(mut self, group: GroupId) -> Self {
        self.group = group;
        self
    }
    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
    /// Sets the kind.
    pub fn with_kind(mut self, kind: UpdateKind) -> Self {
        self.kind = kind;
        self
    }
    /// Sets the layer.
    pub fn with_layer(mut self, layer: u8) -> Self {
        self.layer = layer;
        self
    }
    /// Sets the fragment position.
    pub fn with_fragment(mut self, fragment: Fragment) -> Self {
        self.fragment = fragment;
        self
    }
    /// Marks the update as a keyframe (the start of its group).
    pub fn keyframe(mut self) -> Self {
        self.keyframe = true;
        self
    }

    /// True when a receiver can use this update without holding its group's keyframe: audio,
    /// control and data always, video only when it is itself a keyframe.
    pub fn is_independent(&self) -> bool {
        self.keyframe || self.kind != UpdateKind::Video
    }

    /// True for the first (or only) fragment of a keyframe: where a decoder can start. The
    /// other fragments of a keyframe carry the keyframe flag too, but a decoder needs the
    /// whole frame, so replays and resynchronisation start here.
    pub fn starts_group(&self) -> bool {
        self.keyframe && self.fragment.index == 0
    }

    /// Bytes this update occupies on the wire inside a [`crate::Message::Update`] frame.
    pub fn wire_len(&self) -> usize {
        crate::wire::UPDATE_OVERHEAD + self.payload.len()
    }
}
