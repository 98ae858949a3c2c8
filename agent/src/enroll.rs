//! `enroll`: first contact with the collector. Generates the device key, sends a CSR with the
//! one-time token over TLS pinned to the token's CA fingerprint, and saves the certificate, the
//! CA and `agent.toml` in the state directory.

use crate::config::{AgentConfig, Enrolment};
use crate::dial::Collectors;
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

/// Removes the key and certificates of an enrolment that did not complete (see `run`).
struct PartialEnrolment<'a>(Option<&'a StatePaths>);

impl Drop for PartialEnrolment<'_> {
    fn drop(&mut self) {
        if let Some(paths) = self.0 {
            for file in [paths.key(), paths.cert(), paths.ca()] {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// Says who said no: the collector (its answers carry these codes) or the connection (TLS
/// refusing a collector that is not the token's, nothing listening, a timeout).
fn enrol_error(collector: &str, status: &tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::ResourceExhausted => {
            anyhow::anyhow!("the collector refused enrolment: {}", status.message())
        }
        _ => anyhow::anyhow!(
            "cannot enrol with {collector}: {}",
            status.message().trim_start_matches("unexpected error: ")
        ),
    }
}

/// This device's enrolment, if the state directory holds a complete one.
pub fn existing(state_dir: &Path) -> anyhow::Result<Option<Enrolled>> {
    if !AgentConfig::path(state_dir).exists() {
        return Ok(None);
    }
    let cfg = AgentConfig::load(state_dir)?;
    Ok(Some(Enrolled {
        agent_id: cfg.agent.agent_id,
        group: cfg.agent.group,
    }))
}

/// The file that tells [`forget`] an upgrade is under way (see [`mark_upgrade`]).
const UPGRADE_MARKER: &str = "upgrading";
/// How long a marker protects the state directory: longer than any install takes, short
/// enough that a real uninstall after a failed upgrade still removes everything.
const UPGRADE_MARKER_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What [`forget`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Forgot {
    Removed,
    /// There was nothing to remove.
    Absent,
    /// An upgrade is under way: the old version's uninstall must not take the identity away.
    KeptForUpgrade,
}

/// Notes that an upgrade is under way, for the old version's uninstall that follows: the
/// installer runs it just before removing the old version. (Windows Installer also tells the
/// old version it is being upgraded; Wine does not, so the agent keeps its own note.)
pub fn mark_upgrade(state_dir: &Path) -> anyhow::Result<()> {
    if !state_dir.exists() {
        return Ok(()); // nothing enrolled, nothing to keep
    }
    let path = state_dir.join(UPGRADE_MARKER);
    std::fs::write(&path, unix_secs_now().to_string())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn unix_secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Deletes the note of [`mark_upgrade`] once the upgrade is over (the new version's service
/// has started), so that a real uninstall soon after still removes everything.
pub fn clear_upgrade_mark(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(UPGRADE_MARKER));
}

/// True (and the marker consumed) when [`mark_upgrade`] ran within the last hour.
fn upgrade_under_way(state_dir: &Path) -> bool {
    let path = state_dir.join(UPGRADE_MARKER);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let _ = std::fs::remove_file(&path);
    let now = unix_secs_now();
    text.trim()
        .parse::<u64>()
        .is_ok_and(|at| at <= now && now - at < UPGRADE_MARKER_TTL.as_secs())
}

/// Deletes the state directory and everything in it (key, certificates, settings, spool),
/// unless an upgrade is under way. Refuses a directory that is not an agent's (no `agent.toml`
/// and no key), so a mistyped path cannot delete something else.
pub fn forget(state_dir: &Path) -> anyhow::Result<Forgot> {
    if !state_dir.exists() {
        return Ok(Forgot::Absent);
    }
    if upgrade_under_way(state_dir) {
        return Ok(Forgot::KeptForUpgrade);
    }
    let paths = StatePaths::new(state_dir);
    if !AgentConfig::path(state_dir).exists() && !paths.key().exists() {
        bail!(
            "{} does not look like an agent's state directory (no agent.toml, no key): not removed",
            state_dir.display()
        );
    }
    std::fs::remove_dir_all(state_dir)
        .with_context(|| format!("cannot remove {}", state_dir.display()))?;
    Ok(Forgot::Removed)
}

pub async fn run(
    collector: &Collectors,
    token: &str,
    state_dir: &Path,
) -> anyhow::Result<Enrolled> {
    let token = EnrollmentToken::parse(token)?;
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
    // A directory that already existed keeps its mode through `create`: make it private too.
    #[cfg(unix)]
    std::fs::set_permissions(
        state_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot make {} private (0700)", state_dir.display()))?;
    #[cfg(windows)]
    crate::platform::windows::restrict_to_system_and_admins(state_dir).with_context(|| {
        format!(
            "cannot restrict {} to SYSTEM and Administrators (enrol as an administrator)",
            state_dir.display()
        )
    })?;

    // Until agent.toml is written, a failure removes what this attempt wrote: no orphan key
    // is left for nobody (an installer's failed enrolment rolls back cleanly).
    let mut partial = PartialEnrolment(Some(&paths));
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
        .map_err(|s| enrol_error(&collector.to_string(), &s))?
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
        collector: collector.clone(),
        agent_id: resp.agent_id.clone(),
        group: resp.group.clone(),
    });
    // Written last: its presence means enrolment is complete.
    identity::write_atomic(
        &AgentConfig::path(state_dir),
        cfg.render().as_bytes(),
        0o600,
    )?;
    partial.0 = None;
    Ok(Enrolled {
        agent_id: resp.agent_id,
        group: resp.group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AgentConfig::new(Enrolment {
            collector: Collectors::new(["https://collector.school.lan:7443".into()]).unwrap(),
            agent_id: "agt-123".into(),
            group: "library".into(),
        });
        std::fs::write(AgentConfig::path(dir.path()), cfg.render()).unwrap();
        std::fs::write(dir.path().join("spool.db"), b"undelivered").unwrap();
        dir
    }

    #[test]
    fn an_existing_enrolment_is_read_back_for_upgrades() {
        let dir = enrolled_dir();
        let e = existing(dir.path()).unwrap().expect("enrolled");
        assert_eq!(
            (e.agent_id.as_str(), e.group.as_str()),
            ("agt-123", "library")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(existing(empty.path()).unwrap().is_none());
        // A corrupt agent.toml is an error, not "not enrolled" (which would re-enrol).
        std::fs::write(AgentConfig::path(empty.path()), "agent = [").unwrap();
        assert!(existing(empty.path()).is_err());
    }

    #[test]
    fn forget_removes_an_agents_directory_and_nothing_else() {
        let dir = enrolled_dir();
        let state = dir.path().join("state");
        std::fs::rename(dir.path().join("agent.toml"), dir.path().join("a.toml")).unwrap();
        std::fs::create_dir(&state).unwrap();
        std::fs::rename(dir.path().join("a.toml"), AgentConfig::path(&state)).unwrap();
        assert_eq!(forget(&state).unwrap(), Forgot::Removed);
        assert!(!state.exists());
        assert_eq!(forget(&state).unwrap(), Forgot::Absent);

        let precious = dir.path().join("documents");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("essay.docx"), b"mine").unwrap();
        let err = forget(&precious).unwrap_err().to_string();
        assert!(
            err.contains("does not look like an agent's state directory"),
            "{err}"
        );
        assert!(precious.join("essay.docx").exists());
    }

    #[test]
    fn enrolment_errors_say_who_refused() {
        let c = "https://collector:7443";
        let refused = enrol_error(c, &tonic::Status::permission_denied("token expired"));
        assert_eq!(
            refused.to_string(),
            "the collector refused enrolment: token expired"
        );
        let tls = enrol_error(
            c,
            &tonic::Status::unknown(
                "unexpected error: the collector's certificate chain does not contain the CA pinned by the enrolment token",
            ),
        );
        assert_eq!(
            tls.to_string(),
            "cannot enrol with https://collector:7443: the collector's certificate chain does not contain the CA pinned by the enrolment token"
        );
    }

    #[test]
    fn an_upgrade_keeps_the_identity_once() {
        let dir = enrolled_dir();
        mark_upgrade(dir.path()).unwrap();
        // The old version's uninstall, during the upgrade: kept, and the note used up.
        assert_eq!(forget(dir.path()).unwrap(), Forgot::KeptForUpgrade);
        assert!(AgentConfig::path(dir.path()).exists());
        assert!(!dir.path().join(UPGRADE_MARKER).exists());
        // A later, real uninstall removes everything.
        assert_eq!(forget(dir.path()).unwrap(), Forgot::Removed);
        assert!(!dir.path().exists());
    }

    #[test]
    fn a_stale_or_garbled_upgrade_note_protects_nothing() {
        for note in ["1000", "not a time", "99999999999999999999", ""] {
            let dir = enrolled_dir();
            std::fs::write(dir.path().join(UPGRADE_MARKER), note).unwrap();
            assert_eq!(forget(dir.path()).unwrap(), Forgot::Removed, "{note:?}");
        }
        // Not enrolled: no note is written, nothing is created.
        let none = tempfile::tempdir().unwrap();
        let missing = none.path().join("Invigilator");
        mark_upgrade(&missing).unwrap();
        assert!(!missing.exists());
    }
}
