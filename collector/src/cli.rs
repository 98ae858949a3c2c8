//! The contract's read and admin commands, on the database directly (they work whether or not
//! `serve` is running).

use crate::pki::{CertificateAuthority, PkiPaths};
use crate::store::{self, AlertFilter, Durability, EventFilter};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
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
    if group.is_empty()
        || group.len() > 64
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--group {group:?} must be 1 to 64 letters, digits, '-', '_' or '.'");
    }
    if uses == 0 {
        bail!("--uses must be at least 1");
    }
    let ca = CertificateAuthority::load(&PkiPaths::new(data_dir))
        .context("loading the CA (has `init` been run?)")?;
    let conn = store::open(data_dir, Durability::Full)?;
    let token = store::create_token(&conn, group, ttl, uses, &ca.fingerprint)?;
    Ok(token.to_string())
}

pub fn alerts_list(data_dir: &Path, since: Option<&str>, limit: Option<u64>) -> anyhow::Result<()> {
    let filter = AlertFilter {
        since_us: since.map(parse_since).transpose()?,
        limit,
    };
    let conn = store::open(data_dir, Durability::Normal)?;
    print_json(&store::alerts::list(&conn, &filter)?)
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
    let conn = store::open(data_dir, Durability::Normal)?;
    print_json(&store::events::list(&conn, &filter)?)
}

pub fn agents_list(data_dir: &Path) -> anyhow::Result<()> {
    let conn = store::open(data_dir, Durability::Normal)?;
    print_json(&store::agents::list(&conn)?)
}

pub fn agents_revoke(data_dir: &Path, agent_id: &str) -> anyhow::Result<()> {
    let conn = store::open(data_dir, Durability::Full)?;
    if !store::agents::revoke(&conn, agent_id)? {
        bail!("no agent with id {agent_id:?} (see `agents list`)");
    }
    Ok(())
}

pub fn policy_check(file: &Path, data_dir: Option<&Path>) -> anyhow::Result<()> {
    let mut p = crate::policy::Policy::load(file)?;
    println!("{}: valid, version {}", file.display(), p.version);
    if !p.schedule.has_lessons() {
        println!(
            "warning: [school_times] has no lesson periods: rules with when = \"lessons\" never apply"
        );
    }
    if let Some(dir) = data_dir {
        p = p.with_lists(std::sync::Arc::new(crate::lists::Lists::load(dir)?));
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
    let current = crate::policy::Policy::load_in(data_dir)?;
    let candidate = crate::policy::Policy::load(candidate)?.with_lists(current.lists.clone());
    let conn = store::open(data_dir, Durability::Normal)?;
    let report = crate::dryrun::compare(&conn, &current, &candidate, since_us)?;
    if json {
        print_json(&report)
    } else {
        report.render(&mut std::io::stdout().lock())?;
        Ok(())
    }
}
