//! An in-process RTSP server (gst-rtsp-server) on 127.0.0.1: the IP camera of the tests.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// An in-process RTSP server on 127.0.0.1 serving x264 over RTP at /test.
pub struct RtspServer {
    server: rtsp::RTSPServer,
    mounts: rtsp::RTSPMountPoints,
    factory: rtsp::RTSPMediaFactory,
    /// Valves inside the served pipelines, to make the stream go quiet.
    valves: Arc<Mutex<Vec<gst::Element>>>,
    /// When an element named `keyframes` in a served pipeline passed a keyframe (the camera
    /// produced an IDR), in order.
    keyframes: Arc<Mutex<Vec<std::time::Instant>>>,
    main_loop: gst::glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    port: i32,
}

impl RtspServer {
    pub fn start(launch: &str) -> Self {
        Self::start_with(launch, true)
    }

    /// Like [`RtspServer::start`], but every client session gets its own media pipeline, as
    /// with a real camera. Needed when clients set up different streams of one mount (a video
    /// session and an audio session): gst-rtsp-server answers 503 to a client that sets up a
    /// stream the shared media's first client left out.
    pub fn start_unshared(launch: &str) -> Self {
        Self::start_with(launch, false)
    }

    fn start_with(launch: &str, shared: bool) -> Self {
        let ctx = gst::glib::MainContext::new();
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let mounts = server.mount_points().unwrap();
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(launch);
        factory.set_shared(shared);
        let valves = Arc::new(Mutex::new(Vec::new()));
        let keyframes = Arc::new(Mutex::new(Vec::new()));
        factory.connect_media_configure({
            let valves = valves.clone();
            let keyframes = keyframes.clone();
            move |_, media| {
                let Some(bin) = media.element().downcast_ref::<gst::Bin>().cloned() else {
                    return;
                };
                if let Some(v) = bin.by_name("v") {
                    valves.lock().unwrap().push(v);
                }
                if let Some(pad) = bin.by_name("keyframes").and_then(|e| e.static_pad("src")) {
                    let keyframes = keyframes.clone();
                    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                        if let Some(b) = info.buffer()
                            && !b.flags().contains(gst::BufferFlags::DELTA_UNIT)
                        {
                            keyframes.lock().unwrap().push(std::time::Instant::now());
                        }
                        gst::PadProbeReturn::Ok
                    });
                }
            }
        });
        mounts.add_factory("/test", factory.clone());
        server.attach(Some(&ctx)).unwrap();
        let port = server.bound_port();
        assert!(port > 0);
        let main_loop = gst::glib::MainLoop::new(Some(&ctx), false);
        let thread = std::thread::spawn({
            let main_loop = main_loop.clone();
            move || {
                ctx.with_thread_default(|| main_loop.run()).unwrap();
            }
        });
        RtspServer {
            server,
            mounts,
            factory,
            valves,
            keyframes,
            main_loop,
            thread: Some(thread),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }

    /// The camera goes away: the mount disappears and connected clients are dropped.
    pub fn take_down(&self) {
        self.mounts.remove_factory("/test");
        self.server
            .client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
    }

    pub fn bring_back(&self) {
        self.mounts.add_factory("/test", self.factory.clone());
    }

    /// When the camera produced each keyframe so far (needs an element named `keyframes`
    /// after the encoder, e.g. `identity name=keyframes`).
    pub fn keyframe_times(&self) -> Vec<std::time::Instant> {
        self.keyframes.lock().unwrap().clone()
    }

    pub fn set_quiet(&self, quiet: bool) {
        for v in self.valves.lock().unwrap().iter() {
            v.set_property("drop", quiet);
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.server
            .client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
