//! The camgate binary: command line only; everything else lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use camgate::config;
use camgate::daemon::{self, DaemonOptions};

/// Put a camera on WebRTC: browsers and apps through the built-in WHEP endpoint, or Alexa and
/// KVS viewers as the master of an Amazon Kinesis Video Streams signaling channel.
#[derive(Parser)]
#[command(name = "camgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options for running the daemon when no subcommand is given.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run(RunArgs),
    /// Validate the configuration and print the effective settings (secrets masked).
    CheckConfig(ConfigArg),
    /// List the H.264 encoders, cameras and GStreamer elements found on this machine.
    Probe,
    /// Amazon KVS tools.
    #[command(subcommand)]
    Kvs(KvsCommand),
}

#[derive(Subcommand)]
enum KvsCommand {
    /// Check credentials, region, channel, endpoints, ICE servers and the WebSocket, and say
    /// in plain words what is wrong. The first thing to run on a new device.
    Check(ConfigArg),
}

/// `camgate generate …`, for packagers (scripts/build-deb.sh). Parsed on its own, before
/// [`Cli`], so that it stays out of the help, the man pages and the completions it writes.
#[derive(Parser)]
#[command(name = "camgate generate")]
enum GenerateCommand {
    /// Write camgate.1 and one page per subcommand (camgate-run.1, ...) into DIR.
    Man {
        /// Directory to write the pages to; created if missing.
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Clone, Default)]
struct ConfigArg {
    /// Configuration file (default: /etc/camgate/camgate.toml if it exists, else built-in
    /// defaults). Environment variables CAMGATE__SECTION__KEY override it.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    config: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Address for the HTTP server (page, WHEP, health); overrides http.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let g = GenerateCommand::parse_from(std::env::args_os().skip(1));
        return exit_code(generate(g));
    }
    let cli = Cli::parse();
    // webrtc enables rustls' ring backend and the AWS crates aws-lc-rs; with both compiled in,
    // a rustls client built without an explicit provider panics. Settle it once, up front.
    camgate::signaling::kvs::install_crypto_provider();
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::CheckConfig(c)) => check_config(c),
        Some(Command::Probe) => probe(),
        Some(Command::Kvs(KvsCommand::Check(c))) => kvs_check(c),
    };
    exit_code(result)
}

fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("camgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(c: &ConfigArg) -> anyhow::Result<config::Settings> {
    let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return config::load(c.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"));
    };
    // Under systemd with LoadCredential=: the same as config::load, plus the credentials.
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect();
    let creds = credential_vars(Path::new(&creds), &env)?;
    env.extend(creds);
    let default = Path::new(config::DEFAULT_CONFIG_PATH);
    let file = match &c.config {
        Some(path) => Some(path.as_path()),
        None => default.exists().then_some(default),
    };
    config::load_from(file, &env).map_err(|e| anyhow::anyhow!("{e}"))
}

/// systemd credentials named like a configuration variable act as that variable, e.g.
/// `LoadCredential=CAMGATE__SOURCE__PASSWORD:/etc/camgate/credentials/rtsp-password`: the
/// source file can stay root-only, systemd hands the service a private copy, and the secret never
/// enters the process environment. A variable set in the environment wins over a credential of
/// the same name. One trailing newline (as `echo` writes, or CRLF) is dropped.
fn credential_vars(dir: &Path, env: &[(String, String)]) -> anyhow::Result<Vec<(String, String)>> {
    let prefix = config::ENV_PREFIX;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading credentials {}", dir.display()))?;
    let mut vars = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading credentials {}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let ours = name
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
        if !ours || env.iter().any(|(k, _)| *k == name) {
            continue;
        }
        let value = std::fs::read_to_string(entry.path())
            .with_context(|| format!("reading credential {name}"))?;
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(&value)
            .to_string();
        vars.push((name, value));
    }
    vars.sort();
    Ok(vars)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut settings = load(&args.config)?;
    if let Some(listen) = args.listen {
        settings.http.listen = listen;
        // What depends on the address (a token beyond loopback) is checked again.
        settings
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}").context(format!("with --listen {listen}")))?;
    }
    camgate::telemetry::init(&settings.log.level, settings.log.format)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("configuration: {}", settings.source_description());
    let opts = DaemonOptions::from_settings(&settings);
    let rt = runtime()?;
    let result = rt.block_on(async move {
        daemon::run(opts, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    });
    // Dropping the runtime would wait for every blocking task, and a capture wedged inside
    // GStreamer (a source blocked in read()) never finishes its stop: exit without it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Resolves on SIGINT or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check_config(c: ConfigArg) -> anyhow::Result<ExitCode> {
    let settings = load(&c)?;
    print!("{}", settings.to_redacted_toml());
    eprintln!("camgate: configuration is valid");
    Ok(ExitCode::SUCCESS)
}

fn probe() -> anyhow::Result<ExitCode> {
    gstreamer::init().context("initialising GStreamer")?;
    let report = camgate::media::probe();
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn kvs_check(c: ConfigArg) -> anyhow::Result<ExitCode> {
    let settings = load(&c)?;
    let opts = DaemonOptions::from_settings(&settings);
    let daemon::SignalingMode::Kvs(kvs) = opts.signaling else {
        anyhow::bail!(
            "signaling.mode is \"local\"; set signaling.mode = \"kvs\" and the kvs.* keys first"
        );
    };
    let report = runtime()?.block_on(camgate::signaling::kvs::check(&kvs));
    print!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Man pages and completions come from the same clap definition as the parser, so they never
/// drift from the real options.
fn generate(g: GenerateCommand) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    match g {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(shell, &mut cmd, "camgate", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}
