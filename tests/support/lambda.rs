//! A real AWS Lambda Runtime API server on loopback (the HTTP interface a custom runtime
//! polls: `GET /2018-06-01/runtime/invocation/next`, `POST …/invocation/{id}/response`,
//! `POST …/invocation/{id}/error`, `POST …/runtime/init/error`), and the skill binary run
//! under it as Lambda would run `bootstrap`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// What the function returned for one invocation.
#[derive(Debug)]
pub struct Invocation {
    /// The event (`…/response`), or the error document (`…/error`).
    pub result: Result<Value, Value>,
    /// From the function receiving the event (its `next` returned) to its response arriving:
    /// what the function itself took, as Lambda bills it.
    pub took: Duration,
}

struct Pending {
    id: String,
    body: Value,
    deadline_ms: u64,
    done: oneshot::Sender<Done>,
}

/// The result, when the function received the event, and when its answer came.
type Done = (Result<Value, Value>, Instant, Instant);

#[derive(Default)]
struct Inner {
    /// Invocations handed out, waiting for their response.
    waiting: HashMap<String, (Instant, oneshot::Sender<Done>)>,
    /// The first `next` poll (the function finished its cold start).
    first_poll: Option<Instant>,
    init_errors: Vec<Value>,
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    inner: Mutex<Inner>,
    polled: tokio::sync::Notify,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    tx: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(rx),
            inner: Mutex::new(Inner::default()),
            polled: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind runtime API");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            addr,
            tx,
            shared,
            next_id: Mutex::new(0),
        }
    }

    /// Invokes the function with `event`, giving it `timeout` (its Lambda timeout, which
    /// becomes `Lambda-Runtime-Deadline-Ms`); waits for the result at most `timeout` + 5 s.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Invocation {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("7c0d1a2e-0000-4000-8000-{:012}", *n)
        };
        let deadline_ms = (SystemTime::now() + timeout)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                id: id.clone(),
                body: event,
                deadline_ms,
                done,
            })
            .await
            .expect("runtime API queue");
        let (result, handed_out, finished) =
            tokio::time::timeout(timeout + Duration::from_secs(5), rx)
                .await
                .unwrap_or_else(|_| panic!("invocation {id}: no response within {timeout:?} + 5 s"))
                .expect("runtime API dropped the invocation");
        Invocation {
            result,
            took: finished.saturating_duration_since(handed_out),
        }
    }

    /// Waits (bounded) for the function's first `next` poll; returns when it came.
    pub async fn first_poll(&self, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.polled.notified();
            if let Some(t) = self.shared.inner.lock().unwrap().first_poll {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn init_errors(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().init_errors.clone()
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut inner = shared.inner.lock().unwrap();
        if inner.first_poll.is_none() {
            inner.first_poll = Some(Instant::now());
        }
    }
    shared.polled.notify_waiters();
    // One poller at a time, as Lambda's single-concurrency environment has.
    let Some(p) = shared.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    shared
        .inner
        .lock()
        .unwrap()
        .waiting
        .insert(p.id.clone(), (Instant::now(), p.done));
    let mut headers = HeaderMap::new();
    let mut h = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).unwrap());
    };
    h("lambda-runtime-aws-request-id", p.id);
    h("lambda-runtime-deadline-ms", p.deadline_ms.to_string());
    h(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-west-2:123456789012:function:camgate-alexa-skill".into(),
    );
    h(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".into(),
    );
    h("content-type", "application/json".into());
    (headers, p.body.to_string()).into_response()
}

fn finish(shared: &Shared, id: &str, result: Result<Value, Value>) -> StatusCode {
    let mut inner = shared.inner.lock().unwrap();
    let Some((handed, done)) = inner.waiting.remove(id) else {
        return StatusCode::BAD_REQUEST;
    };
    let _ = done.send((result, handed, Instant::now()));
    StatusCode::ACCEPTED
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    finish(&shared, &id, Ok(value))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    finish(&shared, &id, Err(value))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: String) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    shared.inner.lock().unwrap().init_errors.push(value);
    StatusCode::ACCEPTED
}

/// The skill binary, built (or brought up to date) by cargo in this test's own profile and
/// target directory: a test of the root package has no `CARGO_BIN_EXE_` for another
/// package's binary. `CAMGATE_SKILL_BIN` runs another build instead, e.g. the `bootstrap`
/// that `scripts/build-alexa-skill.sh` zips, to measure the artefact users deploy.
pub fn skill_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("CAMGATE_SKILL_BIN") {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.exists(),
                    "CAMGATE_SKILL_BIN={} does not exist",
                    bin.display()
                );
                return bin;
            }
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(|p| p.parent())
                .expect("target/<profile>")
                .to_path_buf();
            let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "camgate-alexa-skill",
                "--target-dir",
            ])
            .arg(&target_dir);
            if release {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .expect("run cargo build -p camgate-alexa-skill");
            assert!(
                status.success(),
                "cargo build -p camgate-alexa-skill failed"
            );
            let bin = profile_dir.join("camgate-alexa-skill");
            assert!(bin.exists(), "{} was not built", bin.display());
            bin
        })
        .clone()
}

/// The skill running under a [`RuntimeApi`], as Lambda runs `bootstrap`.
pub struct Skill {
    child: Child,
    pub spawned: Instant,
    output: Arc<Mutex<Vec<String>>>,
}

impl Skill {
    /// Starts the skill against `api` with `env` (CAMGATE_CAMERAS, AWS_*) on top of a clean
    /// environment: nothing from the caller's AWS setup leaks in.
    pub fn start(api: &RuntimeApi, env: &[(String, String)]) -> Skill {
        let mut cmd = Command::new(skill_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "camgate-alexa-skill")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/camgate-alexa-skill",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("spawn camgate-alexa-skill");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("CAMGATE_TEST_ECHO").is_some() {
                        eprintln!("[skill] {line}");
                    }
                    out.lock().unwrap().push(line);
                }
            });
        }
        Skill {
            child,
            spawned,
            output,
        }
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The log lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Skill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=<digits>` from a tracing log line.
pub fn field_ms(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
