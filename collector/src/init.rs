//! `init`: a new data directory with a CA, a server certificate, an empty database and the
//! default configuration and policy, each explained by its comments.

use crate::config::{CollectorConfig, DEFAULT_CONFIG};
use crate::pki::{self, PkiPaths};
use crate::store::accounts::{self, NewAccount, Role};
use crate::store::{self, Store, StoreConfig};
use anyhow::{Context, bail};
use invigilator_policy::{DEFAULT_POLICY, Policy};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

pub struct Initialised {
    /// The PostgreSQL database was initialised by another collector: no account was made.
    pub shared_database: bool,
    pub ca_fingerprint: String,
    pub server_names: Vec<String>,
    pub admin_username: String,
    pub admin_role: Role,
    /// Where the first administrator's generated password was written (mode 0600).
    pub admin_password_file: std::path::PathBuf,
}

/// The first console account: it administers accounts and, as the technician who installs the
/// system, sees alerts' metadata. It creates the DSL's and leadership's accounts.
pub const FIRST_ADMIN: &str = "admin";

/// Initialises `data_dir`; with `store_url`, its store is that PostgreSQL database (written to
/// `collector.toml`), whose schema is made unless another collector made it already.
pub fn run(
    data_dir: &Path,
    server_names: &[String],
    store_url: Option<&str>,
) -> anyhow::Result<Initialised> {
    let store_config = match store_url {
        Some(url) => StoreConfig::postgres(url),
        None => StoreConfig::sqlite(),
    };
    store_config
        .validate()
        .map_err(|e| anyhow::anyhow!("--store-url {}", e.trim_start_matches("store.url ")))?;
    if store::db_path(data_dir).exists() || PkiPaths::new(data_dir).ca_key().exists() {
        bail!(
            "{} is already initialised; use another --data-dir or remove it first",
            data_dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    // An existing directory keeps its mode otherwise (often 0755).
    std::fs::set_permissions(
        data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot restrict {} to its owner", data_dir.display()))?;
    let mut names: Vec<String> = server_names.to_vec();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(h) = nix::unistd::gethostname()
            && let Some(h) = h.to_str().filter(|h| !h.is_empty() && *h != "localhost")
        {
            names.push(h.to_owned());
        }
    }
    let ca = pki::init(&PkiPaths::new(data_dir), &names)
        .context("creating the certificate authority")?;
    let store = Store::create(data_dir, &store_config).context("creating the database")?;
    let password = accounts::generate_password();
    // A database several collectors share has its first administrator already.
    let shared = store.admin(accounts::list)?.iter().any(|acc| acc.is_admin);
    if !shared {
        store
            .admin(|a| {
                accounts::create(
                    a,
                    &NewAccount {
                        username: FIRST_ADMIN,
                        role: Role::Technician,
                        is_admin: true,
                        password: &password,
                        display_name: "First administrator",
                        email: "",
                        must_change_password: true,
                    },
                )
            })
            .context("creating the first console account")?;
    }
    let admin_password_file = data_dir.join("initial-admin-password");
    if !shared {
        pki::write_file(&admin_password_file, &format!("{password}\n"), true)?;
    }
    let config_text = match store_url {
        Some(url) => crate::config::with_store_url(DEFAULT_CONFIG, url),
        None => DEFAULT_CONFIG.to_owned(),
    };
    for (path, text) in [
        (CollectorConfig::path(data_dir), config_text.as_str()),
        (Policy::path(data_dir), DEFAULT_POLICY),
    ] {
        if !path.exists() {
            pki::write_file(&path, text, true)?;
        }
    }
    Ok(Initialised {
        shared_database: shared,
        ca_fingerprint: ca.fingerprint,
        server_names: names,
        admin_username: FIRST_ADMIN.into(),
        admin_role: Role::Technician,
        admin_password_file,
    })
}
