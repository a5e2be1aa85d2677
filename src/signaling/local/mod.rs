//! Local signaling: WHEP endpoint, viewer page and health over HTTP.
