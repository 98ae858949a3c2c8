//! Heartbeats (the collector's proof that monitoring is running on this device, with the
//! spool's health) and certificate renewal before expiry.

use crate::identity::{self, StatePaths};
use crate::spool::Spool;
use crate::tls;
use invigilator_proto::v1::{HeartbeatRequest, RenewRequest, telemetry_client::TelemetryClient};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

pub struct Heartbeat {
    pub interval: Duration,
    pub spool: Arc<Spool>,
    pub paths: StatePaths,
    pub collector: crate::dial::Collectors,
    /// Read at each beat: the process source may fall back while running.
    pub process_source: crate::sources::process::RunningMode,
    pub channel: watch::Sender<Channel>,
    /// Told from each answer whether the collector links the reports of one visit.
    pub once: Arc<crate::one_report::OneReport>,
    /// The browsers' posture and the extension's tamper check, reported with each beat.
    #[cfg(any(target_os = "linux", windows))]
    pub browsers: Arc<crate::posture::BrowserWatch>,
}

impl Heartbeat {
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewal: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e.message(), "heartbeat not delivered");
                continue;
            }
            match self.renew_if_due(&mut last_renewal).await {
                Ok(true) => tracing::info!("client certificate renewed"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "certificate renewal failed; will retry"),
            }
        }
    }

    fn client(&self) -> TelemetryClient<Channel> {
        TelemetryClient::new(self.channel.borrow().clone())
    }

    async fn beat(&self) -> Result<(), tonic::Status> {
        let s = self.spool.stats();
        #[cfg(any(target_os = "linux", windows))]
        let (browsers, browsers_read) = {
            let watch = Arc::clone(&self.browsers);
            match tokio::task::spawn_blocking(move || watch.report()).await {
                Ok(b) => (b, true),
                Err(_) => (Vec::new(), false),
            }
        };
        #[cfg(not(any(target_os = "linux", windows)))]
        let (browsers, browsers_read) = (Vec::new(), false);
        let mut req = tonic::Request::new(HeartbeatRequest {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            os: crate::os_description(),
            hostname: crate::hostname(),
            spool_depth: s.depth,
            spool_bytes: s.bytes,
            dropped_total: s.dropped_total,
            last_seq: s.last_seq,
            process_source: self.process_source.get().as_str().into(),
            process_stats: self.process_source.stats(),
            process_fallback: self.process_source.fallback(),
            browsers,
            browsers_read,
        });
        req.set_timeout(Duration::from_secs(15));
        let answer = self.client().heartbeat(req).await?.into_inner();
        self.once.collector_links(answer.links_visits);
        Ok(())
    }

    /// Renews when less than a third of the certificate's lifetime is left. The key stays the
    /// same, so only the certificate file changes, atomically. The device clock decides when,
    /// but a clock far ahead would find every new certificate due at once: after a renewal the
    /// next waits at least a third of the lifetime by the monotonic clock.
    async fn renew_if_due(
        &self,
        last_renewal: &mut Option<std::time::Instant>,
    ) -> anyhow::Result<bool> {
        let (not_before, not_after) = identity::cert_validity(&self.paths)?;
        let now = crate::sources::now_us() / 1_000_000;
        let third = (not_after - not_before) / 3;
        if not_after - now > third {
            return Ok(false);
        }
        let min_gap = Duration::from_secs(third.max(1) as u64);
        if last_renewal.is_some_and(|t| t.elapsed() < min_gap) {
            return Ok(false);
        }
        let key = identity::load_key(&self.paths)?;
        let mut req = tonic::Request::new(RenewRequest {
            csr_pem: identity::csr_pem(&key)?,
        });
        req.set_timeout(Duration::from_secs(30));
        let pem = self.client().renew(req).await?.into_inner().certificate_pem;
        if identity::certs_from_pem(pem.as_bytes()).is_empty() {
            anyhow::bail!("the collector's renewal response holds no certificate");
        }
        identity::write_atomic(&self.paths.cert(), pem.as_bytes(), 0o644)?;
        *last_renewal = Some(std::time::Instant::now());
        let channel = tls::channel(&self.collector, tls::mtls_config(&self.paths)?)?;
        self.channel.send_replace(channel);
        Ok(true)
    }
}
