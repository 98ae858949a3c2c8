//! The Online Safety incident log. An incident is its versions: an edit appends the next one
//! (the schema refuses updates, and deletes before the retention cut-off), so what the log said
//! on any day can always be shown.

use super::Audited;
use super::triage::{self, Change};
use super::{now_us, rfc3339};
use crate::store::db::{Connection, OptionalExtension, params};
use invigilator_policy::groups::Class;
use invigilator_policy::{ResponsesSpec, Severity};
use serde::{Deserialize, Serialize};

pub const CLASSES: &[&str] = &["pupil", "staff", "visitor", "unknown"];
pub const SEVERITIES: &[&str] = &["informational", "inappropriate", "serious", "illegal"];
pub const STATUSES: &[&str] = &["open", "closed"];
/// An action not in the sanctions table is written `other: what was done`.
pub const OTHER: &str = "other:";

/// An incident's fields as of one version (stored as JSON in `incident_versions.record`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRecord {
    /// The user name(s) concerned, comma-separated. Subject-access exports search
    /// `$.subject`: keep the name.
    pub subject: String,
    pub subject_class: String,
    /// What happened.
    pub summary: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    pub category: String,
    pub severity: String,
    /// Options from the policy's sanctions table for the subject's class, or `other: ...`.
    pub action_taken: Vec<String>,
    #[serde(default)]
    pub parents_informed: bool,
    #[serde(default)]
    pub parents_informed_at: Option<String>,
    #[serde(default)]
    pub police_referral: bool,
    /// e.g. LADO, CEOP, children's social care.
    #[serde(default)]
    pub referred_to: Option<String>,
    pub status: String,
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no incident {0}")]
    NoSuchIncident(i64),
    #[error("no alert {0}")]
    NoSuchAlert(i64),
    #[error("nothing changed: the edit is the same as version {0}")]
    Unchanged(u32),
    #[error("alert {0}: {1}")]
    Triage(i64, triage::TriageError),
    #[error("database error: {0}")]
    Sql(#[from] crate::store::db::Error),
    #[error(transparent)]
    Store(#[from] super::StoreError),
    #[error("stored incident {0} cannot be read: {1}")]
    Corrupt(i64, serde_json::Error),
}

type Result<T, E = IncidentError> = std::result::Result<T, E>;

fn invalid(field: &'static str, message: impl Into<String>) -> IncidentError {
    IncidentError::Invalid {
        field,
        message: message.into(),
    }
}

/// The actions staff may pick for a class: the sanctions table's responses for that class at
/// every level, one option per `;`-separated clause.
pub fn action_options(responses: &ResponsesSpec, class: &str) -> Vec<String> {
    let class = match class {
        "staff" => Class::Staff,
        "visitor" => Class::Visitor,
        "pupil" => Class::Pupil,
        _ => Class::Unknown,
    };
    let mut out: Vec<String> = Vec::new();
    for level in [
        Severity::Serious,
        Severity::Inappropriate,
        Severity::Informational,
    ] {
        for clause in responses.for_alert(level, class).split(';') {
            let clause = clause.trim().trim_end_matches('.').trim();
            if !clause.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(clause)) {
                out.push(clause.to_owned());
            }
        }
    }
    out
}

fn rfc3339_field(field: &'static str, s: &str) -> Result<String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| rfc3339(t.timestamp_micros()))
        .map_err(|_| invalid(field, format!("{s:?} is not an RFC 3339 time")))
}

impl IncidentRecord {
    /// Checks every field, trims text and writes times in one form (so they sort as text).
    pub fn validated(mut self, actions: &[String]) -> Result<Self> {
        let trim = |s: &mut String| *s = s.trim().to_owned();
        for s in [
            &mut self.subject,
            &mut self.subject_class,
            &mut self.summary,
            &mut self.category,
            &mut self.severity,
            &mut self.status,
            &mut self.notes,
        ] {
            trim(s);
        }
        let names: Vec<&str> = self.subject.split(',').map(str::trim).collect();
        if self.subject.is_empty() || names.iter().any(|n| n.is_empty()) {
            return Err(invalid(
                "subject",
                "give the user name(s) concerned, separated by commas",
            ));
        }
        self.subject = names.join(", ");
        let long = |field, s: &str, max: usize| {
            if s.chars().count() > max {
                Err(invalid(field, format!("at most {max} characters")))
            } else {
                Ok(())
            }
        };
        long("subject", &self.subject, 500)?;
        if !CLASSES.contains(&self.subject_class.as_str()) {
            return Err(invalid(
                "subject_class",
                format!(
                    "{:?} is not one of {}",
                    self.subject_class,
                    CLASSES.join(", ")
                ),
            ));
        }
        if self.summary.is_empty() {
            return Err(invalid("summary", "say what happened"));
        }
        long("summary", &self.summary, 10_000)?;
        self.occurred_at = rfc3339_field("occurred_at", &self.occurred_at)?;
        if self.category.is_empty() {
            return Err(invalid("category", "give a category"));
        }
        long("category", &self.category, 100)?;
        if !SEVERITIES.contains(&self.severity.as_str()) {
            return Err(invalid(
                "severity",
                format!(
                    "{:?} is not one of {}",
                    self.severity,
                    SEVERITIES.join(", ")
                ),
            ));
        }
        self.action_taken = self
            .action_taken
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if self.action_taken.is_empty() {
            return Err(invalid("action_taken", "give at least one action taken"));
        }
        for a in &mut self.action_taken {
            if let Some(rest) = a.strip_prefix(OTHER) {
                if rest.trim().is_empty() {
                    return Err(invalid("action_taken", "say what the other action was"));
                }
                long("action_taken", rest, 500)?;
                *a = format!("{OTHER} {}", rest.trim());
            } else if !actions.iter().any(|o| o == a) {
                return Err(invalid(
                    "action_taken",
                    format!(
                        "{a:?} is not in the sanctions table for a {}: pick one of its \
                         options, or write \"other: ...\"",
                        self.subject_class
                    ),
                ));
            }
        }
        self.parents_informed_at = match self.parents_informed_at.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(_) if !self.parents_informed => {
                return Err(invalid(
                    "parents_informed_at",
                    "given, but parents_informed is false",
                ));
            }
            Some(t) => Some(rfc3339_field("parents_informed_at", t)?),
        };
        self.referred_to = self
            .referred_to
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from);
        if let Some(r) = &self.referred_to {
            long("referred_to", r, 200)?;
        }
        if !STATUSES.contains(&self.status.as_str()) {
            return Err(invalid(
                "status",
                format!("{:?} is not one of {}", self.status, STATUSES.join(", ")),
            ));
        }
        long("notes", &self.notes, 20_000)?;
        Ok(self)
    }

    /// The names of the fields that differ from `before`.
    fn changed_from(&self, before: &IncidentRecord) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(before).unwrap_or_default(),
        );
        match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// An incident as it stands now.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub id: i64,
    pub opened_at: String,
    pub opened_by: String,
    pub version: u32,
    pub updated_at: String,
    pub updated_by: String,
    pub record: IncidentRecord,
}

/// What governors see: no names, no account of what happened, no notes. A separate type so a
/// field added to the record is not shown to them by accident.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: i64,
    pub opened_at: String,
    pub category: String,
    pub severity: String,
    pub action_taken: Vec<String>,
    pub parents_informed: bool,
    pub police_referral: bool,
    pub status: String,
}

impl From<&Current> for Summary {
    fn from(c: &Current) -> Self {
        Self {
            id: c.id,
            opened_at: c.opened_at.clone(),
            category: c.record.category.clone(),
            severity: c.record.severity.clone(),
            // Free text may name someone; the table's own wording cannot.
            action_taken: c
                .record
                .action_taken
                .iter()
                .map(|a| {
                    if a.starts_with(OTHER) {
                        "other".to_owned()
                    } else {
                        a.clone()
                    }
                })
                .collect(),
            parents_informed: c.record.parents_informed,
            police_referral: c.record.police_referral,
            status: c.record.status.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: u32,
    pub at: String,
    pub author: String,
    /// Field names that differ from the version before (empty for the first).
    pub changed: Vec<String>,
    pub record: IncidentRecord,
}

/// An incident with its whole history and the alerts it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub current: Current,
    pub alerts: Vec<i64>,
    /// Oldest first.
    pub history: Vec<Version>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub category: Option<String>,
    /// On `occurred_at`, as RFC 3339 from [`super::rfc3339`].
    pub from: Option<String>,
    pub to: Option<String>,
}

fn parse(id: i64, json: &str) -> Result<IncidentRecord> {
    serde_json::from_str(json).map_err(|e| IncidentError::Corrupt(id, e))
}

/// A new incident (version 1), linked to `alert_ids`; those still new or triaged become
/// escalated through triage, so the alerts' own history says why. Run it in a transaction.
pub fn create(
    tx: &Audited<'_>,
    author: &str,
    record: IncidentRecord,
    alert_ids: &[i64],
    actions: &[String],
) -> Result<i64> {
    let conn = tx.conn;
    let record = record.validated(actions)?;
    for &a in alert_ids {
        if triage::get(tx, a)?.is_none() {
            return Err(IncidentError::NoSuchAlert(a));
        }
    }
    let now = now_us();
    let id = conn.query_row(
        "INSERT INTO incidents(created_at, created_by) VALUES (?1, ?2)
         RETURNING id",
        params![now, author],
        |r| r.get::<_, i64>(0),
    )?;
    insert_version(conn, id, 1, now, author, &record)?;
    for &a in alert_ids {
        conn.execute(
            "INSERT INTO incident_alerts(incident_id, alert_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            params![id, a],
        )?;
        let status = triage::get(tx, a)?.map(|l| l.status).unwrap_or_default();
        if status == "new" || status == "triaged" {
            let change = Change {
                status: Some("escalated".into()),
                note: format!("recorded in incident {id}"),
                ..Default::default()
            };
            triage::apply(tx, a, author, &change)?.map_err(|e| IncidentError::Triage(a, e))?;
        }
    }
    Ok(id)
}

fn insert_version(
    conn: &Connection,
    id: i64,
    version: u32,
    at: i64,
    author: &str,
    record: &IncidentRecord,
) -> Result<()> {
    let json = serde_json::to_string(record).map_err(|e| IncidentError::Corrupt(id, e))?;
    conn.execute(
        "INSERT INTO incident_versions(incident_id, version, at, author, record)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, version, at, author, json],
    )?;
    Ok(())
}

/// An edit: appends version n+1. Returns the new version's number.
pub fn update(
    tx: &Audited<'_>,
    id: i64,
    author: &str,
    record: IncidentRecord,
    actions: &[String],
) -> Result<u32> {
    let conn = tx.conn;
    let record = record.validated(actions)?;
    let last: Option<(u32, String)> = conn
        .query_row(
            "SELECT version, record FROM incident_versions WHERE incident_id = ?1
             ORDER BY version DESC LIMIT 1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((n, json)) = last else {
        return Err(IncidentError::NoSuchIncident(id));
    };
    if parse(id, &json)? == record {
        return Err(IncidentError::Unchanged(n));
    }
    insert_version(conn, id, n + 1, now_us(), author, &record)?;
    Ok(n + 1)
}

pub fn get(tx: &Audited<'_>, id: i64) -> Result<Option<Incident>> {
    let conn = tx.conn;
    let head: Option<(i64, String)> = conn
        .query_row(
            "SELECT created_at, created_by FROM incidents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((opened, opened_by)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT version, at, author, record FROM incident_versions WHERE incident_id = ?1
         ORDER BY version",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut history: Vec<Version> = Vec::with_capacity(rows.len());
    for (version, at, author, json) in rows {
        let record = parse(id, &json)?;
        let changed = history
            .last()
            .map(|prev| record.changed_from(&prev.record))
            .unwrap_or_default();
        history.push(Version {
            version,
            at: rfc3339(at),
            author,
            changed,
            record,
        });
    }
    let Some(last) = history.last() else {
        return Ok(None);
    };
    let current = Current {
        id,
        opened_at: rfc3339(opened),
        opened_by,
        version: last.version,
        updated_at: last.at.clone(),
        updated_by: last.author.clone(),
        record: last.record.clone(),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT alert_id FROM incident_alerts WHERE incident_id = ?1 ORDER BY alert_id",
    )?;
    let alerts = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(Incident {
        current,
        alerts,
        history,
    }))
}

/// Incidents as they stand now, newest first (at most 500).
pub fn list(tx: &Audited<'_>, f: &Filter) -> Result<Vec<Current>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT i.id, i.created_at, i.created_by, v.version, v.at, v.author, v.record
         FROM incidents i JOIN incident_versions v ON v.incident_id = i.id
          AND v.version = (SELECT max(version) FROM incident_versions WHERE incident_id = i.id)
         WHERE (CAST(?1 AS TEXT) IS NULL OR json_extract(v.record, '$.status') = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR json_extract(v.record, '$.category') = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR json_extract(v.record, '$.occurred_at') >= ?3)
           AND (CAST(?4 AS TEXT) IS NULL OR json_extract(v.record, '$.occurred_at') < ?4)
         ORDER BY i.id DESC LIMIT 500",
    )?;
    let rows = stmt
        .query_map(params![f.status, f.category, f.from, f.to], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, opened, opened_by, version, at, author, json)| {
            Ok(Current {
                id,
                opened_at: rfc3339(opened),
                opened_by,
                version,
                updated_at: rfc3339(at),
                updated_by: author,
                record: parse(id, &json)?,
            })
        })
        .collect()
}

/// The incidents an alert is recorded in: (id, status).
pub fn for_alert(tx: &Audited<'_>, alert_id: i64) -> Result<Vec<(i64, String)>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT l.incident_id, json_extract(v.record, '$.status')
         FROM incident_alerts l JOIN incident_versions v ON v.incident_id = l.incident_id
          AND v.version = (SELECT max(version) FROM incident_versions
                           WHERE incident_id = l.incident_id)
         WHERE l.alert_id = ?1 ORDER BY l.incident_id",
    )?;
    let rows = stmt.query_map([alert_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A record to start from, from the alerts an incident is opened on: every user named, the
/// earliest time, the most severe alert's category and severity. The caller sets the class
/// (it needs the policy's groups).
pub fn prefill(tx: &Audited<'_>, alert_ids: &[i64]) -> Result<IncidentRecord> {
    let mut alerts = Vec::new();
    for &a in alert_ids {
        alerts.push(triage::get(tx, a)?.ok_or(IncidentError::NoSuchAlert(a))?);
    }
    let mut users: Vec<&str> = Vec::new();
    for a in &alerts {
        if !a.user.is_empty() && !users.contains(&a.user.as_str()) {
            users.push(&a.user);
        }
    }
    let worst = alerts.iter().max_by_key(|a| a.severity);
    Ok(IncidentRecord {
        subject: users.join(", "),
        subject_class: "unknown".into(),
        occurred_at: alerts
            .iter()
            .map(|a| a.observed_at.clone())
            .min()
            .unwrap_or_default(),
        category: worst.map(|a| a.category.clone()).unwrap_or_default(),
        severity: worst.map(|a| a.severity.to_string()).unwrap_or_default(),
        status: "open".into(),
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "incidents_tests.rs"]
mod tests;
