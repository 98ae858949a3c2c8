//! The Acceptable Use Policy, as code: a TOML file compiled into matchers that turn events into
//! alerts. Every alert records the rule that fired, what matched, and the policy version.

use invigilator_lists::Lists;
use invigilator_proto::v1::{Event, event::Kind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod alert;
pub mod browsing;
pub mod exceptions;
pub mod groups;
pub mod keywords;
mod located;
pub mod monitoring;
mod process;
pub mod responses;
pub mod schedule;
mod scope;
pub mod session;
mod setting;
pub mod usb;

pub use alert::{Alert, AlertClass, Severity, UnknownSeverity};
pub use browsing::WebRuleSpec;
pub use groups::{Class, Device, DeviceClass, Groups, GroupsSpec, Person};
pub use keywords::{KeywordExclusionsSpec, KeywordLibrarySpec, Keywords};
pub use located::SpecError;
pub use process::ProcessRuleSpec;
pub use responses::ResponsesSpec;
pub use schedule::{Schedule, ScheduleSpec, When};
pub use session::SessionSpec;
pub use setting::Setting;
pub use usb::UsbSpec;

/// The policy `init` writes; it encodes the schools' restricted-activity classes. Kept in
/// parts by topic; written out as one file.
pub const DEFAULT_POLICY: &str = concat!(
    include_str!("default_policy.toml"),
    "\n",
    include_str!("default_web.toml"),
    "\n",
    include_str!("default_schedule.toml"),
    "\n",
    include_str!("default_keywords.toml"),
);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("category lists: {0}")]
    Lists(#[from] invigilator_lists::ListsError),
}

/// Where a policy's roster goes and what it may name ([`Policy::roster_target`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RosterTarget {
    /// `[groups] roster`, resolved against the policy file's directory.
    pub file: Option<PathBuf>,
    /// Every `[[groups.users]]` group, with its class.
    pub groups: Vec<(String, Class)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    #[serde(default)]
    alerts: AlertsSpec,
    #[serde(default)]
    groups: GroupsSpec,
    #[serde(default)]
    responses: ResponsesSpec,
    #[serde(default)]
    process: Vec<ProcessRuleSpec>,
    #[serde(default)]
    usb: UsbSpec,
    #[serde(default)]
    session: SessionSpec,
    #[serde(default)]
    web: Vec<WebRuleSpec>,
    #[serde(default)]
    web_exceptions: exceptions::ExceptionsSpec,
    #[serde(default)]
    school_times: ScheduleSpec,
    #[serde(default)]
    keywords: Vec<KeywordLibrarySpec>,
    #[serde(default)]
    keyword_exclusions: KeywordExclusionsSpec,
    #[serde(default)]
    keyword_model: keywords::model::ModelSpec,
    #[serde(default)]
    keyword_misspellings: keywords::typo::MisspellingsSpec,
}

/// The keyword libraries, with the shipped classifier unless `[keyword_model]` turns it off.
fn keywords_of(file: &PolicyFile, groups: &Groups) -> Result<Keywords, SpecError> {
    // A band is for user groups (a class such as "pupil" would match nobody's group).
    let mut keywords = Keywords::compile(&file.keywords, &file.keyword_exclusions, |g| {
        groups.user_groups().any(|(name, _)| name == g)
    })?;
    if !file.keyword_misspellings.enabled {
        keywords = keywords.without_misspellings();
    }
    let spec = &file.keyword_model;
    if !spec.enabled {
        return Ok(keywords);
    }
    if !(spec.threshold > 0.0 && spec.threshold <= 1.0) {
        return Err(SpecError::new(format!(
            "keyword_model.threshold must be above 0 and at most 1, not {}",
            spec.threshold
        )));
    }
    static SHIPPED: std::sync::OnceLock<Result<Arc<keywords::model::Model>, String>> =
        std::sync::OnceLock::new();
    let model = SHIPPED
        .get_or_init(|| {
            keywords::model::Model::read(keywords::model::DEFAULT_MODEL)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(SpecError::new)?;
    Ok(keywords.with_model(model, spec.threshold))
}

/// `[alerts]`: how alerts are raised, whatever the rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSpec {
    /// Repeats of one breach (same user, rule and site) within this long of the last one add
    /// to that alert's count instead of raising another. "0s" turns aggregation off.
    #[serde(with = "humantime_serde")]
    pub aggregate_window: std::time::Duration,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            aggregate_window: std::time::Duration::from_secs(60 * 60),
        }
    }
}

/// Who an event came from, as far as the policy cares.
#[derive(Debug, Clone, Default)]
pub struct AgentContext<'a> {
    pub agent_id: &'a str,
    pub group: &'a str,
    /// For a session logon: host names where the same user already has a session open.
    pub user_logged_on_elsewhere: Vec<String>,
    /// For a USB event that names nobody: the users with a session open on this device, the
    /// most recently active first.
    pub logged_on: Vec<String>,
}

/// What an alert is about: the device, the user and their class, the time, and the event when
/// there is one (conditions found on a timer, such as an unattended screen, have none).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
    pub user: &'a str,
    pub class: Class,
    pub kind: &'a str,
    pub observed_at_us: i64,
    pub event_seq: Option<u64>,
}

/// Why a rule fired, before it becomes an alert about a particular event.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub rule: String,
    pub category: String,
    pub severity: Severity,
    pub summary: String,
    pub matched: String,
    /// What makes a repeat "the same breach" besides user and rule: the site for browsing;
    /// when None, what matched.
    pub site: Option<String>,
    /// A response of the rule's own, instead of the `[responses]` row for its severity.
    pub response: Option<String>,
}

impl Verdict {
    /// None when the setting is off.
    pub fn new(
        rule: &str,
        category: &str,
        setting: Setting,
        summary: String,
        matched: String,
    ) -> Option<Self> {
        Some(Self {
            rule: rule.into(),
            category: category.into(),
            severity: setting.severity()?,
            summary,
            matched,
            site: None,
            response: None,
        })
    }
}

/// A compiled policy. Cheap to evaluate; swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// The file's declared version and a hash of its content, so an edit without a version
    /// bump is still told apart.
    pub version: String,
    pub groups: Groups,
    pub responses: ResponsesSpec,
    pub alerts: AlertsSpec,
    process: process::ProcessRules,
    pub usb: UsbSpec,
    pub session: SessionSpec,
    web: browsing::WebRules,
    keywords: Keywords,
    pub schedule: Schedule,
    /// The imported category lists (both classes); empty until `lists import`.
    pub lists: Arc<Lists>,
}

impl Policy {
    /// The keyword libraries (for `policy eval`).
    pub fn keywords(&self) -> &Keywords {
        &self.keywords
    }

    /// The sites the category rules do not fire on (for `policy check`).
    pub fn web_exceptions(&self) -> &exceptions::Exceptions {
        &self.web.exceptions
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("policy.toml")
    }

    /// What a roster import needs of the policy file at `path`: where its roster is written
    /// and the user groups the roster may name. The current roster is not read: the first
    /// import is what writes it.
    pub fn roster_target(path: &Path) -> Result<RosterTarget, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.into(),
            source,
        })?;
        let invalid = |message: String| PolicyError::Invalid {
            path: path.into(),
            message,
        };
        let file: PolicyFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let groups = Groups::compile_with(&file.groups, path.parent(), false)
            .map_err(|e| invalid(e.render(&text)))?;
        Ok(RosterTarget {
            file: groups.roster_file.clone(),
            groups: groups
                .user_groups()
                .map(|(n, c)| (n.to_owned(), c))
                .collect(),
        })
    }

    /// The policy of a data directory, with the category lists imported there.
    pub fn load_in(data_dir: &Path) -> Result<Self, PolicyError> {
        let lists = Lists::load(data_dir)?;
        let policy = Self::load(&Self::path(data_dir))?.with_lists(Arc::new(lists));
        for c in policy.missing_categories() {
            tracing::warn!(
                category = c,
                "a [[web]] rule names a category no imported list has"
            );
        }
        Ok(policy)
    }

    /// The files a data directory's policy is built from: the policy, its roster, the lists.
    pub fn inputs_in(&self, data_dir: &Path) -> Vec<PathBuf> {
        let lists = invigilator_lists::store::lists_dir(data_dir);
        let mut v = vec![Self::path(data_dir)];
        v.extend(self.groups.roster_file.iter().cloned());
        v.extend(
            [
                invigilator_lists::ListClass::Ordinary,
                invigilator_lists::ListClass::Illegal,
            ]
            .map(|c| lists.join(c.file_name())),
        );
        v
    }

    pub fn with_lists(self, lists: Arc<Lists>) -> Self {
        Self { lists, ..self }
    }

    /// Categories named by `[[web]]` rules that no imported list provides.
    pub fn missing_categories(&self) -> Vec<&str> {
        let known: std::collections::HashSet<&str> = self
            .lists
            .matchers()
            .iter()
            .flat_map(|m| m.categories().iter().map(|c| c.name.as_str()))
            .collect();
        let mut missing: Vec<&str> = self
            .web
            .categories()
            .filter(|c| !known.contains(c))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The event as it may be stored; only visits to illegal-class addresses change.
    pub fn redacted<'e>(&self, event: &'e Event) -> std::borrow::Cow<'e, Event> {
        if let Some(Kind::Browsing(v)) = &event.kind
            && let Some(clean) = browsing::redact(&self.lists, v)
        {
            return std::borrow::Cow::Owned(Event {
                kind: Some(Kind::Browsing(clean)),
                ..event.clone()
            });
        }
        std::borrow::Cow::Borrowed(event)
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse_in(&text, path.parent()).map_err(|message| PolicyError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// A policy from its text alone (files it names, such as a roster, are looked for in the
    /// current directory).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_in(text, None)
    }

    /// A policy whose relative file names are relative to `base`. Errors start "line N:" when
    /// they are about one place in the text.
    pub fn parse_in(text: &str, base: Option<&Path>) -> Result<Self, String> {
        Self::compile(text, base).map_err(|e| e.render(text))
    }

    fn compile(text: &str, base: Option<&Path>) -> Result<Self, SpecError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => SpecError::at(span, e.message().to_owned()),
            None => SpecError::new(e.to_string()),
        })?;
        if file.version.trim().is_empty() {
            return Err(SpecError::new("`version` must not be empty"));
        }
        let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
        file.usb.validate()?;
        let groups = Groups::compile(&file.groups, base)?;
        let keywords = keywords_of(&file, &groups)?;
        Ok(Self {
            version: format!("{}#{hash}", file.version.trim()),
            responses: file.responses,
            alerts: file.alerts,
            process: process::ProcessRules::compile(file.process, &groups)?,
            usb: file.usb,
            session: file.session,
            web: browsing::WebRules::compile(&file.web, &file.web_exceptions, &groups)?,
            keywords,
            schedule: Schedule::compile(&file.school_times)?,
            lists: Arc::new(Lists::empty()),
            groups,
        })
    }

    /// The alerts an event raises under this policy (usually none).
    pub fn evaluate(&self, agent: &AgentContext<'_>, event: &Event) -> Vec<Alert> {
        let device = self.groups.device(agent.group);
        // A USB event names nobody: it is judged by who is logged on at the device.
        let user = match (&event.kind, event.user.as_str()) {
            (Some(Kind::Usb(_)), "") => agent.logged_on.first().map_or("", String::as_str),
            (_, user) => user,
        };
        let person = self.groups.person(user, &device);
        let situation = scope::Situation {
            person,
            device,
            at_us: event.observed_at_us,
        };
        let verdicts = match &event.kind {
            Some(Kind::Process(p)) => self
                .process
                .matches(p)
                .filter(|(_, scope, _)| scope.applies(&situation, &self.schedule))
                .map(|(rule, _, matched)| Verdict {
                    rule: rule.id.clone(),
                    category: rule.category.clone(),
                    severity: rule.severity,
                    summary: format!("{}: {}", rule.summary, display_program(p)),
                    matched,
                    site: None,
                    response: None,
                })
                .collect(),
            Some(Kind::Usb(u)) => self.usb.evaluate(device.owner, person.class, u),
            Some(Kind::Session(s)) => self.session.evaluate(
                device.owner,
                self.groups.person(&s.user, &device).class,
                s,
                &agent.user_logged_on_elsewhere,
            ),
            Some(Kind::Browsing(v)) => browsing::evaluate(
                &browsing::Context {
                    lists: &self.lists,
                    web: &self.web,
                    keywords: &self.keywords,
                    schedule: &self.schedule,
                    situation,
                },
                v,
            ),
            _ => Vec::new(),
        };
        let subject = Subject {
            agent_id: agent.agent_id,
            hostname: &event.hostname,
            user,
            class: person.class,
            kind: event.kind.as_ref().map(Kind::name).unwrap_or("unknown"),
            observed_at_us: event.observed_at_us,
            event_seq: Some(event.seq),
        };
        verdicts
            .into_iter()
            .map(|v| self.raise(subject, v))
            .collect()
    }

    /// An alert for `verdict` about `subject`, under this policy's version.
    pub fn raise(&self, subject: Subject<'_>, v: Verdict) -> Alert {
        // The same person (or, with nobody logged on, the same device), rule and site.
        let who = if subject.user.is_empty() {
            format!("device:{}", subject.agent_id)
        } else {
            format!("user:{}", subject.user.to_lowercase())
        };
        let site = v.site.as_deref().unwrap_or(&v.matched);
        let aggregate_key = format!("{who}|{}|{site}", v.rule);
        Alert {
            response: match (&v.response, v.severity) {
                // The illegal class's response is fixed; nothing overrides it.
                (Some(own), s) if s != Severity::Illegal => own.clone(),
                _ => self
                    .responses
                    .for_alert(v.severity, subject.class)
                    .to_owned(),
            },
            aggregate_key: Some(aggregate_key),
            agent_id: subject.agent_id.to_owned(),
            hostname: subject.hostname.to_owned(),
            user: subject.user.to_owned(),
            kind: subject.kind.to_owned(),
            rule: v.rule,
            category: v.category,
            severity: v.severity,
            summary: v.summary,
            matched: v.matched,
            observed_at_us: subject.observed_at_us,
            policy_version: self.version.clone(),
            event_seq: subject.event_seq,
        }
    }
}

fn display_program(p: &invigilator_proto::v1::ProcessExec) -> String {
    let what = if p.exe.is_empty() { &p.name } else { &p.exe };
    format!("{what} (pid {})", p.pid)
}

#[cfg(test)]
mod tests;
