//! Runs the real `camgate` binary, as a user would, and finds the URL it prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    /// e.g. "http://127.0.0.1:43211/"
    pub url: String,
    pub output: Arc<Mutex<Vec<String>>>,
}

/// Environment for a small, fast, loopback-only test daemon (640x480@30 test pattern).
pub fn test_env() -> Vec<(String, String)> {
    [
        ("CAMGATE__SOURCE__WIDTH", "640"),
        ("CAMGATE__SOURCE__HEIGHT", "480"),
        ("CAMGATE__SOURCE__FRAMERATE", "30"),
        ("CAMGATE__WEBRTC__HOST_ADDRESSES", "127.0.0.1"),
        ("CAMGATE__LOG__FORMAT", "text"),
        // Tests that check talkback point it at a file; the others play nothing.
        ("CAMGATE__AUDIO__TALKBACK", "false"),
        // Tests join many viewers from one address; tests/local_security.rs checks the limit.
        ("CAMGATE__HTTP__OFFERS_PER_IP_PER_S", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Daemon {
    /// Starts `camgate run --listen 127.0.0.1:0` with `env` on top of a clean environment
    /// (no CAMGATE__ from the caller) and waits for the URL line. `args` may carry its own
    /// `--listen` (e.g. to restart on the same port); clap refuses the flag twice.
    pub fn start(env: &[(String, String)], args: &[&str]) -> Daemon {
        // CAMGATE_BIN runs another build (a measurement of an older release, say).
        let bin =
            std::env::var("CAMGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_camgate").into());
        let mut cmd = Command::new(bin);
        cmd.arg("run");
        if !args.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("CAMGATE__") {
                cmd.env_remove(k);
            }
        }
        // The caller's RUST_LOG in `env` wins; else CAMGATE_TEST_LOG, else info.
        cmd.env(
            "RUST_LOG",
            std::env::var("CAMGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn camgate");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("camgate: open ") {
                    let _ = url_tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                if let Some(rest) = line.strip_prefix("camgate: health at ") {
                    let _ = url_tx.send(rest.trim_end_matches("healthz").to_string());
                }
                out.lock().unwrap().push(line);
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CAMGATE_TEST_ECHO").is_some() {
                    eprintln!("[camgate] {line}");
                }
                out.lock().unwrap().push(line);
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "daemon printed no URL; output:\n{}",
                    output.lock().unwrap().join("\n")
                )
            });
        Daemon { child, url, output }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path.trim_start_matches('/'))
    }

    /// Waits (bounded) until /healthz says 200.
    pub async fn wait_healthy(&self, within: Duration) {
        let client = reqwest::Client::new();
        let healthy = super::wait::until_true("daemon healthy (/healthz 200)", within, || {
            let request = client.get(self.endpoint("healthz")).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        if let Err(e) = healthy {
            panic!("{e}:\n{}", self.log());
        }
    }

    /// `GET /stats` as JSON.
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(self.endpoint("stats"))
            .await
            .expect("GET /stats")
            .json()
            .await
            .expect("/stats is JSON")
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and returns (exit success, how long it took).
    pub fn terminate(mut self) -> (bool, Duration) {
        let started = Instant::now();
        unsafe_kill(self.child.id(), 15);
        let exited =
            super::wait::until_blocking("exit after SIGTERM", Duration::from_secs(10), || {
                self.child.try_wait().ok().flatten()
            });
        match exited {
            Ok(status) => (status.success(), started.elapsed()),
            Err(_) => {
                let _ = self.child.kill();
                (false, started.elapsed())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// POSTs an offer to WHEP; returns (status, Location, body).
pub async fn whep_post(
    url: &str,
    content_type: &str,
    body: String,
) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("WHEP POST");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, location, r.text().await.unwrap_or_default())
}
