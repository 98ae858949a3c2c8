//! `[console.sso]` in collector.toml: staff single sign-on through the school's OpenID Connect
//! provider (Microsoft Entra ID, Google Workspace, or any certified provider). Absent (the
//! default): local accounts only.

use serde::Deserialize;
use std::path::PathBuf;

/// The path the provider sends staff back to; `redirect_url` must end with it.
pub const CALLBACK_PATH: &str = "/login/sso/callback";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// The provider's issuer, exactly as its discovery document gives it
    /// (`https://login.microsoftonline.com/<tenant id>/v2.0`, `https://accounts.google.com`).
    /// HTTPS, except on the loopback interface.
    pub issuer: String,
    /// The console's client (application) id registered with the provider.
    pub client_id: String,
    /// A file holding the client secret, relative to the data directory unless absolute.
    /// Read at each sign-in, so a rotated secret needs no restart.
    pub client_secret_file: PathBuf,
    /// The console's address the provider returns to, as registered there, ending in
    /// `/login/sso/callback` (`https://invigilator.school.example/login/sso/callback`).
    pub redirect_url: String,
    /// The text of the log-in page's sign-on button.
    #[serde(default = "default_button")]
    pub button: String,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim listing the person's groups (Entra ID: `groups`, object ids).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → role, first match wins. Only accounts the sign-on created take their role from
    /// here, at every sign-in; nobody gets a role by default.
    #[serde(default)]
    pub roles: Vec<GroupRole>,
    /// Sign a person in to the existing account with their (verified) e-mail, keeping its role.
    #[serde(default = "yes")]
    pub match_email: bool,
    /// The domains accepted (Google's `hd` claim, else the verified e-mail's domain). Empty:
    /// any the provider vouches for (an Entra ID tenant's issuer already names the school).
    #[serde(default)]
    pub domains: Vec<String>,
    /// A CA certificate file (PEM) for a provider whose certificate is not from a public CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    pub group: String,
    /// technician, dsl, leadership or governor.
    pub role: String,
}

fn default_button() -> String {
    "Sign in with your school account".into()
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn yes() -> bool {
    true
}

/// Whether `url` is plain HTTP to this machine (where a test provider or a tunnel may run).
fn loopback_http(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
}

impl SsoConfig {
    pub fn validate(&self) -> Result<(), String> {
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| format!("console.sso.issuer {:?}: {e}", self.issuer))?;
        if issuer.scheme() != "https" && !loopback_http(&issuer) {
            return Err(format!(
                "console.sso.issuer {:?} must be https (ID tokens and keys are fetched from it)",
                self.issuer
            ));
        }
        let redirect = url::Url::parse(&self.redirect_url)
            .map_err(|e| format!("console.sso.redirect_url {:?}: {e}", self.redirect_url))?;
        if redirect.path() != CALLBACK_PATH || redirect.query().is_some() {
            return Err(format!(
                "console.sso.redirect_url {:?} must end with {CALLBACK_PATH}",
                self.redirect_url
            ));
        }
        if redirect.scheme() != "https" && !loopback_http(&redirect) {
            return Err(format!(
                "console.sso.redirect_url {:?} must be https: the provider sends the sign-in code there",
                self.redirect_url
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err("console.sso.client_id is empty".into());
        }
        if self.groups_claim.is_empty() {
            return Err("console.sso.groups_claim is empty".into());
        }
        for r in &self.roles {
            if !["technician", "dsl", "leadership", "governor"].contains(&r.role.as_str()) {
                return Err(format!(
                    "console.sso.roles: {:?} (group {:?}) is not a role: use technician, dsl, \
                     leadership or governor",
                    r.role, r.group
                ));
            }
            if r.group.is_empty() {
                return Err("console.sso.roles: a group is empty".into());
            }
        }
        if self.roles.is_empty() && !self.match_email {
            return Err(
                "console.sso: with no roles and match_email = false nobody could sign in".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<(), String> {
        let text = format!(
            "issuer = \"https://login.microsoftonline.com/t/v2.0\"\nclient_id = \"c\"\n\
             client_secret_file = \"sso-secret\"\n\
             redirect_url = \"https://inv.school.example/login/sso/callback\"\n{extra}"
        );
        toml::from_str::<SsoConfig>(&text)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(cfg("").is_ok());
        assert!(
            cfg("[[roles]]\ngroup = \"g\"\nrole = \"admin\"")
                .unwrap_err()
                .contains("\"admin\" (group \"g\") is not a role")
        );
        let plain = "issuer = \"http://idp.example\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\nredirect_url = \"https://a/login/sso/callback\"";
        let err = toml::from_str::<SsoConfig>(plain)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("must be https"), "{err}");
        let wrong_path = "issuer = \"http://127.0.0.1:9/\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\nredirect_url = \"https://a/callback\"";
        let err = toml::from_str::<SsoConfig>(wrong_path)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("must end with /login/sso/callback"), "{err}");
        assert!(
            cfg("match_email = false")
                .unwrap_err()
                .contains("nobody could sign in")
        );
    }
}
