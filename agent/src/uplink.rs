//! The uplink: streams spooled events to the collector and deletes them once acknowledged.
//!
//! At-least-once: a batch stays in the spool until the collector says it is committed; after
//! any failure the next session starts again from the oldest unacknowledged event, and the
//! collector's (agent_id, seq) key turns the resend into a no-op.

use crate::config::UplinkConfig;
use crate::spool::Spool;
use invigilator_proto::MAX_MESSAGE_BYTES;
use invigilator_proto::v1::{EventBatch, telemetry_client::TelemetryClient};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("collector: {0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("the collector closed the stream")]
    Closed,
}

pub struct Uplink {
    pub cfg: UplinkConfig,
    pub spool: Arc<Spool>,
    /// Last seq stored in the spool; changes when there is something new to send.
    pub last_seq: watch::Receiver<u64>,
    /// The current channel; replaced when the certificate is renewed.
    pub channel: watch::Receiver<Channel>,
}

impl Uplink {
    /// Runs forever: one session after another, with jittered exponential backoff between.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            match self.session().await {
                Ok(acked) => {
                    if acked {
                        failures = 0;
                    }
                    tracing::debug!("uplink session ended; reconnecting");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "uplink session failed");
                }
            }
            tokio::time::sleep(backoff(failures, self.cfg.reconnect_max)).await;
        }
    }

    /// One stream. Returns Ok(true) if the collector acknowledged anything.
    async fn session(&mut self) -> Result<bool, UplinkError> {
        let channel = self.channel.borrow_and_update().clone();
        let mut client = TelemetryClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<EventBatch>(self.cfg.window);
        let mut acks = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!("connected to the collector");

        let mut sent_up_to = 0u64; // everything still spooled is unacknowledged: start from the oldest
        let mut in_flight = 0usize;
        let mut acked_any = false;
        loop {
            while in_flight < self.cfg.window {
                let events = self.spool.read_after(
                    sent_up_to,
                    self.cfg.max_batch,
                    self.cfg.max_batch_bytes,
                )?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                if tx.send(EventBatch { events }).await.is_err() {
                    return Err(UplinkError::Closed);
                }
                sent_up_to = last;
                in_flight += 1;
            }
            tokio::select! {
                ack = acks.message() => match ack? {
                    Some(ack) => {
                        self.spool.ack(ack.up_to_seq)?;
                        in_flight = in_flight.saturating_sub(1);
                        acked_any = true;
                        tracing::trace!(up_to = ack.up_to_seq, stored = ack.stored, duplicates = ack.duplicates, "acknowledged");
                    }
                    None => return Err(UplinkError::Closed),
                },
                changed = self.last_seq.changed() => {
                    if changed.is_err() {
                        return Ok(acked_any); // the agent is stopping
                    }
                }
                _ = self.channel.changed() => {
                    tracing::info!("certificate renewed; reconnecting with it");
                    return Ok(acked_any);
                }
            }
        }
    }
}

/// 0.5 s doubling up to `max`, each wait drawn from its upper half so that a school's worth of
/// agents coming back after a collector outage do not all reconnect in the same instant.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::from_millis(200);
    }
    let base = Duration::from_millis(500)
        .saturating_mul(1 << failures.min(16))
        .min(max);
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(60);
        assert!(backoff(1, max) <= Duration::from_secs(1));
        for f in [10, 20, 1000] {
            let b = backoff(f, max);
            assert!(b >= Duration::from_secs(30) && b <= max, "{b:?}");
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff(8, max)).collect();
        assert!(draws.len() > 1, "jitter");
    }
}
