//! The signaling service's brain, sans-IO: channels, who is connected, message validation and
//! routing, store-and-forward, quotas. Every input carries `now`; every output is an [`Action`]
//! for the I/O layer to carry out. Nothing here touches a socket or a timer.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::limits::RateWindow;

/// Identifies one accepted WebSocket connection.
pub(crate) type ConnId = u64;
/// Identifies one pending SendAlexaOfferToMaster call.
pub(crate) type WaiterId = u64;

/// What happens to a master (or viewer) connection that a newer connection with the same role
/// (and client id) replaced. The real behaviour is UNVERIFIED (reference §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SupersededPolicy {
    /// Leave the old socket open; nothing is routed to it and its messages are dropped.
    #[default]
    KeepOpenUnrouted,
    /// Close the old socket with 1001 "Going away".
    Close,
}

/// Public description of a channel, as DescribeSignalingChannel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    /// `arn:aws:kinesisvideo:<region>:<account>:channel/<name>/<13-digit creation ms>`.
    pub arn: String,
    pub creation_time_ms: u64,
    /// How long undelivered messages are kept.
    pub message_ttl: Duration,
    pub version: String,
}

/// Counters of one channel, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Accepted ConnectAsMaster upgrades.
    pub master_connects: u64,
    /// Accepted ConnectAsViewer upgrades.
    pub viewer_connects: u64,
    /// A master socket is currently the routing target.
    pub master_connected: bool,
    pub viewers_connected: usize,
    /// WebSocket Ping frames received from the current or past master connections.
    pub master_ping_frames: u64,
    /// WebSocket Ping frames received from any connection of this channel.
    pub ping_frames: u64,
    pub get_ice_server_config_calls: u64,
    /// Messages handed to a recipient socket (directly or from the store).
    pub messages_routed: u64,
    /// Messages kept for a recipient that was offline.
    pub messages_stored: u64,
    /// Stored messages discarded because their TTL ran out.
    pub messages_expired: u64,
    /// Stored SDPs replaced by a newer SDP from the same sender.
    pub messages_overwritten: u64,
    /// Client frames refused (malformed, too large, rate-limited, bad recipient...).
    pub messages_rejected: u64,
    /// Refused because the payload exceeded the size limit.
    pub oversize_payloads: u64,
    pub status_responses_sent: u64,
    /// Frames from a connection that a newer one superseded (dropped).
    pub frames_from_superseded: u64,
    /// Upgrades refused by the 3/s connect quota.
    pub connects_throttled: u64,
    /// Upgrades naming this channel that failed SigV4.
    pub rejected_signatures: u64,
    pub alexa_offers: u64,
    pub alexa_answers: u64,
    pub alexa_timeouts: u64,
    /// Connections closed by the idle timer.
    pub idle_closes: u64,
    /// Connections closed at the maximum connection duration.
    pub max_duration_closes: u64,
}

/// Something for the I/O layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Send {
        conn: ConnId,
        text: String,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    AlexaAnswer {
        waiter: WaiterId,
        payload: String,
    },
    /// The call can no longer be answered (superseded by a newer call, or channel deleted).
    AlexaAbandoned {
        waiter: WaiterId,
    },
}

/// Why an upgrade is refused before it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectRejection {
    NotFound,
    Throttled,
    TooManyViewers,
}

/// Why SendAlexaOfferToMaster is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AlexaRejection {
    NotFound,
    Throttled,
    Invalid(String),
}

/// Quotas and retention the hub enforces.
#[derive(Debug, Clone)]
pub(crate) struct HubConfig {
    pub region: String,
    pub account_id: String,
    pub message_ttl: Duration,
    pub max_viewers: usize,
    pub connects_per_second: usize,
    pub sdp_tps: usize,
    pub candidate_tps: usize,
    pub alexa_tps: usize,
    pub max_payload_chars: usize,
    pub superseded: SupersededPolicy,
    pub store_candidates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Peer {
    Master,
    Viewer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sdp,
    Candidate,
}

#[derive(Debug)]
struct Stored {
    from: Peer,
    kind: Kind,
    text: String,
    expires: Instant,
}

#[derive(Debug)]
struct Channel {
    info: ChannelInfo,
    master: Option<ConnId>,
    viewers: HashMap<String, ConnId>,
    master_connects: RateWindow,
    viewer_connects: RateWindow,
    mailbox: HashMap<Peer, VecDeque<Stored>>,
    alexa_waiters: HashMap<String, WaiterId>,
    alexa_rate: RateWindow,
    stats: ChannelStats,
}

#[derive(Debug)]
struct Conn {
    arn: String,
    peer: Peer,
    offer_rate: RateWindow,
    answer_rate: RateWindow,
    candidate_rate: RateWindow,
}

/// All channels and connections of the emulated service.
#[derive(Debug)]
pub(crate) struct Hub {
    cfg: HubConfig,
    channels: HashMap<String, Channel>,
    names: HashMap<String, String>,
    conns: HashMap<ConnId, Conn>,
    last_creation_ms: u64,
}

/// `[a-zA-Z0-9_.-]{1,256}`: channel names, client ids, correlation ids.
pub(crate) fn valid_id(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A message payload as the model allows it: standard padded base64 of 1..=`max` characters.
pub(crate) fn payload_problem(payload: &str, max: usize) -> Option<String> {
    if payload.is_empty() {
        return Some("MessagePayload must not be empty".into());
    }
    if payload.len() > max {
        return Some(format!(
            "MessagePayload length {} exceeds the limit of {max}",
            payload.len()
        ));
    }
    if base64::engine::general_purpose::STANDARD
        .decode(payload)
        .is_err()
    {
        return Some("MessagePayload is not valid base64".into());
    }
    None
}

#[derive(Serialize)]
struct OutEnvelope<'a> {
    #[serde(rename = "messageType")]
    message_type: &'a str,
    #[serde(rename = "messagePayload", skip_serializing_if = "Option::is_none")]
    message_payload: Option<&'a str>,
    #[serde(rename = "senderClientId", skip_serializing_if = "Option::is_none")]
    sender_client_id: Option<&'a str>,
    #[serde(rename = "statusResponse", skip_serializing_if = "Option::is_none")]
    status_response: Option<StatusOut<'a>>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
    #[serde(rename = "statusCode")]
    status_code: &'a str,
    description: &'a str,
    success: bool,
}

/// Serialises a service → client envelope (key order as the service sends it).
pub(crate) fn envelope(message_type: &str, payload: Option<&str>, sender: Option<&str>) -> String {
    serde_json::to_string(&OutEnvelope {
        message_type,
        message_payload: payload,
        sender_client_id: sender,
        status_response: None,
    })
    .unwrap_or_default()
}

/// A client message the service will not route: counted, and answered with STATUS_RESPONSE
/// only when the sender gave a correlationId (reference §2.2: otherwise it fails silently).
fn refuse(ch: &mut Channel, conn: ConnId, correlation_id: Option<&str>, r: Refusal) -> Vec<Action> {
    ch.stats.messages_rejected += 1;
    let Some(corr) = correlation_id else {
        return Vec::new();
    };
    ch.stats.status_responses_sent += 1;
    vec![Action::Send {
        conn,
        text: status_response(corr, r.error_type, r.code, &r.description),
    }]
}

fn status_response(correlation_id: &str, error_type: &str, code: u16, description: &str) -> String {
    let code = code.to_string();
    serde_json::to_string(&OutEnvelope {
        message_type: "STATUS_RESPONSE",
        message_payload: None,
        sender_client_id: None,
        status_response: Some(StatusOut {
            correlation_id,
            error_type,
            status_code: &code,
            description,
            success: false,
        }),
    })
    .unwrap_or_default()
}

/// A client frame's members, keys matched case-insensitively (the C SDK sends PascalCase).
#[derive(Default)]
struct ClientMessage {
    action: Option<String>,
    recipient: Option<String>,
    payload: Option<String>,
    correlation_id: Option<String>,
}

fn parse_client_message(text: &str) -> Option<ClientMessage> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let mut msg = ClientMessage::default();
    for (key, value) in map {
        let Value::String(s) = value else { continue };
        match key.to_ascii_lowercase().as_str() {
            "action" => msg.action = Some(s),
            "recipientclientid" => msg.recipient = Some(s),
            "messagepayload" => msg.payload = Some(s),
            "correlationid" => msg.correlation_id = Some(s),
            _ => {}
        }
    }
    Some(msg)
}

struct Refusal {
    error_type: &'static str,
    code: u16,
    description: String,
}

fn invalid(description: impl Into<String>) -> Refusal {
    Refusal {
        error_type: "InvalidArgumentException",
        code: 400,
        description: description.into(),
    }
}

impl Hub {
    pub(crate) fn new(cfg: HubConfig) -> Self {
        Self {
            cfg,
            channels: HashMap::new(),
            names: HashMap::new(),
            conns: HashMap::new(),
            last_creation_ms: 0,
        }
    }

    /// Creates a channel; `None` if the name is taken. `now_ms` is wall-clock ms (ARN suffix).
    pub(crate) fn create_channel(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Option<ChannelInfo> {
        if self.names.contains_key(name) {
            return None;
        }
        // Re-creating a channel within the same millisecond must still give a new ARN.
        let created = now_ms.max(self.last_creation_ms + 1);
        self.last_creation_ms = created;
        let arn = format!(
            "arn:aws:kinesisvideo:{}:{}:channel/{name}/{created:013}",
            self.cfg.region, self.cfg.account_id
        );
        let info = ChannelInfo {
            name: name.to_owned(),
            arn: arn.clone(),
            creation_time_ms: created,
            message_ttl: ttl.unwrap_or(self.cfg.message_ttl),
            version: format!("{:x}", rand::random::<u64>()),
        };
        let per_s = self.cfg.connects_per_second;
        self.channels.insert(
            arn.clone(),
            Channel {
                info: info.clone(),
                master: None,
                viewers: HashMap::new(),
                master_connects: RateWindow::per_second(per_s),
                viewer_connects: RateWindow::per_second(per_s),
                mailbox: HashMap::new(),
                alexa_waiters: HashMap::new(),
                alexa_rate: RateWindow::per_second(self.cfg.alexa_tps),
                stats: ChannelStats::default(),
            },
        );
        self.names.insert(name.to_owned(), arn);
        Some(info)
    }

    /// Deletes a channel and disconnects everyone on it (1001).
    pub(crate) fn delete_channel(&mut self, arn: &str) -> Option<Vec<Action>> {
        let channel = self.channels.remove(arn)?;
        self.names.remove(&channel.info.name);
        let mut actions = Vec::new();
        let on_channel: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.arn == arn)
            .map(|(id, _)| *id)
            .collect();
        for conn in on_channel {
            self.conns.remove(&conn);
            actions.push(Action::Close {
                conn,
                code: 1001,
                reason: "Going away".into(),
            });
        }
        for waiter in channel.alexa_waiters.into_values() {
            actions.push(Action::AlexaAbandoned { waiter });
        }
        Some(actions)
    }

    pub(crate) fn arn_of(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(String::as_str)
    }

    pub(crate) fn info(&self, arn: &str) -> Option<&ChannelInfo> {
        self.channels.get(arn).map(|c| &c.info)
    }

    pub(crate) fn stats(&mut self, arn: &str, now: Instant) -> Option<ChannelStats> {
        self.purge(arn, now);
        let ch = self.channels.get(arn)?;
        let mut stats = ch.stats.clone();
        stats.master_connected = ch.master.is_some();
        stats.viewers_connected = ch.viewers.len();
        Some(stats)
    }

    pub(crate) fn stats_mut(&mut self, arn: &str) -> Option<&mut ChannelStats> {
        self.channels.get_mut(arn).map(|c| &mut c.stats)
    }

    pub(crate) fn master_of(&self, arn: &str) -> Option<ConnId> {
        self.channels.get(arn).and_then(|c| c.master)
    }

    /// Upgrade-time checks: channel exists, connect quota, viewer count.
    pub(crate) fn admit(
        &mut self,
        arn: &str,
        client_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ConnectRejection> {
        let max_viewers = self.cfg.max_viewers;
        let ch = self
            .channels
            .get_mut(arn)
            .ok_or(ConnectRejection::NotFound)?;
        if let Some(id) = client_id
            && !ch.viewers.contains_key(id)
            && ch.viewers.len() >= max_viewers
        {
            return Err(ConnectRejection::TooManyViewers);
        }
        let window = match client_id {
            None => &mut ch.master_connects,
            Some(_) => &mut ch.viewer_connects,
        };
        if window.try_acquire(now) {
            Ok(())
        } else {
            ch.stats.connects_throttled += 1;
            Err(ConnectRejection::Throttled)
        }
    }

    /// Registers an upgraded connection and hands it whatever was stored for it.
    pub(crate) fn attach(
        &mut self,
        conn: ConnId,
        arn: &str,
        client_id: Option<String>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let superseded = self.cfg.superseded;
        let Some(ch) = self.channels.get_mut(arn) else {
            actions.push(Action::Close {
                conn,
                code: 1001,
                reason: "Going away".into(),
            });
            return actions;
        };
        let (peer, old) = match &client_id {
            None => {
                ch.stats.master_connects += 1;
                (Peer::Master, ch.master.replace(conn))
            }
            Some(id) => {
                ch.stats.viewer_connects += 1;
                (
                    Peer::Viewer(id.clone()),
                    ch.viewers.insert(id.clone(), conn),
                )
            }
        };
        if let Some(old) = old
            && superseded == SupersededPolicy::Close
        {
            actions.push(Action::Close {
                conn: old,
                code: 1001,
                reason: "Going away".into(),
            });
        }
        let pending = ch.mailbox.remove(&peer).unwrap_or_default();
        for stored in pending {
            if stored.expires > now {
                ch.stats.messages_routed += 1;
                actions.push(Action::Send {
                    conn,
                    text: stored.text,
                });
            } else {
                ch.stats.messages_expired += 1;
            }
        }
        self.conns.insert(
            conn,
            Conn {
                arn: arn.to_owned(),
                peer,
                offer_rate: RateWindow::per_second(self.cfg.sdp_tps),
                answer_rate: RateWindow::per_second(self.cfg.sdp_tps),
                candidate_rate: RateWindow::per_second(self.cfg.candidate_tps),
            },
        );
        actions
    }

    /// The connection is gone (closed by either side).
    pub(crate) fn detach(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(&c.arn) else {
            return;
        };
        match c.peer {
            Peer::Master => {
                if ch.master == Some(conn) {
                    ch.master = None;
                }
            }
            Peer::Viewer(id) => {
                if ch.viewers.get(&id) == Some(&conn) {
                    ch.viewers.remove(&id);
                }
            }
        }
    }

    /// Counts a WebSocket Ping frame.
    pub(crate) fn on_ping(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let is_master = c.peer == Peer::Master;
        if let Some(ch) = self.channels.get_mut(&c.arn) {
            ch.stats.ping_frames += 1;
            if is_master {
                ch.stats.master_ping_frames += 1;
            }
        }
    }

    /// Counts a connection the service closed on its own timer.
    pub(crate) fn on_expiry(&mut self, conn: ConnId, idle: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(&c.arn) {
            if idle {
                ch.stats.idle_closes += 1;
            } else {
                ch.stats.max_duration_closes += 1;
            }
        }
    }

    /// A text frame from a client.
    pub(crate) fn client_frame(&mut self, conn: ConnId, text: &str, now: Instant) -> Vec<Action> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let Some(ch) = self.channels.get_mut(&c.arn) else {
            return Vec::new();
        };
        let current = match &c.peer {
            Peer::Master => ch.master == Some(conn),
            Peer::Viewer(id) => ch.viewers.get(id) == Some(&conn),
        };
        if !current {
            ch.stats.frames_from_superseded += 1;
            return Vec::new();
        }
        let Some(msg) = parse_client_message(text) else {
            // No correlation id can be read from garbage, so there is nobody to answer.
            ch.stats.messages_rejected += 1;
            return Vec::new();
        };
        let max = self.cfg.max_payload_chars;
        let checked = (|| -> Result<(Kind, &'static str, String), Refusal> {
            if let Some(corr) = &msg.correlation_id
                && !valid_id(corr)
            {
                return Err(invalid("correlationId must match [a-zA-Z0-9_.-]{1,256}"));
            }
            let (kind, out_type, window) = match msg.action.as_deref() {
                Some("SDP_OFFER") => (Kind::Sdp, "SDP_OFFER", &mut c.offer_rate),
                Some("SDP_ANSWER") => (Kind::Sdp, "SDP_ANSWER", &mut c.answer_rate),
                Some("ICE_CANDIDATE") => (Kind::Candidate, "ICE_CANDIDATE", &mut c.candidate_rate),
                other => return Err(invalid(format!("Unsupported action {other:?}"))),
            };
            let payload = msg
                .payload
                .clone()
                .ok_or_else(|| invalid("messagePayload is required"))?;
            if let Some(problem) = payload_problem(&payload, max) {
                if payload.len() > max {
                    ch.stats.oversize_payloads += 1;
                }
                return Err(invalid(problem));
            }
            if !window.try_acquire(now) {
                return Err(Refusal {
                    error_type: "ClientLimitExceededException",
                    code: 400,
                    description: format!("Rate exceeded for {out_type}"),
                });
            }
            Ok((kind, out_type, payload))
        })();
        let (kind, out_type, payload) = match checked {
            Ok(ok) => ok,
            Err(refusal) => return refuse(ch, conn, msg.correlation_id.as_deref(), refusal),
        };
        let (to, text) = match &c.peer {
            Peer::Master => {
                let Some(recipient) = msg.recipient.filter(|r| valid_id(r)) else {
                    let refusal = invalid(
                        "recipientClientId is required and must match [a-zA-Z0-9_.-]{1,256}",
                    );
                    return refuse(ch, conn, msg.correlation_id.as_deref(), refusal);
                };
                if out_type == "SDP_ANSWER"
                    && let Some(waiter) = ch.alexa_waiters.remove(&recipient)
                {
                    ch.stats.alexa_answers += 1;
                    ch.stats.messages_routed += 1;
                    return vec![Action::AlexaAnswer { waiter, payload }];
                }
                // Messages to viewers carry no senderClientId (it can only be the master).
                (
                    Peer::Viewer(recipient),
                    envelope(out_type, Some(&payload), None),
                )
            }
            // A viewer can only talk to the master; its recipientClientId is ignored.
            Peer::Viewer(id) => (Peer::Master, envelope(out_type, Some(&payload), Some(id))),
        };
        let from = c.peer.clone();
        let ttl = ch.info.message_ttl;
        let store_candidates = self.cfg.store_candidates;
        deliver(ch, from, to, kind, text, now, ttl, store_candidates)
    }

    /// SendAlexaOfferToMaster: push the offer to the master and remember who waits for the answer.
    pub(crate) fn alexa_offer(
        &mut self,
        arn: &str,
        sender: &str,
        payload: &str,
        waiter: WaiterId,
        now: Instant,
    ) -> Result<Vec<Action>, AlexaRejection> {
        let max = self.cfg.max_payload_chars;
        let store_candidates = self.cfg.store_candidates;
        let ch = self.channels.get_mut(arn).ok_or(AlexaRejection::NotFound)?;
        if !valid_id(sender) {
            return Err(AlexaRejection::Invalid(
                "SenderClientId must match [a-zA-Z0-9_.-]{1,256}".into(),
            ));
        }
        if let Some(problem) = payload_problem(payload, max) {
            return Err(AlexaRejection::Invalid(problem));
        }
        if !ch.alexa_rate.try_acquire(now) {
            return Err(AlexaRejection::Throttled);
        }
        ch.stats.alexa_offers += 1;
        let mut actions = Vec::new();
        if let Some(old) = ch.alexa_waiters.insert(sender.to_owned(), waiter) {
            actions.push(Action::AlexaAbandoned { waiter: old });
        }
        let text = envelope("SDP_OFFER", Some(payload), Some(sender));
        let ttl = ch.info.message_ttl;
        actions.extend(deliver(
            ch,
            Peer::Viewer(sender.to_owned()),
            Peer::Master,
            Kind::Sdp,
            text,
            now,
            ttl,
            store_candidates,
        ));
        Ok(actions)
    }

    /// The Alexa call gave up waiting.
    pub(crate) fn alexa_cancel(&mut self, arn: &str, sender: &str, waiter: WaiterId) {
        if let Some(ch) = self.channels.get_mut(arn)
            && ch.alexa_waiters.get(sender) == Some(&waiter)
        {
            ch.alexa_waiters.remove(sender);
            ch.stats.alexa_timeouts += 1;
        }
    }

    /// Drops expired stored messages of a channel.
    pub(crate) fn purge(&mut self, arn: &str, now: Instant) {
        let Some(ch) = self.channels.get_mut(arn) else {
            return;
        };
        let mut expired = 0;
        for queue in ch.mailbox.values_mut() {
            let before = queue.len();
            queue.retain(|s| s.expires > now);
            expired += (before - queue.len()) as u64;
        }
        ch.mailbox.retain(|_, q| !q.is_empty());
        ch.stats.messages_expired += expired;
    }
}

/// Sends `text` to `to` if connected, else stores it for the channel's TTL; an undelivered SDP
/// from the same sender is replaced by the newer one.
#[allow(clippy::too_many_arguments)]
fn deliver(
    ch: &mut Channel,
    from: Peer,
    to: Peer,
    kind: Kind,
    text: String,
    now: Instant,
    ttl: Duration,
    store_candidates: bool,
) -> Vec<Action> {
    let target = match &to {
        Peer::Master => ch.master,
        Peer::Viewer(id) => ch.viewers.get(id).copied(),
    };
    if let Some(conn) = target {
        ch.stats.messages_routed += 1;
        return vec![Action::Send { conn, text }];
    }
    if kind == Kind::Candidate && !store_candidates {
        return Vec::new();
    }
    let queue = ch.mailbox.entry(to).or_default();
    let before = queue.len();
    queue.retain(|s| s.expires > now);
    ch.stats.messages_expired += (before - queue.len()) as u64;
    if kind == Kind::Sdp
        && let Some(pos) = queue
            .iter()
            .position(|s| s.kind == Kind::Sdp && s.from == from)
    {
        queue.remove(pos);
        ch.stats.messages_overwritten += 1;
    }
    queue.push_back(Stored {
        from,
        kind,
        text,
        expires: now + ttl,
    });
    ch.stats.messages_stored += 1;
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(HubConfig {
            region: "us-west-2".into(),
            account_id: "123456789012".into(),
            message_ttl: Duration::from_secs(60),
            max_viewers: 2,
            connects_per_second: 3,
            sdp_tps: 5,
            candidate_tps: 20,
            alexa_tps: 5,
            max_payload_chars: 10_000,
            superseded: SupersededPolicy::KeepOpenUnrouted,
            store_candidates: true,
        })
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn frame(action: &str, recipient: Option<&str>, payload: &str, corr: Option<&str>) -> String {
        let mut v = serde_json::json!({"action": action, "messagePayload": payload});
        if let Some(r) = recipient {
            v["recipientClientId"] = r.into();
        }
        if let Some(c) = corr {
            v["correlationId"] = c.into();
        }
        v.to_string()
    }

    #[test]
    fn arn_has_region_account_and_13_digit_ms() {
        let mut h = hub();
        let info = h.create_channel("cam", None, 1_700_000_000_123).unwrap();
        assert_eq!(
            info.arn,
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam/1700000000123"
        );
        assert!(h.create_channel("cam", None, 5).is_none());
    }

    #[test]
    fn viewer_offer_reaches_master_with_sender_and_answer_returns_without() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        h.attach(2, &arn, Some("v1".into()), now);
        let offer = b64("{\"type\":\"offer\",\"sdp\":\"v=0\"}");
        let out = h.client_frame(2, &frame("SDP_OFFER", Some("ignored"), &offer, None), now);
        let [Action::Send { conn: 1, text }] = out.as_slice() else {
            panic!("{out:?}")
        };
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["senderClientId"], "v1");
        assert_eq!(v["messageType"], "SDP_OFFER");
        let out = h.client_frame(
            1,
            r#"{"Action":"SDP_ANSWER","RecipientClientId":"v1","MessagePayload":"eyJ9","Extra":[1]}"#,
            now,
        );
        let [Action::Send { conn: 2, text }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            text,
            r#"{"messageType":"SDP_ANSWER","messagePayload":"eyJ9"}"#
        );
    }

    #[test]
    fn store_and_forward_respects_ttl_and_sdp_overwrite() {
        let mut h = hub();
        let arn = h
            .create_channel("cam", Some(Duration::from_secs(5)), 1)
            .unwrap()
            .arn;
        let t0 = Instant::now();
        h.attach(2, &arn, Some("v1".into()), t0);
        assert!(
            h.client_frame(2, &frame("SDP_OFFER", None, &b64("one"), None), t0)
                .is_empty()
        );
        assert!(
            h.client_frame(2, &frame("SDP_OFFER", None, &b64("two"), None), t0)
                .is_empty()
        );
        assert!(
            h.client_frame(2, &frame("ICE_CANDIDATE", None, &b64("c"), None), t0)
                .is_empty()
        );
        let out = h.attach(1, &arn, None, t0 + Duration::from_secs(4));
        let texts: Vec<&str> = out
            .iter()
            .map(|a| match a {
                Action::Send { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(texts[0].contains(&b64("two")) && texts[1].contains(&b64("c")));
        // Expired: nothing left for a later master.
        h.detach(1);
        h.client_frame(2, &frame("SDP_OFFER", None, &b64("three"), None), t0);
        assert!(
            h.attach(3, &arn, None, t0 + Duration::from_secs(6))
                .is_empty()
        );
        let stats = h.stats(&arn, t0).unwrap();
        assert_eq!(stats.messages_overwritten, 1);
        assert_eq!(stats.messages_expired, 1);
    }

    #[test]
    fn refusals_answer_only_with_a_correlation_id() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        let big = "A".repeat(10_004);
        assert!(
            h.client_frame(1, &frame("SDP_ANSWER", Some("v"), &big, None), now)
                .is_empty()
        );
        let out = h.client_frame(1, &frame("SDP_ANSWER", Some("v"), &big, Some("c-1")), now);
        let [Action::Send { conn: 1, text }] = out.as_slice() else {
            panic!("{out:?}")
        };
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["messageType"], "STATUS_RESPONSE");
        assert_eq!(v["statusResponse"]["correlationId"], "c-1");
        assert_eq!(v["statusResponse"]["statusCode"], "400");
        assert_eq!(v["statusResponse"]["errorType"], "InvalidArgumentException");
        assert!(h.client_frame(1, "not json", now).is_empty());
        let out = h.client_frame(1, &frame("SDP_ANSWER", None, &b64("x"), Some("c-2")), now);
        assert_eq!(out.len(), 1, "missing recipient from the master is refused");
        let out = h.client_frame(
            1,
            &frame("SDP_ANSWER", Some("v"), "not base64!", Some("c-3")),
            now,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(h.stats(&arn, now).unwrap().oversize_payloads, 2);
    }

    #[test]
    fn per_connection_rate_limits() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        h.attach(2, &arn, Some("v1".into()), now);
        let p = b64("x");
        for _ in 0..5 {
            assert_eq!(
                h.client_frame(1, &frame("SDP_ANSWER", Some("v1"), &p, Some("a")), now)
                    .len(),
                1
            );
        }
        let out = h.client_frame(1, &frame("SDP_ANSWER", Some("v1"), &p, Some("a")), now);
        assert!(
            matches!(&out[..], [Action::Send { conn: 1, text }] if text.contains("ClientLimitExceededException"))
        );
        for _ in 0..20 {
            let out = h.client_frame(1, &frame("ICE_CANDIDATE", Some("v1"), &p, None), now);
            assert!(matches!(&out[..], [Action::Send { conn: 2, .. }]));
        }
        assert!(
            h.client_frame(1, &frame("ICE_CANDIDATE", Some("v1"), &p, None), now)
                .is_empty()
        );
    }

    #[test]
    fn newest_master_wins_and_viewer_quota_counts_distinct_ids() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        h.attach(2, &arn, None, now);
        assert_eq!(h.master_of(&arn), Some(2));
        h.attach(3, &arn, Some("a".into()), now);
        h.attach(4, &arn, Some("b".into()), now);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            h.admit(&arn, Some("c"), later),
            Err(ConnectRejection::TooManyViewers)
        );
        assert_eq!(h.admit(&arn, Some("a"), later), Ok(()));
        assert!(
            h.client_frame(1, &frame("SDP_ANSWER", Some("a"), &b64("x"), None), now)
                .is_empty()
        );
        assert_eq!(h.stats(&arn, now).unwrap().frames_from_superseded, 1);
        h.detach(1);
        assert_eq!(
            h.master_of(&arn),
            Some(2),
            "detaching the stale master keeps the new one"
        );
    }

    #[test]
    fn connect_quota_is_three_per_second_per_role() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(h.admit(&arn, None, now), Ok(()));
        }
        assert_eq!(h.admit(&arn, None, now), Err(ConnectRejection::Throttled));
        assert_eq!(h.admit(&arn, Some("v"), now), Ok(()));
        assert_eq!(
            h.admit("arn:nope", None, now),
            Err(ConnectRejection::NotFound)
        );
    }

    #[test]
    fn alexa_answer_goes_to_the_waiter() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        let out = h
            .alexa_offer(&arn, "viewer-1", &b64("offer"), 77, now)
            .unwrap();
        assert!(
            matches!(&out[..], [Action::Send { conn: 1, text }] if text.contains("\"senderClientId\":\"viewer-1\""))
        );
        let out = h.client_frame(
            1,
            &frame("SDP_ANSWER", Some("viewer-1"), &b64("ans"), None),
            now,
        );
        assert_eq!(
            out,
            vec![Action::AlexaAnswer {
                waiter: 77,
                payload: b64("ans")
            }]
        );
    }

    #[test]
    fn delete_closes_sockets_and_abandons_alexa_calls() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        h.alexa_offer(&arn, "viewer-a", &b64("o"), 9, now).unwrap();
        let mut out = h.delete_channel(&arn).unwrap();
        out.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            out,
            vec![
                Action::AlexaAbandoned { waiter: 9 },
                Action::Close {
                    conn: 1,
                    code: 1001,
                    reason: "Going away".into()
                },
            ]
        );
        assert_eq!(h.admit(&arn, None, now), Err(ConnectRejection::NotFound));
        let again = h.create_channel("cam", None, 1).unwrap();
        assert_ne!(again.arn, arn, "a re-created channel gets a new ARN");
    }

    #[test]
    fn close_policy_closes_the_superseded_socket() {
        let mut h = hub();
        h.cfg.superseded = SupersededPolicy::Close;
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        assert!(h.attach(1, &arn, None, now).is_empty());
        assert_eq!(
            h.attach(2, &arn, None, now),
            vec![Action::Close {
                conn: 1,
                code: 1001,
                reason: "Going away".into()
            }]
        );
    }

    #[test]
    fn a_viewer_cannot_reach_another_viewer() {
        let mut h = hub();
        let arn = h.create_channel("cam", None, 1).unwrap().arn;
        let now = Instant::now();
        h.attach(1, &arn, None, now);
        h.attach(2, &arn, Some("a".into()), now);
        h.attach(3, &arn, Some("b".into()), now);
        let out = h.client_frame(2, &frame("SDP_OFFER", Some("b"), &b64("x"), None), now);
        assert!(
            matches!(&out[..], [Action::Send { conn: 1, .. }]),
            "{out:?}"
        );
    }
}
