//! Every console endpoint and who may use it: the one table that the access check, the OpenAPI
//! description and the role-by-endpoint test all read, so they cannot disagree.

use crate::store::accounts::Role;
use serde_json::{Value, json};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "invigilator_session";
/// The header API clients send the CSRF token in; forms send it as the `csrf` field.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No log-in needed (the log-in page itself, static files, health).
    Public,
    /// Any logged-in member of staff (their own account, the home page).
    Staff,
    /// Only these roles.
    Roles(&'static [Role]),
    /// Account administrators, whatever their role.
    Admin,
}

impl Access {
    pub fn allows(self, role: Role, is_admin: bool) -> bool {
        match self {
            Access::Public | Access::Staff => true,
            Access::Roles(roles) => roles.contains(&role),
            Access::Admin => is_admin,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// axum's syntax, which is also OpenAPI's: `/api/alerts/{id}`.
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

use Role::{Dsl, Governor, Leadership, Technician};

/// Alerts' metadata and triage: technical staff and the DSL.
pub const TRIAGE: &[Role] = &[Technician, Dsl];
/// The incident log in full, and changes to it.
pub const SAFEGUARDING: &[Role] = &[Dsl];
/// Reading the incident log in full.
pub const INCIDENT_READERS: &[Role] = &[Dsl, Leadership];
/// Summaries without names: governors too.
pub const OVERSIGHT: &[Role] = &[Dsl, Leadership, Governor];
/// The two-person rule's second person: another senior member of staff.
pub const SENIOR: &[Role] = &[Dsl, Leadership];
pub const REQUESTERS: &[Role] = &[Leadership];
pub const RUNNERS: &[Role] = &[Technician];
pub const CHECK_READERS: &[Role] = &[Technician, Dsl, Leadership];
pub const HEALTH: &[Role] = &[Technician, Dsl];

const fn r(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
    }
}

#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // Log-in and the account itself.
    r("GET", "/login", Access::Public, "Log-in page"),
    r("POST", "/login", Access::Public, "Log in (form)"),
    r("POST", "/api/login", Access::Public, "Log in; returns the CSRF token for later calls"),
    r("GET", "/login/sso", Access::Public, "Single sign-on: sends the browser to the school's identity provider"),
    r("GET", "/login/sso/callback", Access::Public, "Single sign-on: the identity provider's answer"),
    r("POST", "/logout", Access::Staff, "Log out"),
    r("POST", "/api/logout", Access::Staff, "Log out"),
    r("GET", "/", Access::Staff, "Home page for the user's role"),
    r("GET", "/account", Access::Staff, "Own account: password, one-time codes"),
    r("POST", "/account/password", Access::Staff, "Change own password"),
    r("POST", "/api/account/password", Access::Staff, "Change own password; returns the new CSRF token"),
    r("POST", "/account/totp", Access::Staff, "Turn one-time codes on or off"),
    r("GET", "/api/me", Access::Staff, "Who is logged in, with role and CSRF token"),
    r("GET", "/static/console.css", Access::Public, "Style sheet"),
    r("GET", "/static/console.js", Access::Public, "Live updates script"),
    r("GET", "/healthz", Access::Public, "Liveness"),
    r("GET", "/api/openapi.json", Access::Public, "This API's OpenAPI description"),
    // Alerts.
    r("GET", "/alerts", Access::Roles(TRIAGE), "Alerts, newest first, with filters"),
    r("GET", "/api/alerts", Access::Roles(TRIAGE), "Alerts, newest first, with filters"),
    r("GET", "/api/alerts/stream", Access::Roles(TRIAGE), "New alerts as server-sent events"),
    r("GET", "/alerts/{id}", Access::Roles(TRIAGE), "One alert: why it fired, events around it"),
    r("GET", "/api/alerts/{id}", Access::Roles(TRIAGE), "One alert: why it fired, events around it"),
    r("POST", "/alerts/{id}/triage", Access::Roles(TRIAGE), "Change status, assign, add a note"),
    r("POST", "/api/alerts/{id}/triage", Access::Roles(TRIAGE), "Change status, assign, add a note"),
    r("POST", "/alerts/bulk", Access::Roles(TRIAGE), "Change the status of several alerts"),
    r("POST", "/api/alerts/bulk", Access::Roles(TRIAGE), "Change the status of several alerts"),
    // The incident log.
    r("GET", "/incidents", Access::Roles(OVERSIGHT), "Incidents, newest first (governors: summaries without names)"),
    r("GET", "/api/incidents", Access::Roles(OVERSIGHT), "Incidents, newest first (governors: summaries without names)"),
    r("GET", "/incidents/new", Access::Roles(SAFEGUARDING), "Form for a new incident, pre-filled from ?alerts=1,2"),
    r("POST", "/incidents", Access::Roles(SAFEGUARDING), "Record an incident (linking and escalating its alerts)"),
    r("POST", "/api/incidents", Access::Roles(SAFEGUARDING), "Record an incident (linking and escalating its alerts)"),
    r("GET", "/incidents/{id}", Access::Roles(INCIDENT_READERS), "One incident with its version history"),
    r("GET", "/api/incidents/{id}", Access::Roles(INCIDENT_READERS), "One incident with its version history"),
    r("POST", "/incidents/{id}", Access::Roles(SAFEGUARDING), "Edit an incident (appends a version)"),
    r("POST", "/api/incidents/{id}", Access::Roles(SAFEGUARDING), "Edit an incident (appends a version)"),
    // Two-person rule for a pupil's full addresses and searches.
    r("POST", "/alerts/{id}/reveal", Access::Roles(SAFEGUARDING), "Ask for an alert's full content, with a reason"),
    r("POST", "/api/alerts/{id}/reveal", Access::Roles(SAFEGUARDING), "Ask for an alert's full content, with a reason"),
    r("GET", "/reveals", Access::Roles(SENIOR), "Reveal requests: waiting and recently decided"),
    r("GET", "/api/reveals", Access::Roles(SENIOR), "Reveal requests: waiting and recently decided"),
    r("POST", "/reveals/{id}/decide", Access::Roles(SENIOR), "Approve or refuse another's reveal request"),
    r("POST", "/api/reveals/{id}/decide", Access::Roles(SENIOR), "Approve or refuse another's reveal request"),
    // Agents.
    r("GET", "/agents", Access::Roles(HEALTH), "Agents' health"),
    r("GET", "/api/agents", Access::Roles(HEALTH), "Agents' health"),
    // The access audit trail.
    r("GET", "/audit", Access::Roles(OVERSIGHT), "The access audit trail"),
    r("GET", "/api/audit", Access::Roles(OVERSIGHT), "The access audit trail"),
    r("GET", "/api/audit/verify", Access::Roles(OVERSIGHT), "Check the audit chain"),
    // Subject access (UK GDPR Art. 15): the DSL only.
    r("GET", "/sar", Access::Roles(SAFEGUARDING), "Subject access export: choose the user, give the purpose"),
    r("GET", "/api/sar", Access::Roles(SAFEGUARDING), "Everything held about one user, as a JSON attachment (user, purpose required)"),
    // Accounts.
    r("GET", "/users", Access::Admin, "Staff accounts"),
    r("GET", "/api/users", Access::Admin, "Staff accounts"),
    r("POST", "/users", Access::Admin, "Create an account"),
    r("POST", "/api/users", Access::Admin, "Create an account"),
    r("POST", "/users/{username}", Access::Admin, "Change role, disable, reset password"),
    r("POST", "/api/users/{username}", Access::Admin, "Change role, disable, reset password"),
    // Leadership checks: requested by leadership, run by a technician who is not the requester.
    r("GET", "/checks", Access::Roles(CHECK_READERS), "Checks"),
    r("GET", "/api/checks", Access::Roles(CHECK_READERS), "Checks"),
    r("GET", "/checks/new", Access::Roles(REQUESTERS), "Request a check"),
    r("POST", "/checks", Access::Roles(REQUESTERS), "Request a check"),
    r("POST", "/api/checks", Access::Roles(REQUESTERS), "Request a check"),
    r("GET", "/checks/{id}", Access::Roles(CHECK_READERS), "One check and its result"),
    r("GET", "/api/checks/{id}", Access::Roles(CHECK_READERS), "One check and its result"),
    r("GET", "/checks/{id}/csv", Access::Roles(CHECK_READERS), "A check's result as CSV"),
    r("GET", "/checks/{id}/print", Access::Roles(CHECK_READERS), "A check, printable"),
    r("POST", "/checks/{id}/run", Access::Roles(RUNNERS), "Run a requested check"),
    r("POST", "/api/checks/{id}/run", Access::Roles(RUNNERS), "Run a requested check"),
    // The weekly report: no pupil names, so governors too.
    r("GET", "/reports/weekly", Access::Roles(OVERSIGHT), "The weekly report (?week=2026-W47)"),
    r("GET", "/api/reports/weekly", Access::Roles(OVERSIGHT), "The weekly report (?week=2026-W47)"),
    r("GET", "/reports", Access::Roles(OVERSIGHT), "Stored reports"),
    r("GET", "/api/reports", Access::Roles(OVERSIGHT), "Stored reports"),
    r("GET", "/reports/{id}", Access::Roles(OVERSIGHT), "One stored report"),
    r("GET", "/api/reports/{id}", Access::Roles(OVERSIGHT), "One stored report"),
];

pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

fn roles_of(access: Access) -> Vec<&'static str> {
    match access {
        Access::Public => vec![],
        Access::Staff => Role::ALL.iter().map(|r| r.as_str()).collect(),
        Access::Roles(rs) => rs.iter().map(|r| r.as_str()).collect(),
        Access::Admin => vec!["admin"],
    }
}

/// OpenAPI 3.1 for the JSON API, built from [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES.iter().filter(|r| r.path.starts_with("/api/")) {
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "parameters": params,
            "x-roles": roles_of(route.access),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "400": {"description": "The request names a problem", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "Not logged in"},
                "403": {"description": "The role may not do this, or the CSRF token is missing or wrong"},
            }
        });
        if route.access != Access::Public {
            op["security"] = json!([{"session": []}]);
        }
        paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(route.method.to_ascii_lowercase(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Invigilator console API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every call is recorded in the access audit trail. Log in with POST /api/login; \
                send the session cookie, and the returned csrf_token as X-CSRF-Token on every POST.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..]
                    .iter()
                    .all(|b| (a.method, a.path) != (b.method, b.path)),
                "{} {} is listed twice",
                a.method,
                a.path
            );
        }
    }

    #[test]
    fn governors_see_no_alerts_and_technicians_no_incidents() {
        let alerts = find("GET", "/api/alerts").unwrap();
        assert!(!alerts.access.allows(Role::Governor, false));
        assert!(!alerts.access.allows(Role::Leadership, false));
        assert!(alerts.access.allows(Role::Technician, false));
        let users = find("GET", "/api/users").unwrap();
        assert!(!users.access.allows(Role::Dsl, false));
        assert!(users.access.allows(Role::Governor, true));
    }

    #[test]
    fn incidents_and_reveals_follow_the_two_person_rule() {
        let allows = |m, p, role| find(m, p).unwrap().access.allows(role, false);
        for p in ["/alerts/{id}/reveal", "/api/alerts/{id}/reveal"] {
            assert!(allows("POST", p, Role::Dsl));
            for role in [Role::Technician, Role::Leadership, Role::Governor] {
                assert!(!allows("POST", p, role), "{role} may request a reveal");
            }
        }
        for p in ["/reveals/{id}/decide", "/api/reveals/{id}/decide"] {
            assert!(allows("POST", p, Role::Dsl) && allows("POST", p, Role::Leadership));
            assert!(!allows("POST", p, Role::Technician) && !allows("POST", p, Role::Governor));
        }
        assert!(allows("GET", "/api/incidents", Role::Governor));
        assert!(!allows("GET", "/api/incidents/{id}", Role::Governor));
        assert!(allows("GET", "/api/incidents/{id}", Role::Leadership));
        assert!(!allows("POST", "/api/incidents/{id}", Role::Leadership));
        assert!(!allows("GET", "/api/incidents", Role::Technician));
    }

    #[test]
    fn the_openapi_document_describes_every_api_route() {
        let doc = openapi();
        for r in ROUTES.iter().filter(|r| r.path.starts_with("/api/")) {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert_eq!(op["summary"], r.summary, "{} {}", r.method, r.path);
        }
        assert_eq!(
            doc["paths"]["/api/alerts/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
    }
}
