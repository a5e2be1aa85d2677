//! One bounded wait for every test: poll a condition until it holds or a deadline passes.
//!
//! Tests wait on what a user would observe (a counter in `/stats`, a log line, a decoded
//! frame) instead of sleeping through fixed windows. The poll interval is short so a wait
//! ends soon after its condition holds; the deadline is generous so a slow CI machine does
//! not fail a test that would pass, and when it passes the failure names what was awaited.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(20);

/// Awaits `probe` until it yields `Some`, for at most `within`. `Err` names `what` and how
/// long was waited, so a test can add its own context (a daemon log) before failing.
pub async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if started.elapsed() >= within {
            return Err(format!("{what}: not within {within:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] for a boolean condition.
pub async fn until_true<F, Fut>(what: &str, within: Duration, mut cond: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(what, within, || {
        let f = cond();
        async move { f.await.then_some(()) }
    })
    .await
}

/// The blocking form, for tests without a runtime (GStreamer pipelines, child processes).
pub fn until_blocking<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if started.elapsed() >= within {
            return Err(format!("{what}: not within {within:?}"));
        }
        std::thread::sleep(POLL);
    }
}
