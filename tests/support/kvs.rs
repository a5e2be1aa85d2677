//! KVS end-to-end support: the emulator, a daemon in `kvs` mode pointed at it, and viewers
//! that signal through the emulator like the KVS JS SDK does.

use std::time::{Duration, Instant};

use kvs_emulator::{ChannelInfo, ChannelStats, Emulator, EmulatorConfig, SignalingClient};

use super::daemon::{Daemon, test_env};
use super::viewer::TestViewer;
use super::wait;

pub const CHANNEL: &str = "front-door";

/// Environment for a daemon that is the master of `CHANNEL` on `emu`, with the emulator's
/// credentials in the standard AWS variables (the default credential chain reads them) and
/// nothing that could reach a real AWS endpoint.
pub fn kvs_env(emu: &Emulator, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let creds = emu.credentials();
    let mut env = kvs_env_without_credentials(emu, "/nonexistent/aws-config");
    let mut add = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    add("AWS_ACCESS_KEY_ID", &creds.access_key_id);
    add("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key);
    if let Some(t) = &creds.session_token {
        add("AWS_SESSION_TOKEN", t);
    }
    for (k, v) in extra {
        add(k, v);
    }
    env
}

/// [`kvs_env`] without credentials in the environment: the daemon's credential chain finds
/// them through `aws_config_file` (e.g. a `credential_process` the test controls).
pub fn kvs_env_without_credentials(emu: &Emulator, aws_config_file: &str) -> Vec<(String, String)> {
    let mut env = test_env();
    let mut add = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    add("CAMGATE__SIGNALING__MODE", "kvs");
    add("CAMGATE__KVS__REGION", emu.region());
    add("CAMGATE__KVS__CHANNEL_NAME", CHANNEL);
    add("CAMGATE__KVS__ENDPOINT_URL", &emu.control_plane_url());
    // Tests send nothing off the machine: no STUN to the real AWS region.
    add("CAMGATE__KVS__REGION_STUN", "false");
    add("AWS_EC2_METADATA_DISABLED", "true");
    add("AWS_CONFIG_FILE", aws_config_file);
    add(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
    env
}

pub struct Kvs {
    pub emu: Emulator,
    pub channel: ChannelInfo,
    pub daemon: Daemon,
}

impl Kvs {
    /// Emulator + channel + daemon, waiting until the daemon is connected as master.
    pub async fn start(config: EmulatorConfig, extra_env: &[(&str, &str)]) -> Kvs {
        Self::start_with(config, extra_env, |_| {}).await
    }

    /// [`Kvs::start`], with `before` applied to the emulator before the daemon starts (e.g. a
    /// clock skew the daemon must cope with from its first request).
    pub async fn start_with(
        config: EmulatorConfig,
        extra_env: &[(&str, &str)],
        before: impl FnOnce(&Emulator),
    ) -> Kvs {
        Self::start_with_env(config, |emu| {
            before(emu);
            kvs_env(emu, extra_env)
        })
        .await
    }

    /// [`Kvs::start`] with the daemon's whole environment made by `env` (which may also set
    /// up the emulator first).
    pub async fn start_with_env(
        config: EmulatorConfig,
        env: impl FnOnce(&Emulator) -> Vec<(String, String)>,
    ) -> Kvs {
        let emu = Emulator::start(config).await.expect("emulator");
        let channel = emu.create_channel(CHANNEL).expect("channel");
        let env = env(&emu);
        let daemon = Daemon::start(&env, &[]);
        let kvs = Kvs {
            emu,
            channel,
            daemon,
        };
        assert!(
            kvs.wait(Duration::from_secs(20), |s| s.master_connected)
                .await,
            "daemon never connected as master:\n{}",
            kvs.daemon.log()
        );
        kvs
    }

    /// A presigned ConnectAsViewer URL, signed by the emulator's clock (which a test may have
    /// skewed: viewers are not the device under test).
    pub fn viewer_url(&self, client_id: &str) -> String {
        kvs_emulator::presigned_connect_url(
            &self.emu.signaling_ws_url(),
            &self.channel.arn,
            Some(client_id),
            &self.emu.credentials(),
            self.emu.region(),
            self.emu.now(),
            300,
        )
        .expect("presign")
    }

    pub fn stats(&self) -> ChannelStats {
        self.emu.stats(CHANNEL).expect("channel stats")
    }

    pub async fn wait(&self, within: Duration, f: impl Fn(&ChannelStats) -> bool) -> bool {
        self.emu.wait_for(CHANNEL, within, f).await
    }

    /// The daemon's own view (`/stats`, `kvs` member in kvs mode).
    pub async fn daemon_stats(&self) -> serde_json::Value {
        self.daemon.stats().await
    }
}

/// A viewer that connected through KVS signaling.
pub struct KvsViewer {
    pub viewer: TestViewer,
    pub signaling: SignalingClient,
    /// Offer sent → SDP_ANSWER received.
    pub offer_to_answer: Duration,
    /// ICE_CANDIDATE messages the master trickled to us.
    pub trickled_from_master: usize,
    /// SDP_ANSWER received → first ICE_CANDIDATE from the master received (trickle only).
    pub answer_to_first_candidate: Option<Duration>,
}

/// Connects `client_id` as a KVS viewer. With `trickle`, the offer announces
/// `a=ice-options:trickle` and carries no candidates: they go as ICE_CANDIDATE messages, the
/// first one *before* the offer (the service may deliver them in any order). Without, the
/// offer carries every candidate and no trickle option (Alexa's way).
pub async fn connect_viewer(kvs: &Kvs, client_id: &str, trickle: bool) -> KvsViewer {
    let signaling = SignalingClient::connect(&kvs.viewer_url(client_id), Some(client_id))
        .await
        .expect("viewer connect");
    signal_viewer(signaling, client_id, trickle, || kvs.daemon.log()).await
}

/// [`connect_viewer`] over an already open viewer connection (e.g. one a child process opened
/// with a presigned URL); `log` explains a failure.
pub async fn signal_viewer(
    mut signaling: SignalingClient,
    client_id: &str,
    trickle: bool,
    log: impl Fn() -> String,
) -> KvsViewer {
    let viewer = TestViewer::new(102).await;
    let full = viewer.offer(true).await;
    let candidates: Vec<String> = full
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(|c| serde_json::json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}).to_string())
        .collect();
    let started;
    if trickle {
        let offer: String = full
            .lines()
            .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
            .flat_map(|l| {
                let extra = l.starts_with("t=").then_some("a=ice-options:trickle");
                std::iter::once(l).chain(extra)
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        let (first, rest) = candidates.split_first().expect("viewer has no candidate");
        signaling.send_candidate(None, first, None).await.unwrap();
        started = Instant::now();
        signaling.send_offer(&offer, None).await.unwrap();
        for c in rest {
            signaling.send_candidate(None, c, None).await.unwrap();
        }
    } else {
        started = Instant::now();
        signaling.send_offer(&full, None).await.unwrap();
    }

    // Read until answered, then (trickle) keep applying candidates until connected. One probe
    // handles messages for as long as they keep coming; it ends (and the wait polls again)
    // after 200 ms without one.
    let progress = tokio::sync::Mutex::new((signaling, Progress::default()));
    let done = wait::until(
        &format!("viewer {client_id}: answer and connection"),
        Duration::from_secs(15),
        || {
            let (progress, viewer) = (&progress, &viewer);
            async move {
                let mut guard = progress.lock().await;
                let (signaling, p) = &mut *guard;
                loop {
                    if p.offer_to_answer.is_some()
                        && viewer.wait_connected(Duration::from_millis(1)).await
                    {
                        return Some(());
                    }
                    let msg = match signaling.next_message(Duration::from_millis(200)).await {
                        Ok(m) => m,
                        Err(kvs_emulator::ClientError::Timeout(_)) => return None,
                        Err(e) => panic!("viewer {client_id}: signaling failed: {e}"),
                    };
                    p.handle(viewer, msg, client_id, trickle, started).await;
                }
            }
        },
    )
    .await;
    if let Err(e) = done {
        panic!("{e}\n{}", log());
    }
    let (signaling, p) = progress.into_inner();
    KvsViewer {
        viewer,
        signaling,
        offer_to_answer: p.offer_to_answer.unwrap_or_default(),
        trickled_from_master: p.trickled,
        answer_to_first_candidate: p.answer_to_first_candidate,
    }
}

/// What a signalling viewer has received so far.
#[derive(Default)]
struct Progress {
    offer_to_answer: Option<Duration>,
    answered_at: Option<Instant>,
    answer_to_first_candidate: Option<Duration>,
    trickled: usize,
}

impl Progress {
    async fn handle(
        &mut self,
        viewer: &TestViewer,
        msg: kvs_emulator::Envelope,
        client_id: &str,
        trickle: bool,
        started: Instant,
    ) {
        match msg.message_type.as_deref() {
            Some("SDP_ANSWER") => {
                self.offer_to_answer = Some(started.elapsed());
                self.answered_at = Some(Instant::now());
                let sdp = msg.sdp().expect("answer without SDP");
                if !trickle {
                    assert!(
                        sdp.contains("a=candidate:"),
                        "non-trickle answer must carry candidates:\n{sdp}"
                    );
                }
                viewer.accept_answer(&sdp).await;
            }
            Some("ICE_CANDIDATE") => {
                self.trickled += 1;
                if self.answer_to_first_candidate.is_none() {
                    self.answer_to_first_candidate = self.answered_at.map(|t| t.elapsed());
                }
                if let Some(p) = msg.payload.as_deref() {
                    viewer.add_candidate(p).await;
                }
            }
            other => panic!("viewer {client_id}: unexpected {other:?}: {}", msg.raw),
        }
    }
}
