//! Which account, if any, a validated identity signs in to, and with what role. Pure: the
//! handler looks the accounts up, this decides, the handler applies and audits.
//!
//! Nobody gets a role by default. An account an administrator created keeps the role the
//! administrator gave it (found by the provider's subject once linked, first by verified
//! e-mail); an account the sign-on created takes its role from the provider's groups at every
//! sign-in, and is refused once no group maps to one. Sign-on never makes anyone an account
//! administrator or a reveal approver.

use super::provider::{Groups, Identity};
use crate::config::SsoConfig;
use crate::store::accounts::Role;
use crate::store::accounts::sso::Known;

/// Google's issuer, whose tokens name a Workspace domain only in `hd`.
const GOOGLE: &str = "https://accounts.google.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sign in to this existing account.
    SignIn {
        username: String,
        /// Link it to the provider's person first (found by e-mail).
        link: bool,
        /// The groups now give the account another role: (from, to).
        role_change: Option<(Role, Role)>,
    },
    /// Create the account, with the role the group gives.
    Create {
        username: String,
        role: Role,
        group: String,
    },
    /// Refused, with the reason shown to the person and kept in the trail.
    Refuse(String),
}

/// The first configured group the person is in, and its role.
fn mapped(cfg: &SsoConfig, groups: &Groups) -> Option<(Role, String)> {
    let Groups::Listed(list) = groups else {
        return None;
    };
    cfg.roles.iter().find_map(|r| {
        list.iter()
            .any(|g| g == &r.group)
            .then(|| r.role.parse().ok().map(|role| (role, r.group.clone())))
            .flatten()
    })
}

fn no_role(cfg: &SsoConfig, who: &Identity) -> String {
    match &who.groups {
        Groups::Overage => format!(
            "the provider left out this person's groups because there are too many (Entra ID \
             sends none above 200): set the application's groups claim to \"Groups assigned to \
             the application\", or an administrator creates an account with their e-mail{}",
            who.email
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        Groups::Absent if cfg.roles.is_empty() || who.email.is_some() => format!(
            "there is no console account for {}: an administrator must create one with this e-mail",
            who.email
                .as_deref()
                .unwrap_or("this person (the provider gave no verified e-mail)")
        ),
        Groups::Absent => format!(
            "the provider sent no {:?} claim and no verified e-mail, so no role can be given",
            cfg.groups_claim
        ),
        Groups::Listed(_) => {
            "none of this person's groups is given a role in console.sso.roles".into()
        }
    }
}

/// The user name of an account the sign-on creates: the verified e-mail where it makes a
/// valid user name, else one made from the subject.
fn new_username(who: &Identity) -> String {
    match &who.email {
        Some(e) if crate::store::accounts::valid_username(e) => e.clone(),
        _ => {
            let tail: String = who
                .subject
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(40)
                .collect();
            format!("sso-{tail}")
        }
    }
}

pub fn decide(
    cfg: &SsoConfig,
    who: &Identity,
    linked: Option<&Known>,
    by_email: &[Known],
    name_taken: impl Fn(&str) -> bool,
) -> Outcome {
    if !cfg.domains.is_empty() {
        // Google vouches for a Workspace domain only through hd: a personal Google account may
        // carry a verified address at the school's domain.
        let by_email = who.issuer != GOOGLE;
        let domain = who.hd.clone().or_else(|| {
            who.email
                .as_deref()
                .filter(|_| by_email)
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_owned())
        });
        match domain {
            Some(d) if cfg.domains.iter().any(|ok| ok.eq_ignore_ascii_case(&d)) => {}
            Some(d) => {
                return Outcome::Refuse(format!(
                    "accounts of {d} cannot sign in here (console.sso.domains)"
                ));
            }
            None => {
                return Outcome::Refuse(
                    "the provider gave no hosted domain or verified e-mail, and console.sso.domains \
                     requires one"
                        .into(),
                );
            }
        }
    }
    let role = mapped(cfg, &who.groups);
    let (account, link) = match linked {
        Some(k) => (k, false),
        None if !cfg.match_email => return create(cfg, who, role, name_taken),
        None => match by_email {
            [] => return create(cfg, who, role, name_taken),
            [one] => (one, true),
            _ => {
                return Outcome::Refuse(format!(
                    "several accounts have the e-mail {}: an administrator must give it to one",
                    who.email.as_deref().unwrap_or_default()
                ));
            }
        },
    };
    if account.account.disabled {
        return Outcome::Refuse(format!(
            "the account {} is disabled",
            account.account.username
        ));
    }
    let username = account.account.username.clone();
    if !account.role_from_sso {
        return Outcome::SignIn {
            username,
            link,
            role_change: None,
        };
    }
    match role {
        Some((r, _)) => Outcome::SignIn {
            username,
            link,
            role_change: (r != account.account.role).then_some((account.account.role, r)),
        },
        None => Outcome::Refuse(no_role(cfg, who)),
    }
}

fn create(
    cfg: &SsoConfig,
    who: &Identity,
    role: Option<(Role, String)>,
    name_taken: impl Fn(&str) -> bool,
) -> Outcome {
    let Some((role, group)) = role else {
        return Outcome::Refuse(no_role(cfg, who));
    };
    let username = new_username(who);
    if name_taken(&username) {
        return Outcome::Refuse(format!(
            "an account named {username} exists but is not this person's: an administrator must \
             set its e-mail to theirs, or rename it"
        ));
    }
    Outcome::Create {
        username,
        role,
        group,
    }
}
