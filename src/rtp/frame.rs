//! The packetized form of one encoded frame, shared by every viewer.
//!
//! All payloads of a frame live back to back in one buffer, described by a list of
//! (offset, len, marker). The buffer is carved out of an arena `BytesMut` that the frame's next
//! use rewrites: once every viewer has dropped the frame (and any `Bytes` taken from it),
//! `BytesMut::reserve` takes the same allocation back. The daemon's sinks get frames back
//! through a [`FramePool`], which reuses a published `Arc<Frame>` once it holds the only
//! reference, so steady state runs without touching the allocator (tests/hot_path.rs counts
//! it on the production path). If a viewer still holds old payloads, the arena simply
//! allocates a fresh buffer and the old one lives on until that viewer lets go: correctness
//! never depends on reuse.

use bytes::{BufMut, Bytes, BytesMut};

/// Where one payload sits in the frame buffer. `u32` is enough: input is capped at 16 MiB.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u32,
    len: u32,
    marker: bool,
}

/// One packet of a [`Frame`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    /// RTP payload (no RTP header).
    pub payload: &'a [u8],
    /// RTP marker bit: last packet of a video access unit, first packet of an Opus stream.
    pub marker: bool,
}

/// Payloads of one encoded frame, produced by a [`super::Payloader`].
///
/// Typical use: [`FramePool::fill`] packetizes into a free `Frame` and returns it as an `Arc`
/// for the viewers; the pool writes a later frame into it once they are all done with it.
#[derive(Debug, Default)]
pub struct Frame {
    /// Scratch space the next frame is written into.
    arena: BytesMut,
    /// This frame's payloads, frozen out of `arena`.
    data: Bytes,
    slots: Vec<Slot>,
    /// Size of the arena's whole allocation, to request it back each frame.
    full_capacity: usize,
    timestamp: u32,
    keyframe: bool,
}

impl Frame {
    /// An empty frame; buffers grow on first use and are reused afterwards.
    pub fn new() -> Self {
        Self::default()
    }

    /// RTP timestamp (clock rate of the payloader) before any per-viewer offset.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// A viewer can start decoding here (H.264: the AU holds an IDR; Opus: always).
    pub fn is_keyframe(&self) -> bool {
        self.keyframe
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No packets (e.g. an access unit made only of AUD/filler NALs).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sum of all payload sizes.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    /// Packet `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn packet(&self, i: usize) -> PacketRef<'_> {
        let s = self.slots[i];
        PacketRef {
            payload: &self.data[s.range()],
            marker: s.marker,
        }
    }

    /// Payload of packet `i` as a refcounted slice of the frame buffer (no copy), for handing
    /// to a transport that wants owned `Bytes`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn payload(&self, i: usize) -> Bytes {
        self.data.slice(self.slots[i].range())
    }

    /// All packets in send order.
    pub fn iter(&self) -> Packets<'_> {
        Packets {
            frame: self,
            next: 0,
        }
    }

    /// Forget the previous frame and make room for about `capacity` payload bytes.
    ///
    /// Dropping our own handle on the previous buffer first is what lets `reserve` reclaim it.
    /// We always ask for the whole buffer back rather than writing after the previous frame:
    /// writing to the same (cache-hot) memory every frame measured faster than walking
    /// through the arena, and asking for more than is left is what makes `BytesMut` rewind
    /// to the start of its allocation when no one else holds it.
    pub(crate) fn begin(&mut self, capacity: usize) {
        self.data = Bytes::new();
        self.slots.clear();
        self.timestamp = 0;
        self.keyframe = false;
        self.arena.clear();
        let want = capacity.max(self.full_capacity);
        if self.arena.capacity() < want {
            self.arena.reserve(want);
        }
        self.full_capacity = self.full_capacity.max(self.arena.capacity());
    }

    /// Offset at which the next payload starts; pass it to [`Self::end_packet`].
    pub(crate) fn start_packet(&self) -> usize {
        self.arena.len()
    }

    pub(crate) fn put_u8(&mut self, b: u8) {
        self.arena.put_u8(b);
    }

    pub(crate) fn put_slice(&mut self, b: &[u8]) {
        self.arena.put_slice(b);
    }

    /// Closes the payload that began at `start` (see [`Self::start_packet`]).
    pub(crate) fn end_packet(&mut self, start: usize, marker: bool) {
        // Lossless: the caller caps input at 16 MiB and reserves only a bounded overhead on top.
        self.slots.push(Slot {
            offset: start as u32,
            len: (self.arena.len() - start) as u32,
            marker,
        });
    }

    /// Sets the marker of the last packet (no-op on an empty frame).
    pub(crate) fn mark_last(&mut self) {
        if let Some(last) = self.slots.last_mut() {
            last.marker = true;
        }
    }

    /// Freezes what was written since [`Self::begin`] into the shareable buffer.
    pub(crate) fn finish(&mut self, timestamp: u32, keyframe: bool) {
        self.data = self.arena.split().freeze();
        self.timestamp = timestamp;
        self.keyframe = keyframe;
    }

    /// Leaves the frame empty after a rejected input, so no stale packets are sent.
    pub(crate) fn abandon(&mut self) {
        self.slots.clear();
        self.arena.clear();
        self.data = Bytes::new();
        self.keyframe = false;
    }
}

impl Slot {
    fn range(self) -> std::ops::Range<usize> {
        let start = self.offset as usize;
        start..start + self.len as usize
    }
}

/// Iterator returned by [`Frame::iter`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    frame: &'a Frame,
    next: usize,
}

impl<'a> Iterator for Packets<'a> {
    type Item = PacketRef<'a>;

    fn next(&mut self) -> Option<PacketRef<'a>> {
        let s = *self.frame.slots.get(self.next)?;
        self.next += 1;
        Some(PacketRef {
            payload: self.frame.data.get(s.range())?,
            marker: s.marker,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.frame.slots.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Packets<'_> {}

impl<'a> IntoIterator for &'a Frame {
    type Item = PacketRef<'a>;
    type IntoIter = Packets<'a>;

    fn into_iter(self) -> Packets<'a> {
        self.iter()
    }
}

/// Recycles published frames, so that steady state packetizes without touching the allocator.
///
/// The producer publishes each frame as an `Arc<Frame>` and keeps a clone here. Viewers (the
/// feed's ring, a viewer task sending it, a GOP cache) hold their clones as long as they need
/// them; once ours is the only one left, [`Self::fill`] writes the next frame into it: the
/// `Arc`, the slot list and the payload arena are all reused. When every tracked frame is
/// still held (a viewer lags, a cache keeps a GOP), a fresh frame is made and the oldest
/// tracked one is forgotten: it lives on with its holders and is freed by the last of them.
/// Reuse is an optimisation only: a frame is written only while nobody else can see it.
#[derive(Debug)]
pub struct FramePool {
    /// Frames we published, oldest first; the ones only we hold are free to rewrite.
    published: std::collections::VecDeque<std::sync::Arc<Frame>>,
    /// How many published frames we keep track of. Every one is checked on each frame (one
    /// atomic load each), and a free one keeps its buffers, so this bounds both the scan and
    /// the memory parked here.
    track: usize,
}

impl FramePool {
    /// Free frames kept beyond the one about to be reused. When a holder lets go of many at
    /// once (a GOP cache dropping a whole GOP), keeping them all would park one arena each
    /// for nothing; two cover a viewer releasing a frame a little after the next one comes.
    const SPARE: usize = 2;

    /// Tracks up to `track` published frames (at least 1). With viewers that keep up, frames
    /// come back within a frame or two; the feed's ring (its capacity) bounds how long a
    /// lagging viewer keeps one.
    pub fn new(track: usize) -> Self {
        let track = track.max(1);
        Self {
            published: std::collections::VecDeque::with_capacity(track + 1),
            track,
        }
    }

    /// Frames tracked right now (held by someone, or free for reuse).
    pub fn tracked(&self) -> usize {
        self.published.len()
    }

    /// Writes the next frame with `write` into a free frame (or a new one when none is free),
    /// tracks it, and returns it for publishing. The frame is tracked even when `write`
    /// fails, so its buffers are reused next time.
    pub fn fill<E>(
        &mut self,
        write: impl FnOnce(&mut Frame) -> Result<(), E>,
    ) -> Result<std::sync::Arc<Frame>, E> {
        let mut frame = self.take_free().unwrap_or_default();
        let result = match std::sync::Arc::get_mut(&mut frame) {
            Some(f) => write(f),
            // Unreachable: `take_free` returns only frames no one else holds, and a new `Arc`
            // is unique. Stay correct rather than assume it.
            None => {
                let mut f = Frame::new();
                let r = write(&mut f);
                frame = std::sync::Arc::new(f);
                r
            }
        };
        if self.published.len() >= self.track {
            self.published.pop_front();
        }
        self.published.push_back(frame.clone());
        result.map(|()| frame)
    }

    /// Removes and returns the oldest frame no one else holds, dropping free frames beyond
    /// [`Self::SPARE`].
    fn take_free(&mut self) -> Option<std::sync::Arc<Frame>> {
        let mut found = None;
        let mut spare = 0;
        self.published.retain_mut(|f| {
            // The cheap load first; `get_mut` also makes sure no `Weak` exists.
            if std::sync::Arc::strong_count(f) != 1 || std::sync::Arc::get_mut(f).is_none() {
                return true;
            }
            if found.is_none() {
                found = Some(f.clone());
                return false;
            }
            spare += 1;
            spare <= Self::SPARE
        });
        found
    }
}
