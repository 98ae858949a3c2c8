//! The `Telemetry` gRPC service: event streams, heartbeats and certificate renewal, all over
//! mTLS. The agent's identity is the verified certificate's, never a message field.

use crate::admission::{Limit, Ticket};
use crate::committer::{Job, NotStored};
use crate::event_time::TimeWindow;
use crate::identity;
use crate::metrics::Refusal;
use crate::state::Shared;
use crate::store::{self, delivery};
use invigilator_policy::monitoring::{self, Device};
use invigilator_proto::MAX_BATCH_EVENTS;
use invigilator_proto::v1::{
    Ack, EventBatch, HeartbeatRequest, HeartbeatResponse, RenewRequest, RenewResponse,
    telemetry_server::Telemetry,
};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Batches one stream may have waiting for commit before it stops reading more.
const IN_FLIGHT_PER_STREAM: usize = 8;

pub struct TelemetryService {
    shared: Arc<Shared>,
}

impl TelemetryService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The caller's certificate and group, if it is enrolled, not revoked, and presents its
    /// current certificate. The one a renewal replaced is refused, except for `renew` itself:
    /// the agent may have missed the answer to its last renewal.
    async fn authorise<T>(
        &self,
        req: &Request<T>,
        renewing: bool,
    ) -> Result<(identity::PeerCert, String), Status> {
        let result = self.check_credentials(req, renewing).await;
        if result
            .as_ref()
            .is_err_and(|s| s.code() == tonic::Code::PermissionDenied)
        {
            self.shared.metrics.refused(Refusal::not_authorised);
        }
        result
    }

    async fn check_credentials<T>(
        &self,
        req: &Request<T>,
        renewing: bool,
    ) -> Result<(identity::PeerCert, String), Status> {
        let peer = identity::peer(req)?;
        credentials(&self.shared, peer, identity::Holder::Agent, renewing).await
    }
}

/// The verified certificate's holder and group, if it is enrolled, not revoked, of the kind
/// this service takes (`holder`), and presents its current certificate. The one a renewal replaced is refused, except to renew: the agent
/// may have missed the answer to its last renewal.
pub async fn credentials(
    shared: &Arc<Shared>,
    peer: identity::PeerCert,
    holder: identity::Holder,
    renewing: bool,
) -> Result<(identity::PeerCert, String), Status> {
    let agent_id = peer.agent_id.clone();
    shared.revocations.check(&agent_id)?;
    if peer.holder != holder {
        return Err(Status::permission_denied(match peer.holder {
            identity::Holder::Device => format!(
                "certificate of {agent_id} is a device's (device-cert create): it is taken only by the extension endpoint"
            ),
            identity::Holder::Agent => format!(
                "certificate of {agent_id} is an agent's: the extension endpoint takes only device certificates (device-cert create)"
            ),
        }));
    }
    let id = agent_id.clone();
    let found = shared
        .db(move |c| store::agents::credentials(&c.admin(), &id))
        .await?;
    let Some((group, current, previous)) = found else {
        return Err(Status::permission_denied(format!(
            "agent {agent_id} is revoked or unknown to this collector"
        )));
    };
    let is = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| identity::same_serial(s, &peer.serial))
    };
    if identity::same_serial(&current, &peer.serial) || (renewing && is(&previous)) {
        Ok((peer, group))
    } else {
        Err(Status::permission_denied(format!(
            "certificate {} of agent {agent_id} was replaced by a renewal; use the current one",
            peer.serial
        )))
    }
}

/// Checks a batch before anything of it is stored; the error names the first problem.
pub fn validate(batch: &EventBatch) -> Result<u64, Status> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(Status::invalid_argument(format!(
            "batch of {} events exceeds the limit of {MAX_BATCH_EVENTS}",
            batch.events.len()
        )));
    }
    let mut last = 0u64;
    for (i, e) in batch.events.iter().enumerate() {
        if e.seq == 0 || e.seq > i64::MAX as u64 {
            return Err(Status::invalid_argument(format!(
                "event {i}: seq {} is out of range",
                e.seq
            )));
        }
        if e.seq <= last {
            return Err(Status::invalid_argument(format!(
                "event {i}: seq {} does not increase (previous {last})",
                e.seq
            )));
        }
        last = e.seq;
        if e.kind.is_none() {
            return Err(Status::invalid_argument(format!(
                "event seq {}: no event kind",
                e.seq
            )));
        }
        if e.observed_at_us <= 0 {
            return Err(Status::invalid_argument(format!(
                "event seq {}: observed_at_us is not set",
                e.seq
            )));
        }
    }
    Ok(last)
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

/// One stream's reading side: everything it needs to turn messages into commit jobs.
struct Reader {
    shared: Arc<Shared>,
    agent: Arc<str>,
    group: Arc<str>,
    ticket: Ticket,
    epoch: i64,
    window: TimeWindow,
    errors: mpsc::Sender<Result<Ack, Status>>,
    pending: mpsc::Sender<Pending>,
}

type Pending = (
    u64,
    oneshot::Receiver<Result<store::StoredBatch, NotStored>>,
);

impl Reader {
    /// Reads, checks and queues batches in order until the stream ends, breaks, or a newer stream
    /// of the same agent replaces it. Over a quota it stops reading: the agent's events stay
    /// unacknowledged in its spool.
    async fn run(mut self, mut inbound: Streaming<EventBatch>) {
        loop {
            if !self.within_daily_quota().await {
                return;
            }
            let next = tokio::select! {
                m = inbound.message() => m,
                // An idle stream ends when its agent is revoked, not at its next message.
                () = self.shared.revocations.revoked(&self.agent) => {
                    self.shared.metrics.refused(Refusal::not_authorised);
                    return self.fail(identity::Revocations::refusal(&self.agent)).await;
                }
                _ = &mut self.ticket.superseded => {
                    self.shared.metrics.refused(Refusal::superseded);
                    return self.fail(Status::aborted(NotStored::Superseded.to_string())).await;
                }
            };
            let mut batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(status) => {
                    tracing::warn!(error = %status.message(), "event stream broke");
                    return self.fail(status).await;
                }
            };
            if let Err(status) = self.shared.revocations.check(&self.agent) {
                self.shared.metrics.refused(Refusal::not_authorised);
                return self.fail(status).await;
            }
            // The agent's budgets again: an old or rogue agent is held to them too.
            for event in &mut batch.events {
                invigilator_proto::limits::enforce(event);
            }
            let up_to = match validate(&batch) {
                Ok(last) => last,
                Err(status) => {
                    self.shared.metrics.refused(Refusal::malformed);
                    tracing::warn!(error = %status.message(), "rejected a malformed batch");
                    return self.fail(status).await;
                }
            };
            self.shared.touch(&self.agent, |_| {});
            if batch.events.is_empty() {
                continue;
            }
            let received = store::now_us();
            let mut moved = 0;
            for event in &mut batch.events {
                moved += usize::from(self.window.apply(event, received));
            }
            if moved > 0 {
                tracing::warn!(
                    events = moved,
                    "event times outside the accepted window were clamped"
                );
            }
            let bytes: usize = batch.events.iter().map(|e| e.encoded_len()).sum();
            let (wait, rate) = self
                .shared
                .admission
                .charge(&self.agent, bytes as u64, received);
            if let Some(wait) = wait {
                self.limited(
                    Limit::Rate,
                    format!(
                        "over {} MiB a minute",
                        self.shared.config.quotas.rate_mib_per_minute
                    ),
                )
                .await;
                if !self.sleep(wait).await {
                    return;
                }
            }
            let share = self.ticket.share();
            let room = tokio::select! {
                r = self.shared.admission.room(share, bytes) => r,
                _ = &mut self.ticket.superseded => None,
            };
            let Some(room) = room else {
                return;
            };
            let (reply, rx) = oneshot::channel();
            let job = Job {
                agent_id: self.agent.clone(),
                group: self.group.clone(),
                events: batch.events,
                bytes,
                room,
                epoch: self.epoch,
                rate,
                reply,
            };
            if self.shared.committer.submit(job).await.is_err()
                || self.pending.send((up_to, rx)).await.is_err()
            {
                return;
            }
        }
    }

    async fn fail(&self, status: Status) {
        let _ = self.errors.send(Err(status)).await;
    }

    /// Sleeps unless a newer stream replaces this one first; false if it did.
    async fn sleep(&mut self, d: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = &mut self.ticket.superseded => false,
        }
    }

    /// Waits while the agent is over its daily volume; false if the stream should end.
    async fn within_daily_quota(&mut self) -> bool {
        loop {
            let now = store::now_us();
            match self.shared.admission.over_daily(&self.agent, now) {
                Some(false) => return true,
                Some(true) => {
                    let limit = self.shared.config.quotas.daily_mib;
                    self.limited(Limit::Daily, format!("{limit} MiB stored today"))
                        .await;
                    let until_tomorrow = (delivery::next_day_us(now) - now).max(0) as u64;
                    let wait = std::time::Duration::from_micros(until_tomorrow)
                        .min(std::time::Duration::from_secs(60));
                    if !self.sleep(wait).await {
                        return false;
                    }
                }
                None => {}
            }
            // Today's figure from the store: another collector may have added to it.
            let id = self.agent.clone();
            match self
                .shared
                .db(move |c| delivery::used_on_day(c, &id, now))
                .await
            {
                Ok(used) => self.shared.admission.note_usage(&self.agent, now, used),
                Err(status) => {
                    self.fail(status).await;
                    return false;
                }
            }
            if self.shared.admission.over_daily(&self.agent, now) == Some(false) {
                return true;
            }
        }
    }

    async fn limited(&self, limit: Limit, what: String) {
        held_back(&self.shared, &self.agent, limit, what).await
    }
}

/// Raises the quota alert the first time in a day that `limit` holds the agent back.
pub async fn held_back(shared: &Arc<Shared>, agent: &Arc<str>, limit: Limit, what: String) {
    shared.metrics.refused(match limit {
        Limit::Rate => Refusal::rate_quota,
        Limit::Daily => Refusal::daily_quota,
        Limit::Streams => Refusal::stream_quota,
    });
    let now = store::now_us();
    if !shared.admission.first_hit_today(agent, limit, now) {
        return;
    }
    tracing::warn!(limit = limit.name(), "agent held back by its quota: {what}");
    let agent = agent.to_string();
    let version = shared.policy.load().version.clone();
    let result = shared
        .db(move |c| {
            let hostname = store::agents::hostname(&c.admin(), &agent)?.unwrap_or_default();
            let device = Device {
                agent_id: &agent,
                hostname: &hostname,
            };
            let alert = monitoring::quota(device, limit.name(), &what, store::now_us(), &version);
            store::alerts::record(c, &alert, 24 * 3600 * 1_000_000).map(|_| ())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e.message(), "could not record the quota alert");
    }
}

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<EventBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let (peer, group) = self.authorise(&req, false).await?;
        let agent_id = peer.agent_id;
        let span = tracing::info_span!("stream", agent_id = %agent_id);
        span.in_scope(|| tracing::debug!("event stream opened"));
        let agent: Arc<str> = agent_id.into();
        // The ration is taken here first (a churning agent costs the database nothing), then
        // in the database, which every collector shares. Only then is the stream the newest:
        // an older one, still open here or elsewhere, ends or has its batches refused at commit
        // (one live stream per agent across the fleet).
        let id = agent.clone();
        let ration = self.shared.admission.ration();
        let opened = match self.shared.admission.admit(&agent) {
            true => {
                self.shared
                    .db(move |c| store::delivery::open_stream(c, &id, store::now_us(), &ration))
                    .instrument(span.clone())
                    .await?
            }
            false => None,
        };
        let Some(opened) = opened else {
            let per_minute = self.shared.config.quotas.streams_per_minute;
            let what = format!("over {per_minute} new streams a minute");
            held_back(&self.shared, &agent, Limit::Streams, what.clone())
                .instrument(span)
                .await;
            return Err(Status::resource_exhausted(format!(
                "this agent opened {what}; retry later"
            )));
        };
        self.shared
            .admission
            .seed(&agent, opened.rate, store::now_us());
        let ticket = self.shared.admission.open(&agent);
        let epoch = opened.epoch;
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(IN_FLIGHT_PER_STREAM);
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(IN_FLIGHT_PER_STREAM);
        let cfg = &self.shared.config.ingest;
        let reader = Reader {
            shared: Arc::clone(&self.shared),
            agent: agent.clone(),
            group: group.into(),
            ticket,
            epoch,
            window: TimeWindow::of(cfg),
            errors: out_tx.clone(),
            pending: pending_tx,
        };
        tokio::spawn(reader.run(req.into_inner()).instrument(span.clone()));

        // Acknowledger: waits for each commit, in order, and acknowledges it.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(
            async move {
                while let Some((up_to, rx)) = pending_rx.recv().await {
                    let ack = match rx.await {
                        Ok(Ok(r)) => {
                            shared
                                .admission
                                .note_usage(&agent, r.committed_at_us, r.day_bytes);
                            Ok(Ack {
                                up_to_seq: up_to,
                                stored: r.stored,
                                duplicates: r.duplicates,
                            })
                        }
                        Ok(Err(e @ NotStored::Superseded)) => {
                            shared.metrics.refused(Refusal::superseded);
                            Err(Status::aborted(e.to_string()))
                        }
                        Ok(Err(e)) => Err(Status::unavailable(format!(
                            "collector could not store the batch: {e}"
                        ))),
                        Err(_) => Err(Status::unavailable("collector is shutting down")),
                    };
                    let failed = ack.is_err();
                    if out_tx.send(ack).await.is_err() || failed {
                        break;
                    }
                }
            }
            .instrument(span),
        );

        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let agent_id = self.authorise(&req, false).await?.0.agent_id;
        let hb = req.into_inner();
        let clip = |s: &str| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(255)
                .collect::<String>()
        };
        self.shared.touch(&agent_id, |h| {
            // Several heartbeats in one flush window: the last one's state, and the last
            // posture reported.
            let h = h.report.get_or_insert_default();
            h.hostname = clip(&hb.hostname);
            h.os = clip(&hb.os);
            h.agent_version = clip(&hb.agent_version);
            h.spool_depth = hb.spool_depth;
            h.dropped_total = hb.dropped_total;
            h.last_seq = hb.last_seq;
            h.process_source = clip(&hb.process_source);
            h.process_fallback = clip(&hb.process_fallback);
            if let Some(b) = reported_posture(&hb) {
                h.browsers = Some(b);
            }
            if let Some(s) = hb.process_stats {
                h.process_stats = store::agents::ProcessStats {
                    seen: s.seen,
                    dropped: s.dropped,
                    truncated: s.truncated,
                };
            }
        });
        Ok(Response::new(HeartbeatResponse {
            server_time_us: store::now_us(),
            // store::visits links the two reports of a visit.
            links_visits: true,
        }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let (peer, _) = self.authorise(&req, true).await?;
        let agent_id = peer.agent_id;
        let csr = req.into_inner().csr_pem;
        let issued = self
            .shared
            .ca
            .renew_agent_cert(
                &csr,
                &agent_id,
                self.shared.config.agents.cert_validity,
                &peer.public_key,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (id, serial, not_after) = (
            agent_id.clone(),
            issued.serial.clone(),
            issued.not_after.timestamp_micros(),
        );
        self.shared
            .db(move |c| store::agents::record_renewal(&c.admin(), &id, &serial, not_after))
            .await?;
        tracing::info!(agent_id = %agent_id, serial = %issued.serial, "certificate renewed");
        Ok(Response::new(RenewResponse {
            certificate_pem: issued.pem,
        }))
    }
}

/// Browsers a heartbeat may describe, and problems kept per browser: a device cannot make the
/// agents table grow without bound.
const MAX_BROWSERS: usize = 8;
const MAX_PROBLEMS: usize = 4;
const MAX_USERS: usize = 8;

/// The posture a heartbeat reports, if it reports one: an older agent's empty list says
/// nothing, a current agent's says no browser is installed (what was held is cleared).
fn reported_posture(
    hb: &invigilator_proto::v1::HeartbeatRequest,
) -> Option<store::agents::BrowserPosture> {
    (hb.browsers_read || !hb.browsers.is_empty()).then(|| posture(&hb.browsers))
}

/// A heartbeat's browser posture, bounded and with every string clipped, as the store keeps it.
fn posture(browsers: &[invigilator_proto::v1::BrowserPosture]) -> store::agents::BrowserPosture {
    let clip = |s: &str, n: usize| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(n)
            .collect::<String>()
    };
    let list: Vec<serde_json::Value> = browsers
        .iter()
        .take(MAX_BROWSERS)
        .map(|b| {
            serde_json::json!({
                "browser": clip(&b.browser, 16),
                "private_unseen": b.private_unseen,
                "extension_forced": b.extension_forced,
                "developer_mode": b.developer_mode,
                "problems": b.problems.iter().take(MAX_PROBLEMS).map(|p| clip(p, 300)).collect::<Vec<_>>(),
                "extension_missing_for": b.extension_missing_for.iter().take(MAX_USERS).map(|u| clip(u, 64)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let unseen: Vec<String> = list
        .iter()
        .filter(|b| b["private_unseen"] == true)
        .filter_map(|b| b["browser"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<String> = list
        .iter()
        .filter_map(|b| {
            let users: Vec<&str> = b["extension_missing_for"]
                .as_array()?
                .iter()
                .filter_map(|u| u.as_str())
                .collect();
            (!users.is_empty()).then(|| {
                format!(
                    "{}: {}",
                    b["browser"].as_str().unwrap_or(""),
                    users.join(", ")
                )
            })
        })
        .collect();
    store::agents::BrowserPosture {
        json: serde_json::Value::Array(list).to_string(),
        unseen: unseen.join(", "),
        missing: missing.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeats_browser_posture_is_bounded() {
        let b = |name: &str, unseen: bool| invigilator_proto::v1::BrowserPosture {
            browser: name.into(),
            private_unseen: unseen,
            problems: vec!["x\u{1b}[31m".repeat(500); 10],
            ..Default::default()
        };
        let mut many = vec![b("chromium\n<script>", true), b("firefox", false)];
        many.extend((0..20).map(|_| b("brave", true)));
        let p = posture(&many);
        let list: Vec<serde_json::Value> = serde_json::from_str(&p.json).unwrap();
        assert_eq!(list.len(), MAX_BROWSERS);
        assert_eq!(
            list[0]["browser"], "chromium<script>",
            "no control characters"
        );
        assert_eq!(list[0]["problems"].as_array().unwrap().len(), MAX_PROBLEMS);
        assert_eq!(
            list[0]["problems"][0].as_str().unwrap().chars().count(),
            300
        );
        assert!(
            p.unseen.starts_with("chromium<script>, brave"),
            "{}",
            p.unseen
        );
        assert!(!p.unseen.contains("firefox"));
        let gone = invigilator_proto::v1::BrowserPosture {
            browser: "firefox".into(),
            extension_missing_for: (0..20).map(|i| format!("pupil{i}")).collect(),
            ..Default::default()
        };
        let p = posture(&[b("chromium", false), gone]);
        assert_eq!(p.missing.matches("pupil").count(), MAX_USERS);
        assert!(
            p.missing.starts_with("firefox: pupil0, pupil1"),
            "{}",
            p.missing
        );
    }

    #[test]
    fn an_empty_posture_clears_only_when_the_agent_read_the_browsers() {
        use invigilator_proto::v1::HeartbeatRequest;
        let old_agent = HeartbeatRequest::default();
        assert!(reported_posture(&old_agent).is_none(), "says nothing");
        let none_installed = HeartbeatRequest {
            browsers_read: true,
            ..Default::default()
        };
        let p = reported_posture(&none_installed).expect("clears what was held");
        assert_eq!(
            (p.json.as_str(), p.unseen.as_str(), p.missing.as_str()),
            ("[]", "", "")
        );
    }
    use invigilator_proto::v1::{Event, Gap, event::Kind};

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            observed_at_us: 1,
            kind: Some(Kind::Gap(Gap::default())),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = EventBatch {
            events: vec![ev(1), ev(2), ev(5)],
        };
        assert_eq!(validate(&ok).unwrap(), 5);
        let cases = [
            (vec![ev(0)], "out of range"),
            (vec![ev(3), ev(3)], "does not increase"),
            (
                vec![Event {
                    kind: None,
                    ..ev(1)
                }],
                "no event kind",
            ),
            (
                vec![Event {
                    observed_at_us: 0,
                    ..ev(1)
                }],
                "observed_at_us",
            ),
            (
                (1..=MAX_BATCH_EVENTS as u64 + 1).map(ev).collect(),
                "exceeds the limit",
            ),
        ];
        for (events, want) in cases {
            let err = validate(&EventBatch { events }).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains(want), "{}", err.message());
        }
    }
}
