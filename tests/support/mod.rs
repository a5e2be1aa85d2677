//! Shared test support: the daemon as a child process, and a real WebRTC viewer.
#![allow(dead_code)]

pub mod alexa;
pub mod avsync;
pub mod daemon;
pub mod gst;
pub mod janus;
pub mod kvs;
pub mod lambda;
pub mod metrics;
pub mod rtsp;
pub mod sound;
pub mod turn;
pub mod viewer;
pub mod wait;
