//! `enroll`: first contact with the collector. Generates the device key, sends a CSR with the
//! one-time token over TLS pinned to the token's CA fingerprint, and saves the certificate, the
//! CA and `agent.toml` in the state directory.

use crate::config::{AgentConfig, Enrolment};
use crate::identity::{self, StatePaths};
use crate::tls;
use anyhow::{Context, bail};
use invigilator_proto::v1::{EnrollRequest, enrollment_client::EnrollmentClient};
use invigilator_proto::{EnrollmentToken, ca_fingerprint};
use std::path::Path;
use std::time::Duration;

pub struct Enrolled {
    pub agent_id: String,
    pub group: String,
}

pub async fn run(collector: &str, token: &str, state_dir: &Path) -> anyhow::Result<Enrolled> {
    let token = EnrollmentToken::parse(token)?;
    tls::parse_collector_url(collector)?;
    let paths = StatePaths::new(state_dir);
    if AgentConfig::path(state_dir).exists() {
        bail!(
            "{} is already enrolled; remove the state directory to enrol this device again",
            state_dir.display()
        );
    }
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    // Owner only (Unix), or SYSTEM and Administrators only (Windows), before the key is written.
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    #[cfg(windows)]
    crate::platform::windows::restrict_to_system_and_admins(state_dir).with_context(|| {
        format!(
            "cannot restrict {} to SYSTEM and Administrators (enrol as an administrator)",
            state_dir.display()
        )
    })?;

    let key = identity::generate_key(&paths)?;
    let channel = tls::channel(collector, tls::enrolment_config(&token.ca_fingerprint)?)?;
    let mut client = EnrollmentClient::new(channel);
    let mut req = tonic::Request::new(EnrollRequest {
        token: token.to_string(),
        csr_pem: identity::csr_pem(&key)?,
        hostname: crate::hostname(),
        os: crate::os_description(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    });
    req.set_timeout(Duration::from_secs(30));
    let resp = client
        .enroll(req)
        .await
        .map_err(|s| anyhow::anyhow!("the collector refused enrolment: {}", s.message()))?
        .into_inner();

    // The CA we will trust from now on must be the one the token pinned.
    let ca_der = identity::certs_from_pem(resp.ca_certificate_pem.as_bytes())
        .into_iter()
        .next()
        .context("the collector sent no CA certificate")?;
    if ca_fingerprint(&ca_der) != token.ca_fingerprint {
        bail!(
            "the CA certificate the collector sent does not match the enrolment token's fingerprint"
        );
    }
    identity::write_atomic(&paths.ca(), resp.ca_certificate_pem.as_bytes(), 0o644)?;
    identity::write_atomic(&paths.cert(), resp.certificate_pem.as_bytes(), 0o644)?;
    let cfg = AgentConfig::new(Enrolment {
        collector: collector.to_owned(),
        agent_id: resp.agent_id.clone(),
        group: resp.group.clone(),
    });
    // Written last: its presence means enrolment is complete.
    identity::write_atomic(
        &AgentConfig::path(state_dir),
        cfg.render().as_bytes(),
        0o600,
    )?;
    Ok(Enrolled {
        agent_id: resp.agent_id,
        group: resp.group,
    })
}
