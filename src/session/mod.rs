//! Viewer sessions: one WebRTC peer connection per viewer, fed by one shared fan-out.
