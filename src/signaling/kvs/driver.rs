//! The tokio task that runs the KVS master: performs the machine's actions (SDK calls, WebSocket
//! connect, pings), feeds results back stamped with `Instant::now()`, and sleeps until the next
//! deadline. Offers go to the [`OfferHandler`] in their own tasks so a slow session never stalls
//! the socket loop; everything they produce comes back through one channel.

use crate::session::feed::sleep_until;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::arn::ChannelArn;
use super::backoff::system_jitter;
use super::client_id::ClientId;
use super::control::{ControlError, ControlPlane, classify, is_signature_time_error};
use super::ice_refresh::{IceRefresher, RefreshConfig, TurnServer};
use super::machine::{Action, Cause, Endpoints, Event, Failure, Machine, MachineConfig, State};
use super::message::{self, Correlator, Incoming, Rejected};
use super::outbox::{Outbox, OutboxLimits};
use super::pending::{PendingCandidates, PendingLimits};
use super::presign;
use super::stats::KvsStats;
use super::{KvsOptions, OfferHandler};
use crate::redact::redact_text;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on writing one frame; a socket that cannot take a small frame in this time is dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many viewer ids are tracked (the service allows 10 viewers per channel).
const MAX_SESSIONS: usize = 256;

/// A running KVS master. Dropping it does not stop it; call [`KvsMaster::stop`].
#[derive(Debug)]
pub struct KvsMaster {
    stats: Arc<KvsStats>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl KvsMaster {
    /// Resolves region and credentials provider, then starts connecting in the background.
    /// Fails only on configuration errors; network trouble is retried forever.
    pub async fn start(
        opts: KvsOptions,
        handler: Arc<dyn OfferHandler>,
    ) -> Result<KvsMaster, ControlError> {
        Self::start_with_stats(opts, handler, Arc::new(KvsStats::new())).await
    }

    /// [`KvsMaster::start`], recording into `stats` (e.g. one made with
    /// [`KvsStats::with_offer_to_answer`] for metrics).
    pub async fn start_with_stats(
        opts: KvsOptions,
        handler: Arc<dyn OfferHandler>,
        stats: Arc<KvsStats>,
    ) -> Result<KvsMaster, ControlError> {
        let control = Arc::new(ControlPlane::new(&opts).await?);
        let cancel = CancellationToken::new();
        let driver = Driver::new(opts, control, handler, stats.clone(), cancel.clone());
        let task = tokio::spawn(driver.run());
        Ok(KvsMaster {
            stats,
            cancel,
            task,
        })
    }

    pub fn stats(&self) -> &Arc<KvsStats> {
        &self.stats
    }

    /// Closes the WebSocket and ends the task.
    pub async fn stop(self) {
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            warn!("KVS signaling task did not stop within 5 s");
        }
    }
}

/// Results and session output flowing back into the loop.
enum Internal {
    Described(Result<ChannelArn, ControlError>, SystemTime),
    Endpoints(Result<Endpoints, ControlError>, SystemTime),
    IceConfig {
        from_chain: bool,
        result: Result<Vec<TurnServer>, ControlError>,
        at: SystemTime,
    },
    Connected(Result<Box<Ws>, (String, Failure)>),
    OfferDone {
        client_id: ClientId,
        generation: u64,
        started: Instant,
        trickle: bool,
        result: Result<String, String>,
    },
    LocalCandidate {
        client_id: ClientId,
        generation: u64,
        json: String,
    },
}

/// The call or connect a connection step is waiting for.
struct StepTask {
    task: tokio::task::AbortHandle,
    /// The operation, for the log.
    what: &'static str,
    /// The chain's GetIceServerConfig, which the ICE refresher also waits for.
    chain_ice: bool,
}

impl StepTask {
    fn new(task: tokio::task::AbortHandle, what: &'static str) -> Option<StepTask> {
        Some(StepTask {
            task,
            what,
            chain_ice: false,
        })
    }
}

struct Session {
    generation: u64,
    /// The offer has been applied; remote candidates can go straight to the handler.
    ready: bool,
    created: Instant,
}

struct Driver {
    opts: KvsOptions,
    control: Arc<ControlPlane>,
    handler: Arc<dyn OfferHandler>,
    stats: Arc<KvsStats>,
    cancel: CancellationToken,
    machine: Machine,
    ice: IceRefresher,
    pending: PendingCandidates,
    correlator: Correlator,
    sessions: HashMap<ClientId, Session>,
    next_generation: u64,
    ws: Option<Box<Ws>>,
    outbox: Outbox,
    /// Offer arrival per viewer whose answer is queued, for the offer → answer time.
    answer_started: HashMap<ClientId, (Instant, bool)>,
    connect_cause: Cause,
    /// The task performing the current step's call or connect; aborted on
    /// [`Action::CancelCall`].
    step_task: Option<StepTask>,
    tx: mpsc::Sender<Internal>,
    rx: mpsc::Receiver<Internal>,
}

impl Driver {
    fn new(
        opts: KvsOptions,
        control: Arc<ControlPlane>,
        handler: Arc<dyn OfferHandler>,
        stats: Arc<KvsStats>,
        cancel: CancellationToken,
    ) -> Self {
        let now = Instant::now();
        let cfg = MachineConfig {
            ping_idle: opts.ping_interval,
            max_connection_age: opts.max_connection_age,
            pong_timeout: opts.pong_timeout,
            step_timeout: opts.step_timeout,
            ..MachineConfig::default()
        };
        let (tx, rx) = mpsc::channel(256);
        let mut ice = IceRefresher::new(
            control.region(),
            RefreshConfig::default(),
            system_jitter(),
            system_jitter(),
        );
        if !opts.region_stun {
            ice = ice.without_region_stun();
        }
        Driver {
            opts,
            control,
            handler,
            stats,
            cancel,
            machine: Machine::new(cfg, system_jitter(), now),
            ice,
            pending: PendingCandidates::new(PendingLimits::default()),
            correlator: Correlator::default(),
            sessions: HashMap::new(),
            next_generation: 0,
            ws: None,
            outbox: Outbox::new(OutboxLimits::default()),
            answer_started: HashMap::new(),
            connect_cause: Cause::Initial,
            step_task: None,
            tx,
            rx,
        }
    }

    async fn run(mut self) {
        info!(
            region = self.control.region(),
            channel = ?self.control.channel(),
            "KVS signaling master starting"
        );
        self.event(Event::Start).await;
        loop {
            let now = Instant::now();
            self.poll_ice_refresh(now);
            let outbox_due = if self.can_send() {
                self.outbox.deadline(now)
            } else {
                None
            };
            let deadline = [self.machine.deadline(), self.ice.deadline(), outbox_due]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    self.event(Event::Stop).await;
                    break;
                }
                _ = sleep_until(deadline) => {
                    self.event(Event::Timer).await;
                }
                Some(msg) = self.rx.recv() => {
                    self.internal(msg).await;
                }
                frame = next_frame(&mut self.ws) => {
                    self.frame(frame).await;
                }
            }
            self.flush_outbox().await;
        }
        info!("KVS signaling master stopped");
    }

    /// Feeds one event and performs every action it (transitively) produces.
    async fn event(&mut self, ev: Event) {
        let before = self.machine.state();
        let mut queue: VecDeque<Action> = self.machine.handle(Instant::now(), ev).into();
        while let Some(action) = queue.pop_front() {
            if let Some(follow_up) = self.perform(action).await {
                queue.extend(self.machine.handle(Instant::now(), follow_up));
            }
        }
        let state = self.machine.state();
        if state != before {
            debug!(signaling_state = state.as_str(), "KVS: signaling state");
        }
        self.stats.set_state(state);
        self.stats.clock_offset(self.machine.clock_offset_ms());
    }

    async fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::CallDescribe => {
                debug!("KVS: DescribeSignalingChannel");
                let (c, tx) = (self.control.clone(), self.tx.clone());
                let task = tokio::spawn(async move {
                    let r = c.describe().await;
                    let _ = tx.send(Internal::Described(r, SystemTime::now())).await;
                });
                self.step_task = StepTask::new(task.abort_handle(), "DescribeSignalingChannel");
                None
            }
            Action::CallGetEndpoint { channel_arn } => {
                debug!("KVS: GetSignalingChannelEndpoint");
                let (c, tx) = (self.control.clone(), self.tx.clone());
                let task = tokio::spawn(async move {
                    let r = c.endpoints(&channel_arn).await;
                    let _ = tx.send(Internal::Endpoints(r, SystemTime::now())).await;
                });
                self.step_task = StepTask::new(task.abort_handle(), "GetSignalingChannelEndpoint");
                None
            }
            Action::CallGetIceConfig {
                channel_arn,
                https_endpoint,
            } => {
                self.ice.fetch_started();
                let task = self.spawn_ice_fetch(true, https_endpoint, channel_arn);
                self.step_task = Some(StepTask {
                    task,
                    what: "GetIceServerConfig",
                    chain_ice: true,
                });
                None
            }
            Action::Connect {
                wss_endpoint,
                channel_arn,
                clock_offset_ms,
                cause,
            } => {
                debug!(cause = cause.as_str(), endpoint = %wss_endpoint, "KVS: connecting");
                self.connect_cause = cause;
                let (c, tx) = (self.control.clone(), self.tx.clone());
                let timeout = self.opts.connect_timeout;
                let insecure_ok = self.opts.allows_plaintext();
                let task = tokio::spawn(async move {
                    let r = connect(
                        &c,
                        &wss_endpoint,
                        &channel_arn,
                        clock_offset_ms,
                        timeout,
                        insecure_ok,
                    )
                    .await
                    .map(Box::new);
                    let _ = tx.send(Internal::Connected(r)).await;
                });
                self.step_task = StepTask::new(task.abort_handle(), "WebSocket connect");
                None
            }
            Action::CancelCall => {
                if let Some(step) = self.step_task.take()
                    && !step.task.is_finished()
                {
                    step.task.abort();
                    let why = format!(
                        "{} took longer than {} s (kvs.step_timeout_s)",
                        step.what,
                        self.opts.step_timeout.as_secs_f64()
                    );
                    warn!("KVS: {why}; abandoned");
                    self.stats.error(why);
                    if step.chain_ice {
                        // The refresher waits for this fetch; let it schedule a retry.
                        self.ice.on_failed(Instant::now());
                    }
                }
                None
            }
            Action::InvalidateCredentials => {
                info!("KVS: credentials refused; fetching fresh ones for the retry");
                self.control.invalidate_credentials().await;
                None
            }
            Action::SendPing => self.send(Message::Ping(bytes::Bytes::new())).await,
            Action::CloseSocket { cause } => {
                if let Some(mut ws) = self.ws.take() {
                    if cause != Cause::Initial {
                        info!(cause = cause.as_str(), "KVS: closing signaling connection");
                    }
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            WebSocketStream::close(&mut ws, None),
                        )
                        .await;
                    });
                }
                None
            }
        }
    }

    fn spawn_ice_fetch(
        &self,
        from_chain: bool,
        https: String,
        arn: ChannelArn,
    ) -> tokio::task::AbortHandle {
        debug!(from_chain, "KVS: GetIceServerConfig");
        let (c, tx) = (self.control.clone(), self.tx.clone());
        let task = tokio::spawn(async move {
            let result = c.ice_config(&https, &arn).await;
            let _ = tx
                .send(Internal::IceConfig {
                    from_chain,
                    result,
                    at: SystemTime::now(),
                })
                .await;
        });
        task.abort_handle()
    }

    /// Background refresh of TURN credentials, independent of the connection state.
    fn poll_ice_refresh(&mut self, now: Instant) {
        if !self.ice.poll_fetch(now) {
            return;
        }
        match (self.machine.channel_arn(), self.machine.endpoints()) {
            (Some(arn), Some(ep)) => {
                let (https, arn) = (ep.https.clone(), arn.clone());
                let _ = self.spawn_ice_fetch(false, https, arn);
            }
            // Not discovered yet; the connection chain will fetch.
            _ => self.ice.on_failed(now),
        }
    }

    fn api_failure(&self, err: &ControlError, local: SystemTime) -> Failure {
        let f = err.failure(local);
        // A service error body may quote the signed request.
        let err = redact_text(&err.to_string());
        if let Some(skew) = err_skew(f) {
            warn!(
                skew_s = skew,
                "KVS: clock skew of {skew} s against the service; correcting signing time ({err})"
            );
        } else {
            warn!("KVS: {err}");
        }
        self.stats.error(err);
        f
    }

    async fn internal(&mut self, msg: Internal) {
        let now = Instant::now();
        if matches!(
            msg,
            Internal::Described(..) | Internal::Endpoints(..) | Internal::IceConfig { .. }
        ) && let Some((server_date, local_date)) = self.control.last_server_clock()
        {
            self.event(Event::ServerClock {
                server_date,
                local_date,
            })
            .await;
        }
        match msg {
            Internal::Described(r, at) => {
                let r = r.map_err(|e| self.api_failure(&e, at));
                self.event(Event::Described(r)).await;
            }
            Internal::Endpoints(r, at) => {
                let r = r.map_err(|e| self.api_failure(&e, at));
                self.event(Event::GotEndpoints(r)).await;
            }
            Internal::IceConfig {
                from_chain,
                result,
                at,
            } => {
                let r = match result {
                    Ok(servers) => {
                        let n = servers.len();
                        debug!(turn_servers = n, "KVS: ICE config fetched");
                        self.ice.on_fetched(now, servers);
                        self.stats.ice_fetched(now, n);
                        Ok(())
                    }
                    Err(e) => {
                        self.ice.on_failed(now);
                        Err(self.api_failure(&e, at))
                    }
                };
                if from_chain {
                    self.event(Event::GotIceConfig(r)).await;
                }
            }
            Internal::Connected(r) => {
                if self.machine.state() != State::Connecting {
                    // Stopped meanwhile; drop the socket.
                    return;
                }
                match r {
                    Ok(ws) => {
                        self.ws = Some(ws);
                        self.event(Event::SocketOpened).await;
                        self.stats.connected(self.connect_cause, now);
                        info!(
                            cause = self.connect_cause.as_str(),
                            signaling_state = "connected",
                            "KVS signaling connected ({})",
                            self.connect_cause.as_str()
                        );
                    }
                    Err((why, f)) => {
                        let why = redact_text(&why);
                        warn!("KVS: WebSocket connect failed: {why}");
                        self.stats.error(why);
                        self.event(Event::ConnectFailed(f)).await;
                    }
                }
            }
            Internal::OfferDone {
                client_id,
                generation,
                started,
                trickle,
                result,
            } => {
                self.offer_done(client_id, generation, started, trickle, result)
                    .await
            }
            Internal::LocalCandidate {
                client_id,
                generation,
                json,
            } => {
                if !self.is_current(&client_id, generation) {
                    return;
                }
                let corr = self.correlation(message::Action::IceCandidate, &client_id);
                match message::build_candidate(&client_id, &json, Some(&corr)) {
                    Ok(text) => {
                        self.enqueue(message::Action::IceCandidate, &client_id, text);
                    }
                    Err(e) => {
                        warn!(viewer = %client_id, "KVS: local candidate not sent: {e}");
                        self.stats.error(e.to_string());
                    }
                }
            }
        }
    }

    fn correlation(&mut self, action: message::Action, recipient: &ClientId) -> String {
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.correlator
            .next(Instant::now(), unix_ms, action, recipient)
    }

    fn is_current(&self, client_id: &ClientId, generation: u64) -> bool {
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.generation == generation)
    }

    async fn offer_done(
        &mut self,
        client_id: ClientId,
        generation: u64,
        started: Instant,
        trickle: bool,
        result: Result<String, String>,
    ) {
        if !self.is_current(&client_id, generation) {
            debug!(viewer = %client_id, "KVS: answer for a superseded offer dropped");
            return;
        }
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                warn!(viewer = %client_id, "KVS: offer rejected by the session layer: {e}");
                self.stats.error(format!("offer from {client_id}: {e}"));
                self.sessions.remove(&client_id);
                self.pending.take(Instant::now(), &client_id);
                return;
            }
        };
        let corr = self.correlation(message::Action::SdpAnswer, &client_id);
        // A device with many interfaces can gather more candidates than the service's
        // 10 000-character payload takes; shed the least useful ones (RTCP duplicates, surplus
        // hosts) rather than not answer.
        let answer = crate::session::sdp::fit_answer(&answer, |sdp| {
            message::answer_payload_chars(sdp) <= message::MAX_PAYLOAD_CHARS
        });
        match message::build_answer(&client_id, &answer, &corr) {
            Ok(text) => {
                self.answer_started
                    .insert(client_id.clone(), (started, trickle));
                self.enqueue(message::Action::SdpAnswer, &client_id, text);
            }
            Err(e) => {
                warn!(viewer = %client_id, "KVS: answer not sent: {e}");
                self.stats.error(format!("answer to {client_id}: {e}"));
            }
        }
        // The remote description is applied now: hand over candidates that came early.
        if let Some(s) = self.sessions.get_mut(&client_id) {
            s.ready = true;
        }
        let early = self.pending.take(Instant::now(), &client_id);
        if !early.is_empty() {
            debug!(viewer = %client_id, n = early.len(), "KVS: flushing early candidates");
            let h = self.handler.clone();
            tokio::spawn(async move {
                for c in early {
                    h.remote_candidate(&client_id, &c).await;
                }
            });
        }
    }

    async fn frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let msg = match frame {
            None => {
                info!("KVS: signaling connection ended");
                self.ws = None;
                self.event(Event::SocketClosed { code: None }).await;
                return;
            }
            Some(Err(e)) => {
                warn!("KVS: signaling connection error: {e}");
                self.stats.error(format!("websocket: {e}"));
                self.ws = None;
                self.event(Event::SocketError).await;
                return;
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(t) => {
                self.event(Event::FrameReceived).await;
                self.text(t.as_str()).await;
            }
            Message::Binary(b) => {
                self.event(Event::FrameReceived).await;
                self.rejected(message::parse_binary(&b));
            }
            Message::Ping(_) => {
                self.event(Event::FrameReceived).await;
                // tungstenite queues the Pong; make sure it leaves now.
                if let Some(ws) = self.ws.as_mut() {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, ws.flush()).await;
                }
            }
            Message::Pong(_) => self.event(Event::PongReceived).await,
            Message::Close(c) => {
                let code = c.as_ref().map(|c| u16::from(c.code));
                info!(
                    code,
                    reason = c.as_ref().map(|c| c.reason.as_str()).unwrap_or(""),
                    "KVS: service closed the signaling connection"
                );
                self.ws = None;
                self.event(Event::SocketClosed { code }).await;
            }
            Message::Frame(_) => {}
        }
    }

    fn rejected(&self, r: Rejected) {
        self.stats.dropped_frame();
        match r {
            Rejected::Empty | Rejected::EndOfCandidates { .. } => debug!("KVS: ignored frame: {r}"),
            _ => warn!("KVS: dropped frame: {r}"),
        }
    }

    async fn text(&mut self, text: &str) {
        let now = Instant::now();
        let incoming = match message::parse_frame(text) {
            Ok(i) => i,
            Err(r) => return self.rejected(r),
        };
        self.stats.message_in();
        match incoming {
            Incoming::Offer { sender, sdp } => self.offer(sender, sdp, now),
            Incoming::Candidate {
                sender,
                candidate_json,
            } => {
                let ready = self.sessions.get(&sender).is_some_and(|s| s.ready);
                debug!(viewer = %sender, ready, "KVS: remote candidate");
                if ready {
                    let h = self.handler.clone();
                    tokio::spawn(async move { h.remote_candidate(&sender, &candidate_json).await });
                } else if !self.pending.push(now, &sender, candidate_json) {
                    debug!(viewer = %sender, "KVS: early candidate dropped (queue full)");
                }
            }
            Incoming::Status(s) => {
                let about = s
                    .correlation_id
                    .as_deref()
                    .and_then(|c| self.correlator.resolve(now, c));
                let what = match &about {
                    Some(sent) => format!("{} to {}", sent.action.as_str(), sent.recipient),
                    None => "unknown message".to_owned(),
                };
                if s.success == Some(true) {
                    debug!("KVS: {what} acknowledged");
                } else {
                    warn!(
                        correlation_id = s.correlation_id.as_deref().unwrap_or(""),
                        "KVS: service rejected {what}: {} {} {}",
                        s.status_code.as_deref().unwrap_or("?"),
                        s.error_type.as_deref().unwrap_or(""),
                        s.description.as_deref().unwrap_or("")
                    );
                    self.stats.error(format!(
                        "{what}: {}",
                        s.error_type.as_deref().unwrap_or("rejected")
                    ));
                }
            }
            Incoming::GoAway => {
                info!("KVS: GO_AWAY from the service; reconnecting");
                self.event(Event::GoAway).await;
            }
            Incoming::ReconnectIceServer => {
                info!(
                    "KVS: RECONNECT_ICE_SERVER from the service; refreshing ICE and reconnecting"
                );
                self.event(Event::ReconnectIceServer).await;
            }
            Incoming::Answer { sender, .. } => {
                debug!(viewer = %sender, "KVS: unexpected SDP_ANSWER ignored");
            }
        }
    }

    fn offer(&mut self, client_id: ClientId, sdp: String, now: Instant) {
        self.stats.offer_in();
        self.next_generation += 1;
        let generation = self.next_generation;
        if !self.sessions.contains_key(&client_id) && self.sessions.len() >= MAX_SESSIONS {
            // Forget the oldest viewer; its session (if any) lives on in the session layer.
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(
            client_id.clone(),
            Session {
                generation,
                ready: false,
                created: now,
            },
        );
        let trickle = offers_trickle(&sdp);
        let ice = self.ice.current(now);
        info!(
            viewer = %client_id,
            trickle,
            ice_servers = ice.len(),
            "KVS: offer received"
        );
        let handler = self.handler.clone();
        let tx = self.tx.clone();
        let limit = self.opts.gather_timeout + Duration::from_secs(5);
        tokio::spawn(async move {
            let (cand_tx, mut cand_rx) = if trickle {
                let (t, r) = mpsc::channel::<String>(64);
                (Some(t), Some(r))
            } else {
                (None, None)
            };
            let result =
                match tokio::time::timeout(limit, handler.offer(&client_id, &sdp, ice, cand_tx))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
                };
            let ok = result.is_ok();
            let done = Internal::OfferDone {
                client_id: client_id.clone(),
                generation,
                started: now,
                trickle,
                result,
            };
            if tx.send(done).await.is_err() || !ok {
                return;
            }
            if let Some(rx) = cand_rx.as_mut() {
                while let Some(json) = rx.recv().await {
                    let c = Internal::LocalCandidate {
                        client_id: client_id.clone(),
                        generation,
                        json,
                    };
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    fn can_send(&self) -> bool {
        self.ws.is_some() && self.machine.state() == State::Connected
    }

    /// A message the outbox gave up on (quota backlog, too old, connection gone).
    fn report_dropped(&self, d: &super::outbox::Dropped) {
        warn!(viewer = %d.recipient, "KVS: {} dropped: {}", d.action.as_str(), d.reason);
        self.stats.error(format!(
            "{} to {}: {}",
            d.action.as_str(),
            d.recipient,
            d.reason
        ));
    }

    fn enqueue(&mut self, action: message::Action, recipient: &ClientId, text: String) {
        if let Some(d) = self.outbox.push(Instant::now(), action, recipient, text) {
            self.report_dropped(&d);
        }
    }

    /// Sends whatever the quotas allow now.
    async fn flush_outbox(&mut self) {
        let now = Instant::now();
        for d in self.outbox.expire(now) {
            self.report_dropped(&d);
            if d.action == message::Action::SdpAnswer {
                self.answer_started.remove(&d.recipient);
            }
        }
        while self.can_send() {
            let Some((action, recipient, text)) = self.outbox.pop_ready(Instant::now()) else {
                break;
            };
            if !self.send_text(text).await {
                warn!(viewer = %recipient, "KVS: {} lost with the connection", action.as_str());
                break;
            }
            match action {
                message::Action::SdpAnswer => {
                    if let Some((started, trickle)) = self.answer_started.remove(&recipient) {
                        let ms = started.elapsed();
                        self.stats.answered(ms);
                        info!(
                            viewer = %recipient,
                            trickle,
                            offer_to_answer_ms = ms.as_millis() as u64,
                            "KVS: answered offer"
                        );
                    }
                }
                message::Action::IceCandidate => {
                    debug!(viewer = %recipient, "KVS: sent ICE candidate");
                }
            }
        }
    }

    /// Sends one message; a failed write is reported to the machine (which reconnects).
    async fn send_text(&mut self, text: String) -> bool {
        match self.send(Message::text(text)).await {
            None => {
                self.stats.message_out();
                true
            }
            Some(ev) => {
                self.event(ev).await;
                false
            }
        }
    }

    /// Writes one frame; returns the event to feed the machine if the write failed.
    async fn send(&mut self, msg: Message) -> Option<Event> {
        let Some(ws) = self.ws.as_mut() else {
            // The machine thinks we are connected but the socket is gone.
            return Some(Event::SocketError);
        };
        match tokio::time::timeout(SEND_TIMEOUT, ws.send(msg)).await {
            Ok(Ok(())) => {
                self.machine.handle(Instant::now(), Event::FrameSent);
                None
            }
            Ok(Err(e)) => {
                warn!("KVS: send failed: {e}");
                self.stats.error(format!("send: {e}"));
                self.ws = None;
                Some(Event::SocketError)
            }
            Err(_) => {
                warn!("KVS: send timed out");
                self.stats.error("send timed out".into());
                self.ws = None;
                Some(Event::SocketError)
            }
        }
    }
}

/// Seconds the local clock is behind (+) or ahead (−) of the service, for a clock failure.
fn err_skew(f: Failure) -> Option<i64> {
    match f {
        Failure::ClockSkew {
            server_date,
            local_date,
        } => Some(super::machine::offset_ms(server_date, local_date) / 1000),
        _ => None,
    }
}

/// True if the offer's SDP (session or any media level) has `a=ice-options:` with `trickle`.
pub fn offers_trickle(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.trim()
            .strip_prefix("a=ice-options:")
            .is_some_and(|opts| opts.split_whitespace().any(|o| o == "trickle"))
    })
}

async fn next_frame(
    ws: &mut Option<Box<Ws>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Presigns and opens the WebSocket; failures come back classified for the machine.
pub(crate) async fn connect(
    control: &ControlPlane,
    endpoint: &str,
    channel_arn: &ChannelArn,
    clock_offset_ms: i64,
    timeout: Duration,
    insecure_ok: bool,
) -> Result<Ws, (String, Failure)> {
    presign::check_scheme(endpoint, insecure_ok).map_err(|e| (e.to_string(), Failure::Other))?;
    let creds = control
        .credentials()
        .await
        .map_err(|e| (e.to_string(), Failure::Denied))?;
    let time = presign::signing_time(SystemTime::now(), clock_offset_ms);
    let url = presign::master_url(&creds, endpoint, channel_arn, control.region(), time)
        .map_err(|e| (e.to_string(), Failure::Other))?;
    // No Nagle: an answer and the candidates right behind it are small writes in a row, and
    // delaying them by an ACK round trip eats into a viewer's (or Alexa's) connect budget.
    let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true);
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err((
            format!("handshake timed out after {} s", timeout.as_secs()),
            Failure::Timeout,
        )),
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let date = resp
                .headers()
                .get("date")
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok());
            let error_type = resp
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(':').next().unwrap_or(s).to_owned());
            let body = resp
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(300)
                        .collect::<String>()
                })
                .unwrap_or_default();
            let f = classify(
                status,
                error_type.as_deref(),
                &body,
                date,
                SystemTime::now(),
            );
            let mut why = format!("HTTP {status}");
            if let Some(t) = &error_type {
                why.push(' ');
                why.push_str(t);
            }
            if !body.is_empty() {
                why.push_str(": ");
                why.push_str(&body);
            }
            if is_signature_time_error(&body) && date.is_none() {
                why.push_str(" (no Date header to correct the clock with)");
            }
            Err((why, f))
        }
        Ok(Err(e)) => Err((e.to_string(), Failure::Other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickle_detection_at_session_or_media_level() {
        let session = "v=0\r\na=ice-options:trickle\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        let media =
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-options:renomination trickle\r\n";
        let alexa = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-options:renomination\r\n";
        assert!(offers_trickle(session));
        assert!(offers_trickle(media));
        assert!(!offers_trickle(alexa));
        assert!(!offers_trickle("v=0\r\na=ice-options:trickles\r\n"));
    }
}
