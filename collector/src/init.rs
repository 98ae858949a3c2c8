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

/// Where a new data directory's store and CA come from.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// A new CA; the embedded SQLite file, or an empty PostgreSQL database whose schema is made.
    New { store_url: Option<&'a str> },
    /// Another collector's data directory, on the PostgreSQL database this one will share: its
    /// CA, configuration and lists are copied, and this collector gets its own server
    /// certificate from that CA.
    Join { data_dir: &'a Path },
}

/// Initialises `data_dir` from `origin`.
pub fn run(
    data_dir: &Path,
    server_names: &[String],
    origin: Origin<'_>,
) -> anyhow::Result<Initialised> {
    let store_config = match origin {
        Origin::New {
            store_url: Some(url),
        } => {
            let c = StoreConfig::postgres(url);
            c.validate().map_err(|e| {
                anyhow::anyhow!("--store-url {}", e.trim_start_matches("store.url "))
            })?;
            c
        }
        Origin::New { store_url: None } => StoreConfig::sqlite(),
        Origin::Join { data_dir: from } => {
            let theirs = CollectorConfig::load(from)
                .with_context(|| format!("--join {}", from.display()))?;
            if !theirs.store.is_postgres() {
                bail!(
                    "--join {}: that collector keeps its own SQLite file; only collectors on one \
                     PostgreSQL database can share their work (see `store migrate`)",
                    from.display()
                );
            }
            theirs.store
        }
    };
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
    let paths = PkiPaths::new(data_dir);
    let (store, ca) = match origin {
        Origin::New { .. } => {
            let store = Store::create(data_dir, &store_config).context("creating the database")?;
            if let Some(theirs) = store.admin(store::ca_binding::recorded)? {
                bail!(
                    "the database already serves collectors whose CA has fingerprint {theirs}; \
                     to add a collector to them, `init --join <the data directory of one of them>`"
                );
            }
            let ca = pki::init(&paths, &names).context("creating the certificate authority")?;
            (store, ca)
        }
        Origin::Join { data_dir: from } => {
            let store = Store::open(data_dir, &store_config).context("opening the database")?;
            let ca = pki::join(&paths, &names, &PkiPaths::new(from))
                .context("taking the certificate authority of the collector joined")?;
            copy_configuration(from, data_dir)?;
            (store, ca)
        }
    };
    let bound = store.admin(|a| store::ca_binding::bind(a, &ca.fingerprint))?;
    if bound != ca.fingerprint {
        bail!(
            "the database's agents were issued by the CA with fingerprint {bound}, not by this \
             collector's ({}): join a collector that holds it",
            ca.fingerprint
        );
    }
    // Each collector seals the trail's head in its own data directory as it appends, and one
    // whose first append finds a trail with entries but no seal of its own refuses (the
    // newest entries could have been cut). On a shared database others append from the
    // start, so each collector seals the trail here, before anyone else can append: the first
    // seals it empty; a joining one has the first's copy, or verifies and seals it as it
    // stands (a first collector made before this was done), on the record.
    if store_config.is_postgres() && !data_dir.join("audit.head").exists() {
        match origin {
            Origin::New { .. } => {
                store.admin(store::audit::reanchor)?;
            }
            Origin::Join { .. } => {
                crate::cli::audit_anchor(data_dir)
                    .context("sealing the audit trail for this collector")?;
            }
        }
    }
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
    let config_text = match origin {
        Origin::New {
            store_url: Some(url),
        } => crate::config::with_store_url(DEFAULT_CONFIG, url),
        _ => DEFAULT_CONFIG.to_owned(),
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

/// A joining collector's configuration: the files at the top of `from` (collector.toml,
/// policy.toml, the secrets and CA files they name) and its lists, so that every collector
/// judges and hands off alike, and its audit key and sealed head: the new collector can prove
/// the trail whole from the start, and seals it from then on as it appends. Not copied: the
/// other's first password, its SQLite files, its own server key.
fn copy_configuration(from: &Path, to: &Path) -> anyhow::Result<()> {
    let skip = [
        "initial-admin-password",
        "invigilator.db",
        "audit.head.lock",
    ];
    let copy = |src: &Path, dst: &Path| {
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
    };
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if !entry.file_type()?.is_file() || skip.iter().any(|s| text.starts_with(s)) {
            continue;
        }
        copy(&entry.path(), &to.join(&name))?;
    }
    let lists = invigilator_lists::store::lists_dir(from);
    if lists.is_dir() {
        let dst = invigilator_lists::store::lists_dir(to);
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(&lists)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                copy(&entry.path(), &dst.join(entry.file_name()))?;
            }
        }
    }
    Ok(())
}
