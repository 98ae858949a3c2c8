//! One alert with everything its detail view shows, read under the viewer's privacy rules
//! and audited in the same transaction. The alert page, its JSON twin and the reveal panel
//! all read it here.

use super::privacy::{self, Visibility};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::Role;
use crate::store::triage::{self, Listed};
use crate::store::{self, Audited, EventRow};
use serde::Serialize;
use std::sync::Arc;

/// One alert with everything the detail view shows.
#[derive(Debug, Serialize)]
pub struct Detail {
    pub alert: Listed,
    pub history: Vec<triage::Note>,
    /// The device's events just before and after the one that fired (masked per role).
    pub events: Vec<EventRow>,
    /// Whether the events are shown in full, host only, or not at all (illegal class).
    pub content: &'static str,
    pub revealable: bool,
    pub is_child: bool,
}

/// How many events either side of the one that fired.
const CONTEXT_EVENTS: u64 = 10;

/// `reveal_grant` gives the reason of a live approved reveal for this member of staff, if any:
/// a view it opens up is audited as `alert.view.revealed` with that reason as its purpose.
pub async fn detail(
    c: &Arc<Console>,
    staff: &Staff,
    id: i64,
    reveal_grant: impl FnOnce(&Audited<'_>) -> Result<Option<String>, ConsoleError> + Send + 'static,
) -> Result<(Detail, Visibility), ConsoleError> {
    let policy = c.policy.load_full();
    let role = staff.role;
    let viewer = staff.username.clone();
    c.audited_as(staff, move |conn| {
        let a =
            triage::get(conn, id)?.ok_or_else(|| ConsoleError::NotFound(format!("alert {id}")))?;
        let grant = reveal_grant(conn)?;
        let granted = grant.is_some();
        let v = privacy::for_alert(&policy, role, &a, granted);
        let entry = match grant.filter(|_| v != privacy::for_alert(&policy, role, &a, false)) {
            Some(reason) => {
                Audit::new("alert.view.revealed", format!("alert:{id}")).purpose(reason)
            }
            None => Audit::new("alert.view", format!("alert:{id}")),
        };
        // Only the same person's events: a shared computer's other users are not this
        // alert's business.
        let events = match a.event_seq {
            Some(seq) if v.content != privacy::Content::None => {
                store::events::around(conn, &a.agent_id, seq, CONTEXT_EVENTS, CONTEXT_EVENTS)?
                    .into_iter()
                    .filter(|e| e.user == a.user)
                    .collect()
            }
            _ => Vec::new(),
        };
        let is_child = privacy::is_child(&policy, &a);
        let guarded = privacy::for_alert(&policy, Role::Dsl, &a, false).revealable;
        let mut history = triage::notes(conn, id)?;
        // Notes on a guarded alert can repeat what the DSL saw: a technician reads only their
        // own, and the steps (who, when, status) of the rest.
        if role == Role::Technician && (guarded || privacy::is_illegal(&a)) {
            for n in &mut history {
                if !n.note.is_empty() && n.author != viewer {
                    n.note = privacy::WITHHELD.into();
                }
            }
        }
        let detail = Detail {
            is_child,
            history,
            events: privacy::events(events, v, a.event_seq, is_child && !granted),
            content: match v.content {
                privacy::Content::Full => "full",
                privacy::Content::HostOnly => "host-only",
                privacy::Content::None => "none",
            },
            revealable: v.revealable,
            alert: privacy::alert(a, v),
        };
        Ok(((detail, v), entry))
    })
    .await
}
