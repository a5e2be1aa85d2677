//! Capture and encode through GStreamer: one pipeline serves every viewer.
