//! The collector's private certificate authority (rcgen).
//!
//! `init` creates a CA and a server certificate for the names agents will dial. The CA then
//! signs agent CSRs at enrolment and renewal. The identity of an agent is the common name of
//! its certificate, a random UUID chosen here, never anything the agent asked for.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Certificates are back-dated by up to this much (a tenth of their lifetime at most, so that
/// agents can still tell when a third of it is left) so that a device whose clock runs a little
/// slow still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
const SERVER_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite an existing CA")]
    Exists { path: PathBuf },
    #[error("certificate signing request rejected: {0}")]
    BadCsr(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// File locations of the PKI inside the data directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// A loaded CA, able to sign.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub fingerprint: String,
}

/// Who a client certificate is for, written as its subject's organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An enrolled agent (every certificate before devices existed says so).
    Agent,
    /// A device with no agent, whose browser extension posts to the extension endpoint.
    Device,
}

impl Holder {
    pub fn organisation(self) -> &'static str {
        match self {
            Self::Agent => "Invigilator agents",
            Self::Device => "Invigilator devices",
        }
    }
}

/// A freshly issued agent certificate.
#[derive(Debug)]
pub struct IssuedCert {
    pub pem: String,
    pub serial: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.into(),
        source,
    })
}

/// Writes a file readable only by its owner (keys) or by everyone (certificates).
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW.min(lifetime / 10);
    params.not_after = now + lifetime;
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// Creates the CA and the server certificate in `paths.dir`. Refuses to overwrite.
pub fn init(paths: &PkiPaths, server_names: &[String]) -> Result<CertificateAuthority, PkiError> {
    make_dir(paths)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Invigilator");
    dn.push(DnType::CommonName, "Invigilator collector CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.serial_number = Some(random_serial());
    validity(&mut ca_params, CA_VALIDITY);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_file(&paths.ca_key(), &ca_key.serialize_pem(), true)?;
    write_file(&paths.ca_cert(), &ca_cert.pem(), false)?;
    issue_server_cert(paths, server_names)
}

/// Takes `from`'s CA (another collector's, sharing its database) and issues this collector's
/// own server certificate with it: an agent enrolled by either is accepted by both, and pins
/// the same CA whichever it dials. Refuses to overwrite.
pub fn join(
    paths: &PkiPaths,
    server_names: &[String],
    from: &PkiPaths,
) -> Result<CertificateAuthority, PkiError> {
    // Loaded first: a copy that is not a working CA is refused before anything is written.
    let theirs = CertificateAuthority::load(from)?;
    make_dir(paths)?;
    write_file(&paths.ca_key(), &read(&from.ca_key())?, true)?;
    write_file(&paths.ca_cert(), &theirs.cert_pem, false)?;
    issue_server_cert(paths, server_names)
}

fn make_dir(paths: &PkiPaths) -> Result<(), PkiError> {
    if paths.ca_key().exists() {
        return Err(PkiError::Exists {
            path: paths.ca_key(),
        });
    }
    std::fs::create_dir_all(&paths.dir).map_err(|source| PkiError::Write {
        path: paths.dir.clone(),
        source,
    })
}

/// The server certificate for `server_names`, signed by the CA already in `paths`.
fn issue_server_cert(
    paths: &PkiPaths,
    server_names: &[String],
) -> Result<CertificateAuthority, PkiError> {
    let ca = CertificateAuthority::load(paths)?;
    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::new(server_names.to_vec())?;
    sp.distinguished_name = DistinguishedName::new();
    sp.distinguished_name
        .push(DnType::CommonName, "Invigilator collector");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.serial_number = Some(random_serial());
    validity(&mut sp, SERVER_VALIDITY);
    let server_cert = sp.signed_by(&server_key, &ca.issuer)?;
    write_file(&paths.server_key(), &server_key.serialize_pem(), true)?;
    // The chain carries the CA so a new agent can find the certificate it pins by fingerprint.
    write_file(
        &paths.server_cert(),
        &format!("{}{}", server_cert.pem(), ca.cert_pem),
        false,
    )?;
    Ok(ca)
}

impl CertificateAuthority {
    pub fn load(paths: &PkiPaths) -> Result<Self, PkiError> {
        let cert_pem = read(&paths.ca_cert())?;
        let key = KeyPair::from_pem(&read(&paths.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let fingerprint = fingerprint_pem(&cert_pem).ok_or_else(|| {
            PkiError::BadCsr(format!(
                "{} holds no certificate",
                paths.ca_cert().display()
            ))
        })?;
        Ok(Self {
            issuer,
            cert_pem,
            fingerprint,
        })
    }

    /// Signs an agent's CSR. Only the public key is taken from the request: the subject, the
    /// names, the usages and the lifetime are ours.
    pub fn issue_agent_cert(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
    ) -> Result<IssuedCert, PkiError> {
        self.issue(csr_pem, agent_id, lifetime, None, Holder::Agent)
    }

    /// A certificate for a device that runs no agent (`device-cert create`): the same identity,
    /// marked as a device's, so that it is taken only by the extension endpoint (and an agent's
    /// only by `Telemetry`).
    pub fn issue_device_cert(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
    ) -> Result<IssuedCert, PkiError> {
        self.issue(csr_pem, agent_id, lifetime, None, Holder::Device)
    }

    /// A renewal: as [`Self::issue_agent_cert`], but only for the key of the certificate being
    /// renewed. A stolen certificate cannot be turned into one for the thief's own key, and the
    /// device's identity stays bound to the key made at enrolment (a new key means enrolling).
    pub fn renew_agent_cert(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
        current_key: &[u8],
    ) -> Result<IssuedCert, PkiError> {
        self.issue(
            csr_pem,
            agent_id,
            lifetime,
            Some(current_key),
            Holder::Agent,
        )
    }

    fn issue(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
        bound_key: Option<&[u8]>,
        holder: Holder,
    ) -> Result<IssuedCert, PkiError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(PkiError::BadCsr("the CSR is larger than 16 KiB".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(format!("not a valid, self-signed PKCS#10 CSR ({e})")))?;
        if bound_key.is_some_and(|k| k != csr.public_key.der_bytes()) {
            return Err(PkiError::BadCsr(
                "a renewal must be for the key of the certificate presented; a new key means \
                 enrolling again"
                    .into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, holder.organisation());
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.subject_alt_names = vec![SanType::URI(format!("urn:uuid:{agent_id}").try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = random_serial();
        let serial_hex = hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        validity(&mut params, lifetime);
        let not_after = chrono::DateTime::from_timestamp(params.not_after.unix_timestamp(), 0)
            .unwrap_or_default();
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }
}

/// SHA-256 fingerprint (hex) of the first certificate in a PEM string.
pub fn fingerprint_pem(pem: &str) -> Option<String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(invigilator_proto::ca_fingerprint(&der))
}

/// The roots a TLS client trusts: the certificates of a PEM file (all of them, at least one),
/// or the system's store when none is named.
pub fn trust_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| e.to_string())?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("no certificate in it".into());
            }
            for cert in certs {
                roots.add(cert).map_err(|e| e.to_string())?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // One unusable certificate in the system's store spoils none of the others.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_collector_shares_the_ca_under_its_own_server_certificate() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let [a, b, empty] = [0, 1, 2].map(|i| PkiPaths::new(dirs[i].path()));
        let ours = init(&a, &["one.school.lan".into()]).unwrap();
        let joined = join(&b, &["two.school.lan".into()], &a).unwrap();
        assert_eq!(ours.fingerprint, joined.fingerprint);
        let server = read(&b.server_cert()).unwrap();
        assert_ne!(server, read(&a.server_cert()).unwrap());
        assert!(
            server.ends_with(&ours.cert_pem),
            "the chain carries the shared CA"
        );
        assert!(matches!(join(&b, &[], &a), Err(PkiError::Exists { .. })));
        // A directory without a CA is named, and nothing is written.
        let err = join(&PkiPaths::new(&dirs[2].path().join("x")), &[], &empty)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
        assert!(!dirs[2].path().join("x").exists());
    }

    #[test]
    fn init_then_issue_for_a_csr_keeps_only_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::new(dir.path());
        let ca = init(&paths, &["localhost".into()]).unwrap();
        assert_eq!(ca.fingerprint.len(), 64);
        assert!(matches!(init(&paths, &[]), Err(PkiError::Exists { .. })));

        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.distinguished_name
            .push(DnType::CommonName, "i-want-to-be-someone-else");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca
            .issue_agent_cert(
                &csr,
                "0b5e2c1e-0000-4000-8000-000000000001",
                Duration::from_secs(3600),
            )
            .unwrap();

        let der = rustls_pki_types::CertificateDer::from(
            x509_parser::pem::parse_x509_pem(issued.pem.as_bytes())
                .unwrap()
                .1
                .contents,
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "0b5e2c1e-0000-4000-8000-000000000001");
        assert!(!issued.pem.is_empty() && issued.serial.len() == 32);
        // An agent's and a device's certificates say which they are, and nothing in the CSR
        // can change it.
        let peer = crate::identity::peer_from_der(&der).unwrap();
        assert_eq!(peer.holder, Holder::Agent);
        req.distinguished_name
            .push(DnType::OrganizationName, Holder::Device.organisation());
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        for (issue, want) in [
            (
                CertificateAuthority::issue_agent_cert as fn(&_, &_, &_, _) -> _,
                Holder::Agent,
            ),
            (CertificateAuthority::issue_device_cert, Holder::Device),
        ] {
            let issued = issue(
                &ca,
                &csr,
                "0b5e2c1e-0000-4000-8000-000000000002",
                Duration::from_secs(60),
            )
            .unwrap();
            let der = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes())
                .unwrap()
                .1
                .contents;
            assert_eq!(crate::identity::peer_from_der(&der).unwrap().holder, want);
        }
        let key_mode = std::fs::metadata(paths.ca_key()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_renewal_is_for_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(&PkiPaths::new(dir.path()), &["localhost".into()]).unwrap();
        let csr = |key: &KeyPair| {
            CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .serialize_request(key)
                .unwrap()
                .pem()
                .unwrap()
        };
        let (device, thief) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let id = "0b5e2c1e-0000-4000-8000-000000000001";
        let day = Duration::from_secs(86_400);
        ca.renew_agent_cert(&csr(&device), id, day, device.der_bytes())
            .unwrap();
        let err = ca
            .renew_agent_cert(&csr(&thief), id, day, device.der_bytes())
            .unwrap_err();
        assert!(
            err.to_string().contains("same key")
                || err.to_string().contains("key of the certificate"),
            "{err}"
        );
    }

    #[test]
    fn garbage_csr_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(&PkiPaths::new(dir.path()), &["localhost".into()]).unwrap();
        let err = ca
            .issue_agent_cert(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "x",
                Duration::from_secs(60),
            )
            .unwrap_err();
        assert!(err.to_string().contains("CSR"), "{err}");
    }
}
