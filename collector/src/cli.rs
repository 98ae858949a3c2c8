//! The contract's read and admin commands, on the store directly (they work whether or not
//! `serve` is running). Every read of monitored data goes through an audited handle.

use crate::pki::{CertificateAuthority, PkiPaths};
use crate::store::accounts::{self, NewAccount, Role};
use crate::store::audit::{self, Actor, Audit};
use crate::store::{self, AlertFilter, Audited, EventFilter, Store};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EVENT_KINDS: &[&str] = &["process", "usb", "session", "browsing", "gap"];

/// Parses `--since`: RFC 3339 with an offset, e.g. 2026-11-22T09:00:00Z.
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .with_context(|| {
            format!("--since {s:?} is not an RFC 3339 time such as 2026-11-22T09:00:00Z")
        })
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn token_create(
    data_dir: &Path,
    group: &str,
    ttl: Duration,
    uses: u32,
) -> anyhow::Result<String> {
    check_group(group)?;
    if uses == 0 {
        bail!("--uses must be at least 1");
    }
    let ca = CertificateAuthority::load(&PkiPaths::new(data_dir))
        .context("loading the CA (has `init` been run?)")?;
    let store = open_store(data_dir)?;
    let token = store.admin(|a| store::create_token(a, group, ttl, uses, &ca.fingerprint))?;
    note(&store, Audit::new("token.create", format!("group:{group}")))?;
    Ok(token.to_string())
}

fn check_group(group: &str) -> anyhow::Result<()> {
    if group.is_empty()
        || group.len() > 64
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--group {group:?} must be 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// What `device-cert create` wrote.
pub struct DeviceCert {
    pub agent_id: String,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// `device-cert create`: a device that runs no agent (a Chromebook) enrolled by the
/// administrator. Its key is made here, its certificate issued by the CA for a fresh agent id,
/// exactly as an enrolled agent's, and both written to `out` for the school's device
/// management to install; the device is then in `agents list` and `agents revoke` like any.
pub fn device_cert_create(
    data_dir: &Path,
    group: &str,
    name: &str,
    valid_for: Duration,
    out: &Path,
) -> anyhow::Result<DeviceCert> {
    check_group(group)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 255 characters, with no control characters");
    }
    let file_stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ca = CertificateAuthority::load(&PkiPaths::new(data_dir))
        .context("loading the CA (has `init` been run?)")?;
    let key = rcgen::KeyPair::generate().context("making the device's key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let agent_id = uuid::Uuid::new_v4().hyphenated().to_string();
    let issued = ca.issue_device_cert(&csr, &agent_id, valid_for)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let paths = DeviceCert {
        agent_id: agent_id.clone(),
        cert: out.join(format!("{file_stem}.crt.pem")),
        key: out.join(format!("{file_stem}.key.pem")),
        ca: out.join("invigilator-ca.pem"),
    };
    for p in [&paths.cert, &paths.key] {
        if p.exists() {
            bail!(
                "{} exists already: choose another --name or --out",
                p.display()
            );
        }
    }
    crate::pki::write_file(&paths.key, &key.serialize_pem(), true)?;
    crate::pki::write_file(&paths.cert, &issued.pem, false)?;
    crate::pki::write_file(&paths.ca, &ca.cert_pem, false)?;
    let store = open_store(data_dir)?;
    store.admin(|a| {
        store::agents::insert_agent(
            a,
            &store::NewAgent {
                agent_id: &agent_id,
                group,
                hostname: name,
                os: "ChromeOS",
                agent_version: "extension",
                cert_serial: &issued.serial,
                cert_not_after_us: issued.not_after.timestamp_micros(),
            },
        )
    })?;
    note(
        &store,
        Audit::new("agent.device_cert", format!("agent:{agent_id}")),
    )?;
    Ok(paths)
}

/// The store `collector.toml` names (the embedded SQLite file unless `[store] url` is set).
fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let config = crate::config::CollectorConfig::load(data_dir)?;
    Ok(Store::open(data_dir, &config.store)?)
}

/// Reads or changes monitored data as the person at the command line, with the entry written
/// in the same transaction: nothing is shown unless its entry is.
fn audited<R>(
    store: &Store,
    entry: Audit,
    f: impl FnOnce(&Audited<'_>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    store.audited(&Actor::cli(), |tx| -> anyhow::Result<(R, Audit)> {
        Ok((f(tx)?, entry))
    })
}

/// Records a CLI change of accounts or settings in the access audit trail.
fn note(store: &Store, entry: Audit) -> anyhow::Result<()> {
    store
        .admin(|a| audit::append(a, &Actor::cli(), &entry.record()))
        .context("writing the access audit trail")?;
    Ok(())
}

fn described(parts: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = parts
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    given.join(" ")
}

pub fn alerts_list(data_dir: &Path, since: Option<&str>, limit: Option<u64>) -> anyhow::Result<()> {
    let filter = AlertFilter {
        since_us: since.map(parse_since).transpose()?,
        limit,
    };
    let object = described(&[
        ("since", since.map(str::to_owned)),
        ("limit", limit.map(|l| l.to_string())),
    ]);
    let entry = Audit::new("alert.list", format!("alerts {object}"));
    let rows = audited(&open_store(data_dir)?, entry, |tx| {
        Ok(store::alerts::list(tx, &filter)?)
    })?;
    print_json(&rows)
}

pub fn events_list(
    data_dir: &Path,
    kind: Option<&str>,
    since: Option<&str>,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    if let Some(k) = kind.filter(|k| !EVENT_KINDS.contains(k)) {
        bail!("--kind {k:?} is not one of {}", EVENT_KINDS.join(", "));
    }
    let filter = EventFilter {
        kind: kind.map(str::to_owned),
        since_us: since.map(parse_since).transpose()?,
        agent_id: None,
        limit,
    };
    let object = described(&[
        ("kind", kind.map(str::to_owned)),
        ("since", since.map(str::to_owned)),
        ("limit", limit.map(|l| l.to_string())),
    ]);
    let entry = Audit::new("event.list", format!("events {object}"));
    let rows = audited(&open_store(data_dir)?, entry, |tx| {
        Ok(store::events::list(tx, &filter)?)
    })?;
    print_json(&rows)
}

pub fn agents_list(data_dir: &Path) -> anyhow::Result<()> {
    let entry = Audit::new("agent.list", "agents");
    let rows = audited(&open_store(data_dir)?, entry, |tx| {
        Ok(store::agents::list(tx)?)
    })?;
    print_json(&rows)
}

/// `collectors`: every collector that announced itself on this database.
pub fn collectors_list(data_dir: &Path) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Row {
        #[serde(flatten)]
        peer: store::peers::Peer,
        started_at: String,
        seen_at: String,
        /// Its settings differ from this data directory's collector.toml.
        settings_differ: bool,
    }
    let config = crate::config::CollectorConfig::load(data_dir)?;
    let mine = crate::peers::config_digest(&config);
    let store = Store::open(data_dir, &config.store)?;
    let rows: Vec<Row> = store
        .admin(store::peers::list)?
        .into_iter()
        .map(|peer| Row {
            started_at: store::rfc3339(peer.started_at_us),
            seen_at: store::rfc3339(peer.seen_at_us),
            settings_differ: peer.config_digest != mine,
            peer,
        })
        .collect();
    print_json(&rows)
}

pub fn agents_revoke(data_dir: &Path, agent_id: &str) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    if !store.admin(|a| store::agents::revoke(a, agent_id))? {
        bail!("no agent with id {agent_id:?} (see `agents list`)");
    }
    note(
        &store,
        Audit::new("agent.revoke", format!("agent:{agent_id}")),
    )
}

/// `audit verify`: Ok(entries) when the chain holds; an error naming the first bad entry.
pub fn audit_verify(data_dir: &Path) -> anyhow::Result<u64> {
    let entry = Audit::new("audit.verify", "audit_log");
    match audited(&open_store(data_dir)?, entry, |tx| Ok(audit::verify(tx)?))? {
        audit::Verdict::Intact { entries } => Ok(entries),
        audit::Verdict::Broken { id, reason } => {
            bail!("audit trail broken at entry {id}: {reason}")
        }
    }
}

/// `audit anchor`: seals the trail as it stands into a new checkpoint, when the checkpoint is
/// missing, unkeyed or its seal does not verify. Refused when an entry itself is broken:
/// sealing would hide that. The act and what verify said before it are audited first.
pub fn audit_anchor(data_dir: &Path) -> anyhow::Result<String> {
    let store = open_store(data_dir)?;
    let before = store.audited(&Actor::cli(), |tx| {
        let last = audit::last_id(tx)?;
        let before = match audit::verify(tx)? {
            audit::Verdict::Intact { entries } => format!("intact, {entries} entries"),
            audit::Verdict::Broken { id, reason } if id <= last => {
                bail!("audit trail broken at entry {id}: {reason}; not anchoring over it")
            }
            audit::Verdict::Broken { reason, .. } => reason,
        };
        let entry = Audit::new("audit.anchor", "audit.head").detail(format!("before: {before}"));
        Ok((before, entry))
    })?;
    let cp = store.admin(audit::reanchor)?;
    Ok(format!(
        "{before}; sealed {} writer head(s)",
        cp.heads.len()
    ))
}

/// `users add`: the password comes from stdin (first line), or is generated and printed.
pub fn users_add(
    data_dir: &Path,
    username: &str,
    role: &str,
    admin: bool,
    email: &str,
    password_stdin: bool,
) -> anyhow::Result<Option<String>> {
    let role: Role = role.parse()?;
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        (accounts::generate_password(), true)
    };
    let store = open_store(data_dir)?;
    store.admin(|a| {
        accounts::create(
            a,
            &NewAccount {
                username,
                role,
                is_admin: admin,
                password: &password,
                display_name: "",
                email,
                must_change_password: generated,
            },
        )?;
        accounts::note_made_by(a, username, accounts::MadeBy::Created, "cli")
    })?;
    let detail = crate::console::users::created_detail(role, admin);
    note(
        &store,
        Audit::new("staff.create", format!("staff:{username}")).detail(detail),
    )?;
    Ok(generated.then_some(password))
}

pub fn users_list(data_dir: &Path) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    let rows = store.admin(accounts::list)?;
    note(&store, Audit::new("staff.list", "staff"))?;
    print_json(&rows)
}

/// `users reset-password`: a new generated password (printed), which unlocks the account.
pub fn users_reset(data_dir: &Path, username: &str) -> anyhow::Result<String> {
    let store = open_store(data_dir)?;
    let password = accounts::generate_password();
    store.admin(|a| {
        accounts::set_password(a, username, &password, true)?;
        accounts::note_made_by(a, username, accounts::MadeBy::Reset, "cli")
    })?;
    note(
        &store,
        Audit::new("staff.update", format!("staff:{username}")),
    )?;
    Ok(password)
}

pub fn users_set(
    data_dir: &Path,
    username: &str,
    role: Option<&str>,
    admin: Option<bool>,
    disabled: Option<bool>,
) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    store.admin(|a| {
        let current = accounts::get(a, username)?
            .with_context(|| format!("no account named {username:?} (see `users list`)"))?;
        if role.is_some() || admin.is_some() {
            let role = role
                .map(str::parse::<Role>)
                .transpose()?
                .unwrap_or(current.role);
            accounts::set_role(a, username, role, admin.unwrap_or(current.is_admin))?;
        }
        if let Some(d) = disabled {
            accounts::set_disabled(a, username, d)?;
        }
        anyhow::Ok(())
    })?;
    let detail = format!("role={role:?} admin={admin:?} disabled={disabled:?}");
    note(
        &store,
        Audit::new("staff.update", format!("staff:{username}")).detail(detail),
    )
}

pub fn policy_check(file: &Path, data_dir: Option<&Path>) -> anyhow::Result<()> {
    let mut p = invigilator_policy::Policy::load(file)?;
    println!("{}: valid, version {}", file.display(), p.version);
    for line in p.web_exceptions().describe() {
        println!("{line}");
    }
    if !p.schedule.has_lessons() {
        println!(
            "warning: [school_times] has no lesson periods: rules with when = \"lessons\" never apply"
        );
    }
    if let Some(dir) = data_dir {
        p = p.with_lists(std::sync::Arc::new(invigilator_lists::Lists::load(dir)?));
        for c in p.missing_categories() {
            println!("warning: no imported list has the category {c:?} named by a [[web]] rule");
        }
    }
    Ok(())
}

pub fn policy_test(
    data_dir: &Path,
    candidate: &Path,
    since: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let since_us = since.map(parse_since).transpose()?;
    let current = invigilator_policy::Policy::load_in(data_dir)?;
    let candidate = invigilator_policy::Policy::load(candidate)?.with_lists(current.lists.clone());
    let object = described(&[("since", since.map(str::to_owned))]);
    let entry = Audit::new("event.replay", format!("events {object}"));
    let report = audited(&open_store(data_dir)?, entry, |tx| {
        Ok(crate::dryrun::compare(tx, &current, &candidate, since_us)?)
    })?;
    if json {
        print_json(&report)
    } else {
        report.render(&mut std::io::stdout().lock())?;
        Ok(())
    }
}

/// `policy eval`: the keyword libraries measured on a labelled corpus, as a Markdown table;
/// with `repeat`, their throughput on one core.
pub fn policy_eval(
    corpus: &Path,
    policy: Option<&Path>,
    mistakes: bool,
    repeat: Option<u32>,
    thresholds: &[f32],
    held_out: bool,
) -> anyhow::Result<()> {
    use invigilator_policy::keywords::eval;
    let policy = match policy {
        Some(p) => invigilator_policy::Policy::load(p)?,
        None => invigilator_policy::Policy::parse(invigilator_policy::DEFAULT_POLICY)
            .map_err(anyhow::Error::msg)?,
    };
    let items = eval::load(corpus).map_err(anyhow::Error::msg)?;
    let report = eval::evaluate(policy.keywords(), &items);
    let mut out = std::io::stdout().lock();
    report.render(&mut out)?;
    if mistakes {
        for (what, list) in [
            ("miss", &report.misses),
            ("false positive", &report.false_positives),
        ] {
            for m in list {
                writeln!(
                    out,
                    "{what}: [{} {}] {:?} fired {:?} by {}",
                    m.label,
                    m.lang,
                    m.text,
                    m.fired,
                    m.why.join("; ")
                )?;
            }
        }
    }
    if held_out {
        writeln!(
            out,
            "\nAs the collector runs them (this policy's classifier and misspellings as it sets them):\n"
        )?;
        eval::evaluate_as_shipped(policy.keywords(), &items).render(&mut out)?;
    } else {
        cross_validated(&policy, &items, thresholds, &mut out)?;
    }
    if let Some(n) = repeat.filter(|n| *n > 0) {
        let started = std::time::Instant::now();
        let mut hits = 0usize;
        for _ in 0..n {
            for item in &items {
                hits += policy.keywords().scan(&item.text).len();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let texts = items.len() as f64 * f64::from(n);
        writeln!(
            out,
            "\nthroughput: {texts:.0} texts in {secs:.2} s on one core = {:.0} texts/s ({hits} hits)",
            texts / secs
        )?;
    }
    Ok(())
}

/// The classifier is trained on this corpus: it is measured only on folds it did not see.
fn cross_validated(
    policy: &invigilator_policy::Policy,
    items: &[invigilator_policy::keywords::eval::Item],
    thresholds: &[f32],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use invigilator_policy::keywords::eval;
    if let Some(t) = thresholds.iter().find(|t| !(**t > 0.0 && **t <= 1.0)) {
        anyhow::bail!("--threshold {t}: a probability above 0 and at most 1");
    }
    let thresholds = if thresholds.is_empty() {
        vec![invigilator_policy::keywords::model::DEFAULT_THRESHOLD]
    } else {
        thresholds.to_vec()
    };
    let reports = eval::cross_validate(policy.keywords(), items, 5, &thresholds);
    for (threshold, cv) in thresholds.iter().zip(&reports) {
        writeln!(
            out,
            "\nWith the classifier (threshold {threshold}), 5-fold cross-validated:\n"
        )?;
        cv.render(out)?;
    }
    Ok(())
}

/// `policy train`: the keyword classifier trained on labelled corpora, written as a model
/// file (the shipped one is `collector/policy/src/default_keyword_model.txt`).
pub fn policy_train(corpora: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    use invigilator_policy::keywords::eval;
    let mut items = Vec::new();
    for corpus in corpora {
        items.extend(eval::load(corpus).map_err(anyhow::Error::msg)?);
    }
    let model = eval::train(&items);
    let text = model.write(invigilator_policy::keywords::model::WRITTEN_MIN_WEIGHT);
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "trained on {} items, {} concerns; {} features kept in {}",
        items.len(),
        model.labels.len(),
        text.lines().count().saturating_sub(3),
        out.display()
    );
    Ok(())
}

/// `retention run`: the periods from collector.toml, applied now (or only counted).
pub fn retention_run(data_dir: &Path, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let config = crate::config::CollectorConfig::load(data_dir)?;
    let report = open_store(data_dir)?.retention(&config.retention, dry_run, &Actor::cli())?;
    if json {
        print_json(&report)
    } else {
        report.render(&mut std::io::stdout().lock())?;
        Ok(())
    }
}

/// `store migrate`: the SQLite store into PostgreSQL, then collector.toml pointed at it.
pub fn store_migrate(data_dir: &Path, to: &str) -> anyhow::Result<()> {
    let config = crate::config::CollectorConfig::load(data_dir)?;
    if config.store.is_postgres() {
        bail!(
            "{} keeps its store in PostgreSQL already ([store] url in collector.toml)",
            data_dir.display()
        );
    }
    let target = crate::store::StoreConfig {
        url: to.to_owned(),
        ..config.store.clone()
    };
    target
        .validate()
        .map_err(|e| anyhow::anyhow!("--to {}", e.trim_start_matches("store.url ")))?;
    let report = crate::store::migrate::to_postgres(data_dir, &target)?;
    let path = crate::config::CollectorConfig::path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    crate::pki::write_file(&path, &crate::config::with_store_url(&text, to), true)?;
    let mut out = std::io::stdout().lock();
    for (table, rows) in &report.tables {
        writeln!(out, "{table}: {rows} rows")?;
    }
    writeln!(
        out,
        "audit trail: {} entries copied and verified; the move is recorded in it",
        report.audit_entries
    )?;
    writeln!(
        out,
        "{} now names the database; {} is kept as it was",
        path.display(),
        crate::store::db_path(data_dir).display()
    )?;
    Ok(())
}

/// `roster import`: a OneRoster export into the policy's roster, or (dry) what it would change.
pub fn roster_import(data_dir: &Path, export: &Path, dry_run: bool) -> anyhow::Result<()> {
    let config = crate::config::CollectorConfig::load(data_dir)?;
    let o = crate::roster::import(data_dir, export, &config.roster, dry_run)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} pupils and {} staff in the export ({} pupils without a grade, placed in {:?}; {} rows left out as deleted or disabled)",
        o.plan.pupils,
        o.plan.staff,
        o.plan.without_grade,
        config.roster.pupils_without_grade,
        o.plan.inactive
    )?;
    for (user, group) in &o.diff.added {
        writeln!(out, "+ {user} {group}")?;
    }
    for (user, group) in &o.diff.removed {
        writeln!(out, "- {user} {group}")?;
    }
    for (user, from, to) in &o.diff.moved {
        writeln!(out, "~ {user} {from} -> {to}")?;
    }
    let shown = o.roster_file.display();
    if dry_run {
        writeln!(out, "dry run: {} ({shown} unchanged)", o.diff.summary())?;
    } else if o.written {
        note(
            &open_store(data_dir)?,
            Audit::new("roster.import", shown.to_string()).detail(format!(
                "{} source={}",
                o.diff.summary(),
                export.display()
            )),
        )?;
        writeln!(out, "imported: {} into {shown}", o.diff.summary())?;
    } else {
        writeln!(out, "no change: {shown} already says this")?;
    }
    Ok(())
}

/// `sar export`: everything held about one user, audited with the stated purpose before it is
/// written; to a new file of mode 0600, or to stdout.
pub fn sar_export(
    data_dir: &Path,
    user: &str,
    purpose: &str,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let (user, purpose) = crate::store::sar::check_request(user, purpose)?;
    // Created first, so an unusable path fails before anything is read or recorded. Never an
    // existing file: it could be readable by others, or a link to somewhere else.
    let file = out
        .map(|p| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("creating {} (it must not exist yet)", p.display()))
        })
        .transpose()?;
    // A snapshot read outside any write transaction (it scans every event), released only
    // with its entry written.
    let store = open_store(data_dir)?;
    let sealed = store.scan(|scan| crate::store::sar::export(scan, user))?;
    let entry = Audit::new("sar.export", format!("user:{user}"))
        .purpose(purpose)
        .detail(serde_json::to_string(sealed.counts())?);
    let export = audited(&store, entry, |tx| Ok(tx.unseal(sealed)))?;
    match (file, out) {
        (Some(f), Some(p)) => {
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer_pretty(&mut w, &export)?;
            writeln!(w)?;
            w.into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {}: {} events, {} alerts, {} incidents",
                p.display(),
                export.counts.events,
                export.counts.alerts,
                export.counts.incidents
            );
            Ok(())
        }
        _ => print_json(&export),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_add_and_set_record_the_powers_given() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::create(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap());
        users_add(dir.path(), "jo", "dsl", false, "", false).unwrap();
        users_set(dir.path(), "jo", Some("leadership"), Some(true), None).unwrap();
        let conn = crate::store::test_open(dir.path());
        let trail = audit::list(
            &crate::store::Audited::test(&conn),
            &audit::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let got: Vec<_> = trail
            .iter()
            .map(|e| (e.action.as_str(), e.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "staff.update",
                    "role=Some(\"leadership\") admin=Some(true) disabled=None"
                ),
                ("staff.create", "role=dsl admin=false"),
            ]
        );
    }
}
