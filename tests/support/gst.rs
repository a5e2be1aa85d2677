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
