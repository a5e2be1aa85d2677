//! camgate's reference Alexa Smart Home skill: an AWS Lambda function that lists camgate
//! cameras to Alexa and passes an Echo Show's WebRTC offer to the camera's Kinesis Video
//! Streams channel with SendAlexaOfferToMaster (reference `kvs-signaling-and-alexa.md` §5).
//!
//! * [`cameras`]: the `CAMGATE_CAMERAS` configuration;
//! * [`alexa`]: directive and event shapes;
//! * [`skill`]: the directive logic, sans IO;
//! * [`kvs`]: the KVS calls;
//! * [`invoke`]: one invocation, as the Lambda driver (`main.rs`) runs it.

pub mod alexa;
pub mod cameras;
pub mod kvs;
pub mod skill;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::alexa::Stamp;
use crate::cameras::{Cameras, CamerasError};
use crate::skill::{OfferError, Step};

/// How long after a directive arrives its event must be out. Alexa allows 6 s for the whole
/// exchange, including its own trip to Lambda and back; 5 s leaves it that margin.
pub const ANSWER_BUDGET: Duration = Duration::from_secs(5);

/// Kept from cold start for every warm invocation.
pub struct Skill {
    pub cameras: Result<Cameras, CamerasError>,
    pub kvs: Result<kvs::Kvs, String>,
}

impl Skill {
    /// Reads `CAMGATE_CAMERAS` and the AWS environment; problems are logged here and reported
    /// in every invocation's answer.
    pub async fn from_env() -> Skill {
        let cameras = cameras::from_env();
        match &cameras {
            Ok(c) => tracing::info!(cameras = c.len(), "cameras configured"),
            Err(e) => tracing::error!("{e}"),
        }
        let kvs = kvs::Kvs::from_env().await;
        if let Err(e) = &kvs {
            tracing::error!("{e}");
        }
        Skill { cameras, kvs }
    }

    /// Handles one directive. `lambda_deadline` is the invocation's deadline (milliseconds
    /// since the epoch, from the Runtime API); the answer is due by the earlier of it (less a
    /// margin) and [`ANSWER_BUDGET`].
    pub async fn invoke(&self, input: &Value, lambda_deadline_ms: u64) -> Value {
        let started = tokio::time::Instant::now();
        let deadline = started + budget(lambda_deadline_ms, SystemTime::now());
        let directive = format!(
            "{}.{}",
            input["directive"]["header"]["namespace"]
                .as_str()
                .unwrap_or("?"),
            input["directive"]["header"]["name"].as_str().unwrap_or("?")
        );
        let endpoint = input["directive"]["endpoint"]["endpointId"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let event = match skill::handle(input, self.cameras.as_ref(), &Stamp::fresh()) {
            Step::Reply(event) => event,
            Step::Offer(req) => {
                let (outcome, t) = match &self.kvs {
                    Ok(kvs) => {
                        kvs.send_offer(&req.camera, &req.sender, &req.payload, deadline)
                            .await
                    }
                    Err(e) => (Err(OfferError::Other(e.clone())), kvs::Timings::default()),
                };
                tracing::info!(
                    session = req.session_id,
                    sender = req.sender.as_str(),
                    resolve_ms = t.resolve.as_millis() as u64,
                    cached = t.cached,
                    send_ms = t.send.as_millis() as u64,
                    ok = outcome.is_ok(),
                    "offer passed to {}",
                    req.camera.channel
                );
                req.finish(outcome, &Stamp::fresh())
            }
        };
        let result = event["event"]["header"]["name"].as_str().unwrap_or("?");
        let took = started.elapsed();
        if result == "ErrorResponse" {
            tracing::warn!(
                directive,
                endpoint,
                error = event["event"]["payload"]["type"].as_str().unwrap_or("?"),
                detail = event["event"]["payload"]["message"].as_str().unwrap_or(""),
                total_ms = took.as_millis() as u64,
                "directive failed"
            );
        } else {
            tracing::info!(
                directive,
                endpoint,
                result,
                total_ms = took.as_millis() as u64,
                "directive handled"
            );
        }
        event
    }
}

/// The time left for a directive: [`ANSWER_BUDGET`], or less when Lambda's own deadline
/// (less 200 ms to return the event) comes first. No deadline (0) means the budget.
pub fn budget(lambda_deadline_ms: u64, now: SystemTime) -> Duration {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if lambda_deadline_ms == 0 {
        return ANSWER_BUDGET;
    }
    let left = Duration::from_millis(lambda_deadline_ms.saturating_sub(now_ms))
        .saturating_sub(Duration::from_millis(200));
    left.min(ANSWER_BUDGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_smaller_of_alexas_and_lambdas() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ms = |d: Duration| (now + d).duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(budget(0, now), ANSWER_BUDGET);
        assert_eq!(budget(ms(Duration::from_secs(60)), now), ANSWER_BUDGET);
        assert_eq!(
            budget(ms(Duration::from_secs(3)), now),
            Duration::from_millis(2800)
        );
        assert_eq!(budget(ms(Duration::from_millis(100)), now), Duration::ZERO);
        assert_eq!(budget(1, now), Duration::ZERO);
    }
}
