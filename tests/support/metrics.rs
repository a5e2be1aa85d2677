//! Real consumers of `/metrics`: a strict OpenMetrics parser (the Python `prometheus_client`
//! package's, from PyPI, in a venv under `target/`) and a real Prometheus server (Debian's
//! `/usr/bin/prometheus`) on loopback.
//!
//! ```ignore
//! let families = parse_openmetrics(&text).expect("strict parser accepts it");
//! let prom = Prometheus::start(&daemon_host_port).await;
//! prom.wait_target_up(Duration::from_secs(20)).await;
//! let v = prom.wait_value("camgate_viewers", Duration::from_secs(10), |v| v == 1.0).await;
//! ```
//!
//! The venv is made once per target dir (`python3 -m venv`, Debian package `python3-venv`) and
//! reused while its marker file says the pinned version is installed. Prometheus keeps its
//! config and TSDB in a private temporary directory, removed on drop unless the test is
//! panicking (then its path and log are kept for a look).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The PyPI release whose parser checks our output. Pinned: a newer parser may be stricter
/// or laxer, and the test should change only when we change it.
pub const PROMETHEUS_CLIENT_PY: &str = "prometheus-client==0.26.0";
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Parses stdin with the strict OpenMetrics parser and prints the families as JSON; any
/// parse error (the parser is lazy, so every family is read) exits 1 with the message.
const PARSE_SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:
    print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
    sys.exit(1)
json.dump([{
    "name": f.name, "type": f.type, "unit": f.unit, "help": f.documentation,
    "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
} for f in families], sys.stdout)
"#;

/// One metric family as the parser saw it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub typ: String,
    pub unit: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The family called `name`, if present.
pub fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn sample_value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The venv's python, made (once per process, reused across runs) with the pinned
/// `prometheus_client` installed. Panics with what to install when that cannot be done.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openmetrics-venv");
    let marker = dir.join("camgate-installed");
    let python = dir.join("bin").join("python");
    if fs::read_to_string(&marker).is_ok_and(|m| m == PROMETHEUS_CLIENT_PY) && python.exists() {
        return Ok(python);
    }
    // Debian's interpreter, for which install-deps.sh installs python3-venv; any python3 on
    // PATH otherwise.
    let base = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let _ = fs::remove_dir_all(&dir);
    run(
        Command::new(base).arg("-m").arg("venv").arg(&dir),
        "python3 -m venv (Debian package python3-venv: scripts/install-deps.sh --test)",
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                PROMETHEUS_CLIENT_PY,
            ])
            .env_remove("PIP_REQUIRE_VIRTUALENV"),
        &format!("pip install {PROMETHEUS_CLIENT_PY} (needs PyPI)"),
    )?;
    fs::write(&marker, PROMETHEUS_CLIENT_PY).map_err(|e| format!("write {marker:?}: {e}"))?;
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs the strict parser over `text`: the families, or the parser's error.
pub fn parse_openmetrics(text: &str) -> Result<Vec<Family>, String> {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(PARSE_SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the parser: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to the parser: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for the parser: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parser output: {e}"))
}

/// Ports for Prometheus are picked in [PORT_LOW, PORT_HIGH): below Linux's ephemeral range,
/// so sockets other tests bind to port 0 never take them.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;
const START_ATTEMPTS: usize = 3;

/// A Prometheus server scraping one target every second.
pub struct Prometheus {
    /// e.g. "http://127.0.0.1:24680"
    pub url: String,
    child: Child,
    dir: PathBuf,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1 scraping `target` (`host:port`, path `/metrics`) every
    /// second, and waits (bounded) until it says it is ready.
    pub async fn start(target: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} not found: install prometheus (scripts/install-deps.sh --test)"
        );
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("camgate-prometheus-{}-{port}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the Prometheus temp dir");
            let config = dir.join("prometheus.yml");
            fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: camgate\n    metrics_path: /metrics\n    \
                     static_configs:\n      - targets: ['{target}']\n"
                ),
            )
            .expect("write prometheus.yml");
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.join("stdout")).expect("prometheus stdout file"))
                .stderr(fs::File::create(dir.join("stderr")).expect("prometheus stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {PROMETHEUS}: {e}"));
            let mut prom = Prometheus {
                url: format!("http://127.0.0.1:{port}"),
                child,
                dir,
                client: reqwest::Client::new(),
            };
            match prom.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => return prom,
                Err(why) => failures.push(format!("port {port}: {why}\n{}", prom.log())),
            }
        }
        panic!(
            "Prometheus did not start after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n----\n")
        );
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let ready = format!("{}/-/ready", self.url);
        let (client, child) = (&self.client, &mut self.child);
        let outcome = super::wait::until("prometheus ready", within, || {
            let exited = child.try_wait().ok().flatten();
            let request = client.get(&ready).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(format!("prometheus exited: {status}")));
                }
                let ok = request.await.is_ok_and(|r| r.status().is_success());
                ok.then_some(Ok(()))
            }
        })
        .await;
        outcome.unwrap_or_else(Err)
    }

    /// `GET /api/v1/...` as JSON; panics unless Prometheus answers `"status": "success"`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url = url::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)
            .unwrap_or_else(|e| panic!("Prometheus API {path}: bad URL: {e}"));
        let v: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus API {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("Prometheus API {path}: not JSON: {e}"));
        assert_eq!(v["status"], "success", "Prometheus API {path}: {v}");
        v
    }

    /// The scrape targets (`activeTargets`).
    pub async fn targets(&self) -> Vec<serde_json::Value> {
        let v = self.api("targets", &[]).await;
        v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (bounded) until the one target is `up`; returns its last scrape error otherwise.
    pub async fn wait_target_up(&self, within: Duration) -> Result<(), String> {
        let last = std::sync::Mutex::new(String::from("no target yet"));
        let (this, last_ref) = (self, &last);
        let up = super::wait::until_true("the scrape target up", within, move || async move {
            let targets = this.targets().await;
            let Some(t) = targets.first() else {
                return false;
            };
            let up = t["health"] == "up";
            if !up {
                *last_ref.lock().unwrap() =
                    format!("health {} lastError {}", t["health"], t["lastError"]);
            }
            up
        })
        .await;
        up.map_err(|_| last.into_inner().unwrap())
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let v = self.api("query", &[("query", promql)]).await;
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            out.push((labels, value));
        }
        out
    }

    /// Waits (bounded) until `promql` returns exactly one series whose value satisfies `ok`;
    /// returns the last result either way, for the caller's assertion message.
    pub async fn wait_value(
        &self,
        promql: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Result<f64, String> {
        let (this, ok) = (self, &ok);
        let value = super::wait::until(promql, within, move || async move {
            match this.query(promql).await.as_slice() {
                [(_, v)] if ok(*v) => Some(*v),
                _ => None,
            }
        })
        .await;
        match value {
            Ok(v) => Ok(v),
            Err(_) => Err(format!(
                "`{promql}` after {within:?}: {:?}",
                self.query(promql).await
            )),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("Prometheus files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port in [PORT_LOW, PORT_HIGH) that is free on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let port = PORT_LOW + rand::random::<u16>() % (PORT_HIGH - PORT_LOW);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {PORT_LOW}..{PORT_HIGH} on 127.0.0.1");
}
