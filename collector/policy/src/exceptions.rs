//! Sites the category rules do not fire on. UT1 files platforms that schools set as homework
//! and use in lessons under "games" or "chat" (Times Tables Rock Stars, Sparx, Teams ...): the
//! policy's exceptions say so once, in the policy file, so a list refresh cannot undo them.
//!
//! - `education`: school-wide; no category rule fires on these sites, for anyone, at any time.
//! - `[[web_exceptions.allow]]`: sites allowed for some rules (all category rules if none are
//!   named), optionally only for some users, devices or times, with the reason.
//! - `allow` on a `[[web]]` rule: sites that rule never fires on.
//!
//! Exceptions never apply to the illegal class, which no policy file can switch off, nor to
//! keyword rules: a concerning search is a concern on any site.

use super::groups::{DeviceClass, Groups};
use super::located::SpecError;
use super::schedule::{Schedule, When};
use super::scope::{Scope, Situation};
use invigilator_lists::{NormalUrl, normalise};
use serde::Deserialize;
use toml::Spanned;

/// `[web_exceptions]` in the policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExceptionsSpec {
    pub education: Vec<Spanned<String>>,
    pub allow: Vec<AllowSpec>,
}

/// One `[[web_exceptions.allow]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowSpec {
    pub sites: Vec<Spanned<String>>,
    /// `[[web]]` rule ids this exception covers; every category rule when empty.
    #[serde(default)]
    pub rules: Vec<Spanned<String>>,
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    #[serde(default)]
    pub devices: Vec<DeviceClass>,
    #[serde(default)]
    pub when: When,
    /// Why the school allows it: kept with the policy, shown by `policy check`.
    #[serde(default)]
    pub reason: String,
}

/// Domains (a site and its subdomains) and URL prefixes, in the lists' normal form.
#[derive(Debug, Default, Clone)]
pub struct Sites {
    domains: Vec<String>,
    prefixes: Vec<String>,
}

impl Sites {
    /// `what` names the setting in errors. An entry with a `/` after its host is a URL prefix;
    /// otherwise a domain, which also covers its subdomains.
    pub fn compile(what: &str, entries: &[Spanned<String>]) -> Result<Self, SpecError> {
        let mut sites = Sites::default();
        for e in entries {
            let raw = e.get_ref().trim();
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("http://{raw}")
            };
            let normal = normalise(&with_scheme).map_err(|err| {
                SpecError::at(
                    e.span(),
                    format!("{what}: {raw:?} is not a domain or URL prefix: {err}"),
                )
            })?;
            if normal.path().len() > 1 {
                sites.prefixes.push(normal.stripped().to_owned());
            } else {
                sites.domains.push(normal.host().to_owned());
            }
        }
        Ok(sites)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.prefixes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.domains.len() + self.prefixes.len()
    }

    /// Whether an entry covers `url`.
    pub fn covers(&self, url: &NormalUrl) -> bool {
        let host = url.host();
        self.domains.iter().any(|d| {
            host == d.as_str()
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        }) || self
            .prefixes
            .iter()
            .any(|p| url.stripped().starts_with(p.as_str()))
    }
}

#[derive(Debug)]
struct Allow {
    sites: Sites,
    rules: Vec<String>,
    scope: Scope,
    reason: String,
}

/// The compiled exceptions of a policy.
#[derive(Debug, Default)]
pub struct Exceptions {
    education: Sites,
    allows: Vec<Allow>,
}

impl Exceptions {
    /// `rule_ids`: the `[[web]]` rules, which an exception may name.
    pub fn compile(
        spec: &ExceptionsSpec,
        rule_ids: &[&str],
        groups: &Groups,
    ) -> Result<Self, SpecError> {
        let education = Sites::compile("web_exceptions.education", &spec.education)?;
        let mut allows = Vec::new();
        for (n, a) in spec.allow.iter().enumerate() {
            let what = format!("web_exceptions.allow[{n}]");
            if a.sites.is_empty() {
                return Err(SpecError::new(format!(
                    "{what}: sites must name at least one site"
                )));
            }
            for r in &a.rules {
                if !rule_ids.contains(&r.get_ref().as_str()) {
                    return Err(SpecError::at(
                        r.span(),
                        format!("{what}: rules: {:?} is not a [[web]] rule id", r.get_ref()),
                    ));
                }
            }
            allows.push(Allow {
                sites: Sites::compile(&format!("{what}.sites"), &a.sites)?,
                rules: a.rules.iter().map(|r| r.get_ref().clone()).collect(),
                scope: Scope::compile(&what, &a.users, &a.devices, a.when, groups)?,
                reason: a.reason.clone(),
            });
        }
        Ok(Self { education, allows })
    }

    /// Whether an exception keeps category rule `rule` from firing on `url` in this situation.
    pub fn covers(
        &self,
        rule: &str,
        url: &NormalUrl,
        situation: &Situation<'_>,
        schedule: &Schedule,
    ) -> bool {
        self.education.covers(url)
            || self.allows.iter().any(|a| {
                (a.rules.is_empty() || a.rules.iter().any(|r| r == rule))
                    && a.scope.applies(situation, schedule)
                    && a.sites.covers(url)
            })
    }

    /// For `policy check`: how many sites are on the education list, and the allow entries.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "web exceptions: {} site(s) on the education list, {} allow entr{}",
            self.education.len(),
            self.allows.len(),
            if self.allows.len() == 1 { "y" } else { "ies" }
        )];
        for a in &self.allows {
            let rules = if a.rules.is_empty() {
                "every category rule".to_owned()
            } else {
                a.rules.join(", ")
            };
            lines.push(format!(
                "  {} site(s) for {rules}{}",
                a.sites.len(),
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.reason)
                }
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(entries: &[&str]) -> Sites {
        let spanned: Vec<Spanned<String>> = entries
            .iter()
            .map(|e| Spanned::new(0..0, (*e).to_owned()))
            .collect();
        Sites::compile("test", &spanned).unwrap()
    }

    fn url(u: &str) -> NormalUrl {
        normalise(u).unwrap()
    }

    #[test]
    fn a_domain_covers_its_subdomains_and_nothing_that_merely_ends_like_it() {
        let s = sites(&["ttrockstars.com"]);
        assert!(s.covers(&url("https://ttrockstars.com/")));
        assert!(s.covers(&url("https://play.ttrockstars.com/game")));
        assert!(s.covers(&url("https://WWW.TTROCKSTARS.COM/x")));
        assert!(!s.covers(&url("https://notttrockstars.com/")));
        assert!(!s.covers(&url("https://ttrockstars.com.evil.example/")));
    }

    #[test]
    fn a_prefix_covers_only_what_starts_with_it() {
        let s = sites(&["https://www.bbc.co.uk/bitesize"]);
        assert!(s.covers(&url("https://www.bbc.co.uk/bitesize/subjects")));
        assert!(s.covers(&url("http://bbc.co.uk/bitesize")));
        assert!(!s.covers(&url("https://www.bbc.co.uk/sport")));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let bad = vec![Spanned::new(0..0, "http://".to_owned())];
        let err = Sites::compile("web_exceptions.education", &bad).unwrap_err();
        assert!(err.message.contains("web_exceptions.education"), "{err:?}");
    }
}
