//! `camgate kvs check`: walk the same path the master takes, one step at a time, and say in plain
//! words what is wrong where. Meant for the person installing the camera, not for a developer.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};

use super::KvsOptions;
use super::control::{ChannelRef, ControlError, ControlPlane};
use super::driver;
use super::machine::{Failure, offset_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStep {
    /// Short name: `configuration`, `credentials`, `describe`, `clock`, `endpoints`, `ice-config`,
    /// `websocket`.
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or the diagnosis.
    pub detail: String,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    pub steps: Vec<CheckStep>,
}

impl CheckReport {
    /// True if every step passed (and at least one ran).
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// The first failing step.
    pub fn failure(&self) -> Option<&CheckStep> {
        self.steps.iter().find(|s| !s.ok)
    }

    fn push(&mut self, name: &'static str, started: Instant, r: Result<String, String>) -> bool {
        let ok = r.is_ok();
        self.steps.push(CheckStep {
            name,
            ok,
            detail: r.unwrap_or_else(|e| e),
            elapsed: started.elapsed(),
        });
        ok
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            writeln!(
                f,
                "[{}] {:<13} {} ({} ms)",
                if s.ok { " ok " } else { "FAIL" },
                s.name,
                s.detail,
                s.elapsed.as_millis()
            )?;
        }
        if self.ok() {
            write!(f, "KVS signaling works.")
        } else {
            write!(f, "KVS signaling is NOT working.")
        }
    }
}

/// Runs every step the master runs, stopping at the first failure.
pub async fn check(cfg: &KvsOptions) -> CheckReport {
    let mut report = CheckReport::default();

    let t = Instant::now();
    let control = match ControlPlane::new(cfg).await {
        Ok(c) => c,
        Err(e) => {
            report.push(
                "configuration",
                t,
                Err(diagnose(&e, "configuration", cfg, "")),
            );
            return report;
        }
    };
    let region = control.region().to_owned();
    let channel = match control.channel() {
        ChannelRef::Name(n) => n.clone(),
        ChannelRef::Arn(a) => a.to_string(),
    };
    report.push(
        "configuration",
        t,
        Ok(format!("region {region}, channel {channel}")),
    );

    let t = Instant::now();
    let creds = control.credentials().await;
    let ok = report.push(
        "credentials",
        t,
        creds
            .map(|c| {
                let expiry = c
                    .expiry()
                    .and_then(|e| e.duration_since(SystemTime::now()).ok())
                    .map(|d| format!(", expire in {} min", d.as_secs() / 60))
                    .unwrap_or_default();
                format!("access key {}…{expiry}", redact(c.access_key_id()))
            })
            .map_err(|e| diagnose(&e, "credentials", cfg, &region)),
    );
    if !ok {
        return report;
    }

    let t = Instant::now();
    let arn = match control.describe().await {
        Ok(arn) => {
            report.push("describe", t, Ok(format!("channel ARN {arn}")));
            arn
        }
        Err(e) => {
            report.push("describe", t, Err(diagnose(&e, "describe", cfg, &region)));
            return report;
        }
    };

    // The SDK silently corrects its own REST signing for skew; the WebSocket presign is ours, so
    // measure the clock here, like the master does.
    let t = Instant::now();
    let mut offset = 0i64;
    if let Some((server, local)) = control.last_server_clock() {
        let ms = offset_ms(server, local);
        let secs = ms / 1000;
        let detail = if ms.abs() >= 60_000 {
            offset = ms;
            format!(
                "{}; the master corrects for it, but fix the clock",
                skew_words(secs)
            )
        } else {
            format!("in sync with AWS (±{} s)", secs.abs().max(1))
        };
        report.push("clock", t, Ok(detail));
    }

    let t = Instant::now();
    let endpoints = match control.endpoints(&arn).await {
        Ok(ep) => {
            report.push(
                "endpoints",
                t,
                Ok(format!("wss {} , https {}", ep.wss, ep.https)),
            );
            ep
        }
        Err(e) => {
            report.push("endpoints", t, Err(diagnose(&e, "endpoints", cfg, &region)));
            return report;
        }
    };

    let t = Instant::now();
    match control.ice_config(&endpoints.https, &arn).await {
        Ok(servers) => {
            let ttl = servers.iter().map(|s| s.ttl.as_secs()).min();
            report.push(
                "ice-config",
                t,
                Ok(match ttl {
                    Some(ttl) => format!("{} TURN server(s), TTL {ttl} s", servers.len()),
                    None => "no TURN servers returned (STUN only)".to_owned(),
                }),
            );
        }
        Err(e) => {
            report.push(
                "ice-config",
                t,
                Err(diagnose(&e, "ice-config", cfg, &region)),
            );
            return report;
        }
    }

    let t = Instant::now();
    match driver::connect(
        &control,
        &endpoints.wss,
        &arn,
        offset,
        cfg.connect_timeout,
        cfg.allows_plaintext(),
    )
    .await
    {
        Ok(mut ws) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "camgate kvs check".into(),
                })),
            )
            .await;
            report.push("websocket", t, Ok("connected as master and closed".into()));
        }
        Err((why, f)) => {
            let d = match f {
                Failure::ClockSkew {
                    server_date,
                    local_date,
                } => skew_words(offset_ms(server_date, local_date) / 1000),
                Failure::Denied => format!(
                    "access denied opening the WebSocket ({why}): the credentials need kinesisvideo:ConnectAsMaster on the channel"
                ),
                Failure::NotFound => format!("the channel disappeared ({why})"),
                Failure::Throttled => format!(
                    "throttled ({why}): more than 3 master connects per second — is another master running on this channel?"
                ),
                Failure::Timeout | Failure::Other => format!(
                    "cannot open the WebSocket ({why}): check outbound HTTPS (443) to {}",
                    endpoints.wss
                ),
                _ => format!("WebSocket refused: {why}"),
            };
            report.push("websocket", t, Err(d));
        }
    }
    report
}

fn redact(akid: &str) -> String {
    akid.chars().take(4).collect()
}

fn skew_words(secs: i64) -> String {
    let dir = if secs > 0 { "behind" } else { "ahead of" };
    format!(
        "clock skew of {} s: this device's clock is {} AWS time by more than SigV4 allows (5 min); enable NTP (systemd-timesyncd/chrony)",
        secs.abs(),
        dir
    )
}

fn iam_action(step: &str) -> &'static str {
    match step {
        "describe" => "kinesisvideo:DescribeSignalingChannel",
        "endpoints" => "kinesisvideo:GetSignalingChannelEndpoint",
        "ice-config" => "kinesisvideo:GetIceServerConfig",
        _ => "kinesisvideo:*",
    }
}

/// Plain-words diagnosis of a failed step.
fn diagnose(e: &ControlError, step: &str, cfg: &KvsOptions, region: &str) -> String {
    if let Some(s) = e.clock_skew(SystemTime::now()) {
        return skew_words(s);
    }
    match e {
        ControlError::NoChannel => "no channel configured: set the KVS channel name or ARN".into(),
        ControlError::BadChannelArn(why) => format!("kvs.channel_arn: {why}"),
        ControlError::NoRegion => {
            "no AWS region: set the KVS region (or AWS_REGION / a profile region)".into()
        }
        ControlError::NoCredentials(d) => {
            if cfg.iot.is_some() {
                format!("no credentials from the AWS IoT credentials provider: {d}")
            } else {
                format!(
                    "no AWS credentials found ({d}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role, or configure the IoT certificate"
                )
            }
        }
        ControlError::Iot(i) => format!("AWS IoT certificate setup: {i}"),
        ControlError::ChannelDeleting(arn) => format!("the channel {arn} is being deleted"),
        ControlError::Timeout { op } => {
            format!("{op} timed out: the KVS endpoint is unreachable (network, DNS or firewall?)")
        }
        ControlError::Network { op, detail } => format!(
            "{op}: cannot reach the KVS endpoint ({detail}); check network, DNS, firewall, and that region {region} is right"
        ),
        ControlError::BadResponse { op, detail } => {
            format!("{op}: the service answered something unexpected: {detail}")
        }
        ControlError::Service {
            status,
            error_type,
            message,
            ..
        } => {
            let et = error_type.as_deref().unwrap_or("");
            let msg = message.as_deref().unwrap_or("");
            match status {
                404 if step == "describe" => {
                    let what = cfg
                        .channel_arn
                        .clone()
                        .or_else(|| cfg.channel_name.clone())
                        .unwrap_or_default();
                    format!(
                        "channel not found: no signaling channel {what:?} in region {region} (wrong region or name? create it, or enable create_channel)"
                    )
                }
                404 => format!("channel not found ({et} {msg}); it may have been deleted"),
                401 | 403
                    if et.contains("UnrecognizedClient") || msg.contains("security token") =>
                {
                    format!(
                        "the credentials are not valid ({et}: {msg}); check the access key / session token"
                    )
                }
                401 | 403
                    if et.contains("InvalidSignature")
                        || msg.contains("signature we calculated does not match") =>
                {
                    format!(
                        "the signature does not match ({et}): the secret access key is wrong for this access key id"
                    )
                }
                401 | 403 => format!(
                    "access denied ({et}): the credentials need {} (and kinesisvideo:ConnectAsMaster) on this channel",
                    iam_action(step)
                ),
                400 if et.contains("ClientLimitExceeded") => {
                    format!("throttled by KVS ({et}); try again in a few seconds")
                }
                _ => format!("{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(status: u16, et: &str, msg: &str, date: Option<SystemTime>) -> ControlError {
        ControlError::Service {
            op: "DescribeSignalingChannel",
            status,
            error_type: Some(et.into()),
            message: Some(msg.into()),
            date,
        }
    }

    #[test]
    fn diagnoses_in_plain_words() {
        let cfg = KvsOptions {
            channel_name: Some("cam".into()),
            ..KvsOptions::default()
        };
        let d = diagnose(
            &svc(404, "ResourceNotFoundException", "not found", None),
            "describe",
            &cfg,
            "eu-west-1",
        );
        assert!(
            d.contains("channel not found") && d.contains("eu-west-1"),
            "{d}"
        );
        let d = diagnose(
            &svc(403, "AccessDeniedException", "no", None),
            "endpoints",
            &cfg,
            "r",
        );
        assert!(
            d.contains("access denied") && d.contains("GetSignalingChannelEndpoint"),
            "{d}"
        );
        let ahead = SystemTime::now() - Duration::from_secs(3600);
        let d = diagnose(
            &svc(
                403,
                "",
                "Signature not yet current: 1 is still later than 2",
                Some(ahead),
            ),
            "describe",
            &cfg,
            "r",
        );
        assert!(
            d.starts_with("clock skew of 3600 s") || d.starts_with("clock skew of 3599 s"),
            "{d}"
        );
        assert!(d.contains("ahead of"), "{d}");
        let d = diagnose(
            &ControlError::NoCredentials("x".into()),
            "credentials",
            &cfg,
            "r",
        );
        assert!(d.contains("no AWS credentials"), "{d}");
        let d = diagnose(&ControlError::NoRegion, "configuration", &cfg, "");
        assert!(d.contains("no AWS region"), "{d}");
    }

    #[test]
    fn report_display_and_verdict() {
        let mut r = CheckReport::default();
        assert!(!r.ok());
        r.push("describe", Instant::now(), Ok("fine".into()));
        assert!(r.ok());
        r.push("websocket", Instant::now(), Err("broken".into()));
        assert!(!r.ok());
        assert_eq!(r.failure().map(|s| s.name), Some("websocket"));
        let text = r.to_string();
        assert!(
            text.contains("FAIL") && text.contains("NOT working"),
            "{text}"
        );
    }
}
