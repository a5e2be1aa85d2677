//! The daemon's side of the systemd protocol, with a real `NOTIFY_SOCKET` (a Unix datagram
//! socket this test binds) and `WATCHDOG_USEC`, as systemd would set them: `READY=1` after the
//! first frame (and, in kvs mode, after the master connected), `STATUS=` lines, `WATCHDOG=1`
//! pings at half the interval while healthy, none once the pipeline is wedged, and
//! `STOPPING=1` on SIGTERM with nothing after it.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_emulator::EmulatorConfig;
use support::daemon::{Daemon, test_env};
use support::kvs::Kvs;

/// Everything the daemon sent, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let dir =
            std::env::temp_dir().join(format!("camgate-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let out = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in text.lines() {
                    out.lock().unwrap().push((Instant::now(), line.to_owned()));
                }
            }
        });
        NotifySocket { path, messages }
    }

    fn env(&self, watchdog: Duration) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.display().to_string()),
            ("WATCHDOG_USEC".into(), watchdog.as_micros().to_string()),
        ]
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (bounded) for the first message `f` accepts, sent at or after `after`.
    async fn wait(
        &self,
        after: Instant,
        within: Duration,
        f: impl Fn(&str) -> bool,
    ) -> Option<Instant> {
        support::wait::until("a notify message", within, || {
            std::future::ready(
                self.all()
                    .into_iter()
                    .find(|(t, m)| *t >= after && f(m))
                    .map(|(t, _)| t),
            )
        })
        .await
        .ok()
    }

    fn pings_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(t, m)| *t >= from && *t <= to && m == "WATCHDOG=1")
            .map(|(t, _)| t)
            .collect()
    }

    fn transcript(&self) -> String {
        let all = self.all();
        let t0 = all.first().map(|(t, _)| *t);
        all.iter()
            .map(|(t, m)| {
                format!(
                    "{:>7.0} ms  {m}",
                    t0.map(|t0| (*t - t0).as_secs_f64() * 1000.0).unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn largest_gap(pings: &[Instant]) -> Duration {
    pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

const WATCHDOG: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_ready_status_watchdog_and_stopping_in_order() {
    let sock = NotifySocket::bind("local");
    let mut env = test_env();
    env.extend(sock.env(WATCHDOG));
    let exec = Instant::now();
    let daemon = Daemon::start(&env, &[]);
    let ready = sock
        .wait(exec, Duration::from_secs(20), |m| m == "READY=1")
        .await
        .unwrap_or_else(|| panic!("no READY=1\n{}\n{}", sock.transcript(), daemon.log()));
    eprintln!(
        "MEASURE systemd: exec -> READY=1, local mode: {:.0} ms",
        (ready - exec).as_secs_f64() * 1000.0
    );
    let all = sock.all();
    // Nothing pings before READY; a status line came first and says it is starting.
    assert!(
        all.iter()
            .take_while(|(t, _)| *t < ready)
            .all(|(_, m)| m != "WATCHDOG=1"),
        "{}",
        sock.transcript()
    );
    assert!(
        all.iter()
            .any(|(_, m)| m.starts_with("STATUS=starting: local (WHEP), test pattern")),
        "{}",
        sock.transcript()
    );
    let streaming = sock
        .wait(ready, Duration::from_secs(2), |m| {
            m.starts_with("STATUS=streaming: local (WHEP)") && m.contains("0 viewer(s)")
        })
        .await;
    assert!(streaming.is_some(), "{}", sock.transcript());

    // Pings at half the 1 s interval, for 3 s.
    let from = Instant::now();
    let _ = sock
        .wait(from + Duration::from_secs(3), Duration::from_secs(5), |m| {
            m == "WATCHDOG=1"
        })
        .await;
    let pings = sock.pings_between(from, from + Duration::from_secs(3));
    assert!(
        pings.len() >= 5,
        "{} pings in 3 s\n{}",
        pings.len(),
        sock.transcript()
    );
    assert!(
        largest_gap(&pings) < WATCHDOG,
        "gap {:?}\n{}",
        largest_gap(&pings),
        sock.transcript()
    );

    let stop_at = Instant::now();
    let (clean, _) = daemon.terminate();
    assert!(clean);
    let stopping = sock
        .wait(stop_at, Duration::from_secs(2), |m| m == "STOPPING=1")
        .await
        .unwrap_or_else(|| panic!("no STOPPING=1\n{}", sock.transcript()));
    assert!(
        sock.pings_between(stopping, Instant::now()).is_empty(),
        "pings after STOPPING=1\n{}",
        sock.transcript()
    );
    let _ = std::fs::remove_dir_all(sock.path.parent().unwrap());
}

/// A writer that feeds MPEG-TS into a named pipe, like `libcamera-vid -o fifo` or ffmpeg would.
struct FifoCamera {
    child: Child,
    path: PathBuf,
}

impl FifoCamera {
    fn start(dir: &std::path::Path) -> FifoCamera {
        let path = dir.join("camera.ts");
        let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(status.success());
        let child = Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", "is-live=true", "!"])
            .args(["video/x-raw,width=320,height=240,framerate=15/1", "!"])
            .args([
                "x264enc",
                "tune=zerolatency",
                "key-int-max=15",
                "!",
                "h264parse",
                "!",
            ])
            .args(["mpegtsmux", "!", "filesink"])
            .arg(format!("location={}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 (gstreamer1.0-tools)");
        FifoCamera { child, path }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for FifoCamera {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A camera that stops sending while our pipeline blocks reading it: the capture cannot even
/// tear the pipeline down to restart it (filesrc blocks in read()), so only systemd can help.
/// The pings must stop, and STATUS must say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_pipeline_stops_the_watchdog_pings() {
    let sock = NotifySocket::bind("wedge");
    let dir = sock.path.parent().unwrap().to_path_buf();
    let camera = FifoCamera::start(&dir);
    let mut env = test_env();
    env.extend(sock.env(WATCHDOG));
    for (k, v) in [
        ("CAMGATE__SOURCE__KIND", "file"),
        ("CAMGATE__SOURCE__STALL_TIMEOUT_S", "2"),
        ("CAMGATE__AUDIO__SOURCE", "none"),
    ] {
        env.push((k.into(), v.into()));
    }
    env.push((
        "CAMGATE__SOURCE__PATH".into(),
        camera.path.display().to_string(),
    ));
    let daemon = Daemon::start(&env, &[]);
    let ready = sock
        .wait(
            Instant::now() - Duration::from_secs(60),
            Duration::from_secs(20),
            |m| m == "READY=1",
        )
        .await
        .unwrap_or_else(|| panic!("no READY=1\n{}\n{}", sock.transcript(), daemon.log()));
    assert!(
        sock.wait(ready, Duration::from_secs(3), |m| m == "WATCHDOG=1")
            .await
            .is_some(),
        "{}",
        sock.transcript()
    );

    camera.signal("STOP");
    let stalled = Instant::now();
    let wedged = sock
        .wait(stalled, Duration::from_secs(20), |m| {
            m.contains("pipeline wedged")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "STATUS never said wedged\n{}\n{}",
                sock.transcript(),
                daemon.log()
            )
        });
    // Pings went on while the stall was young (the capture could still have restarted it).
    assert!(
        !sock.pings_between(stalled, wedged).is_empty(),
        "{}",
        sock.transcript()
    );
    // Then nothing for longer than the watchdog interval: systemd would restart us.
    let quiet_until = wedged + WATCHDOG * 2;
    let _ = sock
        .wait(quiet_until, Duration::from_secs(5), |_| false)
        .await;
    assert!(
        sock.pings_between(wedged, quiet_until).is_empty(),
        "pings while wedged\n{}",
        sock.transcript()
    );
    eprintln!(
        "MEASURE systemd: camera stalled -> pings stop after {:.1} s (stall timeout 2 s)",
        (wedged - stalled).as_secs_f64()
    );
    // Stopping still works while wedged: the process does not wait for the stuck pipeline.
    let (clean, took) = daemon.terminate();
    assert!(clean, "a wedged daemon did not exit cleanly on SIGTERM");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    drop(camera);
    let _ = std::fs::remove_dir_all(&dir);
}

/// kvs mode: READY=1 only once the master is connected to the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvs_mode_is_ready_once_connected() {
    let sock = NotifySocket::bind("kvs");
    let env = sock.env(WATCHDOG);
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let exec = Instant::now();
    let kvs = Kvs::start(EmulatorConfig::default(), &extra).await;
    let ready = sock
        .wait(exec, Duration::from_secs(20), |m| m == "READY=1")
        .await
        .unwrap_or_else(|| panic!("no READY=1\n{}\n{}", sock.transcript(), kvs.daemon.log()));
    eprintln!(
        "MEASURE systemd: exec -> READY=1, kvs mode (emulator): {:.0} ms",
        (ready - exec).as_secs_f64() * 1000.0
    );
    let log = kvs.daemon.log();
    let connected = log.find("KVS signaling connected").expect("connected line");
    let notified = log.find("systemd notified: ready").expect("ready line");
    assert!(
        connected < notified,
        "READY=1 before the KVS connection:\n{log}"
    );
    assert!(
        sock.wait(ready, Duration::from_secs(2), |m| m
            .starts_with("STATUS=streaming: KVS master"))
            .await
            .is_some(),
        "{}",
        sock.transcript()
    );
    let _ = std::fs::remove_dir_all(sock.path.parent().unwrap());
}
