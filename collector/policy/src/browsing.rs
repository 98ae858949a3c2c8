//! Browsing rules: category lists (`[[web]]` rules), keyword libraries on search terms and page
//! titles, and the illegal class, which no policy file can switch off.
//!
//! An address on an illegal-content list raises one alert and nothing else: the alert keeps a
//! hash of the address, never the address, title or search, and the stored event is redacted
//! the same way (`redact`), so nobody can open it by looking at the alert's event.

use super::exceptions::{Exceptions, ExceptionsSpec, Sites};
use super::groups::DeviceClass;
use super::keywords::{KeywordHit, Keywords};
use super::located::SpecError;
use super::schedule::{Schedule, When};
use super::scope::{Scope, Situation};
use super::setting::Setting;
use super::{Groups, Severity, Verdict};
use invigilator_lists::{Hit, ListClass, Lists, NormalUrl};
use invigilator_proto::v1::BrowsingVisit;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

/// One `[[web]]` table: visits to sites in `categories`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRuleSpec {
    pub id: Spanned<String>,
    /// Category names of the imported lists (UT1 folder names such as "gambling").
    pub categories: Vec<Spanned<String>>,
    pub severity: Setting,
    pub summary: String,
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    #[serde(default)]
    pub devices: Vec<DeviceClass>,
    #[serde(default)]
    pub when: When,
    /// Sites this rule never fires on (domains with their subdomains, or URL prefixes).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}

#[derive(Debug)]
struct WebRule {
    id: String,
    categories: Vec<String>,
    severity: Setting,
    summary: String,
    scope: Scope,
    allow: Sites,
}

#[derive(Debug, Default)]
pub struct WebRules {
    rules: Vec<WebRule>,
    pub exceptions: Exceptions,
}

impl WebRules {
    pub fn compile(
        specs: &[WebRuleSpec],
        exceptions: &ExceptionsSpec,
        groups: &Groups,
    ) -> Result<Self, SpecError> {
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::new();
        for s in specs {
            let id = s.id.get_ref();
            if !seen.insert(id.clone()) {
                return Err(SpecError::at(
                    s.id.span(),
                    format!("rule id {id:?} is used twice"),
                ));
            }
            if s.categories.is_empty() {
                return Err(SpecError::at(
                    s.id.span(),
                    format!("rule {id:?}: categories must name at least one list category"),
                ));
            }
            rules.push(WebRule {
                id: id.clone(),
                categories: s.categories.iter().map(|c| c.get_ref().clone()).collect(),
                severity: s.severity,
                summary: s.summary.clone(),
                scope: Scope::compile(id, &s.users, &s.devices, s.when, groups)?,
                allow: Sites::compile(&format!("rule {id:?}: allow"), &s.allow)?,
            });
        }
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        let exceptions = Exceptions::compile(exceptions, &ids, groups)?;
        Ok(Self { rules, exceptions })
    }

    /// Categories the rules name, for warning about ones no imported list provides.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.categories.iter().map(String::as_str))
    }
}

/// What the browsing rules need besides the visit itself.
pub struct Context<'a> {
    pub lists: &'a Lists,
    pub web: &'a WebRules,
    pub keywords: &'a Keywords,
    pub schedule: &'a Schedule,
    pub situation: Situation<'a>,
}

/// The hash an illegal-class alert keeps instead of the address: SHA-256 of the URL as visited.
pub fn address_hash(url: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(url.as_bytes())))
}

/// The first match on an illegal-class list, if any: it overrides every other rule.
fn illegal<'h, 'l>(hits: &'h [Hit<'l>]) -> Option<&'h Hit<'l>> {
    hits.iter().find(|h| h.class == ListClass::Illegal)
}

/// The event as it may be stored: a visit to an illegal-class address keeps only the hash of
/// the address. None when nothing needs redacting.
pub fn redact(lists: &Lists, v: &BrowsingVisit) -> Option<BrowsingVisit> {
    if v.url.is_empty() {
        return None;
    }
    let url = invigilator_lists::normalise(&v.url).ok()?;
    let hits = lists.lookup_normal(&url);
    let category = illegal(&hits)?.category;
    Some(BrowsingVisit {
        url: format!("redacted:{}", address_hash(&v.url)),
        title: String::new(),
        search_terms: String::new(),
        detail: format!("redacted: listed in the illegal-content category {category:?}"),
        ..v.clone()
    })
}

pub fn evaluate(cx: &Context<'_>, v: &BrowsingVisit) -> Vec<Verdict> {
    if v.action != "visit" || v.url.is_empty() {
        return Vec::new();
    }
    let normal = invigilator_lists::normalise(&v.url).ok();
    let hits = normal
        .as_ref()
        .map(|u| cx.lists.lookup_normal(u))
        .unwrap_or_default();
    if let Some(h) = illegal(&hits) {
        // Nothing else is raised: every other alert would show the address or the title.
        let hash = address_hash(&v.url);
        return vec![Verdict {
            rule: format!("illegal.{}", h.category),
            category: h.category.to_owned(),
            severity: Severity::Illegal,
            summary: format!(
                "Visit to an address on the illegal-content list {:?}. Do not view or investigate it: refer to the DSL and the police.",
                h.category
            ),
            site: Some(hash.clone()),
            matched: hash,
            response: None,
        }];
    }
    let host = normal.as_ref().map(|u| u.host()).unwrap_or_default();
    let mut out: Vec<Verdict> = normal
        .as_ref()
        .and_then(|url| category_verdict(cx, url, &hits))
        .into_iter()
        .collect();
    // The user's group, for the keyword libraries' age bands.
    let group = cx.situation.person.group;
    if !v.search_terms.is_empty() {
        let engine = if v.search_engine.is_empty() {
            host
        } else {
            &v.search_engine
        };
        for hit in cx.keywords.scan_for(&v.search_terms, group) {
            out.push(keyword_verdict(
                &hit,
                format!("search on {engine}"),
                "search terms",
            ));
        }
    }
    if !v.title.is_empty() {
        for hit in cx.keywords.scan_for(&v.title, group) {
            // A search results page repeats the search in its title: one alert is enough.
            if out
                .iter()
                .any(|o| o.rule == format!("keywords.{}", hit.library))
            {
                continue;
            }
            out.push(keyword_verdict(
                &hit,
                format!("page on {host}"),
                "page title",
            ));
        }
    }
    out
}

/// One visit, one verdict: of the category rules that apply (in scope, switched on, not excused
/// by an exception), the most severe fires, first in file order among equals; the visit's other
/// listed categories are named in what matched ("bookmakers are in UT1's games list too").
fn category_verdict(cx: &Context<'_>, url: &NormalUrl, hits: &[Hit<'_>]) -> Option<Verdict> {
    let mut best: Option<(&WebRule, &Hit<'_>, Severity)> = None;
    for rule in &cx.web.rules {
        let Some(hit) = hits
            .iter()
            .find(|h| rule.categories.iter().any(|c| c == h.category))
        else {
            continue;
        };
        let Some(severity) = rule.severity.severity() else {
            continue;
        };
        if !rule.scope.applies(&cx.situation, cx.schedule)
            || rule.allow.covers(url)
            || cx
                .web
                .exceptions
                .covers(&rule.id, url, &cx.situation, cx.schedule)
        {
            continue;
        }
        if best.is_none_or(|(_, _, s)| severity > s) {
            best = Some((rule, hit, severity));
        }
    }
    let (rule, hit, _) = best?;
    let host = url.host();
    let mut others: Vec<&str> = hits
        .iter()
        .map(|h| h.category)
        .filter(|c| *c != hit.category)
        .collect();
    others.sort_unstable();
    others.dedup();
    let also = if others.is_empty() {
        String::new()
    } else {
        format!("; also listed in {}", others.join(", "))
    };
    Verdict::new(
        &rule.id,
        hit.category,
        rule.severity,
        format!("{}: {host}", rule.summary),
        format!(
            "{} {:?} in list {:?}{also}",
            hit.kind.as_str(),
            hit.entry,
            hit.category
        ),
    )
    .map(|verdict| Verdict {
        site: Some(host.to_owned()),
        ..verdict
    })
}

fn keyword_verdict(hit: &KeywordHit, where_: String, field: &str) -> Verdict {
    Verdict {
        rule: format!("keywords.{}", hit.library),
        category: hit.library.clone(),
        severity: hit.severity,
        summary: format!("{} terms in a {where_}", hit.concern),
        matched: format!("{} in the {field}", hit.matched()),
        site: Some(hit.found.clone()),
        response: hit.response.clone(),
    }
}
