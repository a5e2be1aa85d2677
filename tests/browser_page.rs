//! The page at `/` in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/page.mjs` (playwright-core), plays the daemon's stream, shows what it plays,
//! and comes back by itself when the daemon restarts on the same port.
//!
//! Needs `node` and `npm ci --prefix tests/browser` (playwright-core only; it downloads no
//! browser) and `/usr/bin/chromium` (or `CAMGATE_CHROMIUM`). Missing pieces fail the test with
//! the command to run: a silently skipped browser test would hide a broken page.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{Daemon, test_env};

/// `tests/browser/page.mjs`, after checking that what it needs is installed.
fn page_script() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "{}/node_modules is missing: run `npm ci --prefix tests/browser` (installs the pinned \
         playwright-core; it never downloads a browser)",
        dir.display()
    );
    let chromium = std::env::var("CAMGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `apt-get install chromium` (or point CAMGATE_CHROMIUM at one)"
    );
    dir.join("page.mjs")
}

/// One run of `node page.mjs`: its stdout line by line as it comes, its stdin for `RESTARTED`.
struct PageRun {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

/// How a run ended.
struct PageResult {
    success: bool,
    /// The last JSON line the script printed (`Value::Null` if none).
    json: Value,
    output: String,
}

impl PageRun {
    fn start(url: &str, args: &[&str]) -> PageRun {
        let script = page_script();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(url)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node {}`: {e} (is nodejs installed?)",
                    script.display()
                )
            });
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[page.mjs] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        PageRun {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits (bounded) for a stdout line starting with `prefix`; returns the rest of it.
    fn wait_line(&mut self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(prefix).map(str::to_owned);
                    self.seen.push(line);
                    if rest.is_some() {
                        return rest;
                    }
                }
                // Timed out, or the script exited without saying it.
                Err(_) => return None,
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").expect("write to page.mjs");
        stdin.flush().expect("flush page.mjs stdin");
    }

    /// Waits (bounded) for the script to exit; kills it if it does not.
    fn finish(mut self, within: Duration) -> PageResult {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for page.mjs") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipe is closed now, so this drains and ends.
        self.seen.extend(self.lines.try_iter());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let json = self
            .seen
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null);
        let output = format!(
            "exit: {}\nstdout:\n{}\nstderr:\n{stderr}",
            status.map_or("killed after timeout".to_string(), |s| s.to_string()),
            self.seen.join("\n")
        );
        PageResult {
            success: status.is_some_and(|s| s.success()),
            json,
            output,
        }
    }
}

impl Drop for PageRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} missing or not a count: {v}"))
}

/// A port that was free a moment ago, so a restarted daemon can come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// What every playing page must show: checked by the script, asserted again here on its report.
fn assert_plays(j: &Value, context: &str) {
    assert_eq!(j["resolution"], "640x480", "{context}: video size");
    assert!(as_u64(&j["frames"], "frames") > 0, "{context}: no frames");
    let header = &j["header"];
    assert_eq!(header["state"], "connected", "{context}: #state");
    assert_eq!(header["res"], "640×480", "{context}: #res");
    assert!(
        header["fps"].as_f64().unwrap_or(0.0) > 0.0,
        "{context}: #fps {}",
        header["fps"]
    );
    assert!(
        as_u64(&header["decoded"], "#decoded") > 0,
        "{context}: #decoded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_the_test_pattern_and_shows_what_it_plays() {
    page_script();
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    // CAMGATE_PAGE_SCREENSHOT keeps the picture for a person to look at.
    let keep = std::env::var_os("CAMGATE_PAGE_SCREENSHOT").map(PathBuf::from);
    let shot = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("camgate-page-{}.png", std::process::id()))
    });
    let run = PageRun::start(&d.url, &["--screenshot", shot.to_str().unwrap()]);
    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "the page did not play:\n{}\n-- daemon --\n{}",
        r.output,
        d.log()
    );
    assert_plays(&r.json, "first connection");
    let first = as_u64(&r.json["firstFrameMs"], "firstFrameMs");
    assert!(
        first < 10_000,
        "first frame {first} ms after opening the page"
    );

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "screenshot is not a real PNG ({} bytes)",
        png.len()
    );
    if keep.is_none() {
        let _ = std::fs::remove_file(&shot);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_again_after_the_daemon_restarts_on_the_same_port() {
    page_script();
    let listen = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&test_env(), &["--listen", &listen]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let url = d.url.clone();

    let mut run = PageRun::start(&url, &["--reconnect"]);
    let playing = run.wait_line("PLAYING ", Duration::from_secs(60));
    let Some(playing) = playing else {
        let r = run.finish(Duration::from_secs(10));
        panic!(
            "the page never played before the restart:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
    };
    let before: Value = serde_json::from_str(&playing).expect("PLAYING carries JSON");
    assert_plays(&before, "before the restart");

    let stopped = Instant::now();
    let (clean, took) = d.terminate();
    assert!(clean, "daemon did not exit cleanly on SIGTERM ({took:?})");
    let d = Daemon::start(&test_env(), &["--listen", &listen]);
    assert_eq!(d.url, url, "restarted daemon must be on the same address");
    run.send("RESTARTED");
    let gap = stopped.elapsed();

    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "the page did not play again after the restart:\n{}\n-- new daemon --\n{}",
        r.output,
        d.log()
    );
    assert_plays(&r.json["afterRestart"], "after the restart");
    let reconnect = as_u64(&r.json["reconnectMs"], "reconnectMs");
    assert!(
        reconnect < 15_000,
        "playing again {reconnect} ms after the restart"
    );
    // The page must have noticed: something other than "connected" was shown in between.
    let states = r.json["states"].as_array().expect("states");
    assert!(
        states
            .iter()
            .any(|s| s.as_str().is_some_and(|s| !s.starts_with("connected@"))),
        "the page never showed that it lost the daemon: {states:?}"
    );
    eprintln!(
        "reconnect: daemon down for {} ms, page playing again {reconnect} ms after the restart",
        gap.as_millis()
    );
}
