//! The one stream every viewer reads: packetized frames, and the way back to the encoder.
//!
//! Capture and packetization happen once; each frame is published here as an `Arc<Frame>` and
//! every viewer task reads it from its own position in a shared ring (a tokio broadcast
//! channel). A viewer that falls more than `capacity` frames behind is told how many it missed
//! and skips to the next keyframe; nobody else waits for it.
//!
//! For a passed-through source the feed also keeps the latest GOP ([`super::gop`]): a viewer
//! subscribing with [`FrameFeed::subscribe_with_gop`] gets the cached frames and a receiver
//! that starts exactly after them, taken under the lock that `publish` holds, so the handoff
//! from cache to live neither skips nor repeats a frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::gop::{GopCache, GopCounters, GopOptions};
use super::keyframe::{KeyframeAction, KeyframeCoalescer, KeyframePolicy, Urgency};
use crate::media::SourceInfo;
use crate::rtp::Frame;

/// Frames a viewer may fall behind before it is skipped ahead (30 = one second at 30 fps).
pub const DEFAULT_CAPACITY: usize = 30;

#[derive(Clone)]
pub struct FrameFeed {
    tx: broadcast::Sender<Arc<Frame>>,
    published: Arc<AtomicU64>,
    /// The latest GOP of a passed-through source; None when configured off (and for audio).
    /// Publishing while the cache is active, and subscribing with the GOP, happen under this
    /// lock.
    gop: Option<Arc<Mutex<GopCache>>>,
    /// Mirrors the cache's `is_active()`, so that `publish` takes no lock for an encoded
    /// source (an inactive cache has nothing for a subscriber to miss).
    caching: Arc<AtomicBool>,
    /// The last source given to the cache, packed as `generation << 1 | passthrough`
    /// (`u64::MAX` before the first), so that `on_source` locks only when it changes.
    seen_source: Arc<AtomicU64>,
}

impl FrameFeed {
    /// A feed without a GOP cache.
    pub fn new(capacity: usize) -> Self {
        Self::with_gop(capacity, GopOptions::OFF)
    }

    /// A feed that keeps the latest GOP while [`Self::on_source`] says the source is passed
    /// through (and `gop` enables it).
    pub fn with_gop(capacity: usize, gop: GopOptions) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(2));
        Self {
            tx,
            published: Arc::new(AtomicU64::new(0)),
            gop: gop
                .enabled()
                .then(|| Arc::new(Mutex::new(GopCache::new(gop)))),
            caching: Arc::new(AtomicBool::new(false)),
            seen_source: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Where the frames published next come from; call it before publishing them.
    pub fn on_source(&self, source: SourceInfo) {
        let Some(gop) = &self.gop else {
            return;
        };
        let key = source.generation.wrapping_shl(1) | u64::from(source.passthrough);
        if self.seen_source.load(Ordering::Relaxed) == key {
            return;
        }
        let mut g = lock(gop);
        g.on_source(source);
        self.caching.store(g.is_active(), Ordering::Relaxed);
        self.seen_source.store(key, Ordering::Relaxed);
    }

    /// Called on the capture thread once per encoded frame. Never blocks (the GOP lock is
    /// only held to append a frame or to copy the cache's list of `Arc`s).
    pub fn publish(&self, frame: Arc<Frame>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _held = self
            .gop
            .as_ref()
            .filter(|_| self.caching.load(Ordering::Relaxed))
            .map(|gop| {
                let mut g = lock(gop);
                g.push(&frame, Instant::now());
                g
            });
        // Err only means nobody is watching right now.
        let _ = self.tx.send(frame);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
    }

    /// The cached GOP (empty when there is none) and a receiver of every frame published
    /// after it, with nothing in between lost or repeated.
    pub fn subscribe_with_gop(
        &self,
        now: Instant,
    ) -> (Vec<Arc<Frame>>, broadcast::Receiver<Arc<Frame>>) {
        match &self.gop {
            Some(gop) => {
                let g = lock(gop);
                (g.snapshot(now), self.tx.subscribe())
            }
            None => (Vec::new(), self.tx.subscribe()),
        }
    }

    /// The cache's limits ([`GopOptions::OFF`] without one).
    pub fn gop_options(&self) -> GopOptions {
        self.gop
            .as_ref()
            .map_or(GopOptions::OFF, |g| lock(g).options())
    }

    /// What the cache holds (frames, bytes) and did; None without a cache.
    pub fn gop_status(&self) -> Option<(usize, usize, GopCounters)> {
        self.gop.as_ref().map(|g| {
            let g = lock(g);
            (g.len(), g.bytes(), g.counters())
        })
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

/// Why a viewer asks for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCause {
    /// The viewer just connected and needs an IDR to start decoding.
    Join,
    /// The viewer sent a PLI or FIR (its decoder lost the picture).
    PliFir,
    /// The viewer fell behind the shared ring and skipped frames.
    Loss,
}

impl KeyframeCause {
    pub const ALL: [KeyframeCause; 3] = [
        KeyframeCause::Join,
        KeyframeCause::PliFir,
        KeyframeCause::Loss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeCause::Join => "join",
            KeyframeCause::PliFir => "pli_fir",
            KeyframeCause::Loss => "loss",
        }
    }

    /// Its slot in the per-cause counters: the declaration order, as in [`Self::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Cheap handle viewers use to ask for a keyframe; requests are merged (see `keyframe.rs`).
#[derive(Clone)]
pub struct KeyframeRequests {
    /// Wakes the coalescing task; one slot, as the flags in `pending` say what is wanted.
    wake: mpsc::Sender<()>,
    /// What the coalescing task has not picked up yet, by urgency.
    pending: Arc<PendingKinds>,
    /// Requests by [`KeyframeCause::index`].
    requested: Arc<[AtomicU64; KeyframeCause::ALL.len()]>,
    /// Keyframes asked of the encoder after merging.
    forwarded: Arc<AtomicU64>,
}

/// Requests set by viewers and taken by the coalescing task. Flags rather than a queue of
/// causes: a queue of one slot would drop a join behind a pending repair (and the join would
/// then wait out the repair's window), a longer queue only repeats what a flag says.
#[derive(Default)]
struct PendingKinds {
    /// A viewer joined.
    join: AtomicBool,
    /// A viewer sent PLI/FIR or lost frames.
    repair: AtomicBool,
}

impl KeyframeCause {
    /// How soon a keyframe asked for this cause may follow the last one.
    fn urgency(self) -> Urgency {
        match self {
            KeyframeCause::Join => Urgency::Join,
            KeyframeCause::PliFir | KeyframeCause::Loss => Urgency::Repair,
        }
    }
}

impl KeyframeRequests {
    /// Starts the coalescing task; `force` is called (as often as `policy` allows) to make
    /// the encoder emit an IDR. The task ends when the last handle is dropped.
    pub fn spawn(policy: KeyframePolicy, force: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (wake, mut rx) = mpsc::channel::<()>(1);
        let pending = Arc::new(PendingKinds::default());
        let requested = Arc::new(Default::default());
        let forwarded = Arc::new(AtomicU64::new(0));
        let fwd = forwarded.clone();
        let kinds = pending.clone();
        // tokio's clock, so tests can run the task on a paused (virtual) clock.
        let now = || tokio::time::Instant::now().into_std();
        tokio::spawn(async move {
            let mut gate = KeyframeCoalescer::new(policy);
            let mut deadline: Option<Instant> = None;
            loop {
                let action = tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(()) => {
                            // Both taken before one poll: one keyframe serves both.
                            if kinds.join.swap(false, Ordering::AcqRel) {
                                gate.want(Urgency::Join);
                            }
                            if kinds.repair.swap(false, Ordering::AcqRel) {
                                gate.want(Urgency::Repair);
                            }
                            gate.poll(now())
                        }
                        None => break,
                    },
                    _ = sleep_until(deadline) => gate.poll(now()),
                };
                deadline = match action {
                    KeyframeAction::RequestNow => {
                        fwd.fetch_add(1, Ordering::Relaxed);
                        force();
                        None
                    }
                    KeyframeAction::WaitUntil(t) => Some(t),
                    KeyframeAction::Idle => None,
                };
            }
        });
        Self {
            wake,
            pending,
            requested,
            forwarded,
        }
    }

    pub fn request(&self, cause: KeyframeCause) {
        self.requested[cause.index()].fetch_add(1, Ordering::Relaxed);
        let flag = match cause.urgency() {
            Urgency::Join => &self.pending.join,
            Urgency::Repair => &self.pending.repair,
        };
        flag.store(true, Ordering::Release);
        // Full: a wake is already queued, and the task reads the flag after taking it.
        let _ = self.wake.try_send(());
    }

    /// Requests from viewers by cause, every cause listed.
    pub fn requested(&self) -> Vec<(KeyframeCause, u64)> {
        KeyframeCause::ALL
            .iter()
            .map(|c| (*c, self.requested[c.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Requests passed on to the encoder after merging.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

/// A poisoned lock only means a thread panicked holding it; at worst the cache is a GOP cut
/// short, and the next IDR starts it over.
fn lock(m: &Mutex<GopCache>) -> MutexGuard<'_, GopCache> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps until `deadline`, or forever without one: the timer arm of a `select!` in a driver
/// whose sans-IO core may have nothing scheduled.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::broadcast::error::TryRecvError;

    fn frame(keyframe: bool, ts: u32) -> Arc<Frame> {
        let mut f = Frame::new();
        f.begin(16);
        let start = f.start_packet();
        f.put_slice(&[0x41; 16]);
        f.end_packet(start, true);
        f.finish(ts, keyframe);
        Arc::new(f)
    }

    /// Viewers joining while the camera publishes get the cached GOP and then the live
    /// frames with none lost or repeated at the handoff: snapshot and subscribe happen under
    /// the lock `publish` holds.
    #[test]
    fn a_gop_subscriber_gets_every_frame_once_across_the_handoff() {
        const FRAMES: u32 = 3000;
        let feed = FrameFeed::with_gop(FRAMES as usize, GopOptions::default());
        feed.on_source(SourceInfo {
            generation: 1,
            passthrough: true,
        });
        feed.publish(frame(true, 0));
        let publisher = std::thread::spawn({
            let feed = feed.clone();
            move || {
                for i in 1..FRAMES {
                    feed.publish(frame(i % 30 == 0, i));
                }
            }
        });
        let mut joined = Vec::new();
        loop {
            let done = publisher.is_finished();
            joined.push(feed.subscribe_with_gop(Instant::now()));
            if done || joined.len() == 100 {
                break;
            }
        }
        publisher.join().unwrap();
        for (cached, mut rx) in joined {
            let mut seen: Vec<u32> = cached.iter().map(|f| f.timestamp()).collect();
            while let Ok(f) = rx.try_recv() {
                seen.push(f.timestamp());
            }
            assert!(cached.first().is_some_and(|f| f.is_keyframe()));
            let first = seen[0];
            let expected: Vec<u32> = (first..FRAMES).collect();
            assert_eq!(seen, expected, "cached then live, each frame once");
        }
    }

    /// The driver on a virtual clock: a viewer's PLI opens the repair window, another PLI
    /// waits in it, and a viewer joins right behind (its wake-up finds the one slot taken).
    /// The join must neither be lost nor wait out the window: its keyframe goes one frame
    /// interval after the last, and serves the pending repair too.
    #[tokio::test(start_paused = true)]
    async fn a_join_is_not_held_behind_a_pending_repair() {
        let policy = KeyframePolicy::for_framerate(30);
        let (tx, mut forced) = mpsc::unbounded_channel();
        let k = KeyframeRequests::spawn(
            policy,
            Arc::new(move || {
                let _ = tx.send(tokio::time::Instant::now());
            }),
        );
        k.request(KeyframeCause::PliFir);
        let first = forced.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        k.request(KeyframeCause::PliFir);
        k.request(KeyframeCause::Join);
        let second = forced.recv().await.unwrap();
        // The timer wheel has 1 ms steps.
        let waited = second - first;
        assert!(
            waited >= policy.join_interval
                && waited <= policy.join_interval + Duration::from_millis(1),
            "{waited:?}"
        );
        // Nothing more is due: the repair went with the join's keyframe.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(forced.try_recv().is_err());
        assert_eq!(k.forwarded(), 2);
        let by_cause = k.requested();
        assert!(by_cause.contains(&(KeyframeCause::PliFir, 2)));
        assert!(by_cause.contains(&(KeyframeCause::Join, 1)));
    }

    /// A viewer that stops reading costs the others nothing: the publisher never waits, the
    /// reader keeps up, and the stuck one is told how much it missed.
    #[test]
    fn a_stuck_reader_never_blocks_the_others() {
        let feed = FrameFeed::new(4);
        let mut live = feed.subscribe();
        let mut stuck = feed.subscribe();
        for _ in 0..100 {
            feed.publish(Arc::new(Frame::new()));
            assert!(live.try_recv().is_ok());
        }
        assert_eq!(feed.published(), 100);
        assert!(matches!(stuck.try_recv(), Err(TryRecvError::Lagged(96))));
    }
}
