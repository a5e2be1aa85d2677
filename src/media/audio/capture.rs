//! The running audio capture: one pipeline, watched by a supervisor thread that restarts it.
//!
//! Same shape as the video capture (`media::capture`): a plain thread, because everything it
//! does blocks (bus waits, state changes that close RTSP connections), using the same sans-IO
//! [`Backoff`] and [`is_stalled`] rules. It never touches the video pipeline: a failing
//! microphone or camera audio track only shows in [`AudioCapture::status`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::backoff::Backoff;
use crate::media::MediaError;
use crate::media::audio::plan::{
    self, AudioPlan, DECODER_NAME, DEMUX_NAME, Input, SOURCE_NAME, TrackCensus,
};
use crate::media::audio::{AudioCodec, AudioOptions, AudioPacket, AudioSink, AudioSourceSpec};
use crate::media::capture::{redact_url, validate_rtsp_url};
use crate::media::options::SourceSpec;
use crate::media::supervisor::is_stalled;
use crate::redact::redact_text;

/// How often the supervisor looks at the bus, the stall clock and the stop flag; bounds how
/// long `stop()` takes on top of the pipeline's own shutdown.
const POLL: Duration = Duration::from_millis(50);

const CODECS: [AudioCodec; 3] = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AudioState {
    /// A pipeline is being built or is waiting for its first packet.
    Starting,
    /// Opus packets are flowing.
    Running,
    /// The last pipeline failed; the next attempt starts in `retry_in`.
    Restarting {
        attempt: u64,
        #[serde(rename = "retry_in_ms", serialize_with = "millis")]
        retry_in: Duration,
    },
    /// The camera's stream (or the file) has no audio track. Not retried: that only changes
    /// when the camera is reconfigured; start a new capture then.
    NoAudio,
    Stopped,
}

/// Packets delivered since start, across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudioPacketCounts {
    pub opus: u64,
    pub pcmu: u64,
    pub pcma: u64,
}

/// A snapshot for health checks and metrics; cheap enough to take on every request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AudioStatus {
    /// Flattened, so JSON reads `{"state":"restarting","attempt":2,"retry_in_ms":1000,..}`.
    #[serde(flatten)]
    pub state: AudioState,
    pub packets: AudioPacketCounts,
    /// Since the last Opus packet (the branch that always runs).
    #[serde(rename = "last_packet_age_ms", serialize_with = "opt_millis")]
    pub last_packet_age: Option<Duration>,
    pub restarts: u64,
    /// `restarts` by [`MediaError::restart_reason`], every reason listed (metrics only).
    #[serde(skip)]
    pub restarts_by_reason: Vec<(&'static str, u64)>,
    pub last_error: Option<String>,
    /// Whether the G.711 branches are open (some viewer negotiated them).
    pub pcmu_enabled: bool,
    pub pcma_enabled: bool,
}

impl AudioStatus {
    /// Whether viewers can expect audio from this capture: everything but a stream that turned
    /// out to have no audio track, or a capture that has stopped for good. A capture that is
    /// starting or restarting counts: its audio comes back on the same tracks.
    pub fn sends_audio(&self) -> bool {
        !matches!(self.state, AudioState::NoAudio | AudioState::Stopped)
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

/// Mutable status fields that change rarely (per pipeline, per failure).
#[derive(Debug)]
struct SlowStatus {
    state: AudioState,
    last_error: Option<String>,
}

/// What `set_g711` controls. One lock for the wanted flags and the pipeline they apply to, so
/// a viewer joining while the supervisor swaps pipelines cannot leave a valve in the wrong
/// position.
#[derive(Default)]
struct Control {
    /// The pipeline currently built or playing; None between attempts.
    pipeline: Option<gst::Pipeline>,
    /// Whether a viewer wants PCMU / PCMA; survives restarts.
    pcmu: bool,
    pcma: bool,
}

impl Control {
    fn wanted(&self, codec: AudioCodec) -> bool {
        match codec {
            AudioCodec::Opus => true,
            AudioCodec::Pcmu => self.pcmu,
            AudioCodec::Pcma => self.pcma,
        }
    }

    /// Opens or closes `codec`'s valve in the current pipeline, if there is one.
    fn apply(&self, codec: AudioCodec) {
        let (Some(pipeline), Some(valve)) = (&self.pipeline, codec.valve_name()) else {
            return;
        };
        match pipeline.by_name(valve) {
            // `drop` may change in any state; the valve reads it per buffer.
            Some(v) => v.set_property("drop", !self.wanted(codec)),
            None => tracing::warn!(valve, "audio pipeline has no valve"),
        }
    }
}

struct Shared {
    /// Per codec, indexed by `AudioCodec::index`.
    packets: [AtomicU64; 3],
    /// Arrival of the last Opus packet.
    last_packet: LastArrival,
    restarts: AtomicU64,
    restart_reasons: RestartReasons,
    slow: Mutex<SlowStatus>,
    control: Mutex<Control>,
    sink: AudioSink,
}

impl Shared {
    fn last_packet_at(&self) -> Option<Instant> {
        self.last_packet.get()
    }

    fn slow(&self) -> MutexGuard<'_, SlowStatus> {
        lock(&self.slow)
    }
}

use crate::media::lock;
use crate::media::thread::{
    Attempt, LastArrival, LoopEnd, RestartReasons, SupervisorThread, restart_loop,
};

/// An audio pipeline with its supervisor. Dropping it stops it, like [`AudioCapture::stop`].
pub struct AudioCapture {
    /// What the supervisor and the streaming threads update, and status reads.
    shared: Arc<Shared>,
    /// The supervisor; stopping it tears the pipeline down.
    supervisor: SupervisorThread,
}

/// What the supervisor thread needs, fixed for the capture's lifetime.
struct Job {
    opts: AudioOptions,
    plan: AudioPlan,
    shared: Arc<Shared>,
    stop_rx: Receiver<()>,
}

impl AudioCapture {
    /// Checks the configuration (elements installed, URL well formed, description parses) and
    /// starts the supervisor. Problems that may go away (a microphone unplugged, a camera
    /// down) do not fail here: they show in [`AudioCapture::status`] while it retries.
    pub fn start(opts: AudioOptions, sink: AudioSink) -> Result<AudioCapture, MediaError> {
        gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
        opts.validate()?;
        if let AudioSourceSpec::Camera(SourceSpec::Rtsp { url, .. }) = &opts.source {
            validate_rtsp_url(url)?;
        }
        let plan = plan::plan(&opts)?;
        for element in &plan.required {
            if gst::ElementFactory::find(element).is_none() {
                return Err(MediaError::ElementMissing {
                    element: element.to_string(),
                    package: plan::debian_package(element),
                });
            }
        }
        // Trial build: every attempt uses the same description, so a mistake in it is
        // permanent and reported now.
        drop(launch(&plan)?);

        let shared = Arc::new(Shared {
            packets: Default::default(),
            last_packet: LastArrival::new(),
            restarts: AtomicU64::new(0),
            restart_reasons: RestartReasons::default(),
            slow: Mutex::new(SlowStatus {
                state: AudioState::Starting,
                last_error: None,
            }),
            control: Mutex::new(Control::default()),
            sink,
        });
        let job_shared = shared.clone();
        let supervisor = SupervisorThread::spawn("camgate-audio", "audio", move |stop_rx| {
            Job {
                opts,
                plan,
                shared: job_shared,
                stop_rx,
            }
            .run()
        })?;
        Ok(AudioCapture { shared, supervisor })
    }

    /// Runs the G.711 branch for `codec` (PCMU or PCMA) only while `wanted`: the daemon turns
    /// it on while a viewer that negotiated it is connected. The choice survives pipeline
    /// restarts. Opus always runs; asking for it is ignored.
    pub fn set_g711(&self, codec: AudioCodec, wanted: bool) {
        let mut control = lock(&self.shared.control);
        match codec {
            AudioCodec::Pcmu => control.pcmu = wanted,
            AudioCodec::Pcma => control.pcma = wanted,
            AudioCodec::Opus => {
                tracing::debug!("set_g711 called for Opus, which always runs; ignored");
                return;
            }
        }
        control.apply(codec);
    }

    pub fn status(&self) -> AudioStatus {
        let s = &self.shared;
        let (pcmu_enabled, pcma_enabled) = {
            let c = lock(&s.control);
            (c.pcmu, c.pcma)
        };
        let slow = s.slow();
        let count = |c: AudioCodec| s.packets[c.index()].load(Ordering::Relaxed);
        AudioStatus {
            state: slow.state.clone(),
            packets: AudioPacketCounts {
                opus: count(AudioCodec::Opus),
                pcmu: count(AudioCodec::Pcmu),
                pcma: count(AudioCodec::Pcma),
            },
            last_packet_age: s.last_packet_at().map(|t| t.elapsed()),
            restarts: s.restarts.load(Ordering::Relaxed),
            restarts_by_reason: s.restart_reasons.snapshot(),
            last_error: slow.last_error.clone(),
            pcmu_enabled,
            pcma_enabled,
        }
    }

    /// Factory names of every element in the current pipeline (empty between attempts), for
    /// diagnostics: which depayloader and decoder decodebin chose for a camera.
    pub fn pipeline_elements(&self) -> Vec<String> {
        lock(&self.shared.control)
            .pipeline
            .as_ref()
            .map(crate::media::element_names)
            .unwrap_or_default()
    }

    /// Sets the pipeline to NULL and waits for the supervisor to finish (within one poll
    /// interval plus the pipeline's own shutdown); dropping does too.
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
        let end = restart_loop(
            &self.stop_rx,
            backoff,
            || self.shared.slow().state = AudioState::Starting,
            |backoff| self.run_once(backoff),
            |attempt, retry_in, err| {
                self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                self.shared.restart_reasons.record(err);
                tracing::warn!(
                    source = %describe_source(&self.opts.source),
                    error = %err,
                    retry_in_ms = retry_in.as_millis() as u64,
                    attempt,
                    "audio pipeline failed; restarting"
                );
                let mut slow = self.shared.slow();
                slow.last_error = Some(err.to_string());
                slow.state = AudioState::Restarting { attempt, retry_in };
            },
        );
        if end == LoopEnd::Final {
            tracing::info!(
                source = %describe_source(&self.opts.source),
                "the source has no audio track; audio stays off"
            );
            self.shared.slow().state = AudioState::NoAudio;
            // Nothing to retry; wait until told to stop (an error means the AudioCapture is
            // gone).
            let _ = self.stop_rx.recv();
        }
        self.shared.slow().state = AudioState::Stopped;
    }

    /// Builds one pipeline, plays it until it fails or we are told to stop, and tears it down.
    fn run_once(&self, backoff: &mut Backoff) -> Attempt {
        let census = Arc::new(Mutex::new(TrackCensus::default()));
        let pipeline = match self.build(&census) {
            Ok(p) => p,
            Err(e) => return Attempt::Failed(e),
        };
        let outcome = self.play(&pipeline, &census, backoff);
        lock(&self.shared.control).pipeline = None;
        if pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!("audio pipeline did not shut down cleanly");
        }
        outcome
    }

    fn build(&self, census: &Arc<Mutex<TrackCensus>>) -> Result<gst::Pipeline, MediaError> {
        let pipeline = launch(&self.plan)?;
        // Pinned to the system clock (CLOCK_MONOTONIC), which the video pipeline uses as
        // well: otherwise alsasrc/pulsesrc would offer their own sound-card clock, and
        // packet timestamps (running time + base time) would not be comparable with video's.
        pipeline.use_clock(Some(&gst::SystemClock::obtain()));
        for codec in CODECS {
            let appsink = pipeline
                .by_name(codec.sink_name())
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .ok_or(MediaError::MissingNamedElement(codec.sink_name()))?;
            appsink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample({
                        let shared = self.shared.clone();
                        move |sink| on_sample(&shared, codec, sink)
                    })
                    .build(),
            );
        }
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            if let Some(name) = codec.valve_name() {
                let valve = pipeline
                    .by_name(name)
                    .ok_or(MediaError::MissingNamedElement(name))?;
                let_flushes_past_closed_valve(&valve);
            }
        }
        match self.plan.input {
            Input::Live => {}
            Input::Rtsp => {
                let src = pipeline
                    .by_name(SOURCE_NAME)
                    .ok_or(MediaError::MissingNamedElement(SOURCE_NAME))?;
                let census = census.clone();
                src.connect("select-stream", false, move |args| {
                    let audio = args
                        .get(2)
                        .and_then(|v| v.get::<gst::Caps>().ok())
                        .is_some_and(|caps| media_is(&caps, "audio"));
                    lock(&census).offer(audio);
                    // The camera then only sends us the audio stream on this session; the
                    // video session selects only video.
                    Some(audio.to_value())
                });
            }
            Input::File { .. } => {
                let demux = pipeline
                    .by_name(DEMUX_NAME)
                    .ok_or(MediaError::MissingNamedElement(DEMUX_NAME))?;
                let dec = pipeline
                    .by_name(DECODER_NAME)
                    .ok_or(MediaError::MissingNamedElement(DECODER_NAME))?;
                let weak = pipeline.downgrade();
                demux.connect_pad_added(move |_, pad| {
                    if let Some(pipeline) = weak.upgrade() {
                        link_file_pad(&pipeline, &dec, pad);
                    }
                });
            }
        }
        {
            let mut control = lock(&self.shared.control);
            control.pipeline = Some(pipeline.clone());
            control.apply(AudioCodec::Pcmu);
            control.apply(AudioCodec::Pcma);
        }
        Ok(pipeline)
    }

    fn play(
        &self,
        pipeline: &gst::Pipeline,
        census: &Mutex<TrackCensus>,
        backoff: &mut Backoff,
    ) -> Attempt {
        // A failure of a camera that described only non-audio streams is its answer to "no
        // audio selected", not a fault to retry.
        let failed = |err: MediaError| {
            let mut census = lock(census);
            census.complete();
            if census.no_audio() {
                Attempt::Final
            } else {
                Attempt::Failed(err)
            }
        };
        let Some(bus) = pipeline.bus() else {
            return Attempt::Failed(MediaError::Build {
                description: self.plan.redacted(),
                reason: "pipeline has no bus".into(),
            });
        };
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            // The element usually posted the real reason (device busy, no such device).
            let reason =
                bus.pop_filtered(&[gst::MessageType::Error])
                    .and_then(|m| match m.view() {
                        gst::MessageView::Error(err) => Some(self.element_error(err)),
                        _ => None,
                    });
            return failed(reason.unwrap_or(MediaError::StateChange {
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
                        let err = self.element_error(err);
                        let outcome = failed(err);
                        if let Attempt::Failed(err) = &outcome {
                            tracing::error!(error = %err, "audio pipeline error");
                        }
                        return outcome;
                    }
                    gst::MessageView::Eos(_)
                        if self.plan.input == (Input::File { looping: true }) =>
                    {
                        tracing::debug!("end of audio file; looping");
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
                    // parsebin lists the file's streams once it has found them all.
                    gst::MessageView::StreamCollection(c)
                        if c.src().is_some_and(|s| s.name().as_str() == DEMUX_NAME) =>
                    {
                        let streams = c.stream_collection();
                        let audio = streams
                            .iter()
                            .filter(|s| s.stream_type().contains(gst::StreamType::AUDIO))
                            .count();
                        lock(census).describe(streams.len(), audio);
                    }
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(
                            element = %w.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                            warning = %redact_text(&w.error().to_string()),
                            "audio pipeline warning"
                        );
                    }
                    _ => {}
                }
            }
            // A file lists all its streams (the collection above) without failing.
            if lock(census).no_audio() {
                return Attempt::Final;
            }
            let now = Instant::now();
            let last = self.shared.last_packet_at();
            if let Some(t) = last
                && t >= started
            {
                backoff.on_healthy(t);
                if !running {
                    running = true;
                    tracing::info!(
                        after_ms = t.duration_since(started).as_millis() as u64,
                        "audio streaming"
                    );
                    self.shared.slow().state = AudioState::Running;
                }
            }
            if let Some(limit) = is_stalled(
                now,
                started,
                last,
                self.opts.startup_timeout,
                self.opts.stall_timeout,
            ) {
                return failed(MediaError::AudioStalled(limit));
            }
        }
    }

    /// An error message from the bus; errors of a microphone source name the device.
    fn element_error(&self, err: &gst::message::Error) -> MediaError {
        let from_source = err.src().is_some_and(|s| s.name().as_str() == SOURCE_NAME);
        let debug = err.debug().and_then(|d| useful_debug(&d));
        let device = match &self.opts.source {
            AudioSourceSpec::Alsa { device } => {
                Some(format!("ALSA {}", device.as_deref().unwrap_or("default")))
            }
            AudioSourceSpec::Pulse { device } => Some(format!(
                "PulseAudio {}",
                device.as_deref().unwrap_or("default source")
            )),
            _ => None,
        };
        match device {
            Some(device) if from_source => MediaError::AudioDevice {
                device,
                reason: match debug {
                    Some(d) => format!("{} ({d})", redact_text(&err.error().to_string())),
                    None => redact_text(&err.error().to_string()),
                },
            },
            _ => MediaError::Element {
                element: err
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "<unknown>".into()),
                message: redact_text(&err.error().to_string()),
                debug,
            },
        }
    }
}

/// A closed `valve` drops every event that is not sticky, flushes included (GStreamer 1.22,
/// any drop mode). After a file loop's flushing seek the closed G.711 branch would keep its
/// end-of-stream: its sink would never post EOS again, so the pipeline would not report the
/// next end of file (no second loop), and a branch opened later would be refused with EOS.
/// So while the valve is closed, flush events go around it.
fn let_flushes_past_closed_valve(valve: &gst::Element) {
    let (Some(sink), Some(src)) = (valve.static_pad("sink"), valve.static_pad("src")) else {
        tracing::warn!("valve without its always pads");
        return;
    };
    let (valve, src) = (valve.downgrade(), src.downgrade());
    sink.add_probe(gst::PadProbeType::EVENT_FLUSH, move |_, info| {
        let closed = valve.upgrade().is_some_and(|v| v.property::<bool>("drop"));
        let (true, Some(src), Some(gst::PadProbeData::Event(event))) =
            (closed, src.upgrade(), &info.data)
        else {
            return gst::PadProbeReturn::Ok;
        };
        src.push_event(event.clone());
        // Handled here (the valve would only drop it). `Handled` hands our reference back
        // to gstreamer-rs, which releases it; `Drop` made GStreamer release it a second time
        // ("gst_mini_object_unref: assertion 'mini_object != NULL'" at every file loop).
        gst::PadProbeReturn::Handled
    });
}

/// parsebin exposes one pad per stream of the file: the first audio stream goes to the
/// decoder; everything else (video, subtitles, further audio tracks) ends in a fakesink, so
/// the demuxer never sees "not linked" and nothing but the audio is decoded.
fn link_file_pad(pipeline: &gst::Pipeline, dec: &gst::Element, pad: &gst::Pad) {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let audio = caps
        .structure(0)
        .is_some_and(|s| s.name().starts_with("audio/"));
    tracing::debug!(%caps, audio, "audio file: stream exposed");
    if audio
        && let Some(sink) = dec.static_pad("sink")
        && !sink.is_linked()
        && pad.link(&sink).is_ok()
    {
        return;
    }
    let discard = match gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a fakesink for an unused file stream");
            return;
        }
    };
    let linked = pipeline.add(&discard).is_ok()
        && discard.sync_state_with_parent().is_ok()
        && discard
            .static_pad("sink")
            .is_some_and(|sink| pad.link(&sink).is_ok());
    if !linked {
        tracing::warn!(caps = %caps, "could not discard an unused stream of the audio file");
    }
}

/// Whether rtspsrc's caps for a stream describe `media` ("audio", "video").
fn media_is(caps: &gst::CapsRef, media: &str) -> bool {
    caps.structure(0)
        .and_then(|s| s.get::<&str>("media").ok())
        .is_some_and(|m| m == media)
}

/// The streaming-thread hot path: copy the packet out, stamp it and hand it to the sink.
fn on_sample(
    shared: &Shared,
    codec: AudioCodec,
    sink: &gst_app::AppSink,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
    let Some(buffer) = sample.buffer() else {
        return Ok(gst::FlowSuccess::Ok);
    };
    // See `capture_time_ns`: running time + base time, both on the system clock pinned in
    // `build`.
    let running = buffer.pts().and_then(|pts| {
        sample
            .segment()
            .and_then(|seg| seg.downcast_ref::<gst::ClockTime>())
            .and_then(|seg| seg.to_running_time(pts))
    });
    let now = sink
        .clock()
        .unwrap_or_else(gst::SystemClock::obtain)
        .time()
        .nseconds();
    let pts_ns = plan::capture_time_ns(
        running.map(gst::ClockTime::nseconds),
        sink.base_time().map(gst::ClockTime::nseconds),
        now,
    );
    // Copied, not borrowed: a 20 ms frame is tens to a few hundred bytes, and holding
    // GStreamer memory while viewers send could starve a source's buffer pool.
    let data = match buffer.map_readable() {
        Ok(map) => bytes::Bytes::copy_from_slice(map.as_slice()),
        Err(_) => return Ok(gst::FlowSuccess::Ok),
    };
    shared.packets[codec.index()].fetch_add(1, Ordering::Relaxed);
    if codec == AudioCodec::Opus {
        shared.last_packet.mark();
    }
    (shared.sink)(AudioPacket {
        codec,
        data,
        pts_ns,
    });
    Ok(gst::FlowSuccess::Ok)
}

fn launch(plan: &AudioPlan) -> Result<gst::Pipeline, MediaError> {
    crate::media::launch(&plan.description, &plan.redacted())
}

use crate::media::capture::useful_debug;

fn describe_source(source: &AudioSourceSpec) -> String {
    match source {
        AudioSourceSpec::Test { freq_hz } => format!("test tone {freq_hz} Hz"),
        AudioSourceSpec::Alsa { device } => {
            format!("alsa:{}", device.as_deref().unwrap_or("default"))
        }
        AudioSourceSpec::Pulse { device } => {
            format!("pulse:{}", device.as_deref().unwrap_or("default"))
        }
        AudioSourceSpec::Camera(SourceSpec::Rtsp { url, .. }) => redact_url(url),
        AudioSourceSpec::Camera(SourceSpec::File { path, .. }) => {
            format!("file:{}", path.display())
        }
        AudioSourceSpec::Camera(_) => "camera".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_flat_with_milliseconds() {
        let status = AudioStatus {
            state: AudioState::Restarting {
                attempt: 2,
                retry_in: Duration::from_millis(1500),
            },
            packets: AudioPacketCounts {
                opus: 10,
                pcmu: 0,
                pcma: 3,
            },
            last_packet_age: Some(Duration::from_millis(20)),
            restarts: 2,
            restarts_by_reason: vec![("device", 2)],
            last_error: Some("audio device ALSA hw:9: gone".into()),
            pcmu_enabled: false,
            pcma_enabled: true,
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["state"], "restarting");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["retry_in_ms"], 1500);
        assert_eq!(v["packets"]["pcma"], 3);
        assert_eq!(v["last_packet_age_ms"], 20);
        let v = serde_json::to_value(AudioState::NoAudio).unwrap();
        assert_eq!(v["state"], "no_audio");
    }
}
