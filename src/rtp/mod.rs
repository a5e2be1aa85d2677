//! RTP packetization (sans-IO): H.264 (RFC 6184) and Opus (RFC 7587).
