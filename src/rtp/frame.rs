//! The packetized form of one encoded frame, shared by every viewer.
//!
//! All payloads of a frame live back to back in one buffer, described by a list of
//! (offset, len, marker). The buffer is carved out of an arena `BytesMut` that the next frame
//! reuses: once every viewer has dropped the previous frame's `Bytes`, `BytesMut::reserve` takes
//! the same allocation back, so steady state runs without touching the allocator. If a viewer
//! still holds old payloads, the arena simply allocates a fresh buffer and the old one lives on
//! until that viewer lets go: correctness never depends on reuse.

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
/// Typical use: packetize into a `Frame`, wrap it in an `Arc` for the viewers, and get it back
/// for the next frame with `Arc::get_mut`/`Arc::try_unwrap` once they are done (or start a new
/// `Frame` if one lags; that only costs the reuse, never correctness).
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
