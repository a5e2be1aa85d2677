//! The GOP cache: a new viewer of a passed-through camera starts from the last keyframe
//! instead of waiting for the next one (sans-IO).
//!
//! With an encoder in our pipeline a joining viewer asks for a fresh IDR and gets it within a
//! frame or two. A camera whose H.264 we pass through (RTSP, UVC H.264) cannot be asked: the
//! viewer would wait for the camera's next periodic IDR, up to a whole GOP (2–4 s on typical
//! IP cameras, 10 s on some). So for those sources the feed keeps the frames from the latest
//! IDR onward ([`GopCache`]) and a joining viewer is sent them first ([`CatchUp`]), then the
//! live stream.
//!
//! What the viewer sees: the GOP's first picture at once (SPS/PPS + IDR go unpaced, as a live
//! IDR would), then a short fast-forward through the rest of the GOP and the frames that
//! arrived meanwhile, sent at `webrtc.gop_cache_pace_kbps`, then the live picture. The
//! catch-up frames are re-timed ([`Retimer`]): their RTP timestamps follow the moment each one
//! is sent rather than the moment the camera took it, and the live frames after them keep that
//! shift, so the viewer's timeline never runs ahead of the wall clock.
//!
//! Why re-timed, measured with `scripts/measure-gop.sh --browser` (Chromium, joining 2.5 s
//! into a 4 s GOP, with sound): Chromium shows the first picture equally soon with the
//! camera's own timestamps and with re-timed ones, plays the rest of the GOP as a fast-forward
//! in both cases, and then holds each live frame equally briefly (10–40 ms): it does not
//! replay old timestamps at their original pace. So the choice rests on the timeline. With the
//! camera's timestamps, a frame sent during the catch-up carries a timestamp up to a GOP older
//! than the moment it is sent; the `webrtc` crate's sender reports map "last timestamp sent"
//! to "now", so a report taken then disagrees with later ones by up to a GOP (and receivers
//! compute lip sync from them), and a receiver that does schedule by timestamp would stay a
//! GOP behind. Re-timed, every receiver sees an ordinary stream that arrives on time. The
//! third option, squeezing the whole GOP into a few ticks so only its last picture is shown,
//! sends the same bytes (so that picture cannot come sooner than the paced catch-up ends) and
//! makes every catch-up frame late by its timestamp, which inflates a receiver's jitter
//! estimate. A stream with B-frames would be shown out of order during the catch-up; WebRTC's
//! H.264 has none.
//!
//! Rules that keep every frame sent decodable:
//! - the cache holds nothing until an IDR arrives, and an IDR starts it over;
//! - a frame that would take it past `max_bytes`, or a GOP older than `max_age`, empties it
//!   entirely until the next IDR (never a tail of P-frames without their IDR);
//! - a new source generation (capture restart) or a source we encode ourselves empties it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::SourceInfo;
use crate::rtp::Frame;

/// Limits of the cache and of a catch-up (`webrtc.gop_cache_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopOptions {
    /// Payload bytes the cache may hold; 0 turns it off.
    pub max_bytes: usize,
    /// Oldest GOP (time since its IDR) the cache keeps and a viewer is sent.
    pub max_age: Duration,
    /// Bytes per second a catch-up is sent at (after its first frame).
    pub pace_bytes_per_s: u64,
}

impl GopOptions {
    /// No cache: viewers start at the next keyframe.
    pub const OFF: GopOptions = GopOptions {
        max_bytes: 0,
        max_age: Duration::ZERO,
        pace_bytes_per_s: 1,
    };

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

impl Default for GopOptions {
    /// 4 MiB (a 4 s GOP at 8 Mbit/s), 10 s, 8 Mbit/s: sized for a Raspberry Pi.
    fn default() -> Self {
        GopOptions {
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(10),
            pace_bytes_per_s: 1_000_000,
        }
    }
}

/// Counters of what the cache did, for stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GopCounters {
    /// GOPs dropped because a frame would have taken the cache past `max_bytes`.
    pub overflows: u64,
    /// GOPs dropped because they grew older than `max_age`.
    pub expired: u64,
    /// Times the cache was emptied by a new source generation (capture restart).
    pub restarts: u64,
}

/// The frames from the latest IDR onward, bounded in bytes and age.
#[derive(Debug)]
pub struct GopCache {
    /// Limits from the configuration.
    opts: GopOptions,
    /// From an IDR onward, in publish order; empty while waiting for an IDR.
    frames: Vec<Arc<Frame>>,
    /// Payload bytes of `frames`.
    bytes: usize,
    /// When the IDR at `frames[0]` was pushed.
    since: Option<Instant>,
    /// Caching applies: the source is passed through and `opts` enables it.
    active: bool,
    /// Generation of the source the frames come from; a new one empties the cache.
    generation: Option<u64>,
    counters: GopCounters,
}

impl GopCache {
    /// An inactive cache: it holds nothing until [`Self::on_source`] says the source is
    /// passed through.
    pub fn new(opts: GopOptions) -> Self {
        GopCache {
            opts,
            frames: Vec::new(),
            bytes: 0,
            since: None,
            active: false,
            generation: None,
            counters: GopCounters::default(),
        }
    }

    /// Where the next frames come from. A new generation (the capture restarted) empties the
    /// cache: nothing before a restart can be a reference for what follows. A source we
    /// encode ourselves turns the cache off (forcing an IDR is cheaper than a catch-up).
    pub fn on_source(&mut self, source: SourceInfo) {
        if self.generation != Some(source.generation) {
            if self.generation.is_some() && !self.frames.is_empty() {
                self.counters.restarts += 1;
            }
            self.generation = Some(source.generation);
            self.clear();
        }
        self.active = source.passthrough && self.opts.enabled();
        if !self.active {
            self.clear();
        }
    }

    /// Whether frames are being cached (the source is passed through and caching is on).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A frame was published.
    pub fn push(&mut self, frame: &Arc<Frame>, now: Instant) {
        if !self.active {
            return;
        }
        let size = frame.payload_bytes();
        if frame.is_keyframe() {
            self.clear();
            if size > self.opts.max_bytes {
                self.counters.overflows += 1;
                return;
            }
            self.since = Some(now);
        } else {
            let Some(since) = self.since else {
                // Waiting for an IDR: a P-frame alone decodes to nothing.
                return;
            };
            if now.saturating_duration_since(since) > self.opts.max_age {
                self.counters.expired += 1;
                self.clear();
                return;
            }
            if self.bytes + size > self.opts.max_bytes {
                self.counters.overflows += 1;
                self.clear();
                return;
            }
        }
        self.bytes += size;
        self.frames.push(frame.clone());
    }

    /// What a viewer joining now is sent before the live stream: the whole GOP from its IDR,
    /// or nothing (no IDR yet, cache off, or the GOP older than `max_age`).
    pub fn snapshot(&self, now: Instant) -> Vec<Arc<Frame>> {
        match self.since {
            Some(since) if now.saturating_duration_since(since) <= self.opts.max_age => {
                self.frames.clone()
            }
            _ => Vec::new(),
        }
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn counters(&self) -> GopCounters {
        self.counters
    }

    pub fn options(&self) -> GopOptions {
        self.opts
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.since = None;
    }
}

/// What a viewer's task does next during a catch-up.
#[derive(Debug)]
pub enum CatchUpStep {
    /// Send this frame now.
    Send(Arc<Frame>),
    /// Nothing may be sent before this instant.
    WaitUntil(Instant),
    /// Everything queued went out: the viewer is live.
    Done,
}

/// The catch-up did not converge: live frames queued faster than the pace drains them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("catch-up queue past {limit} bytes; the viewer waits for the next keyframe")]
pub struct CatchUpOverflow {
    pub limit: usize,
}

/// One viewer's catch-up: the cached GOP, then the live frames that arrive while it is sent,
/// paced at `pace_bytes_per_s` after the first frame.
#[derive(Debug)]
pub struct CatchUp {
    /// Frames still to send, oldest first.
    queue: VecDeque<Arc<Frame>>,
    /// Payload bytes of `queue`.
    queued_bytes: usize,
    /// Past this many queued bytes the catch-up is abandoned.
    limit_bytes: usize,
    /// The pace.
    bytes_per_s: u64,
    /// Earliest instant the next frame may go; None before the first frame (it goes at once).
    next_at: Option<Instant>,
}

impl CatchUp {
    /// Starts from a [`GopCache::snapshot`]; an empty snapshot is done at once.
    pub fn new(snapshot: Vec<Arc<Frame>>, opts: &GopOptions) -> Self {
        let queued_bytes = snapshot.iter().map(|f| f.payload_bytes()).sum();
        CatchUp {
            queue: snapshot.into(),
            queued_bytes,
            // Room for the GOP and as much again of live frames arriving meanwhile.
            limit_bytes: opts.max_bytes.saturating_mul(2),
            bytes_per_s: opts.pace_bytes_per_s.max(1),
            next_at: None,
        }
    }

    /// A live frame arrived while catching up: it goes after everything queued.
    pub fn push_live(&mut self, frame: Arc<Frame>) -> Result<(), CatchUpOverflow> {
        self.queued_bytes += frame.payload_bytes();
        self.queue.push_back(frame);
        if self.queued_bytes > self.limit_bytes {
            self.queue.clear();
            self.queued_bytes = 0;
            return Err(CatchUpOverflow {
                limit: self.limit_bytes,
            });
        }
        Ok(())
    }

    /// Whether anything is left to send.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// Frames still queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn poll(&mut self, now: Instant) -> CatchUpStep {
        if self.queue.is_empty() {
            return CatchUpStep::Done;
        }
        if let Some(t) = self.next_at
            && now < t
        {
            return CatchUpStep::WaitUntil(t);
        }
        let Some(frame) = self.queue.pop_front() else {
            return CatchUpStep::Done;
        };
        let size = frame.payload_bytes();
        self.queued_bytes -= size;
        // The budget counts from when the previous frame was due, not from `now`: a task woken
        // late does not lose its share, and one woken early has already returned above.
        let earliest = now.checked_sub(CATCH_UP_SLACK).unwrap_or(now);
        let base = self.next_at.map_or(now, |t| t.max(earliest));
        let airtime_ns = size as u128 * 1_000_000_000 / u128::from(self.bytes_per_s);
        self.next_at = Some(base + Duration::from_nanos(airtime_ns as u64));
        CatchUpStep::Send(frame)
    }
}

/// How far a late wake-up may be made up for: one frame interval at 30 fps, so a task that
/// was held up (a slow write) does not come back with a burst.
const CATCH_UP_SLACK: Duration = Duration::from_millis(33);

/// One viewer's RTP timestamps across a catch-up (video, 90 kHz).
///
/// During the catch-up a frame's timestamp is the time it is sent (counted from the first
/// one, which keeps its own); afterwards each frame's timestamp is its own plus the shift the
/// last catch-up frame ended with, so the stream stays continuous and increasing.
#[derive(Debug, Clone)]
pub struct Retimer {
    /// Clock rate of the timestamps.
    rate: u32,
    /// Added to a frame's timestamp (mod 2^32).
    shift: u32,
    /// The first catch-up frame: when it was sent and the timestamp it got.
    anchor: Option<(Instant, u32)>,
    /// Last timestamp handed out, to keep them strictly increasing.
    last: Option<u32>,
}

impl Retimer {
    pub fn new(rate: u32) -> Self {
        Retimer {
            rate,
            shift: 0,
            anchor: None,
            last: None,
        }
    }

    /// Timestamp for a catch-up frame sent at `now`.
    pub fn catch_up(&mut self, frame_ts: u32, now: Instant) -> u32 {
        let out = match self.anchor {
            None => {
                let ts = frame_ts.wrapping_add(self.shift);
                self.anchor = Some((now, ts));
                ts
            }
            Some((t0, ts0)) => {
                let elapsed = now.saturating_duration_since(t0);
                let ticks = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u32;
                ts0.wrapping_add(ticks)
            }
        };
        let out = match self.last {
            Some(last) if (out.wrapping_sub(last) as i32) <= 0 => last.wrapping_add(1),
            _ => out,
        };
        self.shift = out.wrapping_sub(frame_ts);
        self.last = Some(out);
        out
    }

    /// Timestamp for a live frame.
    pub fn live(&mut self, frame_ts: u32) -> u32 {
        let out = frame_ts.wrapping_add(self.shift);
        self.last = Some(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn frame(bytes: usize, keyframe: bool, ts: u32) -> Arc<Frame> {
        let mut f = Frame::new();
        f.begin(bytes);
        let start = f.start_packet();
        f.put_slice(&vec![if keyframe { 0x65 } else { 0x41 }; bytes]);
        f.end_packet(start, true);
        f.finish(ts, keyframe);
        Arc::new(f)
    }

    fn passthrough(generation: u64) -> SourceInfo {
        SourceInfo {
            generation,
            passthrough: true,
        }
    }

    fn opts(max_bytes: usize) -> GopOptions {
        GopOptions {
            max_bytes,
            max_age: Duration::from_secs(5),
            pace_bytes_per_s: 1_000_000,
        }
    }

    /// A 30 fps stream: IDR every `gop` frames, `size` bytes each (IDRs 10×).
    struct Camera {
        n: u32,
        gop: u32,
        size: usize,
        t0: Instant,
    }

    impl Camera {
        fn next(&mut self) -> (Arc<Frame>, Instant) {
            let key = self.n.is_multiple_of(self.gop);
            let size = if key { self.size * 10 } else { self.size };
            let f = frame(size, key, self.n * 3000);
            let at = self.t0 + Duration::from_micros(33_333 * u64::from(self.n));
            self.n += 1;
            (f, at)
        }
    }

    /// Whatever happens, a snapshot starts with an IDR and holds every frame after it, in
    /// order: a decoder can use each one.
    fn assert_decodable(snapshot: &[Arc<Frame>]) {
        if let Some(first) = snapshot.first() {
            assert!(first.is_keyframe(), "a snapshot starts with an IDR");
            for w in snapshot.windows(2) {
                assert_eq!(
                    w[1].timestamp(),
                    w[0].timestamp() + 3000,
                    "no frame missing after the IDR"
                );
            }
            assert!(
                snapshot[1..].iter().all(|f| !f.is_keyframe()),
                "one GOP only"
            );
        }
    }

    #[test]
    fn keeps_the_latest_gop_from_its_idr() {
        let t0 = Instant::now();
        let mut c = GopCache::new(opts(1 << 20));
        c.on_source(passthrough(1));
        let mut cam = Camera {
            n: 5, // joins mid-GOP: the first frames have no IDR before them
            gop: 30,
            size: 1000,
            t0,
        };
        let mut now = t0;
        for _ in 0..25 {
            let (f, at) = cam.next();
            now = at;
            c.push(&f, at);
            assert!(c.snapshot(at).is_empty(), "nothing before the first IDR");
        }
        for i in 0..40 {
            let (f, at) = cam.next();
            now = at;
            c.push(&f, at);
            let s = c.snapshot(at);
            assert_decodable(&s);
            assert_eq!(s.len(), i % 30 + 1);
        }
        assert_eq!(c.bytes(), 10_000 + 9 * 1000);
        assert_eq!(c.len(), 10);
        let _ = now;
    }

    #[test]
    fn bounded_in_bytes_and_an_overflow_drops_the_whole_gop_until_the_next_idr() {
        let t0 = Instant::now();
        // Room for the IDR and 20 P-frames, not for the 29 of a GOP.
        let mut c = GopCache::new(opts(10_000 + 20 * 1000));
        c.on_source(passthrough(1));
        let mut cam = Camera {
            n: 0,
            gop: 30,
            size: 1000,
            t0,
        };
        let mut held = Vec::new();
        for _ in 0..75 {
            let (f, at) = cam.next();
            c.push(&f, at);
            assert!(c.bytes() <= 30_000, "never past max_bytes");
            let s = c.snapshot(at);
            assert_decodable(&s);
            held.push(s.len());
        }
        // Frames 0..=20 fit, frame 21 overflows: empty until the IDR at 30, and again at 60.
        assert_eq!(held[20], 21);
        assert!(held[21..30].iter().all(|&n| n == 0), "{held:?}");
        assert_eq!(held[30], 1);
        assert_eq!(held[50], 21);
        assert_eq!(held[51], 0);
        assert_eq!(held[60], 1);
        assert_eq!(c.counters().overflows, 2);

        // An IDR bigger than the whole cache is not kept, nor what follows it.
        let mut c = GopCache::new(opts(5000));
        c.on_source(passthrough(1));
        c.push(&frame(6000, true, 0), t0);
        c.push(&frame(100, false, 3000), t0);
        assert!(c.snapshot(t0).is_empty());
    }

    #[test]
    fn bounded_in_age() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopOptions {
            max_age: Duration::from_secs(2),
            ..opts(1 << 20)
        });
        c.on_source(passthrough(1));
        // A 4 s GOP: kept for 2 s, then dropped until the next IDR.
        let mut cam = Camera {
            n: 0,
            gop: 120,
            size: 100,
            t0,
        };
        let mut sizes = Vec::new();
        for _ in 0..130 {
            let (f, at) = cam.next();
            c.push(&f, at);
            sizes.push(c.snapshot(at).len());
        }
        assert_eq!(sizes[60], 61, "2 s in");
        assert_eq!(sizes[61], 0, "past 2 s: dropped");
        assert_eq!(sizes[119], 0);
        assert_eq!(sizes[120], 1, "the next IDR starts over");
        assert_eq!(c.counters().expired, 1);

        // A source that stalls: what was cached grows too old to start a viewer from.
        let mut c = GopCache::new(opts(1 << 20));
        c.on_source(passthrough(1));
        c.push(&frame(100, true, 0), t0);
        assert_eq!(c.snapshot(t0 + Duration::from_secs(5)).len(), 1);
        assert!(c.snapshot(t0 + Duration::from_secs(5) + MS).is_empty());
    }

    #[test]
    fn emptied_on_a_source_restart_and_rebuilt_from_its_first_idr() {
        let t0 = Instant::now();
        let mut c = GopCache::new(opts(1 << 20));
        c.on_source(passthrough(1));
        c.push(&frame(1000, true, 0), t0);
        c.push(&frame(100, false, 3000), t0 + 33 * MS);
        assert_eq!(c.snapshot(t0 + 40 * MS).len(), 2);

        // Same generation: nothing changes.
        c.on_source(passthrough(1));
        assert_eq!(c.snapshot(t0 + 40 * MS).len(), 2);

        // The capture restarted; the new pipeline's first frames are P-frames (an RTSP
        // camera joined mid-GOP). They must not be appended to the old IDR.
        c.on_source(passthrough(2));
        assert!(c.snapshot(t0 + 40 * MS).is_empty());
        c.push(&frame(100, false, 6000), t0 + 2000 * MS);
        c.push(&frame(100, false, 9000), t0 + 2033 * MS);
        assert!(c.snapshot(t0 + 2040 * MS).is_empty());
        c.push(&frame(1000, true, 12_000), t0 + 2066 * MS);
        c.push(&frame(100, false, 15_000), t0 + 2100 * MS);
        let s = c.snapshot(t0 + 2100 * MS);
        assert_eq!(s.len(), 2);
        assert_decodable(&s);
        assert_eq!(s[0].timestamp(), 12_000);
        assert_eq!(c.counters().restarts, 1);
    }

    #[test]
    fn off_with_an_encoder_in_the_pipeline_or_when_configured_off() {
        let t0 = Instant::now();
        let mut c = GopCache::new(opts(1 << 20));
        // No source info yet: off.
        c.push(&frame(1000, true, 0), t0);
        assert!(c.snapshot(t0).is_empty());
        c.on_source(SourceInfo {
            generation: 1,
            passthrough: false,
        });
        c.push(&frame(1000, true, 0), t0);
        assert!(c.snapshot(t0).is_empty());

        // Passthrough, then a restart into an encoded pipeline (V4L2 auto): emptied, off.
        c.on_source(passthrough(2));
        c.push(&frame(1000, true, 0), t0);
        assert_eq!(c.snapshot(t0).len(), 1);
        c.on_source(SourceInfo {
            generation: 3,
            passthrough: false,
        });
        assert!(c.snapshot(t0).is_empty());

        let mut c = GopCache::new(GopOptions::OFF);
        c.on_source(passthrough(1));
        c.push(&frame(1000, true, 0), t0);
        assert!(c.snapshot(t0).is_empty());
    }

    #[test]
    fn catch_up_sends_the_idr_at_once_then_paces_by_bytes() {
        let t0 = Instant::now();
        let o = GopOptions {
            pace_bytes_per_s: 100_000, // 100 bytes per ms
            ..opts(1 << 20)
        };
        let gop = vec![frame(10_000, true, 0), frame(1000, false, 3000)];
        let mut up = CatchUp::new(gop, &o);
        let CatchUpStep::Send(f) = up.poll(t0) else {
            panic!("the IDR goes at once")
        };
        assert!(f.is_keyframe());
        // 10 000 bytes at 100 per ms: the next frame may go 100 ms later.
        assert!(matches!(up.poll(t0 + 50 * MS), CatchUpStep::WaitUntil(t) if t == t0 + 100 * MS));
        up.push_live(frame(1000, false, 6000)).unwrap();
        assert!(matches!(up.poll(t0 + 100 * MS), CatchUpStep::Send(f) if f.timestamp() == 3000));
        assert!(matches!(up.poll(t0 + 105 * MS), CatchUpStep::WaitUntil(t) if t == t0 + 110 * MS));
        // Woken late: the next one is due 10 ms after the last was due, not after now.
        assert!(matches!(up.poll(t0 + 115 * MS), CatchUpStep::Send(f) if f.timestamp() == 6000));
        assert!(matches!(up.poll(t0 + 115 * MS), CatchUpStep::Done));
        assert!(up.is_done());

        // An empty snapshot has nothing to catch up on.
        assert!(matches!(
            CatchUp::new(Vec::new(), &o).poll(t0),
            CatchUpStep::Done
        ));
    }

    #[test]
    fn a_catch_up_that_cannot_keep_up_is_abandoned() {
        let o = opts(20_000);
        let mut up = CatchUp::new(vec![frame(10_000, true, 0)], &o);
        // 10 000 queued + 30 × 1000 reaches the limit (twice max_bytes); the 31st passes it.
        for i in 1..=31 {
            let r = up.push_live(frame(1000, false, i * 3000));
            if i <= 30 {
                assert!(r.is_ok());
            } else {
                assert_eq!(r, Err(CatchUpOverflow { limit: 40_000 }));
            }
        }
        assert!(up.is_done(), "nothing left that the viewer could decode");
    }

    #[test]
    fn retimed_catch_up_follows_the_send_time_then_live_frames_keep_their_spacing() {
        let t0 = Instant::now();
        let mut r = Retimer::new(90_000);
        // The GOP's frames were taken 33 ms apart; they are sent 10 ms apart.
        let sent: Vec<u32> = (0..4)
            .map(|i| r.catch_up(1_000 + i * 3000, t0 + 10 * MS * i))
            .collect();
        assert_eq!(sent, vec![1_000, 1_900, 2_800, 3_700]);
        // Two frames sent in the same instant still get increasing timestamps.
        assert_eq!(r.catch_up(13_000, t0 + 30 * MS), 3_701);
        // Live: the camera's spacing again, continuing from the last catch-up frame.
        assert_eq!(r.live(16_000), 6_701);
        assert_eq!(r.live(19_000), 9_701);

        // Without a catch-up, timestamps pass through; wrapping is harmless.
        let mut r = Retimer::new(90_000);
        assert_eq!(r.live(u32::MAX), u32::MAX);
        let mut r = Retimer::new(90_000);
        assert_eq!(r.catch_up(u32::MAX - 10, t0), u32::MAX - 10);
        assert_eq!(r.catch_up(2_989, t0 + 100 * MS), 8_989);
        assert_eq!(r.live(5_989), 11_989);
    }
}
