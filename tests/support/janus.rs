//! A real SFU for the publish tests: Janus (Debian `janus`) in a network namespace of its own,
//! meetecho's simple-whip-server in front of it, and a subscriber that watches through
//! Janus's VideoRoom HTTP API with the test viewer.
//!
//! Janus's ICE (libnice) never gathers on loopback, so Janus runs behind a veth pair on a
//! private /24: Janus at `.2` inside the namespace, the test host at `.1`. camgate is told to
//! gather on `.1` (`webrtc.host_addresses`), and so is the subscriber. The WHIP server runs on
//! the host and reaches Janus's WebSocket transport at `.2`.
//!
//! Needs root (`ip netns`), `janus` (scripts/install-deps.sh --test) and the unpacked
//! simple-whip-server with its npm dependencies (scripts/setup-whip-server.sh, which
//! scripts/test.sh runs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use webrtc::peer_connection::RTCSessionDescription;

use super::viewer::{AudioKind, TestViewer, ViewerOptions};
use super::wait::until;

/// The VideoRoom room the tests publish to: H.264 constrained baseline and Opus.
pub const ROOM: u64 = 1234;

/// Where scripts/setup-whip-server.sh puts the server.
fn whip_server_dir() -> PathBuf {
    std::env::var_os("CAMGATE_WHIP_SERVER_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/camgate-test/simple-whip-server"))
        })
        .unwrap_or_else(|| PathBuf::from("simple-whip-server"))
}

const JANUS_LIBS: &str = "/usr/lib/x86_64-linux-gnu/janus";

pub struct JanusLab {
    /// The namespace Janus runs in.
    pub ns: String,
    /// The host side of the veth: camgate and subscribers gather here.
    pub host_ip: String,
    /// Janus's address inside the namespace.
    pub janus_ip: String,
    /// Config, logs.
    dir: PathBuf,
    janus: Option<Child>,
    whip: Option<Child>,
    /// simple-whip-server's port on 127.0.0.1.
    pub whip_port: u16,
    http: reqwest::Client,
}

static LABS: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed (the Janus tests need root for ip netns): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl JanusLab {
    /// Creates the namespace and veth, starts Janus and the WHIP server, waits for both.
    pub async fn start() -> JanusLab {
        assert!(
            Path::new(&format!("{JANUS_LIBS}/plugins/libjanus_videoroom.so")).exists()
                && which("janus"),
            "janus is not installed: run scripts/install-deps.sh --test"
        );
        let server = whip_server_dir();
        assert!(
            server.join("src/server.js").exists() && server.join("node_modules/express").exists(),
            "simple-whip-server is not set up in {}: run scripts/setup-whip-server.sh",
            server.display()
        );
        // A /24 and names of our own: tests run in parallel and a crashed run may have left
        // its namespace behind.
        let n = (std::process::id() + LABS.fetch_add(1, Ordering::Relaxed) * 7) % 200 + 20;
        let ns = format!("camgate-whip-{n}");
        let (host_if, ns_if) = (format!("cgw{n}a"), format!("cgw{n}b"));
        sh(&["ip", "netns", "del", &ns]);
        sh(&["ip", "link", "del", &host_if]);
        let host_ip = format!("10.77.{n}.1");
        let janus_ip = format!("10.77.{n}.2");
        must(&["ip", "netns", "add", &ns]);
        must(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        must(&["ip", "link", "set", &ns_if, "netns", &ns]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &host_if,
        ]);
        must(&["ip", "link", "set", &host_if, "up"]);
        must(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{janus_ip}/24"),
            "dev",
            &ns_if,
        ]);
        must(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up",
        ]);
        must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);

        let dir = std::env::temp_dir().join(format!("camgate-janus-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("janus")).unwrap();
        std::fs::create_dir_all(dir.join("whip/src")).unwrap();
        write_janus_config(&dir.join("janus"));
        for f in ["server.js", "whip-janus.js"] {
            std::fs::copy(server.join("src").join(f), dir.join("whip/src").join(f)).unwrap();
        }
        let whip_port = free_port();
        std::fs::write(
            dir.join("whip/src/config.js"),
            format!(
                "module.exports = {{ janus: {{ address: 'ws://{janus_ip}:8188' }}, port: {whip_port}, \
                 rest: '/whip', allowTrickle: true, strictETags: false, iceServers: [] }};\n"
            ),
        )
        .unwrap();

        let mut lab = JanusLab {
            ns,
            host_ip,
            janus_ip,
            dir,
            janus: None,
            whip: None,
            whip_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(35))
                .build()
                .unwrap(),
        };
        lab.start_janus().await;
        let log = std::fs::File::create(lab.dir.join("whip.log")).unwrap();
        lab.whip = Some(
            Command::new("node")
                .arg("src/server.js")
                .current_dir(lab.dir.join("whip"))
                .env("NODE_PATH", server.join("node_modules"))
                .env("DEBUG", "whip:*,-whip:debug")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("node"),
        );
        let url = format!("http://127.0.0.1:{}/whip/healthcheck", lab.whip_port);
        let client = lab.http.clone();
        until("simple-whip-server up", Duration::from_secs(20), || {
            let r = client.get(&url).send();
            async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.whip_log()));
        lab
    }

    /// Starts Janus (again) in the namespace and waits for its HTTP API.
    pub async fn start_janus(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("janus.log"))
            .unwrap();
        let cfg = self.dir.join("janus");
        self.janus = Some(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "janus", "-F"])
                .arg(&cfg)
                .arg("-C")
                .arg(cfg.join("janus.jcfg"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("janus"),
        );
        let client = self.http.clone();
        let url = self.janus_url("");
        until("Janus HTTP API up", Duration::from_secs(20), || {
            let r = client
                .post(&url)
                .json(&json!({"janus": "info", "transaction": "up"}))
                .send();
            async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.janus_log()));
    }

    /// Kills Janus at once (SIGKILL: no goodbye to anyone), as a crash would.
    pub fn kill_janus(&mut self) {
        if let Some(mut j) = self.janus.take() {
            let _ = j.kill();
            let _ = j.wait();
        }
    }

    pub fn janus_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default()
    }

    pub fn whip_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("whip.log")).unwrap_or_default()
    }

    fn janus_url(&self, path: &str) -> String {
        format!("http://{}:8088/janus{path}", self.janus_ip)
    }

    /// The WHIP endpoint camgate publishes to.
    pub fn whip_url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/whip/endpoint/{id}", self.whip_port)
    }

    /// Creates a WHIP endpoint for [`ROOM`] (simple-whip-server's own REST call).
    pub async fn create_endpoint(&self, id: &str, token: &str) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/whip/create", self.whip_port))
            .json(&json!({"id": id, "room": ROOM, "token": token}))
            .send()
            .await
            .expect("POST /whip/create");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    /// The endpoint's state as the WHIP server reports it (`enabled` while a publisher is on).
    pub async fn endpoint(&self, id: &str) -> Option<Value> {
        let list: Value = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/whip/endpoints",
                self.whip_port
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list.as_array()?.iter().find(|e| e["id"] == id).cloned()
    }

    async fn janus(&self, path: &str, body: Value) -> Value {
        self.http
            .post(self.janus_url(path))
            .json(&body)
            .send()
            .await
            .expect("Janus request")
            .json()
            .await
            .expect("Janus JSON")
    }

    /// One synchronous VideoRoom request (`body`) on a short-lived Janus session.
    async fn videoroom(&self, body: Value) -> Value {
        let (session, handle) = self.attach().await;
        let r = self
            .janus(
                &format!("/{session}/{handle}"),
                json!({"janus": "message", "transaction": "vr", "body": body}),
            )
            .await;
        let _ = self
            .janus(
                &format!("/{session}"),
                json!({"janus": "destroy", "transaction": "d"}),
            )
            .await;
        r
    }

    /// The publishers in [`ROOM`] now.
    pub async fn publishers(&self) -> Vec<u64> {
        let r = self
            .videoroom(json!({"request": "listparticipants", "room": ROOM}))
            .await;
        r["plugindata"]["data"]["participants"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["publisher"].as_bool() == Some(true))
                    .filter_map(|p| p["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kicks a participant out of [`ROOM`] (the VideoRoom `kick` request): Janus hangs up its
    /// PeerConnection, with a DTLS alert.
    pub async fn kick(&self, participant: u64) {
        let r = self
            .videoroom(json!({"request": "kick", "room": ROOM, "id": participant}))
            .await;
        assert_eq!(
            r["plugindata"]["data"]["videoroom"], "success",
            "kick refused: {r}"
        );
    }

    async fn attach(&self) -> (u64, u64) {
        let s = self
            .janus("", json!({"janus": "create", "transaction": "c"}))
            .await;
        let session = s["data"]["id"].as_u64().expect("session id");
        let h = self
            .janus(
                &format!("/{session}"),
                json!({"janus": "attach", "transaction": "a", "plugin": "janus.plugin.videoroom"}),
            )
            .await;
        (session, h["data"]["id"].as_u64().expect("handle id"))
    }

    /// Subscribes to the room's publisher through the VideoRoom API with a real WebRTC peer
    /// (the test viewer, gathering on the veth) and returns it once Janus has its answer.
    pub async fn subscribe(&self) -> TestViewer {
        let feed = until(
            "a publisher in the Janus room",
            Duration::from_secs(30),
            || async { self.publishers().await.first().copied() },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.janus_log()));
        let (session, handle) = self.attach().await;
        let joined = self
            .janus(
                &format!("/{session}/{handle}"),
                json!({"janus": "message", "transaction": "j",
                       "body": {"request": "join", "ptype": "subscriber", "room": ROOM,
                                "streams": [{"feed": feed}]}}),
            )
            .await;
        assert_ne!(joined["janus"], "error", "{joined}");
        // The offer comes as an event on the session's long poll.
        let offer = until(
            "Janus's subscriber offer",
            Duration::from_secs(30),
            || async {
                let ev: Value = self
                    .http
                    .get(self.janus_url(&format!("/{session}?maxev=1")))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                ev["jsep"]["sdp"].as_str().map(str::to_owned)
            },
        )
        .await
        .unwrap();
        let pt_of = |codec: &str| {
            offer.lines().find_map(|l| {
                let rest = l.strip_prefix("a=rtpmap:")?;
                let (pt, name) = rest.split_once(' ')?;
                name.to_ascii_uppercase()
                    .starts_with(codec)
                    .then(|| pt.trim().parse::<u8>().ok())?
            })
        };
        let video_pt = pt_of("H264/").expect("Janus offers H.264");
        let mut opts = ViewerOptions::video(video_pt);
        opts.udp_addrs = vec![format!("{}:0", self.host_ip)];
        if let Some(apt) = pt_of("OPUS/") {
            opts.audio = vec![(apt, AudioKind::Opus)];
        }
        let viewer = TestViewer::with_options(opts).await;
        viewer
            .pc
            .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
            .await
            .expect("Janus's offer applies");
        let answer = viewer.pc.create_answer(None).await.unwrap();
        viewer.pc.set_local_description(answer).await.unwrap();
        // A complete answer: wait (bounded) for our candidates.
        let _ =
            until("subscriber gathering", Duration::from_secs(5), || async {
                viewer.pc.local_description().await.filter(|d| {
                    d.sdp.contains("a=candidate") && d.sdp.contains("a=end-of-candidates")
                })
            })
            .await;
        let sdp = viewer.pc.local_description().await.unwrap().sdp;
        let started = self
            .janus(
                &format!("/{session}/{handle}"),
                json!({"janus": "message", "transaction": "s",
                       "body": {"request": "start", "room": ROOM},
                       "jsep": {"type": "answer", "sdp": sdp}}),
            )
            .await;
        assert_ne!(started["janus"], "error", "{started}");
        viewer
    }
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn write_janus_config(dir: &Path) {
    let disabled_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let disabled_events = [
        "gelfevh",
        "mqttevh",
        "nanomsgevh",
        "rabbitmqevh",
        "sampleevh",
        "wsevh",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let files = [
        (
            "janus.jcfg",
            format!(
                "general: {{\n  configs_folder = \"{cfg}\"\n  plugins_folder = \"{JANUS_LIBS}/plugins\"\n  \
                 transports_folder = \"{JANUS_LIBS}/transports\"\n  events_folder = \"{JANUS_LIBS}/events\"\n  \
                 loggers_folder = \"{JANUS_LIBS}/loggers\"\n  debug_level = 4\n}}\n\
                 media: {{\n  rtp_port_range = \"20000-40000\"\n}}\n\
                 nat: {{\n  ice_ignore_list = \"vmnet\"\n}}\n\
                 plugins: {{\n  disable = \"{disabled_plugins}\"\n}}\n\
                 transports: {{\n  disable = \"libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so\"\n}}\n\
                 loggers: {{\n  disable = \"libjanus_jsonlog.so\"\n}}\n\
                 events: {{\n  broadcast = false\n  disable = \"{disabled_events}\"\n}}\n",
                cfg = dir.display()
            ),
        ),
        (
            "janus.transport.http.jcfg",
            "general: {\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  port = 8088\n  https = false\n}\nadmin: {\n  admin_http = false\n}\n".to_string(),
        ),
        (
            "janus.transport.websockets.jcfg",
            "general: {\n  json = \"plain\"\n  ws = true\n  ws_port = 8188\n  wss = false\n}\nadmin: {\n  admin_ws = false\n}\n".to_string(),
        ),
        (
            "janus.plugin.videoroom.jcfg",
            format!(
                "general: {{\n}}\nroom-{ROOM}: {{\n  description = \"camgate H.264\"\n  publishers = 3\n  \
                 bitrate = 0\n  fir_freq = 0\n  videocodec = \"h264\"\n  audiocodec = \"opus\"\n  \
                 h264_profile = \"42e01f\"\n}}\n"
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

impl Drop for JanusLab {
    fn drop(&mut self) {
        if let Some(mut w) = self.whip.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.kill_janus();
        // Deleting the namespace removes the veth pair with it.
        sh(&["ip", "netns", "del", &self.ns]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
