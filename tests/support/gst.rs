//! GStreamer plumbing shared by tests.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Launches `desc`, which must name an `appsrc` "src" and an `appsink` `sink_name`, and returns
/// the pipeline (not yet playing) with both ends.
pub fn app_pipeline(
    desc: &str,
    sink_name: &str,
) -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
    gst::init().expect("GStreamer init");
    let pipeline = gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("cannot launch {desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc named src");
    let sink = pipeline
        .by_name(sink_name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .unwrap_or_else(|| panic!("appsink named {sink_name}"));
    (pipeline, src, sink)
}

/// Test logging (RUST_LOG, default `camgate=info`, captured per test) and GStreamer.
#[allow(dead_code)]
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "camgate=info".into()),
        )
        .try_init();
    gst::init().unwrap();
}

/// A sink callback (video `FrameSink`, audio `AudioSink`) that forwards everything it is
/// given to the test.
#[allow(dead_code, clippy::type_complexity)]
pub fn collector<T: Send + 'static>() -> (
    std::sync::Arc<dyn Fn(T) + Send + Sync>,
    std::sync::mpsc::Receiver<T>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    (
        std::sync::Arc::new(move |item| {
            let _ = tx.lock().unwrap().send(item);
        }),
        rx,
    )
}
