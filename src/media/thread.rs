//! The thread a capture's supervisor runs on, and how it is told to stop.
//!
//! Both captures (video, audio) supervise their pipeline from a plain thread: everything the
//! supervisor does blocks (bus waits, state changes that close devices and connections), and
//! capture must work before, and independently of, any async runtime.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::media::MediaError;

/// When a pipeline last delivered something: written on the streaming thread without a lock,
/// read by the supervisor (stall detection) and by status.
pub(crate) struct LastArrival {
    /// The clock's zero.
    epoch: Instant,
    /// Nanoseconds since `epoch`, plus one (0 = nothing yet).
    at: std::sync::atomic::AtomicU64,
}

impl LastArrival {
    pub(crate) fn new() -> Self {
        LastArrival {
            epoch: Instant::now(),
            at: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Something arrived now.
    pub(crate) fn mark(&self) {
        let ns = self.epoch.elapsed().as_nanos() as u64 + 1;
        self.at.store(ns, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn get(&self) -> Option<Instant> {
        match self.at.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    /// Time since the clock's zero, for a timestamp when a buffer has none.
    pub(crate) fn since_epoch(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Pipeline failures counted by [`MediaError::restart_reason`], for metrics. Written by the
/// supervisor after each failure, read by status snapshots.
#[derive(Debug, Default)]
pub(crate) struct RestartReasons([std::sync::atomic::AtomicU64; MediaError::RESTART_REASONS.len()]);

impl RestartReasons {
    pub(crate) fn record(&self, err: &MediaError) {
        let reason = err.restart_reason();
        if let Some(i) = MediaError::RESTART_REASONS
            .iter()
            .position(|r| *r == reason)
        {
            self.0[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Every reason with its count, zeros included, in [`MediaError::RESTART_REASONS`] order.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        MediaError::RESTART_REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, n)| (*r, n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
}

/// How one pipeline attempt ended.
pub(crate) enum Attempt {
    /// Told to stop while it ran.
    Stopped,
    /// Failed; retried after the backoff.
    Failed(MediaError),
    /// Nothing to retry (a camera stream without audio).
    Final,
}

/// How [`restart_loop`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoopEnd {
    Stopped,
    Final,
}

/// A supervisor's life: run attempts until told to stop (or one is final), waiting out the
/// backoff after each failure. `starting` is called before every attempt, `failed(attempt,
/// retry_in, error)` after each failure (to log it and record it in the status).
pub(crate) fn restart_loop(
    stop_rx: &Receiver<()>,
    mut backoff: Backoff,
    mut starting: impl FnMut(),
    mut run_once: impl FnMut(&mut Backoff) -> Attempt,
    mut failed: impl FnMut(u64, Duration, &MediaError),
) -> LoopEnd {
    let mut attempt = 0u64;
    loop {
        starting();
        match run_once(&mut backoff) {
            Attempt::Stopped => return LoopEnd::Stopped,
            Attempt::Final => return LoopEnd::Final,
            Attempt::Failed(err) => {
                attempt += 1;
                let delay = backoff.next_delay(Instant::now());
                failed(attempt, delay, &err);
                match stop_rx.recv_timeout(delay) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return LoopEnd::Stopped,
                }
            }
        }
    }
}

/// A running supervisor thread. Dropping it stops the thread and waits for it.
pub(crate) struct SupervisorThread {
    /// Closing or sending on it tells the supervisor to stop; None once stopped.
    stop_tx: Option<Sender<()>>,
    /// Joined on stop, so the pipeline is down when `stop` returns.
    thread: Option<JoinHandle<()>>,
    /// What it supervises, for the log line if it panicked ("capture", "audio").
    what: &'static str,
}

impl SupervisorThread {
    /// Starts `run` on a thread named `name`; `run` gets the receiving end of the stop channel
    /// and returns when a message arrives or the channel closes.
    pub(crate) fn spawn(
        name: &str,
        what: &'static str,
        run: impl FnOnce(Receiver<()>) + Send + 'static,
    ) -> Result<SupervisorThread, MediaError> {
        let (stop_tx, stop_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(stop_rx))
            .map_err(|e| MediaError::Thread(e.to_string()))?;
        Ok(SupervisorThread {
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            what,
        })
    }

    /// Tells the supervisor to stop and waits for it; a second call does nothing.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            // An error only means the supervisor already exited.
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("{} supervisor thread panicked", self.what);
        }
    }
}

impl Drop for SupervisorThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::without_jitter(
            Duration::from_millis(1),
            Duration::from_millis(4),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn failures_are_retried_with_backoff_until_an_attempt_is_final() {
        let (_tx, rx) = mpsc::channel();
        let mut starts = 0;
        let mut failures = Vec::new();
        let mut left = 3;
        let end = restart_loop(
            &rx,
            backoff(),
            || starts += 1,
            |_| {
                left -= 1;
                if left == 0 {
                    Attempt::Final
                } else {
                    Attempt::Failed(MediaError::EndOfStream)
                }
            },
            |attempt, delay, _| failures.push((attempt, delay)),
        );
        assert_eq!(end, LoopEnd::Final);
        assert_eq!(starts, 3);
        assert_eq!(
            failures,
            [(1, Duration::from_millis(1)), (2, Duration::from_millis(2))]
        );
    }

    #[test]
    fn restarts_are_counted_by_reason() {
        let r = RestartReasons::default();
        r.record(&MediaError::EndOfStream);
        r.record(&MediaError::Stalled(Duration::from_secs(1)));
        r.record(&MediaError::AudioStalled(Duration::from_secs(1)));
        let snap = r.snapshot();
        assert_eq!(snap.len(), MediaError::RESTART_REASONS.len());
        assert!(snap.contains(&("stalled", 2)));
        assert!(snap.contains(&("end_of_stream", 1)));
        assert_eq!(snap.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn a_stop_during_the_wait_ends_the_loop() {
        let (tx, rx) = mpsc::channel();
        tx.send(()).unwrap();
        let mut runs = 0;
        let end = restart_loop(
            &rx,
            backoff(),
            || {},
            |_| {
                runs += 1;
                Attempt::Failed(MediaError::EndOfStream)
            },
            |_, _, _| {},
        );
        assert_eq!((end, runs), (LoopEnd::Stopped, 1));
        let (_tx, rx) = mpsc::channel();
        assert_eq!(
            restart_loop(&rx, backoff(), || {}, |_| Attempt::Stopped, |_, _, _| {}),
            LoopEnd::Stopped
        );
    }
}
