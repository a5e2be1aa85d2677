//! camgate: a camera on WebRTC.
//!
//! The library holds all the logic so that tests and benchmarks drive the same code the
//! daemon runs; `main.rs` only parses the command line and calls in here.
//!
//! Data path: [`media`] captures and encodes once → [`rtp`] packetizes once per frame →
//! [`session`] fans the packets out to every viewer's peer connection. Viewers arrive
//! through [`signaling`] (local WHEP, or Amazon KVS as the master).

pub mod backoff;
pub mod config;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod media;
pub mod metrics;
pub mod publish;
pub mod redact;
pub mod rtp;
pub mod session;
pub mod signaling;
pub mod telemetry;
