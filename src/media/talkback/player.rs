//! The GStreamer side of talkback: one pipeline per talk burst, and the driver thread that
//! feeds it from the talkers' queue.
//!
//! The driver is a plain thread because everything it does with GStreamer blocks (state
//! changes open and close sound devices; a WAV file is drained before it is closed). Per
//! packet it does little: ask the floor, marshal, push into `appsrc`, glance at the bus.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::shared::marshal::Marshal;

use super::floor::{Fault, Floor, ReleaseReason, Released, TalkerId, Verdict};
use super::{AudioCodec, Msg, Shared, TalkbackOptions, TalkbackSink, TalkbackState};
use crate::media::MediaError;
use crate::media::capture::useful_debug;

/// Jitter buffer depth: enough for the jitter of a home network and a browser's pacing,
/// small enough that talking into a room feels immediate.
const JITTER_MS: u32 = 60;

/// How long closing a WAV file may wait for the end of stream to reach `wavenc` (which
/// writes the final sizes into the header then). The stream is already fully played out
/// when a burst ends, so this only bounds a stuck pipeline.
const EOS_WAIT: Duration = Duration::from_millis(500);

/// How long to wait for a device's error message after a failed state change.
const ERROR_WAIT: Duration = Duration::from_millis(100);

/// The payload type the pipeline is built for. The negotiated one is rewritten to this (the
/// floor checked it already), so a PT the depayloaders' templates do not list (Opus is
/// templated for 96–127 only) still plays.
fn pipeline_pt(codec: AudioCodec) -> u8 {
    match codec {
        AudioCodec::Opus => 111,
        AudioCodec::Pcmu => 0,
        AudioCodec::Pcma => 8,
    }
}

/// The Debian (bookworm) package that ships each element talkback uses.
fn package(element: &str) -> &'static str {
    match element {
        "alsasink" => "gstreamer1.0-alsa",
        "rtpjitterbuffer" | "rtpopusdepay" | "rtppcmudepay" | "rtppcmadepay" | "mulawdec"
        | "alawdec" | "wavenc" | "autoaudiosink" | "pulsesink" => "gstreamer1.0-plugins-good",
        "capsfilter" | "filesink" => "libgstreamer1.0-0",
        _ => "gstreamer1.0-plugins-base",
    }
}

fn sink_elements(sink: &TalkbackSink) -> &'static [&'static str] {
    match sink {
        TalkbackSink::Default => &["autoaudiosink"],
        TalkbackSink::Alsa(_) => &["alsasink"],
        TalkbackSink::Pulse(_) => &["pulsesink"],
        TalkbackSink::File(_) => &["capsfilter", "wavenc", "filesink"],
    }
}

/// Every element a burst may need, for any codec, so a missing plugin fails `start` rather
/// than the first viewer who talks with that codec.
pub(super) fn check_elements(sink: &TalkbackSink) -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    let common = [
        "appsrc",
        "rtpjitterbuffer",
        "rtpopusdepay",
        "opusdec",
        "rtppcmudepay",
        "mulawdec",
        "rtppcmadepay",
        "alawdec",
        "audioconvert",
        "audioresample",
    ];
    for element in common.iter().chain(sink_elements(sink)) {
        if gst::ElementFactory::find(element).is_none() {
            return Err(MediaError::ElementMissing {
                element: element.to_string(),
                package: package(element),
            });
        }
    }
    Ok(())
}

/// Named after its factory (each occurs once per pipeline), so error texts are the same
/// from one pipeline to the next and a repeated failure is recognised as such.
fn make(element: &'static str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(element)
        .name(element)
        .build()
        .map_err(|_| MediaError::ElementMissing {
            element: element.into(),
            package: package(element),
        })
}

fn output_error(sink: &TalkbackSink, reason: impl Into<String>) -> MediaError {
    MediaError::AudioOutput {
        output: sink.to_string(),
        reason: reason.into(),
    }
}

/// The sink end of the pipeline, unlinked: the element that takes raw audio first, and all
/// of them (to add to the pipeline).
fn build_sink(sink: &TalkbackSink) -> Result<Vec<gst::Element>, MediaError> {
    Ok(match sink {
        TalkbackSink::Default => vec![make("autoaudiosink")?],
        TalkbackSink::Alsa(device) => {
            let e = make("alsasink")?;
            e.set_property("device", device);
            vec![e]
        }
        TalkbackSink::Pulse(device) => {
            let e = make("pulsesink")?;
            e.set_property("device", device);
            vec![e]
        }
        TalkbackSink::File(path) => {
            let caps = make("capsfilter")?;
            caps.set_property(
                "caps",
                gst::Caps::builder("audio/x-raw")
                    .field("format", "S16LE")
                    .field("channels", 1i32)
                    .field("rate", 48_000i32)
                    .build(),
            );
            let file = make("filesink")?;
            file.set_property("location", path.to_string_lossy().as_ref());
            vec![caps, make("wavenc")?, file]
        }
    })
}

/// Opens the sink once, the way a burst will, and closes it again: an ALSA device that does
/// not exist or is busy, an unreachable Pulse server, a machine where `autoaudiosink` finds
/// nothing, a file that cannot be written. Blocks for as long as opening the device does.
pub(super) fn probe_sink(sink: &TalkbackSink) -> Result<(), MediaError> {
    if let TalkbackSink::File(path) = sink {
        // filesink only opens its file on the way to PAUSED, which an unlinked sink never
        // reaches; ask the file system instead (without truncating an existing file).
        return std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| output_error(sink, format!("cannot write the file: {e}")));
    }
    let pipeline = gst::Pipeline::with_name("talkback-probe");
    let elements = build_sink(sink)?;
    pipeline
        .add_many(&elements)
        .map_err(|e| output_error(sink, e.to_string()))?;
    let result = open_device(&pipeline, sink);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Takes `pipeline` to READY, where audio sinks open their device, and checks that a real
/// device was opened.
fn open_device(pipeline: &gst::Pipeline, sink: &TalkbackSink) -> Result<(), MediaError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| output_error(sink, "pipeline has no bus"))?;
    if let Err(e) = pipeline.set_state(gst::State::Ready) {
        return Err(output_error(
            sink,
            bus_error(&bus, ERROR_WAIT).unwrap_or_else(|| e.to_string()),
        ));
    }
    if matches!(sink, TalkbackSink::Default) && autosink_gave_up(pipeline) {
        // autoaudiosink falls back to a fakesink (with only a warning) when no real sink
        // opens: the audio would vanish without a trace.
        let first = bus_warning(&bus)
            .map(|w| format!("; the first one said: {w}"))
            .unwrap_or_default();
        return Err(output_error(
            sink,
            format!("autoaudiosink found no sound output that opens{first}"),
        ));
    }
    Ok(())
}

/// Whether an `autoaudiosink` in `pipeline` ended up with its fake fallback.
fn autosink_gave_up(pipeline: &gst::Pipeline) -> bool {
    pipeline.iterate_recurse().into_iter().flatten().any(|e| {
        e.factory()
            .is_some_and(|f| f.name() == "fakesink" || f.name() == "fakeaudiosink")
    })
}

/// The first error on the bus within `wait`, as "message (detail)".
fn bus_error(bus: &gst::Bus, wait: Duration) -> Option<String> {
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(describe(&err.error(), err.debug().as_deref())),
        _ => None,
    }
}

fn bus_warning(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Warning])?;
    match msg.view() {
        gst::MessageView::Warning(w) => Some(describe(&w.error(), w.debug().as_deref())),
        _ => None,
    }
}

/// "message (detail)", leaving out a detail that is only GStreamer's source location
/// (`../ext/pulse/pulsesink.c(616): gst_…_open_device (): /GstPipeline:…`).
fn describe(error: &gst::glib::Error, debug: Option<&str>) -> String {
    let detail = debug
        .and_then(useful_debug)
        .filter(|d| !(d.contains(".c(") && d.contains("): /")));
    let text = match detail {
        Some(d) => format!("{error} ({d})"),
        None => error.to_string(),
    };
    crate::redact::redact_text(&text)
}

/// The pipeline of one talk burst.
struct Output {
    pipeline: gst::Pipeline,
    /// Where the packets go in.
    appsrc: gst_app::AppSrc,
    bus: gst::Bus,
    /// The elements that see the RTP stream (source to decoder). Their errors mean bad input
    /// ([`Fault::Stream`]); errors from the rest mean a failing device ([`Fault::Output`]).
    stream_elements: Vec<gst::Element>,
    /// The PT the pipeline's caps name.
    pt: u8,
    /// Whether closing drains the stream first: a WAV file is only valid once `wavenc` saw
    /// the end of stream.
    drain: bool,
}

/// Why a packet could not be pushed.
enum PushError {
    /// The packet would not serialize (a header the parser accepted but cannot write back).
    Marshal,
    /// `appsrc` refused it (flushing after a failure, or already at end of stream).
    Flow,
}

impl Output {
    /// Builds, opens and starts the pipeline for one burst in `codec`.
    fn open(sink: &TalkbackSink, codec: AudioCodec) -> Result<Output, MediaError> {
        let pt = pipeline_pt(codec);
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("clock-rate", codec.clock_rate() as i32)
            .field("encoding-name", codec.encoding_name())
            .field("payload", i32::from(pt))
            .build();
        let appsrc = gst_app::AppSrc::builder()
            .name("appsrc")
            .caps(&caps)
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .build();
        let jitter = make("rtpjitterbuffer")?;
        jitter.set_property("latency", JITTER_MS);
        jitter.set_property("do-lost", true);
        let (depay, decoder) = match codec {
            AudioCodec::Opus => {
                let dec = make("opusdec")?;
                dec.set_property("plc", true);
                // Browsers offer in-band FEC (useinbandfec=1) and add it when they see loss:
                // opusdec then rebuilds a lost packet from the next one's redundancy where
                // present (one packet of extra delay), and conceals it (PLC) otherwise.
                dec.set_property("use-inband-fec", true);
                (make("rtpopusdepay")?, dec)
            }
            AudioCodec::Pcmu => (make("rtppcmudepay")?, make("mulawdec")?),
            AudioCodec::Pcma => (make("rtppcmadepay")?, make("alawdec")?),
        };
        let stream_elements = vec![appsrc.clone().upcast(), jitter, depay, decoder];
        let mut chain = stream_elements.clone();
        chain.push(make("audioconvert")?);
        chain.push(make("audioresample")?);
        chain.extend(build_sink(sink)?);

        let pipeline = gst::Pipeline::with_name("talkback");
        let build_err = |e: gst::glib::BoolError| MediaError::Build {
            description: format!("talkback {codec} to {sink}"),
            reason: e.to_string(),
        };
        pipeline.add_many(&chain).map_err(build_err)?;
        gst::Element::link_many(&chain).map_err(build_err)?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| output_error(sink, "pipeline has no bus"))?;
        let output = Output {
            pipeline,
            appsrc,
            bus,
            stream_elements,
            pt,
            drain: matches!(sink, TalkbackSink::File(_)),
        };
        // The Output owns the pipeline from here on: an early return drops it to NULL.
        open_device(&output.pipeline, sink)?;
        if let Err(e) = output.pipeline.set_state(gst::State::Playing) {
            return Err(output_error(
                sink,
                bus_error(&output.bus, ERROR_WAIT).unwrap_or_else(|| e.to_string()),
            ));
        }
        Ok(output)
    }

    fn push(&self, mut packet: rtc::rtp::Packet) -> Result<(), PushError> {
        packet.header.payload_type = self.pt;
        let data = packet.marshal().map_err(|_| PushError::Marshal)?;
        self.appsrc
            .push_buffer(gst::Buffer::from_slice(data))
            .map(drop)
            .map_err(|_| PushError::Flow)
    }

    /// The first error the pipeline posted, classified, if any. Discards the other messages
    /// so the bus does not grow.
    fn poll_error(&self) -> Option<(Fault, String)> {
        let msg = self.bus.pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(err) = msg.view() else {
            return None;
        };
        let from_stream = err.src().is_some_and(|src| {
            self.stream_elements
                .iter()
                .any(|e| src == e.upcast_ref::<gst::Object>() || src.has_as_ancestor(e))
        });
        let element = err
            .src()
            .map(|s| s.name().to_string())
            .unwrap_or_else(|| "<unknown>".into());
        let text = format!(
            "{element}: {}",
            describe(&err.error(), err.debug().as_deref())
        );
        Some((
            if from_stream {
                Fault::Stream
            } else {
                Fault::Output
            },
            text,
        ))
    }

    /// Closes the device. After a normal burst a WAV file is drained first so its header is
    /// complete; after a failure the pipeline is just stopped.
    fn close(self, drain: bool) {
        if drain && self.drain && self.appsrc.end_of_stream().is_ok() {
            let done = self.bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(EOS_WAIT.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
            let problem = match done.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Eos(_)) => None,
                Some(gst::MessageView::Error(err)) => {
                    Some(describe(&err.error(), err.debug().as_deref()))
                }
                _ => Some(format!("no end of stream within {EOS_WAIT:?}")),
            };
            if let Some(problem) = problem {
                tracing::warn!(%problem, "talkback: the WAV file did not drain; its header may be incomplete");
            }
        }
        // Output's Drop does the rest.
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!("talkback pipeline did not shut down cleanly");
        }
    }
}

/// The driver thread's state.
pub(super) struct Driver {
    opts: TalkbackOptions,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    floor: Floor,
    /// The open pipeline, while a burst plays.
    output: Option<Output>,
    /// Packets pushed into a pipeline.
    played: u64,
    /// Holder packets that could not be played because the output was failing.
    failed: u64,
    /// Packets the stateless check passed but that would not marshal.
    unmarshalable: u64,
    /// The last error logged as a warning, until a burst ends with a working output: a
    /// device that fails on every retry is logged once, not every two seconds.
    last_logged: Option<String>,
}

impl Driver {
    pub(super) fn new(opts: TalkbackOptions, shared: Arc<Shared>, rx: Receiver<Msg>) -> Self {
        Driver {
            floor: Floor::new(opts.release_after),
            opts,
            shared,
            rx,
            output: None,
            played: 0,
            failed: 0,
            unmarshalable: 0,
            last_logged: None,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let msg = match self.floor.deadline() {
                Some(deadline) => {
                    match self
                        .rx
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            match msg {
                // Nothing arrived before the deadline: the holder has been silent.
                None => self.tick(Instant::now()),
                Some(Msg::Packet { id, packet, at }) => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    // The release timer runs on arrival times: a driver that fell behind
                    // must not end a burst whose packets are waiting in the queue.
                    self.tick(at);
                    self.on_packet(id, packet, at);
                }
                Some(Msg::Join { id, name, codec }) => self.floor.join(id, &name, codec),
                Some(Msg::Leave { id }) => {
                    if let Some(released) = self.floor.leave(id) {
                        self.release(released);
                    }
                }
                Some(Msg::Stop) => break,
            }
            self.check_bus();
            self.publish();
        }
        if let Some(output) = self.output.take() {
            output.close(true);
        }
        self.publish();
        tracing::debug!("talkback driver stopped");
    }

    fn tick(&mut self, now: Instant) {
        if let Some(released) = self.floor.tick(now) {
            self.release(released);
        }
    }

    fn release(&mut self, released: Released) {
        let had_output = self.output.is_some();
        if let Some(output) = self.output.take() {
            output.close(true);
            // A burst that ended with a working output ends a failure streak: the next
            // failure is news again.
            self.last_logged = None;
        }
        tracing::debug!(
            talker = released.talker.0,
            reason = match released.reason {
                ReleaseReason::Silence => "silence",
                ReleaseReason::Left => "left",
            },
            "talkback burst over; sound output released"
        );
        let mut slow = self.shared.slow();
        slow.talker = None;
        // An error stays visible until an output opens again.
        if had_output || slow.state == TalkbackState::Playing {
            slow.state = TalkbackState::Idle;
        }
    }

    fn on_packet(&mut self, id: TalkerId, packet: rtc::rtp::Packet, at: Instant) {
        match self.floor.on_packet(id, packet.header.ssrc, at) {
            Verdict::Play => self.play(packet),
            Verdict::Open { codec } => {
                if let Some(old) = self.output.take() {
                    // A handover (or a reopen): the old burst is complete.
                    old.close(true);
                }
                match Output::open(&self.opts.sink, codec) {
                    Ok(output) => {
                        self.output = Some(output);
                        let mut slow = self.shared.slow();
                        slow.state = TalkbackState::Playing;
                        slow.talker = self.floor.holder().map(str::to_string);
                        drop(slow);
                        let talker = self.floor.holder().unwrap_or_default();
                        if self.last_logged.is_none() {
                            tracing::info!(talker, %codec, sink = %self.opts.sink, "talkback playing");
                        } else {
                            tracing::debug!(talker, %codec, sink = %self.opts.sink, "talkback output reopened");
                        }
                        self.play(packet);
                    }
                    Err(e) => {
                        self.failed += 1;
                        self.floor.on_fault(Fault::Output, Instant::now());
                        self.report(Fault::Output, e.to_string());
                    }
                }
            }
            // Counted by the floor.
            Verdict::Muted | Verdict::NotHolder | Verdict::Rejected(_) => {}
        }
    }

    fn play(&mut self, packet: rtc::rtp::Packet) {
        let Some(output) = &self.output else {
            self.failed += 1;
            return;
        };
        match output.push(packet) {
            Ok(()) => self.played += 1,
            Err(PushError::Marshal) => self.unmarshalable += 1,
            // The bus says why; check_bus acts on it.
            Err(PushError::Flow) => self.failed += 1,
        }
    }

    /// Tears the pipeline down if it posted an error. Cheap when there is none (one bus
    /// lock), so it runs after every message.
    fn check_bus(&mut self) {
        let Some((fault, text)) = self.output.as_ref().and_then(Output::poll_error) else {
            return;
        };
        if let Some(output) = self.output.take() {
            output.close(false);
        }
        self.floor.on_fault(fault, Instant::now());
        self.report(fault, text);
    }

    /// Logs a fault (a repeat of the last one only at debug level) and shows it in status.
    fn report(&mut self, fault: Fault, text: String) {
        let what = match fault {
            Fault::Stream => "talkback stream could not be decoded; restarting the pipeline",
            Fault::Output => "talkback sound output failed; retrying shortly",
        };
        if self.last_logged.as_deref() == Some(text.as_str()) {
            tracing::debug!(sink = %self.opts.sink, error = %text, "{what}");
        } else {
            tracing::warn!(sink = %self.opts.sink, error = %text, "{what}");
            self.last_logged = Some(text.clone());
        }
        let mut slow = self.shared.slow();
        slow.state = match fault {
            // The pipeline is closed; the next packet opens a fresh one.
            Fault::Stream => TalkbackState::Idle,
            Fault::Output => TalkbackState::Error(text.clone()),
        };
        slow.talker = self.floor.holder().map(str::to_string);
        slow.last_error = Some(text);
    }

    /// Copies the counters out for `status()`: a handful of relaxed stores.
    fn publish(&self) {
        let s = &self.shared;
        let c = self.floor.counts();
        s.played.store(self.played, Ordering::Relaxed);
        s.failed.store(self.failed + c.muted, Ordering::Relaxed);
        s.dropped.store(c.dropped, Ordering::Relaxed);
        s.rejected_late
            .store(c.rejected + self.unmarshalable, Ordering::Relaxed);
        s.bursts.store(c.bursts, Ordering::Relaxed);
        s.reopens.store(c.reopens, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors are classified by the element that posted them: the stream side means bad
    /// input, everything after the decoder means the device.
    #[test]
    fn errors_are_classified_by_their_source() {
        let path =
            std::env::temp_dir().join(format!("camgate-classify-{}.wav", std::process::id()));
        let sink = TalkbackSink::File(path.clone());
        if let Err(e) = check_elements(&sink) {
            panic!("{e}");
        }
        let output = match Output::open(&sink, AudioCodec::Pcma) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert!(output.poll_error().is_none());
        let post = |element: &gst::Element, text: &str| {
            element.post_message(
                gst::message::Error::builder(gst::StreamError::Decode, text)
                    .src(element)
                    .build(),
            )
        };
        let decoder = output.stream_elements[3].clone();
        assert!(post(&decoder, "bad frame").is_ok());
        let (fault, text) = output
            .poll_error()
            .unwrap_or((Fault::Output, String::new()));
        assert_eq!(fault, Fault::Stream);
        assert!(text.contains("bad frame"), "{text}");
        let last = output
            .pipeline
            .iterate_sorted()
            .into_iter()
            .flatten()
            .next();
        let Some(filesink) = last else {
            panic!("no elements")
        };
        assert_eq!(
            filesink.factory().map(|f| f.name().to_string()).as_deref(),
            Some("filesink")
        );
        assert!(post(&filesink, "disk on fire").is_ok());
        assert_eq!(output.poll_error().map(|(f, _)| f), Some(Fault::Output));
        output.close(false);
        let _ = std::fs::remove_file(path);
    }
}
