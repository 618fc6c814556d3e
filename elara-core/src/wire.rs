//! The wire format: versioned frames, each one [`Message`].
//!
//! ```text
//! frame  = version:u8  type:u8  body_len:u32le  body[body_len]
//! ```
//!
//! All integers are little-endian and fixed width (decoding is a handful of loads, no varint
//! loops). Decoding checks before it parses: first that the 6-byte header and the whole body are
//! present (otherwise [`DecodeError::Incomplete`], which only means "wait for more bytes"), then
//! parses the body, where a short or overlong read is a malformed frame. Every length and count
//! has a cap, listed as the `MAX_*` constants below; a frame that exceeds one is rejected before
//! any allocation is made for it. A [`Message::Update`] payload is a zero-copy slice of the input.
//!
//! Use [`decode`] on a buffer that may hold several frames, or [`FrameDecoder`] to feed a byte
//! stream in arbitrary chunks.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{
    DecodeError, Fragment, GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, Time,
    UpdateKind,
};

/// The wire version this build writes and reads. Version 2 added [`PeerInfo::slots`].
pub const VERSION: u8 = 2;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;
/// Largest payload of one [`StateUpdate`] (1 MiB); larger frames must be fragmented.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest frame body: the largest update plus its fixed fields.
pub const MAX_BODY: usize = MAX_PAYLOAD + 256;
/// Most sequence numbers in one [`Message::Announce`] or [`Message::Pull`].
pub const MAX_SEQS: usize = 1024;
/// Most peers in one [`Message::JoinRedirect`].
pub const MAX_CANDIDATES: usize = 16;
/// Most tracks in one [`Message::CallOffer`].
pub const MAX_TRACKS: usize = 32;
/// Longest opaque transport address in a [`PeerInfo`].
pub const MAX_ADDR: usize = 64;
/// Most ancestors in the path of a [`Message::JoinAccept`]: the deepest tree a node will join.
pub const MAX_PATH: usize = 32;
/// Fixed bytes of an update frame besides its payload (header included).
pub const UPDATE_OVERHEAD: usize = HEADER_LEN + 1 + 8 + 32 + 8 + 8 + 8 + 1 + 1 + 1 + 1 + 2 + 2 + 4;

/// What a node tells a neighbour about itself in a [`Message::Hello`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Capabilities {
    /// Upload capacity the node offers for relaying, in kbit/s.
    pub upload_kbps: u32,
    /// Download capacity, in kbit/s.
    pub download_kbps: u32,
    /// How many children the node accepts per state.
    pub max_children: u16,
    /// Bit set of codecs the node can receive (bit numbering is defined by `elara-media`).
    pub codecs: u32,
    /// Largest update payload the node accepts.
    pub max_payload: u32,
}

/// A peer suggested to a joining node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// The peer's id.
    pub id: NodeId,
    /// Opaque transport address (at most [`MAX_ADDR`] bytes); empty when the id suffices.
    pub addr: Bytes,
    /// Spare upload capacity in kbit/s.
    pub spare_kbps: u32,
    /// Depth of the peer in the state's tree (0 = the authority).
    pub depth: u16,
    /// Children the peer says it can take (its [`Capabilities::max_children`]; 0 when
    /// unknown). A joiner tells a strong relay from the end of a chain of one-child relays.
    pub slots: u16,
}

/// A track offered by a call participant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrackInfo {
    /// The track's state id (the participant is its authority).
    pub state: StateId,
    /// Audio, video, ...
    pub kind: UpdateKind,
    /// Codec number (defined by `elara-media`).
    pub codec: u8,
    /// Priority of the track (a screen share outranks a camera).
    pub priority: Priority,
}

/// Everything nodes say to each other.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Message {
    /// First message on a connection, in both directions.
    Hello {
        /// The sender's id (the transport checks it against the peer's key).
        node: NodeId,
        /// What the sender can do.
        caps: Capabilities,
    },
    /// Keep-alive probe.
    Ping {
        /// Echoed in the [`Message::Pong`].
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The nonce of the [`Message::Ping`] answered.
        nonce: u64,
    },
    /// Graceful departure.
    Leave {
        /// Application-defined reason code.
        reason: u8,
    },
    /// The sender's (aggregated) interest in a state; `None` withdraws it.
    Interest {
        /// The state.
        state: StateId,
        /// The strongest interest in the sender's subtree.
        level: InterestLevel,
        /// Lifetime of the declaration in ms; 0 = until withdrawn.
        ttl_ms: u32,
        /// Hops from the sender down to the deepest node of its subtree (0: it has no
        /// children). A relay serves the children with the deepest subtrees first, so that a
        /// large update's fan-out delay does not pile up along the longest paths.
        height: u8,
    },
    /// Asks to become a child of the receiver in a state's tree.
    JoinRequest {
        /// The state.
        state: StateId,
    },
    /// Asks to become a child of the receiver because the sender's parent failed (or left):
    /// answered like a [`Message::JoinRequest`], except that a node whose own relay child
    /// failed a moment ago may take the sender above its capacity for a while (a repair slot),
    /// so that the orphans of a failure re-attach within a round trip. A fresh joiner or a
    /// node moving on purpose sends a `JoinRequest`.
    RepairRequest {
        /// The state.
        state: StateId,
    },
    /// Accepts a [`Message::JoinRequest`] or [`Message::RepairRequest`]; sent again, unsolicited, to every child whenever the
    /// sender's own position in the tree changes.
    JoinAccept {
        /// The state.
        state: StateId,
        /// The accepting node's depth (the authority is 0).
        depth: u16,
        /// The accepting node's ancestors from the state's authority down to and including the
        /// accepting node itself (at most [`MAX_PATH`]); `path[0]` is the authority. A node never
        /// attaches below a parent whose path contains itself, which keeps the tree loop-free.
        path: Vec<NodeId>,
    },
    /// Declines a [`Message::JoinRequest`] (or a [`Message::RepairRequest`]) and suggests better parents.
    JoinRedirect {
        /// The state.
        state: StateId,
        /// Suggested parents, best first (at most [`MAX_CANDIDATES`]).
        candidates: Vec<PeerInfo>,
    },
    /// One state update, relayed `hops` times so far.
    Update {
        /// Relays this update has passed through.
        hops: u8,
        /// The update.
        update: StateUpdate,
    },
    /// Lazy repair: "I have these updates" (IHAVE).
    Announce {
        /// The state.
        state: StateId,
        /// The state's authority.
        source: NodeId,
        /// Sequence numbers held (at most [`MAX_SEQS`]).
        seqs: Vec<u64>,
    },
    /// Lazy repair: "send me these updates" (IWANT).
    Pull {
        /// The state.
        state: StateId,
        /// Sequence numbers wanted (at most [`MAX_SEQS`]). Empty: a new child asks to be
        /// started at the newest keyframe the parent holds.
        seqs: Vec<u64>,
    },
    /// Lazy repair: answer to a [`Message::Pull`] for updates the sender cannot provide and
    /// never will (it gave up on them itself, or they are stale); the receiver stops waiting.
    Unavailable {
        /// The state.
        state: StateId,
        /// Sequence numbers that will not come (at most [`MAX_SEQS`]).
        seqs: Vec<u64>,
    },
    /// Allocation negotiation: what the sender wants of a state on this link.
    QualityRequest {
        /// The state.
        state: StateId,
        /// Highest layer wanted.
        max_layer: u8,
        /// Only keyframes, please.
        keyframes_only: bool,
        /// Rate the sender can take, kbit/s (0 = no limit stated).
        rate_kbps: u32,
    },
    /// A call participant's offer of its tracks.
    CallOffer {
        /// The call.
        call: u64,
        /// The offered tracks (at most [`MAX_TRACKS`]).
        tracks: Vec<TrackInfo>,
    },
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const PING: u8 = 0x02;
    pub const PONG: u8 = 0x03;
    pub const LEAVE: u8 = 0x04;
    pub const INTEREST: u8 = 0x10;
    pub const JOIN_REQUEST: u8 = 0x11;
    pub const JOIN_ACCEPT: u8 = 0x12;
    pub const JOIN_REDIRECT: u8 = 0x13;
    pub const REPAIR_REQUEST: u8 = 0x14;
    pub const UPDATE: u8 = 0x20;
    pub const ANNOUNCE: u8 = 0x21;
    pub const PULL: u8 = 0x22;
    pub const UNAVAILABLE: u8 = 0x23;
    pub const QUALITY_REQUEST: u8 = 0x30;
    pub const CALL_OFFER: u8 = 0x40;
}

impl Message {
    /// The message's type tag on the wire.
    pub fn type_tag(&self) -> u8 {
        match self {
            Message::Hello { .. } => tag::HELLO,
            Message::Ping { .. } => tag::PING,
            Message::Pong { .. } => tag::PONG,
            Message::Leave { .. } => tag::LEAVE,
            Message::Interest { .. } => tag::INTEREST,
            Message::JoinRequest { .. } => tag::JOIN_REQUEST,
            Message::JoinAccept { .. } => tag::JOIN_ACCEPT,
            Message::JoinRedirect { .. } => tag::JOIN_REDIRECT,
            Message::RepairRequest { .. } => tag::REPAIR_REQUEST,
            Message::Update { .. } => tag::UPDATE,
            Message::Announce { .. } => tag::ANNOUNCE,
            Message::Pull { .. } => tag::PULL,
            Message::Unavailable { .. } => tag::UNAVAILABLE,
            Message::QualityRequest { .. } => tag::QUALITY_REQUEST,
            Message::CallOffer { .. } => tag::CALL_OFFER,
        }
    }

    /// Bytes the encoded frame occupies, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Message::Hello { .. } => 32 + 4 + 4 + 2 + 4 + 4,
            Message::Ping { .. } | Message::Pong { .. } => 8,
            Message::Leave { .. } => 1,
            Message::Interest { .. } => 8 + 1 + 4 + 1,
            Message::JoinRequest { .. } | Message::RepairRequest { .. } => 8,
            Message::JoinAccept { path, .. } => 8 + 2 + 1 + 32 * path.len(),
            Message::JoinRedirect { candidates, .. } => {
                8 + 1
                    + candidates
                        .iter()
                        .map(|c| 32 + 1 + c.addr.len() + 4 + 2 + 2)
                        .sum::<usize>()
            }
            Message::Update { update, .. } => update.wire_len() - HEADER_LEN,
            Message::Announce { seqs, .. } => 8 + 32 + 2 + 8 * seqs.len(),
            Message::Pull { seqs, .. } | Message::Unavailable { seqs, .. } => {
                8 + 2 + 8 * seqs.len()
            }
            Message::QualityRequest { .. } => 8 + 1 + 1 + 4,
            Message::CallOffer { tracks, .. } => 8 + 1 + tracks.len() * (8 + 1 + 1 + 1),
        }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Encoding never fails; lists longer than their cap are a caller bug and are truncated to the
    /// cap (so that the frame still decodes) with a debug assertion.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u8(VERSION);
        out.put_u8(self.type_tag());
        out.put_u32_le(self.body_len_capped() as u32);
        match self {
            Message::Hello { node, caps } => {
                out.put_slice(node.as_bytes());
                out.put_u32_le(caps.upload_kbps);
                out.put_u32_le(caps.download_kbps);
                out.put_u16_le(caps.max_children);
                out.put_u32_le(caps.codecs);
                out.put_u32_le(caps.max_payload);
            }
            Message::Ping { nonce } | Message::Pong { nonce } => out.put_u64_le(*nonce),
            Message::Leave { reason } => out.put_u8(*reason),
            Message::Interest {
                state,
                level,
                ttl_ms,
                height,
            } => {
                out.put_u64_le(state.0);
                out.put_u8(level.as_u8());
                out.put_u32_le(*ttl_ms);
                out.put_u8(*height);
            }
            Message::JoinRequest { state } | Message::RepairRequest { state } => {
                out.put_u64_le(state.0)
            }
            Message::JoinAccept { state, depth, path } => {
                out.put_u64_le(state.0);
                out.put_u16_le(*depth);
                let n = capped(path.len(), MAX_PATH);
                out.put_u8(n as u8);
                for id in &path[..n] {
                    out.put_slice(id.as_bytes());
                }
            }
            Message::JoinRedirect { state, candidates } => {
                out.put_u64_le(state.0);
                let n = capped(candidates.len(), MAX_CANDIDATES);
                out.put_u8(n as u8);
                for c in &candidates[..n] {
                    out.put_slice(c.id.as_bytes());
                    let alen = capped(c.addr.len(), MAX_ADDR);
                    out.put_u8(alen as u8);
                    out.put_slice(&c.addr[..alen]);
                    out.put_u32_le(c.spare_kbps);
                    out.put_u16_le(c.depth);
                    out.put_u16_le(c.slots);
                }
            }
            Message::Update { hops, update } => encode_update(*hops, update, out),
            Message::Announce {
                state,
                source,
                seqs,
            } => {
                out.put_u64_le(state.0);
                out.put_slice(source.as_bytes());
                put_seqs(seqs, out);
            }
            Message::Pull { state, seqs } | Message::Unavailable { state, seqs } => {
                out.put_u64_le(state.0);
                put_seqs(seqs, out);
            }
            Message::QualityRequest {
                state,
                max_layer,
                keyframes_only,
                rate_kbps,
            } => {
                out.put_u64_le(state.0);
                out.put_u8(*max_layer);
                out.put_u8(u8::from(*keyframes_only));
                out.put_u32_le(*rate_kbps);
            }
            Message::CallOffer { call, tracks } => {
                out.put_u64_le(*call);
                let n = capped(tracks.len(), MAX_TRACKS);
                out.put_u8(n as u8);
                for t in &tracks[..n] {
                    out.put_u64_le(t.state.0);
                    out.put_u8(t.kind as u8);
                    out.put_u8(t.codec);
                    out.put_u8(t.priority.as_u8());
                }
            }
        }
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    fn body_len_capped(&self) -> usize {
        match self {
            Message::JoinRedirect { candidates, .. } => {
                8 + 1
                    + candidates
                        .iter()
                        .take(MAX_CANDIDATES)
                        .map(|c| 32 + 1 + c.addr.len().min(MAX_ADDR) + 4 + 2 + 2)
                        .sum::<usize>()
            }
            Message::Announce { seqs, .. } => 8 + 32 + 2 + 8 * seqs.len().min(MAX_SEQS),
            Message::Pull { seqs, .. } | Message::Unavailable { seqs, .. } => {
                8 + 2 + 8 * seqs.len().min(MAX_SEQS)
            }
            Message::CallOffer { tracks, .. } => 8 + 1 + tracks.len().min(MAX_TRACKS) * 11,
            Message::JoinAccept { path, .. } => 8 + 2 + 1 + 32 * path.len().min(MAX_PATH),
            Message::Update { update, .. } => {
                UPDATE_OVERHEAD - HEADER_LEN + update.payload.len().min(MAX_PAYLOAD)
            }
            _ => self.body_len(),
        }
    }
}

fn capped(len: usize, max: usize) -> usize {
    debug_assert!(len <= max, "list of {len} exceeds wire cap {max}");
    len.min(max)
}

fn put_seqs(seqs: &[u64], out: &mut BytesMut) {
    let n = capped(seqs.len(), MAX_SEQS);
    out.put_u16_le(n as u16);
    for s in &seqs[..n] {
        out.put_u64_le(*s);
    }
}

fn encode_update(hops: u8, u: &StateUpdate, out: &mut BytesMut) {
    out.put_u8(hops);
    out.put_u64_le(u.state.0);
    out.put_slice(u.source.as_bytes());
    out.put_u64_le(u.seq);
    out.put_u64_le(u.group.0);
    out.put_u64_le(u.timestamp.as_micros());
    out.put_u8(u8::from(u.keyframe));
    out.put_u8(u.layer);
    out.put_u8(u.priority.as_u8());
    out.put_u8(u.kind as u8);
    out.put_u16_le(u.fragment.index);
    out.put_u16_le(u.fragment.count);
    let n = capped(u.payload.len(), MAX_PAYLOAD);
    out.put_u32_le(n as u32);
    out.put_slice(&u.payload[..n]);
}

/// Decodes the first frame in `buf`, returning the message and the number of bytes it used.
///
/// [`DecodeError::Incomplete`] means `buf` holds only the beginning of a frame. The payload of a
/// [`Message::Update`] is a zero-copy slice of `buf`.
pub fn decode(buf: &Bytes) -> Result<(Message, usize), DecodeError> {
    let (ty, body_len) = check_header(buf)?;
    let body = buf.slice(HEADER_LEN..HEADER_LEN + body_len);
    let msg = decode_body(ty, body)?;
    Ok((msg, HEADER_LEN + body_len))
}

/// Checks that `buf` starts with a complete frame; returns its type and body length.
fn check_header(buf: &[u8]) -> Result<(u8, usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    if buf[0] != VERSION {
        return Err(DecodeError::UnsupportedVersion(buf[0]));
    }
    let ty = buf[1];
    let body_len = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    if body_len > MAX_BODY {
        return Err(DecodeError::TooLarge {
            what: "frame body",
            len: body_len as u64,
            max: MAX_BODY as u64,
        });
    }
    let have = buf.len() - HEADER_LEN;
    if have < body_len {
        return Err(DecodeError::Incomplete {
            needed: body_len - have,
        });
    }
    Ok((ty, body_len))
}

/// A bounds-checked reader over one frame body; running short is a malformed frame.
struct Body {
    buf: Bytes,
    declared: usize,
}

impl Body {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::LengthMismatch {
                declared: self.declared,
                used: self.declared - self.buf.remaining() + n,
            })
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn node(&mut self) -> Result<NodeId, DecodeError> {
        self.need(32)?;
        let mut b = [0u8; 32];
        self.buf.copy_to_slice(&mut b);
        Ok(NodeId::from_bytes(b))
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid {
                what,
                value: v.into(),
            }),
        }
    }
    fn count(&mut self, wide: bool, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = if wide {
            self.u16()? as usize
        } else {
            self.u8()? as usize
        };
        if n > max {
            return Err(DecodeError::TooLarge {
                what,
                len: n as u64,
                max: max as u64,
            });
        }
        Ok(n)
    }
    fn seqs(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(true, "sequence list", MAX_SEQS)?;
        self.need(n * 8)?;
        Ok((0..n).map(|_| self.buf.get_u64_le()).collect())
    }
    fn level(&mut self) -> Result<InterestLevel, DecodeError> {
        let v = self.u8()?;
        InterestLevel::from_u8(v).ok_or(DecodeError::Invalid {
            what: "interest level",
            value: v.into(),
        })
    }
    fn priority(&mut self) -> Result<Priority, DecodeError> {
        let v = self.u8()?;
        Priority::from_u8(v).ok_or(DecodeError::Invalid {
            what: "priority",
            value: v.into(),
        })
    }
    fn kind(&mut self) -> Result<UpdateKind, DecodeError> {
        let v = self.u8()?;
        UpdateKind::from_u8(v).ok_or(DecodeError::Invalid {
            what: "update kind",
            value: v.into(),
        })
    }
}

fn decode_body(ty: u8, buf: Bytes) -> Result<Message, DecodeError> {
    let declared = buf.len();
    let mut b = Body { buf, declared };
    let msg = match ty {
        tag::HELLO => Message::Hello {
            node: b.node()?,
            caps: Capabilities {
                upload_kbps: b.u32()?,
                download_kbps: b.u32()?,
                max_children: b.u16()?,
                codecs: b.u32()?,
                max_payload: b.u32()?,
            },
        },
        tag::PING => Message::Ping { nonce: b.u64()? },
        tag::PONG => Message::Pong { nonce: b.u64()? },
        tag::LEAVE => Message::Leave { reason: b.u8()? },
        tag::INTEREST => Message::Interest {
            state: StateId(b.u64()?),
            level: b.level()?,
            ttl_ms: b.u32()?,
            height: b.u8()?,
        },
        tag::JOIN_REQUEST => Message::JoinRequest {
            state: StateId(b.u64()?),
        },
        tag::REPAIR_REQUEST => Message::RepairRequest {
            state: StateId(b.u64()?),
        },
        tag::JOIN_ACCEPT => {
            let state = StateId(b.u64()?);
            let depth = b.u16()?;
            let n = b.count(false, "ancestor path", MAX_PATH)?;
            b.need(n * 32)?;
            let mut path = Vec::with_capacity(n);
            for _ in 0..n {
                path.push(b.node()?);
            }
            Message::JoinAccept { state, depth, path }
        }
        tag::JOIN_REDIRECT => {
            let state = StateId(b.u64()?);
            let n = b.count(false, "candidate list", MAX_CANDIDATES)?;
            let mut candidates = Vec::with_capacity(n);
            for _ in 0..n {
                let id = b.node()?;
                let alen = b.count(false, "peer address", MAX_ADDR)?;
                let addr = b.bytes(alen)?;
                candidates.push(PeerInfo {
                    id,
                    addr,
                    spare_kbps: b.u32()?,
                    depth: b.u16()?,
                    slots: b.u16()?,
                });
            }
            Message::JoinRedirect { state, candidates }
        }
        tag::UPDATE => {
            let hops = b.u8()?;
            let state = StateId(b.u64()?);
            let source = b.node()?;
            let seq = b.u64()?;
            let group = GroupId(b.u64()?);
            let timestamp = Time::from_micros(b.u64()?);
            let keyframe = b.bool("keyframe flag")?;
            let layer = b.u8()?;
            let priority = b.priority()?;
            let kind = b.kind()?;
            let index = b.u16()?;
            let count = b.u16()?;
            if count == 0 || index >= count {
                return Err(DecodeError::Invalid {
                    what: "fragment index/count",
                    value: (u64::from(index) << 16) | u64::from(count),
                });
            }
            let len = b.u32()? as usize;
            if len > MAX_PAYLOAD {
                return Err(DecodeError::TooLarge {
                    what: "update payload",
                    len: len as u64,
                    max: MAX_PAYLOAD as u64,
                });
            }
            let payload = b.bytes(len)?;
            Message::Update {
                hops,
                update: StateUpdate {
                    state,
                    source,
                    seq,
                    group,
                    timestamp,
                    keyframe,
                    layer,
                    priority,
                    kind,
                    fragment: Fragment { index, count },
                    payload,
                },
            }
        }
        tag::ANNOUNCE => Message::Announce {
            state: StateId(b.u64()?),
            source: b.node()?,
            seqs: b.seqs()?,
        },
        tag::PULL => Message::Pull {
            state: StateId(b.u64()?),
            seqs: b.seqs()?,
        },
        tag::UNAVAILABLE => Message::Unavailable {
            state: StateId(b.u64()?),
            seqs: b.seqs()?,
        },
        tag::QUALITY_REQUEST => Message::QualityRequest {
            state: StateId(b.u64()?),
            max_layer: b.u8()?,
            keyframes_only: b.bool("keyframes_only flag")?,
            rate_kbps: b.u32()?,
        },
        tag::CALL_OFFER => {
            let call = b.u64()?;
            let n = b.count(false, "track list", MAX_TRACKS)?;
            let mut tracks = Vec::with_capacity(n);
            for _ in 0..n {
                tracks.push(TrackInfo {
                    state: StateId(b.u64()?),
                    kind: b.kind()?,
                    codec: b.u8()?,
                    priority: b.priority()?,
                });
            }
            Message::CallOffer { call, tracks }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    if b.buf.has_remaining() {
        return Err(DecodeError::LengthMismatch {
            declared,
            used: declared - b.buf.remaining(),
        });
    }
    Ok(msg)
}

/// Decodes frames from a byte stream that arrives in arbitrary chunks.
///
/// Buffered bytes are bounded by one frame ([`HEADER_LEN`] + [`MAX_BODY`]) plus whatever the
/// caller pushes before draining; a frame header announcing more than [`MAX_BODY`] is rejected
/// as soon as the header is complete.
///
/// ```
/// use elara_core::{Message, wire::FrameDecoder};
/// let bytes = Message::Ping { nonce: 9 }.to_bytes();
/// let mut dec = FrameDecoder::new();
/// dec.push(&bytes[..3]);
/// assert_eq!(dec.next_message().unwrap(), None); // need more bytes
/// dec.push(&bytes[3..]);
/// assert_eq!(dec.next_message().unwrap(), Some(Message::Ping { nonce: 9 }));
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or the error that makes
    /// the stream unusable (the caller should close the connection).
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        match check_header(&self.buf) {
            Ok((ty, body_len)) => {
                let frame = self.buf.split_to(HEADER_LEN + body_len).freeze();
                decode_body(ty, frame.slice(HEADER_LEN..)).map(Some)
            }
            Err(DecodeError::Incomplete { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        let update = StateUpdate::new(StateId(3), NodeId::from_u64(9), 17, Time::from_millis(5))
            .with_payload(Bytes::from_static(b"abc"))
            .keyframe();
        vec![
            Message::Hello {
                node: NodeId::from_u64(1),
                caps: Capabilities {
                    upload_kbps: 1,
                    download_kbps: 2,
                    max_children: 3,
                    codecs: 4,
                    max_payload: 5,
                },
            },
            Message::Ping { nonce: 7 },
            Message::Pong { nonce: 8 },
            Message::Leave { reason: 2 },
            Message::Interest {
                state: StateId(1),
                level: InterestLevel::High,
                ttl_ms: 0,
                height: 3,
            },
            Message::JoinRequest { state: StateId(1) },
            Message::RepairRequest { state: StateId(2) },
            Message::JoinAccept {
                state: StateId(1),
                depth: 2,
                path: vec![
                    NodeId::from_u64(1),
                    NodeId::from_u64(5),
                    NodeId::from_u64(6),
                ],
            },
            Message::JoinAccept {
                state: StateId(1),
                depth: 0,
                path: Vec::new(),
            },
            Message::JoinRedirect {
                state: StateId(1),
                candidates: vec![PeerInfo {
                    id: NodeId::from_u64(4),
                    addr: Bytes::from_static(b"10.0.0.1:4433"),
                    spare_kbps: 900,
                    depth: 1,
                    slots: 3,
                }],
            },
            Message::Update { hops: 3, update },
            Message::Announce {
                state: StateId(1),
                source: NodeId::from_u64(1),
                seqs: vec![1, 2, 3],
            },
            Message::Pull {
                state: StateId(1),
                seqs: vec![4],
            },
            Message::Unavailable {
                state: StateId(1),
                seqs: vec![5, 6],
            },
            Message::QualityRequest {
                state: StateId(1),
                max_layer: 0,
                keyframes_only: true,
                rate_kbps: 300,
            },
            Message::CallOffer {
                call: 77,
                tracks: vec![TrackInfo {
                    state: StateId(2),
                    kind: UpdateKind::Audio,
                    codec: 1,
                    priority: Priority::High,
                }],
            },
        ]
    }

    #[test]
    fn every_message_round_trips_with_its_declared_length() {
        for msg in samples() {
            let bytes = msg.to_bytes();
            assert_eq!(bytes.len(), msg.encoded_len(), "{msg:?}");
            let (back, used) = decode(&bytes).unwrap();
            assert_eq!(back, msg);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn join_accept_path_above_cap_is_rejected() {
        let mut raw = BytesMut::new();
        raw.put_u8(VERSION);
        raw.put_u8(tag::JOIN_ACCEPT);
        raw.put_u32_le(11);
        raw.put_u64_le(1);
        raw.put_u16_le(0);
        raw.put_u8(MAX_PATH as u8 + 1);
        assert!(matches!(
            decode(&raw.freeze()),
            Err(DecodeError::TooLarge {
                what: "ancestor path",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn truncated_or_mutated_frames_never_panic(
            pick in 0usize..15,
            cut in 0usize..64,
            flip in proptest::collection::vec((0usize..128, any::<u8>()), 0..4),
        ) {
            let msgs = samples();
            let mut raw = BytesMut::from(&msgs[pick % msgs.len()].to_bytes()[..]);
            for (at, v) in flip {
                let len = raw.len();
                raw[at % len] = v;
            }
            let len = raw.len();
            let raw = raw.freeze().slice(..len.saturating_sub(cut % 8));
            let _ = decode(&raw);
            let mut dec = FrameDecoder::new();
            dec.push(&raw);
            let _ = dec.next_message();
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
