//! Staff accounts, for account administrators: create, change role, disable, reset password.

use super::layout::{csrf_field, page};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::{self, Account, MadeBy, NewAccount, Role};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/users", get(page_view).post(create_form))
        .route("/api/users", get(api).post(create_api))
        .route("/users/{username}", post(update_form))
        .route("/api/users/{username}", post(update_api))
}

async fn api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<Vec<Account>>, ConsoleError> {
    c.audited(&staff, Audit::new("staff.list", "staff"), |conn| {
        Ok(accounts::list(&conn.admin())?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Deserialize)]
pub struct CreateInput {
    username: String,
    role: String,
    #[serde(default)]
    is_admin: Option<String>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    /// Empty: a password is generated and shown once.
    #[serde(default)]
    password: String,
}

/// What a `staff.create` entry records: the powers the new account was given.
pub fn created_detail(role: Role, is_admin: bool) -> String {
    format!("role={role} admin={is_admin}")
}

/// Creates the account; returns the password to hand over when one was generated.
async fn create(
    c: &Arc<Console>,
    staff: &Staff,
    input: CreateInput,
) -> Result<Option<String>, ConsoleError> {
    let role: Role = input.role.parse()?;
    let generated = input.password.is_empty().then(accounts::generate_password);
    let password = generated.clone().unwrap_or(input.password);
    let object = format!("staff:{}", input.username);
    let is_admin = matches!(input.is_admin.as_deref(), Some("true" | "on" | "1"));
    let entry = Audit::new("staff.create", object).detail(created_detail(role, is_admin));
    let by = staff.username.clone();
    c.audited(staff, entry, move |conn| {
        accounts::create(
            &conn.admin(),
            &NewAccount {
                username: &input.username,
                role,
                is_admin,
                password: &password,
                display_name: &input.display_name,
                email: &input.email,
                // Whoever set it, the person it belongs to chooses their own.
                must_change_password: true,
            },
        )?;
        accounts::note_made_by(&conn.admin(), &input.username, MadeBy::Created, &by)?;
        Ok(())
    })
    .await?;
    Ok(generated)
}

async fn create_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Json(input): Json<CreateInput>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let username = input.username.clone();
    let generated = create(&c, &staff, input).await?;
    Ok(Json(
        serde_json::json!({"username": username, "password": generated}),
    ))
}

async fn create_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Form(input): Form<CreateInput>,
) -> Result<Markup, ConsoleError> {
    let username = input.username.clone();
    let generated = create(&c, &staff, input).await?;
    let notice = html! {
        "Account " strong { (username) } " created."
        @if let Some(p) = generated {
            " Its first password is " code #new-password { (p) } "; it must be changed at first log-in."
        }
    };
    list_markup(&c, &staff, Some(notice)).await
}

#[derive(Debug, Deserialize)]
pub struct UpdateInput {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    is_admin: Option<String>,
    /// "true" disables, "false" enables.
    #[serde(default)]
    disabled: Option<String>,
    /// "true": a new password is generated and shown once.
    #[serde(default)]
    reset_password: Option<String>,
}

fn yes(s: &Option<String>) -> Option<bool> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| matches!(s, "true" | "on" | "1"))
}

async fn update(
    c: &Arc<Console>,
    staff: &Staff,
    username: String,
    input: UpdateInput,
) -> Result<Option<String>, ConsoleError> {
    let role = input
        .role
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(str::parse::<Role>)
        .transpose()?;
    if username == staff.username
        && (yes(&input.disabled) == Some(true) || yes(&input.is_admin) == Some(false))
    {
        return Err(ConsoleError::BadRequest(
            "you cannot disable your own account or remove your own administrator right".into(),
        ));
    }
    // Roles are what the two-person rule counts on: an administrator who could make themselves
    // DSL or leadership could then both ask for and approve a reveal, or a check.
    if username == staff.username && role.is_some_and(|r| r != staff.role) {
        return Err(ConsoleError::Forbidden(
            "you cannot change your own role: the two-person rule needs another administrator \
             to do it"
                .into(),
        ));
    }
    let object = format!("staff:{username}");
    let detail = format!(
        "role={:?} admin={:?} disabled={:?} reset={:?}",
        role,
        yes(&input.is_admin),
        yes(&input.disabled),
        yes(&input.reset_password)
    );
    let entry = Audit::new("staff.update", object).detail(detail);
    let by = staff.username.clone();
    c.audited(staff, entry, move |conn| {
        let current = accounts::get(&conn.admin(), &username)?
            .ok_or_else(|| ConsoleError::NotFound(format!("account {username:?}")))?;
        if role.is_some() || yes(&input.is_admin).is_some() {
            accounts::set_role(
                &conn.admin(),
                &username,
                role.unwrap_or(current.role),
                yes(&input.is_admin).unwrap_or(current.is_admin),
            )?;
        }
        if let Some(d) = yes(&input.disabled) {
            accounts::set_disabled(&conn.admin(), &username, d)?;
        }
        if yes(&input.reset_password) == Some(true) {
            let p = accounts::generate_password();
            accounts::set_password(&conn.admin(), &username, &p, true)?;
            accounts::note_made_by(&conn.admin(), &username, MadeBy::Reset, &by)?;
            return Ok(Some(p));
        }
        Ok(None)
    })
    .await
}

async fn update_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(username): Path<String>,
    Json(input): Json<UpdateInput>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let generated = update(&c, &staff, username.clone(), input).await?;
    Ok(Json(
        serde_json::json!({"username": username, "password": generated}),
    ))
}

async fn update_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(username): Path<String>,
    Form(input): Form<UpdateInput>,
) -> Result<Response, ConsoleError> {
    match update(&c, &staff, username.clone(), input).await? {
        Some(p) => {
            let notice = html! {
                "New password for " strong { (username) } ": " code #new-password { (p) }
                " (shown once; it must be changed at first log-in)."
            };
            Ok(list_markup(&c, &staff, Some(notice)).await?.into_response())
        }
        None => Ok(Redirect::to("/users").into_response()),
    }
}

async fn page_view(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Markup, ConsoleError> {
    list_markup(&c, &staff, None).await
}

async fn list_markup(
    c: &Arc<Console>,
    staff: &Staff,
    notice: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let accounts = c
        .audited(staff, Audit::new("staff.list", "staff"), |conn| {
            Ok(accounts::list(&conn.admin())?)
        })
        .await?;
    Ok(page(
        Some(staff),
        "Staff accounts",
        html! {
            @if let Some(n) = notice { div.notice { (n) } }
            table #users {
                thead { tr { th { "User" } th { "Name" } th { "Role" } th { "Admin" } th { "One-time codes" } th { "State" } th { "" } } }
                tbody { @for a in &accounts { tr {
                    td { (a.username) } td { (a.display_name) } td { (a.role.title()) }
                    td { (if a.is_admin { "yes" } else { "" }) }
                    td { (if a.totp_enabled { "on" } else { "off" }) }
                    td { (if a.disabled { "disabled" } else { "active" }) }
                    td {
                        form.inline method="post" action={"/users/" (a.username)} {
                            (csrf_field(staff))
                            select name="role" aria-label="role" {
                                @for r in Role::ALL { option value=(r.as_str()) selected[r == a.role] { (r.title()) } }
                            }
                            button type="submit" { "Set role" }
                        }
                        " "
                        form.inline method="post" action={"/users/" (a.username)} {
                            (csrf_field(staff))
                            input type="hidden" name="disabled" value=(if a.disabled { "false" } else { "true" });
                            button type="submit" { (if a.disabled { "Enable" } else { "Disable" }) }
                        }
                        " "
                        form.inline method="post" action={"/users/" (a.username)} {
                            (csrf_field(staff))
                            input type="hidden" name="reset_password" value="true";
                            button type="submit" { "Reset password" }
                        }
                    }
                } } }
            }
            h2 { "New account" }
            form.stack method="post" action="/users" {
                (csrf_field(staff))
                label { "User name" input name="username" required; }
                label { "Full name" input name="display_name"; }
                label { "Email" input name="email" type="email"; }
                label { "Role" select name="role" {
                    @for r in Role::ALL { option value=(r.as_str()) { (r.title()) } }
                } }
                label { "Account administrator" input type="checkbox" name="is_admin" value="true"; }
                p { "A first password is generated and shown once; it must be changed at first log-in." }
                button type="submit" { "Create account" }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit;

    fn admin(role: Role) -> Staff {
        Staff {
            username: "boss".into(),
            role,
            is_admin: true,
            csrf_token: "t".into(),
            source: "test".into(),
            notices: Vec::new(),
        }
    }

    fn input(role: Option<&str>) -> UpdateInput {
        UpdateInput {
            role: role.map(Into::into),
            is_admin: None,
            disabled: None,
            reset_password: None,
        }
    }

    #[tokio::test]
    async fn administrators_cannot_change_their_own_role_and_creation_records_powers() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            crate::store::Store::create(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap(),
        );
        let policy = invigilator_policy::Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let c = Console::new(
            crate::store::Store::open(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap(),
            Default::default(),
            Arc::new(arc_swap::ArcSwap::from_pointee(policy)),
        );
        let me = admin(Role::Technician);
        for name in ["boss", "jo"] {
            let made = CreateInput {
                username: name.into(),
                role: "technician".into(),
                is_admin: (name == "boss").then(|| "on".into()),
                display_name: String::new(),
                email: String::new(),
                password: String::new(),
            };
            create(&c, &me, made).await.unwrap();
        }
        let conn = crate::store::test_open(dir.path());
        let created = audit::list(
            &crate::store::Audited::test(&conn),
            &audit::Filter {
                action_prefix: Some("staff.create".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let details: Vec<_> = created.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            details,
            ["role=technician admin=false", "role=technician admin=true"]
        );

        let err = update(&c, &me, "boss".into(), input(Some("dsl")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConsoleError::Forbidden(m) if m.contains("own role") && m.contains("two-person")),
            "{err}"
        );
        assert_eq!(
            accounts::get(&crate::store::Admin::test(&conn), "boss")
                .unwrap()
                .unwrap()
                .role,
            Role::Technician
        );
        // The same role again changes nothing and is no reason to refuse; another's role may change.
        update(&c, &me, "boss".into(), input(Some("technician")))
            .await
            .unwrap();
        update(&c, &me, "jo".into(), input(Some("dsl")))
            .await
            .unwrap();
        assert_eq!(
            accounts::get(&crate::store::Admin::test(&conn), "jo")
                .unwrap()
                .unwrap()
                .role,
            Role::Dsl
        );
    }
}
