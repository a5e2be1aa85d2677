//! Emulator of Amazon KVS WebRTC signaling for camgate tests.
