//! The `Telemetry` gRPC service: event streams, heartbeats and certificate renewal, all over
//! mTLS. The agent's identity is the verified certificate's, never a message field.

use crate::committer::Job;
use crate::identity;
use crate::state::Shared;
use crate::store;
use invigilator_proto::MAX_BATCH_EVENTS;
use invigilator_proto::v1::{
    Ack, EventBatch, HeartbeatRequest, HeartbeatResponse, RenewRequest, RenewResponse,
    telemetry_server::Telemetry,
};
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

    /// The caller's agent id and group, if it is enrolled and not revoked.
    async fn authorise<T>(&self, req: &Request<T>) -> Result<(String, String), Status> {
        let agent_id = identity::agent_id(req)?;
        self.shared.revocations.check(&agent_id)?;
        let id = agent_id.clone();
        let group = self
            .shared
            .db(move |c| store::agents::active_group(c, &id))
            .await?;
        match group {
            Some(g) => Ok((agent_id, g)),
            None => Err(Status::permission_denied(format!(
                "agent {agent_id} is revoked or unknown to this collector"
            ))),
        }
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

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<EventBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let (agent_id, group) = self.authorise(&req).await?;
        let span = tracing::info_span!("stream", agent_id = %agent_id);
        span.in_scope(|| tracing::debug!("event stream opened"));
        let mut inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(IN_FLIGHT_PER_STREAM);
        let (pending_tx, mut pending_rx) = mpsc::channel::<(
            u64,
            oneshot::Receiver<Result<store::StoredBatch, String>>,
        )>(IN_FLIGHT_PER_STREAM);
        let shared = Arc::clone(&self.shared);
        let agent: Arc<str> = agent_id.into();
        let group: Arc<str> = group.into();

        // Reader: validates batches and queues them for commit, in order.
        let errors = out_tx.clone();
        tokio::spawn(
            async move {
                loop {
                    let mut batch = match inbound.message().await {
                        Ok(Some(b)) => b,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "event stream broke");
                            let _ = errors.send(Err(status)).await;
                            break;
                        }
                    };
                    if let Err(status) = shared.revocations.check(&agent) {
                        let _ = errors.send(Err(status)).await;
                        break;
                    }
                    // The agent's budgets again: an old or rogue agent is held to them too.
                    for event in &mut batch.events {
                        invigilator_proto::limits::enforce(event);
                    }
                    let up_to = match validate(&batch) {
                        Ok(last) => last,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "rejected a malformed batch");
                            let _ = errors.send(Err(status)).await;
                            break;
                        }
                    };
                    shared.touch(&agent, |_| {});
                    if batch.events.is_empty() {
                        continue;
                    }
                    let (reply, rx) = oneshot::channel();
                    let job = Job {
                        agent_id: agent.clone(),
                        group: group.clone(),
                        events: batch.events,
                        reply,
                    };
                    if shared.committer.submit(job).await.is_err()
                        || pending_tx.send((up_to, rx)).await.is_err()
                    {
                        break;
                    }
                }
            }
            .instrument(span.clone()),
        );

        // Acknowledger: waits for each commit, in order, and acknowledges it.
        tokio::spawn(
            async move {
                while let Some((up_to, rx)) = pending_rx.recv().await {
                    let ack = match rx.await {
                        Ok(Ok(r)) => Ok(Ack {
                            up_to_seq: up_to,
                            stored: r.stored,
                            duplicates: r.duplicates,
                        }),
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
        let (agent_id, _) = self.authorise(&req).await?;
        let hb = req.into_inner();
        let clip = |s: &str| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(255)
                .collect::<String>()
        };
        self.shared.touch(&agent_id, |h| {
            h.hostname = clip(&hb.hostname);
            h.os = clip(&hb.os);
            h.agent_version = clip(&hb.agent_version);
            h.spool_depth = hb.spool_depth;
            h.dropped_total = hb.dropped_total;
            h.last_seq = hb.last_seq;
            h.process_source = clip(&hb.process_source);
        });
        Ok(Response::new(HeartbeatResponse {
            server_time_us: store::now_us(),
        }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let (agent_id, _) = self.authorise(&req).await?;
        let csr = req.into_inner().csr_pem;
        let issued = self
            .shared
            .ca
            .issue_agent_cert(&csr, &agent_id, self.shared.config.agents.cert_validity)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (id, serial, not_after) = (
            agent_id.clone(),
            issued.serial.clone(),
            issued.not_after.timestamp_micros(),
        );
        self.shared
            .db(move |c| store::agents::record_renewal(c, &id, &serial, not_after))
            .await?;
        tracing::info!(agent_id = %agent_id, serial = %issued.serial, "certificate renewed");
        Ok(Response::new(RenewResponse {
            certificate_pem: issued.pem,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
