//! How viewers reach us: local WHEP over HTTP, or Amazon KVS signaling as the master.

pub mod kvs;
pub mod local;
