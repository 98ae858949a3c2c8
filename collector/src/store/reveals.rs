//! The two-person rule for a pupil's full addresses and searches: the safeguarding lead asks,
//! with a reason, for one alert; another senior member of staff approves or refuses; an
//! approval lets only the person who asked see that alert in full, for a limited time.
//!
//! Who may ask or decide is the access table's business; whether an alert is revealable at all
//! is the console's (it needs the policy). This module still refuses illegal-class alerts
//! itself: nothing may ever open those.

use super::{Admin, Audited};
use super::{now_us, rfc3339};
use crate::store::db::{OptionalExtension, params};
use serde::Serialize;
use std::time::Duration;

/// Fewer words than this is not a reason anyone could review later.
pub const MIN_REASON_WORDS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error(
        "reason: say why the full content is needed (at least {MIN_REASON_WORDS} words); it is \
         shown to the approver and kept in the audit trail"
    )]
    NoReason,
    #[error("no alert {0}")]
    NoSuchAlert(i64),
    #[error("alert {0} is illegal-class: its content is never shown, to anyone")]
    Illegal(i64),
    #[error("no reveal request {0}")]
    NoSuchRequest(i64),
    #[error(
        "reveal request {0} is your own: another senior member of staff must approve or refuse it"
    )]
    OwnRequest(i64),
    #[error(
        "reveal request {id} was made before {approver}'s account was created: the approver must \
         already have been a member of staff when it was asked"
    )]
    ApproverNewer { id: i64, approver: String },
    #[error("no staff account named {0:?}: only a member of staff may decide a reveal request")]
    NoSuchApprover(String),
    #[error(
        "{0} is not a named reveal approver: approvers are listed in collector.toml \
         ([console] reveal_approvers), which only someone with the server's files can change"
    )]
    NotAnApprover(String),
    #[error(
        "{approver}'s account was {what} by {requester}, who asked for reveal request {id}: \
         the second person must not owe their account to the first"
    )]
    MadeByRequester {
        id: i64,
        approver: String,
        requester: String,
        what: &'static str,
    },
    #[error("reveal request {id} was already {decision}")]
    Decided { id: i64, decision: String },
    #[error("you already have reveal request {0} for this alert waiting or approved")]
    Outstanding(i64),
    #[error("database error: {0}")]
    Sql(#[from] crate::store::db::Error),
}

type Result<T, E = RevealError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub alert_id: i64,
    pub requested_by: String,
    pub reason: String,
    pub requested_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// approved | refused; None while waiting.
    pub decision: Option<String>,
    pub expires_at: Option<String>,
    #[serde(skip)]
    expires_us: Option<i64>,
}

impl Request {
    /// An approval that has not run out.
    pub fn live(&self, now_us: i64) -> bool {
        self.decision.as_deref() == Some("approved") && self.expires_us.is_some_and(|e| now_us < e)
    }

    pub fn waiting(&self) -> bool {
        self.decision.is_none()
    }
}

const COLUMNS: &str = "id, alert_id, requested_by, reason, requested_at, decided_by, decided_at,
    decision, expires_at";

fn row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Request> {
    let expires_us: Option<i64> = r.get(8)?;
    Ok(Request {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        requested_by: r.get(2)?,
        reason: r.get(3)?,
        requested_at: rfc3339(r.get(4)?),
        decided_by: r.get(5)?,
        decided_at: r.get::<_, Option<i64>>(6)?.map(rfc3339),
        decision: r.get(7)?,
        expires_at: expires_us.map(rfc3339),
        expires_us,
    })
}

pub fn get(tx: &Audited<'_>, id: i64) -> Result<Option<Request>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM reveal_requests WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// Asks to see one alert in full. Returns the request's id.
pub fn request(tx: &Audited<'_>, alert_id: i64, requester: &str, reason: &str) -> Result<i64> {
    let conn = tx.conn;
    let reason = reason.trim();
    if reason.split_whitespace().count() < MIN_REASON_WORDS {
        return Err(RevealError::NoReason);
    }
    let severity = conn
        .query_row(
            "SELECT severity FROM alerts WHERE id = ?1",
            [alert_id],
            |r| super::severity(r, 0),
        )
        .optional()?;
    let Some(severity) = severity else {
        return Err(RevealError::NoSuchAlert(alert_id));
    };
    if severity.class() == invigilator_policy::AlertClass::Illegal {
        return Err(RevealError::Illegal(alert_id));
    }
    let now = now_us();
    if let Some(mine) = latest(&tx.admin(), alert_id, requester)?
        && (mine.waiting() || mine.live(now))
    {
        return Err(RevealError::Outstanding(mine.id));
    }
    let id = conn.query_row(
        "INSERT INTO reveal_requests(alert_id, requested_by, reason, requested_at)
         VALUES (?1, ?2, ?3, ?4)
         RETURNING id",
        params![alert_id, requester, reason, now],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(id)
}

/// Approves or refuses a waiting request, once. An approval lasts `lasts`.
/// Approves or refuses a request. `approvers` are the names in collector.toml: an account
/// administrator can mint accounts with any role, so a role alone does not make a second person.
pub fn decide(
    tx: &Audited<'_>,
    id: i64,
    approver: &str,
    approve: bool,
    lasts: Duration,
    approvers: &[String],
) -> Result<Request> {
    let conn = tx.conn;
    let req = get(tx, id)?.ok_or(RevealError::NoSuchRequest(id))?;
    if req.requested_by.eq_ignore_ascii_case(approver) {
        return Err(RevealError::OwnRequest(id));
    }
    if !approvers.iter().any(|a| a.eq_ignore_ascii_case(approver)) {
        return Err(RevealError::NotAnApprover(approver.to_owned()));
    }
    let made: Option<(Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT created_by, reset_by FROM staff WHERE username = ?1",
            [approver],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((created_by, reset_by)) = made {
        for (what, by) in [("created", created_by), ("reset", reset_by)] {
            if by.is_some_and(|b| b.eq_ignore_ascii_case(&req.requested_by)) {
                return Err(RevealError::MadeByRequester {
                    id,
                    approver: approver.to_owned(),
                    requester: req.requested_by.clone(),
                    what,
                });
            }
        }
    }
    // An account administrator could otherwise create a second account and approve their own
    // request with it: the second person must have existed when the request was made.
    let created: Option<i64> = conn
        .query_row(
            "SELECT created_at FROM staff WHERE username = ?1",
            [approver],
            |r| r.get(0),
        )
        .optional()?;
    let requested_us: i64 = conn.query_row(
        "SELECT requested_at FROM reveal_requests WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    match created {
        None => return Err(RevealError::NoSuchApprover(approver.to_owned())),
        Some(c) if c > requested_us => {
            return Err(RevealError::ApproverNewer {
                id,
                approver: approver.to_owned(),
            });
        }
        Some(_) => {}
    }
    if let Some(decision) = req.decision {
        return Err(RevealError::Decided { id, decision });
    }
    let now = now_us();
    let (decision, expires) = if approve {
        (
            "approved",
            Some(now.saturating_add(lasts.as_micros() as i64)),
        )
    } else {
        ("refused", None)
    };
    // The WHERE makes "decided once" hold even against a decision made in between.
    let n = conn.execute(
        "UPDATE reveal_requests SET decided_by = ?2, decided_at = ?3, decision = ?4,
                expires_at = ?5
         WHERE id = ?1 AND decision IS NULL",
        params![id, approver, now, decision, expires],
    )?;
    let req = get(tx, id)?.ok_or(RevealError::NoSuchRequest(id))?;
    if n == 0 {
        return Err(RevealError::Decided {
            id,
            decision: req.decision.unwrap_or_default(),
        });
    }
    Ok(req)
}

/// This user's most recent request for this alert.
/// This member of staff's own latest request for an alert: the workflow's state, not the
/// alert's content.
pub fn latest(tx: &Admin<'_>, alert_id: i64, username: &str) -> Result<Option<Request>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM reveal_requests WHERE alert_id = ?1 AND requested_by = ?2
                 ORDER BY id DESC LIMIT 1"
            ),
            params![alert_id, username],
            row,
        )
        .optional()?)
}

/// The live approval letting this user see this alert in full, if any.
pub fn grant(tx: &Audited<'_>, alert_id: i64, username: &str, now: i64) -> Result<Option<Request>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM reveal_requests
                 WHERE alert_id = ?1 AND requested_by = ?2 AND decision = 'approved'
                   AND expires_at > ?3
                 ORDER BY expires_at DESC LIMIT 1"
            ),
            params![alert_id, username, now],
            row,
        )
        .optional()?)
}

pub fn granted(tx: &Audited<'_>, alert_id: i64, username: &str, now: i64) -> Result<bool> {
    Ok(grant(tx, alert_id, username, now)?.is_some())
}

/// Requests waiting for a decision, then those decided in the last `recent`, newest first.
pub fn list(tx: &Audited<'_>, now: i64, recent: Duration) -> Result<Vec<Request>> {
    let conn = tx.conn;
    let since = now.saturating_sub(recent.as_micros() as i64);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM reveal_requests WHERE decision IS NULL OR decided_at >= ?1
         ORDER BY decision IS NOT NULL, id DESC LIMIT 200"
    ))?;
    let rows = stmt.query_map([since], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Connection;
    use crate::store::{alerts, test_db};
    use invigilator_policy::Alert;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const REASON: &str = "pattern of self-harm searches this week";

    /// A member of staff whose account was created at `created_us`.
    fn staff(conn: &Connection, name: &str, created_us: i64) {
        conn.execute(
            "INSERT INTO staff(username, role, password_hash, created_at)
             VALUES (?1, 'leadership', 'x', ?2)",
            params![name, created_us],
        )
        .unwrap();
    }

    fn senior_staff(conn: &Connection) {
        for name in ["head", "deputy"] {
            staff(conn, name, 0);
        }
    }

    fn alert(conn: &Connection, rule: &str, severity: &str) -> i64 {
        alerts::insert(
            &crate::store::System::test(conn),
            &Alert {
                agent_id: "a1".into(),
                hostname: "pc1".into(),
                user: "amy.p".into(),
                kind: "browsing".into(),
                rule: rule.into(),
                category: "c".into(),
                severity: severity.parse().unwrap(),
                summary: "s".into(),
                matched: "m".into(),
                observed_at_us: 1,
                policy_version: "1".into(),
                event_seq: Some(1),
                response: String::new(),
                aggregate_key: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn the_requester_cannot_approve_their_own_request() {
        let (_d, conn) = test_db();
        senior_staff(&conn);
        let a = alert(&conn, "keywords.self-harm", "serious");
        let id = request(&crate::store::Audited::test(&conn), a, "dsl1", REASON).unwrap();
        let err = decide(
            &crate::store::Audited::test(&conn),
            id,
            "DSL1",
            true,
            DAY,
            &named(),
        )
        .unwrap_err();
        assert!(matches!(err, RevealError::OwnRequest(_)), "{err}");
        assert!(err.to_string().contains("another senior"), "{err}");
        assert!(!granted(&crate::store::Audited::test(&conn), a, "dsl1", now_us()).unwrap());
        let done = decide(
            &crate::store::Audited::test(&conn),
            id,
            "head",
            true,
            DAY,
            &named(),
        )
        .unwrap();
        assert_eq!(done.decided_by.as_deref(), Some("head"));
        assert!(granted(&crate::store::Audited::test(&conn), a, "dsl1", now_us()).unwrap());
        // Decided once; and the grant is the requester's alone.
        assert!(matches!(
            decide(
                &crate::store::Audited::test(&conn),
                id,
                "deputy",
                false,
                DAY,
                &named()
            ),
            Err(RevealError::Decided { .. })
        ));
        assert!(!granted(&crate::store::Audited::test(&conn), a, "head", now_us()).unwrap());
        assert!(matches!(
            request(&crate::store::Audited::test(&conn), a, "dsl1", REASON),
            Err(RevealError::Outstanding(_))
        ));
    }

    #[test]
    fn a_reason_and_a_revealable_alert_are_needed() {
        let (_d, conn) = test_db();
        let a = alert(&conn, "keywords.self-harm", "serious");
        assert!(matches!(
            request(
                &crate::store::Audited::test(&conn),
                a,
                "dsl1",
                "  because  "
            ),
            Err(RevealError::NoReason)
        ));
        let illegal = alert(&conn, "illegal.iwf", "illegal");
        assert!(matches!(
            request(&crate::store::Audited::test(&conn), illegal, "dsl1", REASON),
            Err(RevealError::Illegal(_))
        ));
        assert!(matches!(
            request(&crate::store::Audited::test(&conn), 999, "dsl1", REASON),
            Err(RevealError::NoSuchAlert(999))
        ));
    }

    #[test]
    fn a_grant_expires_and_a_refusal_grants_nothing() {
        let (_d, conn) = test_db();
        senior_staff(&conn);
        let a = alert(&conn, "keywords.self-harm", "serious");
        let id = request(&crate::store::Audited::test(&conn), a, "dsl1", REASON).unwrap();
        decide(
            &crate::store::Audited::test(&conn),
            id,
            "head",
            true,
            DAY,
            &named(),
        )
        .unwrap();
        let now = now_us();
        assert!(
            granted(
                &crate::store::Audited::test(&conn),
                a,
                "dsl1",
                now + 23 * 3600 * 1_000_000
            )
            .unwrap()
        );
        assert!(
            !granted(
                &crate::store::Audited::test(&conn),
                a,
                "dsl1",
                now + 25 * 3600 * 1_000_000
            )
            .unwrap()
        );

        let b = alert(&conn, "keywords.self-harm", "serious");
        let id = request(&crate::store::Audited::test(&conn), b, "dsl1", REASON).unwrap();
        let refused = decide(
            &crate::store::Audited::test(&conn),
            id,
            "head",
            false,
            DAY,
            &named(),
        )
        .unwrap();
        assert_eq!(refused.decision.as_deref(), Some("refused"));
        assert!(!granted(&crate::store::Audited::test(&conn), b, "dsl1", now_us()).unwrap());
        // Asking again after a refusal is allowed (new information), and shows as waiting.
        let again = request(&crate::store::Audited::test(&conn), b, "dsl1", REASON).unwrap();
        let pending = list(&crate::store::Audited::test(&conn), now_us(), DAY).unwrap();
        assert_eq!(pending[0].id, again);
        assert!(pending[0].waiting());
        assert_eq!(pending.len(), 3);
    }

    /// The approvers collector.toml names in these tests.
    fn named() -> Vec<String> {
        ["head", "deputy", "dsl1", "dsl1-second", "nobody", "made"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn only_named_approvers_not_made_by_the_requester_may_decide() {
        let (_d, conn) = test_db();
        senior_staff(&conn);
        staff(&conn, "dsl2", 0);
        let a = alert(&conn, "keywords.self-harm", "serious");
        let id = request(&crate::store::Audited::test(&conn), a, "dsl1", REASON).unwrap();
        let err = decide(
            &crate::store::Audited::test(&conn),
            id,
            "dsl2",
            true,
            DAY,
            &named(),
        )
        .unwrap_err();
        assert!(matches!(err, RevealError::NotAnApprover(_)), "{err}");
        assert!(err.to_string().contains("collector.toml"), "{err}");
        // A named approver whose account the requester created, or reset, may not.
        staff(&conn, "made", 0);
        for what in [
            crate::store::accounts::MadeBy::Created,
            crate::store::accounts::MadeBy::Reset,
        ] {
            conn.execute("UPDATE staff SET created_by = NULL, reset_by = NULL", [])
                .unwrap();
            crate::store::accounts::note_made_by(
                &crate::store::Admin::test(&conn),
                "made",
                what,
                "DSL1",
            )
            .unwrap();
            let err = decide(
                &crate::store::Audited::test(&conn),
                id,
                "made",
                true,
                DAY,
                &named(),
            )
            .unwrap_err();
            assert!(matches!(err, RevealError::MadeByRequester { .. }), "{err}");
        }
        assert!(
            get(&crate::store::Audited::test(&conn), id)
                .unwrap()
                .unwrap()
                .waiting()
        );
        decide(
            &crate::store::Audited::test(&conn),
            id,
            "head",
            true,
            DAY,
            &named(),
        )
        .unwrap();
    }

    #[test]
    fn an_account_created_after_the_request_cannot_approve_it() {
        let (_d, conn) = test_db();
        let a = alert(&conn, "keywords.self-harm", "serious");
        let id = request(&crate::store::Audited::test(&conn), a, "dsl1", REASON).unwrap();
        let err = decide(
            &crate::store::Audited::test(&conn),
            id,
            "nobody",
            true,
            DAY,
            &named(),
        )
        .unwrap_err();
        assert!(matches!(err, RevealError::NoSuchApprover(_)), "{err}");
        staff(&conn, "dsl1-second", now_us() + 1);
        let err = decide(
            &crate::store::Audited::test(&conn),
            id,
            "dsl1-second",
            true,
            DAY,
            &named(),
        )
        .unwrap_err();
        assert!(matches!(err, RevealError::ApproverNewer { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("already have been a member of staff"),
            "{err}"
        );
        assert!(
            get(&crate::store::Audited::test(&conn), id)
                .unwrap()
                .unwrap()
                .waiting()
        );
        assert!(!granted(&crate::store::Audited::test(&conn), a, "dsl1", now_us()).unwrap());
        // Someone who was already on the staff may.
        staff(&conn, "head", 0);
        decide(
            &crate::store::Audited::test(&conn),
            id,
            "head",
            true,
            DAY,
            &named(),
        )
        .unwrap();
        assert!(granted(&crate::store::Audited::test(&conn), a, "dsl1", now_us()).unwrap());
    }
}
