//! What each role may see of an alert and the events around it (data minimisation).
//!
//! - Illegal-class alerts show no content to anyone, ever: no events, only the address's hash.
//! - Technicians see metadata: hosts, not full addresses, titles or searches, and not the words
//!   a keyword rule found.
//! - The DSL sees everything, except that a pupil's full addresses and searches behind a
//!   serious or keyword alert stay hidden until a second senior person approves a reveal
//!   (the policies' "more than one senior member of staff").

use crate::store::EventRow;
use crate::store::accounts::Role;
use crate::store::triage::Listed;
use invigilator_policy::Policy;
use invigilator_policy::groups::Class;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Full addresses, titles and searches.
    Full,
    /// Browsing shown as its host only.
    HostOnly,
    /// Nothing of the device's events.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    /// Whether the alert's `matched` (the words or entry found) is shown.
    pub matched: bool,
    pub content: Content,
    /// Whether a reveal could lift the masking (so the page offers to request one).
    pub revealable: bool,
}

pub const WITHHELD: &str = "[withheld: shown to the safeguarding lead]";
pub const HIDDEN: &str = "[hidden: needs an approved reveal]";

pub fn is_illegal(a: &Listed) -> bool {
    a.severity.class() == invigilator_policy::AlertClass::Illegal
}

fn is_keyword(a: &Listed) -> bool {
    a.rule.starts_with("keywords.")
}

/// Pupils, and anyone the policy cannot place, are treated as children.
pub fn is_child(policy: &Policy, a: &Listed) -> bool {
    let device = policy.groups.device(&a.group);
    matches!(
        policy.groups.person(&a.user, &device).class,
        Class::Pupil | Class::Unknown
    )
}

pub fn for_alert(policy: &Policy, role: Role, a: &Listed, reveal_granted: bool) -> Visibility {
    if is_illegal(a) {
        return Visibility {
            matched: true,
            content: Content::None,
            revealable: false,
        };
    }
    let guarded = is_child(policy, a)
        && (a.severity == invigilator_policy::Severity::Serious || is_keyword(a));
    match role {
        Role::Dsl => Visibility {
            matched: true,
            content: if guarded && !reveal_granted {
                Content::HostOnly
            } else {
                Content::Full
            },
            revealable: guarded && !reveal_granted,
        },
        _ => Visibility {
            matched: !is_keyword(a),
            content: Content::HostOnly,
            revealable: false,
        },
    }
}

/// Applies a visibility to an alert's own fields.
pub fn alert(mut a: Listed, v: Visibility) -> Listed {
    if !v.matched {
        a.matched = WITHHELD.into();
    }
    a
}

/// Applies a visibility to the events shown around an alert. Only the alert's own event
/// (`own_seq`) can be shown in full to a child's detriment: its neighbours may be other
/// concerns of the same pupil that the two-person rule still guards, so for a child they stay
/// host-only unless a reveal was granted for this alert.
pub fn events(
    events: Vec<EventRow>,
    v: Visibility,
    own_seq: Option<u64>,
    guard_neighbours: bool,
) -> Vec<EventRow> {
    match v.content {
        Content::None => Vec::new(),
        Content::HostOnly => events.into_iter().map(host_only).collect(),
        Content::Full => events
            .into_iter()
            .map(|e| {
                if guard_neighbours && Some(e.seq) != own_seq {
                    host_only(e)
                } else {
                    e
                }
            })
            .collect(),
    }
}

/// What is left of an event when its content is withheld: which program, site, device or
/// session change, never what was typed, searched or read.
fn host_only(mut e: EventRow) -> EventRow {
    let d = &mut e.details;
    let hide = |d: &mut serde_json::Map<String, Value>, field: &str| {
        let present = match d.get(field) {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            _ => false,
        };
        if present {
            d.insert(field.into(), Value::String(HIDDEN.into()));
        }
    };
    match e.kind.as_str() {
        "browsing" => {
            if let Some(Value::String(u)) = d.get("url") {
                let shown = url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(|h| format!("{}://{h}/…", u.scheme())))
                    .unwrap_or_else(|| HIDDEN.into());
                d.insert("url".into(), Value::String(shown));
            }
            for field in ["title", "search_terms", "detail"] {
                hide(d, field);
            }
        }
        // A command line can hold a search, an address or a document's name.
        "process" => hide(d, "argv"),
        _ => return e,
    }
    d.insert("masked".into(), Value::Bool(true));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(rule: &str, severity: &str, user: &str) -> Listed {
        Listed {
            id: 1,
            agent_id: "a".into(),
            hostname: "pc".into(),
            group: "ks2-laptops".into(),
            user: user.into(),
            kind: "browsing".into(),
            rule: rule.into(),
            category: "c".into(),
            severity: severity.parse().unwrap(),
            summary: "s".into(),
            matched: "suicide in the search terms".into(),
            observed_at: String::new(),
            last_observed_at: String::new(),
            created_at: String::new(),
            policy_version: "1".into(),
            event_seq: Some(1),
            status: "new".into(),
            assigned_to: None,
            count: 1,
            response: String::new(),
        }
    }

    fn browsing() -> EventRow {
        let mut details = serde_json::Map::new();
        details.insert(
            "url".into(),
            "https://www.google.com/search?q=how+to+self+harm".into(),
        );
        details.insert("title".into(), "how to self harm - Google Search".into());
        details.insert("search_terms".into(), "how to self harm".into());
        EventRow {
            agent_id: "a".into(),
            seq: 1,
            kind: "browsing".into(),
            observed_at: String::new(),
            received_at: String::new(),
            hostname: "pc".into(),
            user: "pupil".into(),
            details,
        }
    }

    #[test]
    fn a_pupils_search_is_hidden_from_everyone_until_a_reveal() {
        let policy = Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let a = listed("keywords.self-harm", "serious", "nobody-the-policy-knows");
        assert!(is_child(&policy, &a));
        for role in Role::ALL {
            let v = for_alert(&policy, role, &a, false);
            let shown = serde_json::to_string(&events(vec![browsing()], v, Some(1), true)).unwrap();
            assert!(!shown.contains("self harm"), "{role}: {shown}");
            assert!(shown.contains("www.google.com"), "{role}: {shown}");
        }
        let tech = for_alert(&policy, Role::Technician, &a, true);
        assert_eq!(alert(a.clone(), tech).matched, WITHHELD);
        let dsl = for_alert(&policy, Role::Dsl, &a, true);
        let shown = serde_json::to_string(&events(vec![browsing()], dsl, Some(1), false)).unwrap();
        assert!(shown.contains("how to self harm"));
    }

    #[test]
    fn a_childs_neighbouring_events_stay_guarded_even_behind_a_mild_alert() {
        let mut own = browsing();
        own.seq = 7;
        own.details
            .insert("title".into(), "Minecraft Classic".into());
        own.details.insert("search_terms".into(), "".into());
        let neighbour = browsing();
        let full = Visibility {
            matched: true,
            content: Content::Full,
            revealable: false,
        };
        let shown = events(vec![neighbour.clone(), own], full, Some(7), true);
        assert_eq!(shown[1].details["title"], "Minecraft Classic");
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("self harm"), "{text}");
        // With a reveal granted (or for an adult), the neighbours are shown.
        let shown = events(vec![neighbour], full, Some(7), false);
        assert!(serde_json::to_string(&shown).unwrap().contains("self harm"));
    }

    #[test]
    fn masking_a_process_hides_its_command_line() {
        let mut details = serde_json::Map::new();
        details.insert("name".into(), "chrome".into());
        details.insert(
            "argv".into(),
            serde_json::json!(["chrome", "https://www.google.com/search?q=diary"]),
        );
        let e = EventRow {
            agent_id: "a".into(),
            seq: 2,
            kind: "process".into(),
            observed_at: String::new(),
            received_at: String::new(),
            hostname: "pc".into(),
            user: "pupil".into(),
            details,
        };
        let v = Visibility {
            matched: false,
            content: Content::HostOnly,
            revealable: false,
        };
        let shown = serde_json::to_string(&events(vec![e], v, None, true)).unwrap();
        assert!(!shown.contains("diary"), "{shown}");
        assert!(shown.contains("chrome"), "{shown}");
    }

    #[test]
    fn illegal_alerts_show_no_events_to_anyone() {
        let policy = Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let a = listed("illegal.iwf", "illegal", "staff1");
        for role in Role::ALL {
            for granted in [false, true] {
                let v = for_alert(&policy, role, &a, granted);
                assert!(events(vec![browsing()], v, Some(1), false).is_empty());
                assert!(!v.revealable);
            }
        }
    }
}
