//! The thread a capture's supervisor runs on, and how it is told to stop.
//!
//! Both captures (video, audio) supervise their pipeline from a plain thread: everything the
//! supervisor does blocks (bus waits, state changes that close devices and connections), and
//! capture must work before, and independently of, any async runtime.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use crate::media::MediaError;

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
