//! The device's key and certificates in the state directory. The private key is generated here,
//! written readable by root only, and never sent anywhere.

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
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
    #[error("{path} holds no usable {what}")]
    Parse { path: PathBuf, what: &'static str },
    #[error("key generation failed: {0}")]
    Key(#[from] rcgen::Error),
}

pub struct StatePaths {
    pub dir: PathBuf,
}

impl StatePaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("agent.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool.db")
    }
}

/// Writes a file atomically (temporary file, fsync, rename), so a crash leaves the old or the
/// new content, never half of one. The temporary file's name is its own (the key and the
/// certificate are written one after the other and must never share one), it is created anew
/// (a stale or planted file of that name is removed, never reused) and its mode is set on the
/// open handle, whatever the umask.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.into(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // On Windows the file inherits the state directory's ACL; `mode` is a Unix notion.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
    }
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    // Make the rename durable. std cannot open a directory on Windows to flush it; there the
    // rename is left to NTFS's metadata journal (a write-through rename is a later refinement).
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

/// Creates the device key (mode 0600) and returns it.
pub fn generate_key(paths: &StatePaths) -> Result<KeyPair, IdentityError> {
    let key = KeyPair::generate()?;
    write_atomic(&paths.key(), key.serialize_pem().as_bytes(), 0o600)?;
    Ok(key)
}

pub fn load_key(paths: &StatePaths) -> Result<KeyPair, IdentityError> {
    let path = paths.key();
    let pem = std::fs::read_to_string(&path).map_err(|source| IdentityError::Read {
        path: path.clone(),
        source,
    })?;
    KeyPair::from_pem(&pem).map_err(|_| IdentityError::Parse {
        path,
        what: "private key",
    })
}

/// A CSR for the device key. The subject is left empty: the collector decides the identity.
pub fn csr_pem(key: &KeyPair) -> Result<String, IdentityError> {
    Ok(CertificateParams::default().serialize_request(key)?.pem()?)
}

pub fn certs_from_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let bytes = std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.into(),
        source,
    })?;
    let certs = certs_from_pem(&bytes);
    if certs.is_empty() {
        return Err(IdentityError::Parse {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_file(path).map_err(|_| IdentityError::Parse {
        path: path.into(),
        what: "private key",
    })
}

/// (not_before, not_after) of the device certificate, as Unix seconds.
/// A certificate's start (notBefore), in seconds since the Unix epoch.
pub fn not_before(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_before.timestamp())
}

pub fn cert_validity(paths: &StatePaths) -> Result<(i64, i64), IdentityError> {
    let certs = read_certs(&paths.cert())?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&certs[0]).map_err(|_| IdentityError::Parse {
            path: paths.cert(),
            what: "certificate",
        })?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let key = generate_key(&paths).unwrap();
        let mode = std::fs::metadata(paths.key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_key(&paths).unwrap().public_key_pem(),
            key.public_key_pem()
        );
        assert!(csr_pem(&key).unwrap().contains("CERTIFICATE REQUEST"));
        std::fs::write(paths.cert(), "not a cert").unwrap();
        assert!(
            read_certs(&paths.cert())
                .unwrap_err()
                .to_string()
                .contains("agent.pem")
        );
    }

    #[test]
    fn a_planted_temporary_file_neither_keeps_its_mode_nor_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key");
        let cert = dir.path().join("agent.pem");
        // A world-readable file waiting under the temporary name, as left by an older version
        // (which used one name for both files) or planted.
        let planted = dir
            .path()
            .join(format!("agent.key.tmp.{}", std::process::id()));
        std::fs::write(&planted, "planted").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&key, b"secret", 0o600).unwrap();
        write_atomic(&cert, b"public", 0o644).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&key), mode(&cert)), (0o600, 0o644));
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert_eq!(std::fs::read(&cert).unwrap(), b"public");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
