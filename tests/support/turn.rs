//! A real TURN server for tests: Debian's coturn (`/usr/bin/turnserver`) on 127.0.0.1 with a
//! random TURN REST secret (`--use-auth-secret`), the scheme KVS credentials follow.
//!
//! ```ignore
//! let turn = Turn::start().await;              // ready: it answered a STUN Binding request
//! let (user, pass) = turn.credentials(Duration::from_secs(300));
//! // ... a peer with RTCIceServer { urls: vec![turn.url()], username: user, credential: pass }
//! let n = turn.wait_allocations(1, Duration::from_secs(5)).await;
//! ```
//!
//! Everything coturn writes (log, pid file, SQLite user db) lives in a private temporary
//! directory, removed on drop unless the test is panicking (then its path is printed).
//! Ports: the listening port and a 16-port relay range are picked at random below the
//! kernel's ephemeral range (so `bind(127.0.0.1:0)` elsewhere never takes them) and checked
//! free; a start that does not answer STUN in time (port raced away) is retried on others.
//!
//! Counting: coturn 4.6 (`-v`) logs one line per successful allocation,
//! `session <id>: realm <camgate.test> user <<name>>: incoming packet ALLOCATE processed, success`
//! ([`Turn::allocations`]), and one per refused authenticated request,
//! `session <id>: realm <camgate.test> user <<name>>: incoming packet message processed, error 401: Unauthorized`
//! ([`Turn::unauthorized`]; the first, anonymous request of every allocation is refused with
//! `user <>` and is not counted).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

pub const TURNSERVER: &str = "/usr/bin/turnserver";
pub const REALM: &str = "camgate.test";
/// The log line coturn writes for every allocation it grants.
pub const ALLOCATION_LINE: &str = "incoming packet ALLOCATE processed, success";
/// Relay ports coturn may hand out (`--min-port`..=`--max-port`).
pub const RELAY_PORTS: u16 = 16;

/// How long one start attempt may take to answer STUN (coturn needs ~10–50 ms here).
const START_ATTEMPT: Duration = Duration::from_secs(3);
const START_ATTEMPTS: usize = 3;
/// Ports are picked in [PORT_LOW, PORT_HIGH): below Linux's default ephemeral range
/// (32768–60999), so sockets bound to port 0 by other tests never land on them.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;

pub struct Turn {
    /// UDP listening port on 127.0.0.1.
    pub port: u16,
    /// The `--static-auth-secret`.
    pub secret: String,
    /// Relay addresses are 127.0.0.1:`relay_ports`.
    pub relay_ports: std::ops::RangeInclusive<u16>,
    /// From spawning turnserver to its first STUN Binding response.
    pub started_in: Duration,
    /// The full command line, for reports.
    pub command_line: String,
    child: Child,
    dir: PathBuf,
}

impl Turn {
    /// Starts coturn and waits (bounded) until it answers a STUN Binding request on its port.
    /// Panics with install instructions when turnserver is missing.
    pub async fn start() -> Turn {
        assert!(
            Path::new(TURNSERVER).exists(),
            "{TURNSERVER} not found: install coturn (scripts/install-deps.sh --test)"
        );
        let secret = random_hex(32);
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let (port, relay_ports) = pick_ports();
            let dir = std::env::temp_dir().join(format!(
                "camgate-turn-{}-{}",
                std::process::id(),
                random_hex(8)
            ));
            fs::create_dir_all(&dir).expect("create the coturn temp dir");
            let args = args(&dir, port, &relay_ports, &secret);
            let command_line = format!("{TURNSERVER} {}", args.join(" "));
            let started = Instant::now();
            let child = Command::new(TURNSERVER)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.join("stdout")).expect("coturn stdout file"))
                .stderr(fs::File::create(dir.join("stderr")).expect("coturn stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {TURNSERVER}: {e}"));
            let mut turn = Turn {
                port,
                secret: secret.clone(),
                relay_ports,
                started_in: Duration::ZERO,
                command_line,
                child,
                dir,
            };
            match turn.wait_ready(started + START_ATTEMPT).await {
                Ok(()) => {
                    turn.started_in = started.elapsed();
                    return turn;
                }
                Err(why) => {
                    failures.push(format!("port {port}: {why}\n{}", turn.log()));
                    // Dropping kills it and removes its directory.
                }
            }
        }
        panic!(
            "coturn did not answer STUN on 127.0.0.1 after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n----\n")
        );
    }

    /// Sends STUN Binding requests until one is answered, the child exits, or `deadline`.
    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind a probe socket: {e}"))?;
        let server = format!("127.0.0.1:{}", self.port);
        let mut buf = [0u8; 1500];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("turnserver exited: {status}"));
            }
            if Instant::now() >= deadline {
                return Err("no STUN Binding response".into());
            }
            let tid: [u8; 12] = rand::random();
            let _ = sock.send_to(&binding_request(tid), &server).await;
            // One retransmission interval; answers to older probes are ignored.
            let until = tokio::time::Instant::now() + Duration::from_millis(25);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await
            {
                if is_binding_success(&buf[..n], tid) {
                    return Ok(());
                }
            }
        }
    }

    /// `turn:127.0.0.1:<port>?transport=udp`, the only TURN URL shape webrtc 0.21 gathers from.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// TURN REST credentials valid for `ttl` from now: (`<expiry>:camgate-test`,
    /// base64(HMAC-SHA1(secret, username))).
    pub fn credentials(&self, ttl: Duration) -> (String, String) {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + ttl.as_secs();
        kvs_emulator::turn_rest_credentials(&self.secret, expiry, "camgate-test")
    }

    /// Allocations coturn granted so far (lines [`ALLOCATION_LINE`] in its log).
    pub fn allocations(&self) -> usize {
        self.log_file()
            .lines()
            .filter(|l| l.contains(ALLOCATION_LINE))
            .count()
    }

    /// Requests that carried a username and were refused with 401 (bad or expired
    /// credentials).
    pub fn unauthorized(&self) -> usize {
        self.log_file()
            .lines()
            .filter(|l| l.contains("error 401") && !l.contains(" user <>:"))
            .count()
    }

    /// Waits (bounded, polling the log) until at least `n` allocations were logged; returns
    /// the count at that point (which is below `n` on timeout). coturn may write the line just
    /// after its response reached the client, so read counts through this.
    pub async fn wait_allocations(&self, n: usize, within: Duration) -> usize {
        let _ = super::wait::until_true("coturn allocations", within, || {
            std::future::ready(self.allocations() >= n)
        })
        .await;
        self.allocations()
    }

    /// Same as [`wait_allocations`](Self::wait_allocations) for [`unauthorized`](Self::unauthorized).
    pub async fn wait_unauthorized(&self, n: usize, within: Duration) -> usize {
        let _ = super::wait::until_true("coturn 401s", within, || {
            std::future::ready(self.unauthorized() >= n)
        })
        .await;
        self.unauthorized()
    }

    /// coturn's log file, then anything it wrote to stdout/stderr.
    pub fn log(&self) -> String {
        let mut out = format!("$ {}\n{}", self.command_line, self.log_file());
        for extra in ["stdout", "stderr"] {
            let text = fs::read_to_string(self.dir.join(extra)).unwrap_or_default();
            if !text.trim().is_empty() {
                out.push_str(&format!("\n--- {extra} ---\n{text}"));
            }
        }
        out
    }

    fn log_file(&self) -> String {
        fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("coturn files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The command line (without the program). `-n`: no config file (/etc/turnserver.conf is
/// ignored); everything it writes goes to `dir`; UDP only (webrtc 0.21 uses nothing else).
fn args(dir: &Path, port: u16, relay: &std::ops::RangeInclusive<u16>, secret: &str) -> Vec<String> {
    let d = |f: &str| dir.join(f).display().to_string();
    [
        "-n".to_owned(),
        "--listening-ip=127.0.0.1".into(),
        "--relay-ip=127.0.0.1".into(),
        format!("--listening-port={port}"),
        format!("--min-port={}", relay.start()),
        format!("--max-port={}", relay.end()),
        "--use-auth-secret".into(),
        format!("--static-auth-secret={secret}"),
        format!("--realm={REALM}"),
        "--allow-loopback-peers".into(),
        "--no-cli".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--no-tcp".into(),
        format!("--log-file={}", d("turn.log")),
        "--simple-log".into(),
        "--no-stdout-log".into(),
        format!("--pidfile={}", d("turnserver.pid")),
        format!("--db={}", d("turndb")),
        "-v".into(),
    ]
    .into()
}

/// A listening port and a relay range, all free for UDP on 127.0.0.1 right now.
fn pick_ports() -> (u16, std::ops::RangeInclusive<u16>) {
    let free = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..200 {
        let port = rand::random_range(PORT_LOW..PORT_HIGH - RELAY_PORTS - 1);
        let relay = port + 1..=port + RELAY_PORTS;
        if free(port) && relay.clone().all(free) {
            return (port, relay);
        }
    }
    panic!("no free UDP port range in {PORT_LOW}..{PORT_HIGH} on 127.0.0.1");
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// RFC 5389 Binding request without attributes (coturn answers them without credentials).
fn binding_request(tid: [u8; 12]) -> Vec<u8> {
    let mut msg = vec![0x00, 0x01, 0x00, 0x00];
    msg.extend_from_slice(&MAGIC_COOKIE);
    msg.extend_from_slice(&tid);
    msg
}

fn is_binding_success(msg: &[u8], tid: [u8; 12]) -> bool {
    msg.len() >= 20 && msg[..2] == [0x01, 0x01] && msg[4..8] == MAGIC_COOKIE && msg[8..20] == tid
}
