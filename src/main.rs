//! The camgate binary: command line only; everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

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
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("camgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(c: &ConfigArg) -> anyhow::Result<config::Settings> {
    config::load(c.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
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
