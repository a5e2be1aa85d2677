//! What the session layer knows of the daemon's audio: the shared feeds viewers read, whether
//! there is anything to send, talkback, and on-demand G.711.
//!
//! Opus is encoded once for everyone. G.711 exists only for viewers that cannot take Opus
//! (older Alexa offers, SIP-ish apps); its encoder runs only while at least one of them is
//! connected, which [`G711Demand`] tracks and reports to the capture.

use std::sync::{Arc, Mutex};

use super::feed::FrameFeed;
use super::sdp::AudioCodec;
use crate::media::talkback::Talkback;

/// Answers "is audio coming right now?": false with no source configured, or when the camera
/// turned out to have no audio track. Read on every offer.
pub type AudioAvailable = Arc<dyn Fn() -> bool + Send + Sync>;

/// Called with (codec, wanted) when the first G.711 viewer of a codec arrives (true) and when
/// the last one leaves (false).
pub type DemandHook = Arc<dyn Fn(AudioCodec, bool) + Send + Sync>;

#[derive(Clone)]
pub struct AudioService {
    /// Packetized Opus, shared by every Opus viewer.
    pub opus: FrameFeed,
    /// Packetized G.711 µ-law and A-law; empty unless someone asked for them.
    pub pcmu: FrameFeed,
    pub pcma: FrameFeed,
    pub available: AudioAvailable,
    /// None when talkback is off or the sound card could not be opened: audio sections are
    /// then answered without a receive direction.
    pub talkback: Option<Talkback>,
    pub demand: G711Demand,
}

impl AudioService {
    /// No source, no talkback: every audio section is answered `inactive`.
    pub fn none() -> AudioService {
        AudioService {
            opus: FrameFeed::new(2),
            pcmu: FrameFeed::new(2),
            pcma: FrameFeed::new(2),
            available: Arc::new(|| false),
            talkback: None,
            demand: G711Demand::new(Arc::new(|_, _| {})),
        }
    }

    pub fn feed(&self, codec: AudioCodec) -> &FrameFeed {
        match codec {
            AudioCodec::Opus => &self.opus,
            AudioCodec::Pcmu => &self.pcmu,
            AudioCodec::Pcma => &self.pcma,
        }
    }
}

/// Counts G.711 viewers per codec and switches the matching encoder on and off.
#[derive(Clone)]
pub struct G711Demand {
    /// Viewers per codec: [PCMU, PCMA]. The hook is called under this lock, so a viewer
    /// leaving and another joining at the same moment cannot end with the encoder off.
    counts: Arc<Mutex<[usize; 2]>>,
    /// Switches the capture's G.711 branch for a codec on (true) or off (false).
    hook: DemandHook,
}

/// Held by a G.711 viewer's media task; dropping it counts the viewer out.
pub struct DemandGuard {
    /// The counter to decrement.
    demand: G711Demand,
    /// Which codec's viewer this is (PCMU or PCMA).
    codec: AudioCodec,
}

impl G711Demand {
    pub fn new(hook: DemandHook) -> Self {
        G711Demand {
            counts: Arc::new(Mutex::new([0, 0])),
            hook,
        }
    }

    fn slot(codec: AudioCodec) -> Option<usize> {
        match codec {
            AudioCodec::Opus => None,
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(1),
        }
    }

    /// A viewer of `codec` starts; None for Opus, which always runs.
    pub fn join(&self, codec: AudioCodec) -> Option<DemandGuard> {
        let slot = Self::slot(codec)?;
        let mut counts = self.lock();
        counts[slot] += 1;
        if counts[slot] == 1 {
            (self.hook)(codec, true);
        }
        Some(DemandGuard {
            demand: self.clone(),
            codec,
        })
    }

    pub fn viewers(&self, codec: AudioCodec) -> usize {
        Self::slot(codec).map_or(0, |s| self.lock()[s])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [usize; 2]> {
        // Plain counters: still right after a panic elsewhere.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        if let Some(slot) = G711Demand::slot(self.codec) {
            let mut counts = self.demand.lock();
            counts[slot] = counts[slot].saturating_sub(1);
            if counts[slot] == 0 {
                (self.demand.hook)(self.codec, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_g711_encoder_runs_exactly_while_someone_needs_it() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = calls.clone();
        let demand = G711Demand::new(Arc::new(move |c, on| log.lock().unwrap().push((c, on))));
        assert!(demand.join(AudioCodec::Opus).is_none());
        let a = demand.join(AudioCodec::Pcmu);
        let b = demand.join(AudioCodec::Pcmu);
        assert_eq!(demand.viewers(AudioCodec::Pcmu), 2);
        drop(a);
        assert_eq!(*calls.lock().unwrap(), vec![(AudioCodec::Pcmu, true)]);
        drop(b);
        let c = demand.join(AudioCodec::Pcma);
        drop(c);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                (AudioCodec::Pcmu, true),
                (AudioCodec::Pcmu, false),
                (AudioCodec::Pcma, true),
                (AudioCodec::Pcma, false)
            ]
        );
    }
}
