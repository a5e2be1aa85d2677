//! The running capture: one pipeline, watched by a supervisor thread that restarts it.
//!
//! The supervisor is a plain thread rather than a tokio task because everything it does
//! blocks (bus waits, state changes that close RTSP connections) and the capture must work
//! before, and independently of, any runtime. Everything viewers see goes through the
//! [`FrameSink`] given to [`Capture::start`], which outlives every pipeline generation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::backoff::Backoff;
use crate::media::encoder::{EncoderChoice, installed_encoders, select_encoder};
use crate::media::error::debian_package;
use crate::media::options::{CaptureOptions, SourceSpec, V4l2Format};
use crate::media::pipeline::{self, PipelinePlan, RTSP_SOURCE_NAME, SINK_NAME};
use crate::media::supervisor::{PtsContinuity, is_stalled};
use crate::media::{AccessUnit, FrameSink, MediaError, SourceInfo};

/// How often the supervisor looks at the bus, the stall clock and the stop flag; bounds how
/// long `stop()` takes on top of the pipeline's own shutdown.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureState {
    /// A pipeline is being built or is waiting for its first access unit.
    Starting,
    /// Access units are flowing.
    Running,
    /// The last pipeline failed; the next attempt starts in `retry_in`.
    Restarting {
        attempt: u64,
        retry_in: Duration,
    },
    Stopped,
}

/// A snapshot for health checks and metrics; cheap enough to take on every request.
#[derive(Debug, Clone)]
pub struct CaptureStatus {
    pub state: CaptureState,
    /// Access units delivered since start, across restarts.
    pub frames: u64,
    pub last_frame_age: Option<Duration>,
    pub restarts: u64,
    /// `restarts` by [`MediaError::restart_reason`], every reason listed.
    pub restarts_by_reason: Vec<(&'static str, u64)>,
    pub last_error: Option<String>,
    /// Encoder element in use; None when passing the source's H.264 through.
    pub encoder: Option<String>,
    pub passthrough: bool,
    /// Whether `request_keyframe` can make the source emit an IDR now. When false, a new
    /// viewer must wait for the source's next periodic IDR.
    pub keyframe_requests_supported: bool,
    /// Keyframe requests that could not be honoured (passthrough sources).
    pub keyframe_requests_ignored: u64,
    /// Force-key-unit events the pipeline accepted (the encoder will emit an IDR).
    pub keyframes_forced: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Mutable status fields that change rarely (per pipeline, per failure).
#[derive(Debug)]
struct SlowStatus {
    state: CaptureState,
    last_error: Option<String>,
    encoder: Option<String>,
    passthrough: bool,
    keyframes_supported: bool,
    width: Option<u32>,
    height: Option<u32>,
}

/// The pipeline currently playing, for `request_keyframe` and inspection.
struct Current {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    keyframes_supported: bool,
}

struct Shared {
    frames: AtomicU64,
    /// Arrival of the last access unit.
    last_frame: LastArrival,
    restarts: AtomicU64,
    restart_reasons: RestartReasons,
    keyframe_requests_ignored: AtomicU64,
    keyframes_forced: AtomicU64,
    /// Whether this pipeline's caps (size) were already recorded, so the hot path skips it.
    caps_known: AtomicBool,
    /// Pipelines built so far: the current one's [`SourceInfo::generation`].
    generation: AtomicU64,
    /// Whether the current pipeline passes the source's H.264 through.
    passthrough: AtomicBool,
    slow: Mutex<SlowStatus>,
    current: Mutex<Option<Current>>,
    pts: Mutex<PtsContinuity>,
    sink: FrameSink,
}

impl Shared {
    fn last_frame_at(&self) -> Option<Instant> {
        self.last_frame.get()
    }

    fn slow(&self) -> MutexGuard<'_, SlowStatus> {
        lock(&self.slow)
    }
}

use crate::media::lock;
use crate::media::thread::{Attempt, LastArrival, RestartReasons, SupervisorThread, restart_loop};

/// A capture pipeline with its supervisor. Dropping it stops it, like [`Capture::stop`].
pub struct Capture {
    /// What the supervisor and the streaming thread update, and status reads.
    shared: Arc<Shared>,
    /// The supervisor; stopping it tears the pipeline down.
    supervisor: SupervisorThread,
}

/// What the supervisor thread needs, fixed for the capture's lifetime.
struct Job {
    opts: CaptureOptions,
    encoder: Option<EncoderChoice>,
    clock_overlay: bool,
    shared: Arc<Shared>,
    stop_rx: Receiver<()>,
}

impl Capture {
    /// Checks the configuration (elements installed, encoder available, URL well formed,
    /// description parses) and starts the supervisor. Problems that may go away (camera
    /// unplugged, RTSP server down) do not fail here: they show in [`Capture::status`] while
    /// the supervisor retries.
    pub fn start(opts: CaptureOptions, sink: FrameSink) -> Result<Capture, MediaError> {
        gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
        opts.validate()?;
        if let SourceSpec::Rtsp { url, .. } = &opts.source {
            validate_rtsp_url(url)?;
        }
        let available = |name: &str| gst::ElementFactory::find(name).is_some();
        let installed = installed_encoders();
        let encoder = match &opts.source {
            SourceSpec::Rtsp { .. }
            | SourceSpec::V4l2 {
                format: V4l2Format::H264,
                ..
            } => None,
            // The camera may offer H.264; only fail later if it turns out we must encode.
            SourceSpec::V4l2 {
                format: V4l2Format::Auto,
                ..
            } => select_encoder(&opts.encoder.name, &installed).ok(),
            _ => Some(select_encoder(&opts.encoder.name, &installed)?),
        };
        let clock_overlay = available("clockoverlay");
        if matches!(opts.source, SourceSpec::Test { .. }) && !clock_overlay {
            tracing::info!(
                "clockoverlay not installed ({}); test pattern runs without the clock",
                debian_package("clockoverlay")
            );
        }

        // Trial build: every later attempt uses the same description, so a mistake in it
        // (an invalid test pattern, a missing element) is permanent and reported now.
        let auto_guess = encoder.is_none().then_some(V4l2Format::H264);
        let trial = pipeline::plan(&opts, encoder, auto_guess, clock_overlay)?;
        for element in &trial.required {
            if !available(element) {
                return Err(MediaError::ElementMissing {
                    element: element.to_string(),
                    package: debian_package(element),
                });
            }
        }
        drop(launch(&trial)?);

        let frame_ns = 1_000_000_000 / u64::from(opts.framerate.max(1));
        let shared = Arc::new(Shared {
            frames: AtomicU64::new(0),
            last_frame: LastArrival::new(),
            restarts: AtomicU64::new(0),
            restart_reasons: RestartReasons::default(),
            keyframe_requests_ignored: AtomicU64::new(0),
            keyframes_forced: AtomicU64::new(0),
            caps_known: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            passthrough: AtomicBool::new(false),
            slow: Mutex::new(SlowStatus {
                state: CaptureState::Starting,
                last_error: None,
                encoder: None,
                passthrough: false,
                keyframes_supported: false,
                width: None,
                height: None,
            }),
            current: Mutex::new(None),
            pts: Mutex::new(PtsContinuity::new(frame_ns)),
            sink,
        });
        let job_shared = shared.clone();
        let supervisor = SupervisorThread::spawn("camgate-capture", "capture", move |stop_rx| {
            Job {
                opts,
                encoder,
                clock_overlay,
                shared: job_shared,
                stop_rx,
            }
            .run()
        })?;
        Ok(Capture { shared, supervisor })
    }

    /// Asks the encoder for an IDR (with SPS/PPS) as soon as possible, for a viewer that just
    /// joined or lost packets. Sources passed through cannot be forced; the request is
    /// counted in the status and the viewer waits for the source's next IDR.
    pub fn request_keyframe(&self) {
        let target = lock(&self.shared.current)
            .as_ref()
            .map(|c| (c.appsink.clone(), c.keyframes_supported));
        match target {
            Some((appsink, true)) => {
                let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(true)
                    .build();
                if appsink.send_event(event) {
                    self.shared.keyframes_forced.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!("force-key-unit event was not handled upstream");
                }
            }
            Some((_, false)) => {
                self.shared
                    .keyframe_requests_ignored
                    .fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    pub fn status(&self) -> CaptureStatus {
        let s = &self.shared;
        let slow = s.slow();
        CaptureStatus {
            state: slow.state.clone(),
            frames: s.frames.load(Ordering::Relaxed),
            last_frame_age: s.last_frame_at().map(|t| t.elapsed()),
            restarts: s.restarts.load(Ordering::Relaxed),
            restarts_by_reason: s.restart_reasons.snapshot(),
            last_error: slow.last_error.clone(),
            encoder: slow.encoder.clone(),
            passthrough: slow.passthrough,
            keyframe_requests_supported: slow.keyframes_supported,
            keyframe_requests_ignored: s.keyframe_requests_ignored.load(Ordering::Relaxed),
            keyframes_forced: s.keyframes_forced.load(Ordering::Relaxed),
            width: slow.width,
            height: slow.height,
        }
    }

    /// Factory names of every element in the current pipeline (empty between attempts), for
    /// diagnostics and for checking that a passthrough pipeline really has no encoder.
    pub fn pipeline_elements(&self) -> Vec<String> {
        lock(&self.shared.current)
            .as_ref()
            .map(|c| crate::media::element_names(&c.pipeline))
            .unwrap_or_default()
    }

    /// Sets the pipeline to NULL and waits for the supervisor to finish (dropping does too).
    pub fn stop(mut self) {
        self.supervisor.stop();
    }
}

impl Job {
    fn run(self) {
        let backoff = Backoff::without_jitter(
            self.opts.backoff_min,
            self.opts.backoff_max,
            self.opts.healthy_after,
        );
        restart_loop(
            &self.stop_rx,
            backoff,
            || self.shared.slow().state = CaptureState::Starting,
            |backoff| self.run_once(backoff),
            |attempt, retry_in, err| {
                self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                self.shared.restart_reasons.record(err);
                tracing::warn!(
                    source = %describe_source(&self.opts.source),
                    error = %err,
                    retry_in_ms = retry_in.as_millis() as u64,
                    attempt,
                    "capture pipeline failed; restarting"
                );
                let mut slow = self.shared.slow();
                slow.last_error = Some(err.to_string());
                slow.state = CaptureState::Restarting { attempt, retry_in };
            },
        );
        self.shared.slow().state = CaptureState::Stopped;
    }

    /// Builds one pipeline, plays it until it fails or we are told to stop, and tears it down.
    fn run_once(&self, backoff: &mut Backoff) -> Attempt {
        let (pipeline, plan) = match self.build() {
            Ok(p) => p,
            Err(e) => return Attempt::Failed(e),
        };
        let outcome = self.play(&pipeline, &plan, backoff);
        *lock(&self.shared.current) = None;
        if pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!("capture pipeline did not shut down cleanly");
        }
        outcome
    }

    fn build(&self) -> Result<(gst::Pipeline, PipelinePlan), MediaError> {
        let v4l2_format = match &self.opts.source {
            SourceSpec::V4l2 { device, format } => {
                check_device(device)?;
                match format {
                    V4l2Format::Auto => Some(resolve_v4l2_format(device)?),
                    _ => None,
                }
            }
            _ => None,
        };
        let plan = pipeline::plan(&self.opts, self.encoder, v4l2_format, self.clock_overlay)?;
        let pipeline = launch(&plan)?;
        let appsink = pipeline
            .by_name(SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or(MediaError::MissingNamedElement(SINK_NAME))?;
        if let Some(src) = pipeline.by_name(RTSP_SOURCE_NAME) {
            src.connect("select-stream", false, select_video_only);
            src.connect_pad_added(reject_non_h264);
        }
        if let Some(dec) = pipeline.by_name(pipeline::FILE_DECODER_NAME) {
            // Stop at a file's compressed audio: left undecoded and unlinked, it costs
            // nothing (the demuxer carries on while the video pad is linked).
            dec.connect("autoplug-continue", false, |args| {
                let audio = args
                    .get(2)
                    .and_then(|v| v.get::<gst::Caps>().ok())
                    .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("audio/")))
                    .unwrap_or(false);
                Some((!audio).to_value())
            });
        }
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample({
                    let shared = self.shared.clone();
                    move |sink| on_sample(&shared, sink)
                })
                .build(),
        );
        let keyframes_supported = plan.encoder.is_some_and(|e| e.honours_keyframe_requests());
        {
            let mut slow = self.shared.slow();
            slow.encoder = plan.encoder.map(|e| e.element().to_string());
            slow.passthrough = plan.passthrough();
            slow.keyframes_supported = keyframes_supported;
        }
        self.shared.caps_known.store(false, Ordering::Relaxed);
        // Set before the pipeline plays, on this thread: its first sample already sees them.
        self.shared
            .passthrough
            .store(plan.passthrough(), Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.pts).discontinuity();
        *lock(&self.shared.current) = Some(Current {
            pipeline: pipeline.clone(),
            appsink,
            keyframes_supported,
        });
        Ok((pipeline, plan))
    }

    fn play(
        &self,
        pipeline: &gst::Pipeline,
        plan: &PipelinePlan,
        backoff: &mut Backoff,
    ) -> Attempt {
        let Some(bus) = pipeline.bus() else {
            return Attempt::Failed(MediaError::Build {
                description: plan.redacted(),
                reason: "pipeline has no bus".into(),
            });
        };
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            // The element usually posted the real reason (device busy, connection refused).
            let reason =
                bus.pop_filtered(&[gst::MessageType::Error])
                    .and_then(|m| match m.view() {
                        gst::MessageView::Error(err) => Some(element_error(err)),
                        _ => None,
                    });
            return Attempt::Failed(reason.unwrap_or(MediaError::StateChange {
                state: "PLAYING",
                reason: e.to_string(),
            }));
        }
        let started = Instant::now();
        let mut running = false;
        loop {
            match self.stop_rx.try_recv() {
                Ok(()) | Err(TryRecvError::Disconnected) => return Attempt::Stopped,
                Err(TryRecvError::Empty) => {}
            }
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64))
            {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        let err = element_error(err);
                        tracing::error!(error = %err, "capture pipeline error");
                        return Attempt::Failed(err);
                    }
                    gst::MessageView::Eos(_) if plan.looping => {
                        tracing::debug!("end of file; looping");
                        // EOS means the sink has rendered everything: no old-clock frame
                        // can still arrive after this.
                        lock(&self.shared.pts).discontinuity();
                        if let Err(e) = pipeline.seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        ) {
                            return Attempt::Failed(MediaError::StateChange {
                                state: "seek to start",
                                reason: e.to_string(),
                            });
                        }
                    }
                    gst::MessageView::Eos(_) => return Attempt::Failed(MediaError::EndOfStream),
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(
                            element = %w.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                            warning = %crate::redact::redact_text(&w.error().to_string()),
                            "capture pipeline warning"
                        );
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            let last = self.shared.last_frame_at();
            if let Some(t) = last
                && t >= started
            {
                backoff.on_healthy(t);
                if !running {
                    running = true;
                    tracing::info!(
                        after_ms = t.duration_since(started).as_millis() as u64,
                        "capture streaming"
                    );
                    self.shared.slow().state = CaptureState::Running;
                }
            }
            if let Some(limit) = is_stalled(
                now,
                started,
                last,
                self.opts.startup_timeout,
                self.opts.stall_timeout,
            ) {
                return Attempt::Failed(MediaError::Stalled(limit));
            }
        }
    }
}

/// The streaming-thread hot path: time-stamp the AU and hand its buffer to the sink.
fn on_sample(shared: &Shared, sink: &gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> {
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
    let Some(buffer) = sample.buffer() else {
        return Ok(gst::FlowSuccess::Ok);
    };
    if !shared.caps_known.load(Ordering::Relaxed)
        && let Some(s) = sample.caps().and_then(|c| c.structure(0))
    {
        let mut slow = shared.slow();
        slow.width = s
            .get::<i32>("width")
            .ok()
            .and_then(|v| u32::try_from(v).ok());
        slow.height = s
            .get::<i32>("height")
            .ok()
            .and_then(|v| u32::try_from(v).ok());
        shared.caps_known.store(true, Ordering::Relaxed);
    }
    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
    // Running time rather than raw PTS: x264enc's PTS start at 1000 h, and running time is
    // what a file loop or restart resets, which PtsContinuity then smooths over.
    let pts = buffer.pts().or(buffer.dts());
    let running = match (pts, sample.segment()) {
        (Some(pts), Some(seg)) => seg
            .downcast_ref::<gst::ClockTime>()
            .and_then(|seg| seg.to_running_time(pts))
            .unwrap_or(pts),
        (Some(pts), None) => pts,
        (None, _) => {
            gst::ClockTime::from_nseconds(shared.last_frame.since_epoch().as_nanos() as u64)
        }
    };
    let pts_ns = lock(&shared.pts).map(running.nseconds());
    shared.frames.fetch_add(1, Ordering::Relaxed);
    shared.last_frame.mark();
    let source = SourceInfo {
        generation: shared.generation.load(Ordering::Relaxed),
        passthrough: shared.passthrough.load(Ordering::Relaxed),
    };
    // The buffer itself, not a copy: the sink packetizes straight from GStreamer's memory
    // and releases it before returning (see `AccessUnit::buffer`).
    (shared.sink)(AccessUnit {
        buffer: buffer.to_owned(),
        pts_ns,
        keyframe,
        source,
    });
    Ok(gst::FlowSuccess::Ok)
}

fn launch(plan: &PipelinePlan) -> Result<gst::Pipeline, MediaError> {
    crate::media::launch(&plan.description, &plan.redacted())
}

fn element_error(err: &gst::message::Error) -> MediaError {
    MediaError::Element {
        element: err
            .src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_else(|| "<unknown>".into()),
        // An RTSP source's message may quote its URL, password included.
        message: crate::redact::redact_text(&err.error().to_string()),
        debug: err.debug().and_then(|d| useful_debug(&d)),
    }
}

/// GStreamer's debug text starts with a source-file location line; the operator-relevant
/// part ("Failed to connect", "Not found") follows it. URLs in it are redacted.
pub(crate) fn useful_debug(debug: &str) -> Option<String> {
    let mut lines = debug.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next()?;
    let rest: Vec<&str> = lines.collect();
    let text = if rest.is_empty() {
        first.to_string()
    } else {
        rest.join(" ")
    };
    Some(crate::redact::redact_text(&text))
}

/// rtspsrc's `select-stream`: set up only the camera's video streams. A camera that also has
/// an audio track would otherwise send it on this session too, where nothing consumes it
/// (the audio capture opens its own session for it).
fn select_video_only(args: &[gst::glib::Value]) -> Option<gst::glib::Value> {
    let video = args
        .get(2)
        .and_then(|v| v.get::<gst::Caps>().ok())
        .and_then(|caps| {
            caps.structure(0)
                .and_then(|s| s.get::<&str>("media").ok())
                .map(|m| m == "video")
        })
        .unwrap_or(false);
    // Always a boolean: the signal has a return value, and answering none would abort.
    Some(video.to_value())
}

/// rtspsrc exposes one pad per stream once the camera has described them; anything but
/// H.264 video would silently never link, so fail loudly instead.
fn reject_non_h264(src: &gst::Element, pad: &gst::Pad) {
    // rtspsrc adds the pad before the caps event, so ask the pad rather than read its caps.
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else { return };
    let media = s.get::<&str>("media").unwrap_or("");
    let encoding = s.get::<&str>("encoding-name").unwrap_or("");
    if media == "video" && !encoding.eq_ignore_ascii_case("H264") {
        let text = MediaError::NotH264(encoding.to_string()).to_string();
        src.post_error_message(gst::error_msg!(gst::StreamError::WrongType, ("{}", text)));
    }
}

fn check_device(device: &str) -> Result<(), MediaError> {
    if std::path::Path::new(device).exists() {
        Ok(())
    } else {
        Err(MediaError::Device {
            device: device.to_string(),
            reason: "no such device (is the camera plugged in?)".into(),
        })
    }
}

/// Asks the camera what it can send: H.264 (no encoding needed) beats MJPEG (cheap decode)
/// beats raw (USB bandwidth limits raw to low rates).
pub(crate) fn resolve_v4l2_format(device: &str) -> Result<V4l2Format, MediaError> {
    let formats = v4l2_formats(device)?;
    Ok(if formats.iter().any(|f| f == "video/x-h264") {
        V4l2Format::H264
    } else if formats.iter().any(|f| f == "image/jpeg") {
        V4l2Format::Mjpeg
    } else {
        V4l2Format::Raw
    })
}

/// Media types a V4L2 device offers (opened briefly in READY).
pub(crate) fn v4l2_formats(device: &str) -> Result<Vec<String>, MediaError> {
    let dev_err = |reason: String| MediaError::Device {
        device: device.to_string(),
        reason,
    };
    let src = gst::ElementFactory::make("v4l2src")
        .property("device", device)
        .build()
        .map_err(|_| MediaError::ElementMissing {
            element: "v4l2src".into(),
            package: debian_package("v4l2src"),
        })?;
    if src.set_state(gst::State::Ready).is_err() {
        let _ = src.set_state(gst::State::Null);
        return Err(dev_err("cannot open it as a capture device".into()));
    }
    let caps = src.static_pad("src").map(|p| p.query_caps(None));
    let _ = src.set_state(gst::State::Null);
    let caps = caps.ok_or_else(|| dev_err("v4l2src has no src pad".into()))?;
    let mut names: Vec<String> = caps.iter().map(|s| s.name().to_string()).collect();
    names.dedup();
    Ok(names)
}

/// Accepts rtsp:// (and the rtsps/rtspt variants rtspsrc knows) with a host.
pub(crate) fn validate_rtsp_url(url: &str) -> Result<(), MediaError> {
    let bad = |reason: &str| MediaError::BadRtspUrl {
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(
        parsed.scheme(),
        "rtsp" | "rtsps" | "rtspt" | "rtspu" | "rtsph"
    ) {
        return Err(bad("scheme must be rtsp://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// The URL with any password replaced, safe for logs and status (one implementation for the
/// whole daemon, in [`crate::redact`]).
pub use crate::redact::redact_url;

fn describe_source(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Test { pattern } => format!("test:{pattern}"),
        SourceSpec::V4l2 { device, .. } => format!("v4l2:{device}"),
        SourceSpec::Rtsp { url, .. } => redact_url(url),
        SourceSpec::File { path, .. } => format!("file:{}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtsp_urls_are_checked_and_passwords_redacted() {
        assert!(validate_rtsp_url("rtsp://cam.local:554/stream1").is_ok());
        assert!(validate_rtsp_url("rtsp://user:pw@10.0.0.2/s").is_ok());
        for bad in ["", "http://cam/x", "rtsp://", "not a url", "rtsp:///path"] {
            assert!(validate_rtsp_url(bad).is_err(), "{bad}");
        }
        let err = validate_rtsp_url("http://admin:secret@cam/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret") && err.contains("***"), "{err}");
        let err = validate_rtsp_url("rtsp://admin:secret@/x")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("secret") && err.contains("admin:***@/x"),
            "{err}"
        );
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    #[test]
    fn query_secrets_are_redacted() {
        let r = redact_url("rtsp://cam.local/live?channel=1&token=abc123&Password=hunter2&sub=0");
        assert_eq!(
            r,
            "rtsp://cam.local/live?channel=1&token=***&Password=***&sub=0"
        );
        let r =
            redact_url("wss://x/?X-Amz-ChannelARN=a&X-Amz-Signature=f00d&X-Amz-Security-Token=t0k");
        assert!(
            !r.contains("f00d") && !r.contains("t0k") && r.contains("X-Amz-ChannelARN=a"),
            "{r}"
        );
        // Unparseable: nothing after the `?`.
        assert_eq!(
            redact_url("rtsp://[bad/live?token=abc"),
            "rtsp://[bad/live?***"
        );
    }
}
