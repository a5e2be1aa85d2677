//! The one stream every viewer reads: packetized frames, and the way back to the encoder.
//!
//! Capture and packetization happen once; each frame is published here as an `Arc<Frame>` and
//! every viewer task reads it from its own position in a shared ring (a tokio broadcast
//! channel). A viewer that falls more than `capacity` frames behind is told how many it missed
//! and skips to the next keyframe; nobody else waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use super::keyframe::{KeyframeAction, KeyframeCoalescer};
use crate::rtp::Frame;

/// Frames a viewer may fall behind before it is skipped ahead (30 = one second at 30 fps).
pub const DEFAULT_CAPACITY: usize = 30;

#[derive(Clone)]
pub struct FrameFeed {
    tx: broadcast::Sender<Arc<Frame>>,
    published: Arc<AtomicU64>,
}

impl FrameFeed {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(2));
        Self {
            tx,
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Called on the capture thread once per encoded frame. Never blocks.
    pub fn publish(&self, frame: Arc<Frame>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        // Err only means nobody is watching right now.
        let _ = self.tx.send(frame);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
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
    tx: mpsc::Sender<()>,
    /// Requests by [`KeyframeCause::index`].
    requested: Arc<[AtomicU64; KeyframeCause::ALL.len()]>,
    forwarded: Arc<AtomicU64>,
}

impl KeyframeRequests {
    /// Starts the coalescing task; `force` is called (at most once per `min_interval`) to make
    /// the encoder emit an IDR.
    pub fn spawn(min_interval: Duration, force: Arc<dyn Fn() + Send + Sync>) -> Self {
        // One slot is enough: a pending request already covers any that arrive behind it.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let requested = Arc::new(Default::default());
        let forwarded = Arc::new(AtomicU64::new(0));
        let fwd = forwarded.clone();
        tokio::spawn(async move {
            let mut gate = KeyframeCoalescer::new(min_interval);
            let mut deadline: Option<Instant> = None;
            loop {
                let action = tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(()) => gate.request(Instant::now()),
                        None => break,
                    },
                    _ = sleep_until(deadline) => gate.poll(Instant::now()),
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
            tx,
            requested,
            forwarded,
        }
    }

    pub fn request(&self, cause: KeyframeCause) {
        self.requested[cause.index()].fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.try_send(());
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

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
