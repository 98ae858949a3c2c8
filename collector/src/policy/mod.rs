//! The Acceptable Use Policy, as code: a TOML file compiled into matchers that turn events into
//! alerts. Every alert records the rule that fired, what matched, and the policy version.

use crate::store::NewAlert;
use invigilator_proto::v1::{Event, event::Kind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub mod groups;
pub mod keywords;
mod located;
mod process;
pub mod schedule;
pub mod session;
mod setting;
pub mod usb;

pub use groups::{Class, Groups, GroupsSpec};
pub use located::{SpecError, line_of};
pub use process::ProcessRuleSpec;
pub use session::SessionSpec;
pub use setting::Setting;
pub use usb::UsbSpec;

/// The policy `init` writes; it encodes the schools' restricted-activity classes.
pub const DEFAULT_POLICY: &str = include_str!("default_policy.toml");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How serious a breach is; decides who is told and the recommended response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Inappropriate,
    Serious,
    Illegal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Inappropriate => "inappropriate",
            Severity::Serious => "serious",
            Severity::Illegal => "illegal",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    #[serde(default)]
    groups: GroupsSpec,
    #[serde(default)]
    process: Vec<ProcessRuleSpec>,
    #[serde(default)]
    usb: UsbSpec,
    #[serde(default)]
    session: SessionSpec,
}

/// Who an event came from, as far as the policy cares.
#[derive(Debug, Clone, Default)]
pub struct AgentContext<'a> {
    pub agent_id: &'a str,
    pub group: &'a str,
    /// For a session logon: host names where the same user already has a session open.
    pub user_logged_on_elsewhere: Vec<String>,
}

/// What an alert is about: the device, the user, the time, and the event when there is one
/// (conditions found on a timer, such as an unattended screen, have none).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
    pub user: &'a str,
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
    process: process::ProcessRules,
    pub usb: UsbSpec,
    pub session: SessionSpec,
}

impl Policy {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("policy.toml")
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| PolicyError::Invalid {
            path: path.into(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.version.trim().is_empty() {
            return Err("`version` must not be empty".into());
        }
        let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
        file.usb.validate()?;
        Ok(Self {
            version: format!("{}#{hash}", file.version.trim()),
            groups: Groups::compile(&file.groups)?,
            process: process::ProcessRules::compile(file.process)?,
            usb: file.usb,
            session: file.session,
        })
    }

    /// The alerts an event raises under this policy (usually none).
    pub fn evaluate(&self, agent: &AgentContext<'_>, event: &Event) -> Vec<NewAlert> {
        let verdicts = match &event.kind {
            Some(Kind::Process(p)) => self
                .process
                .matches(p)
                .map(|(rule, matched)| Verdict {
                    rule: rule.id.clone(),
                    category: rule.category.clone(),
                    severity: rule.severity,
                    summary: format!("{}: {}", rule.summary, display_program(p)),
                    matched,
                })
                .collect(),
            Some(Kind::Usb(u)) => self.usb.evaluate(self.groups.device(agent.group), u),
            Some(Kind::Session(s)) => self.session.evaluate(
                self.groups.device(agent.group),
                self.groups.user(&s.user),
                s,
                &agent.user_logged_on_elsewhere,
            ),
            _ => Vec::new(),
        };
        let kind = event.kind.as_ref().map(Kind::name).unwrap_or("unknown");
        verdicts
            .into_iter()
            .map(|v| self.alert(agent.agent_id, event, kind, v))
            .collect()
    }

    /// An alert for `verdict` about `event`.
    pub fn alert(&self, agent_id: &str, event: &Event, kind: &str, v: Verdict) -> NewAlert {
        let subject = Subject {
            agent_id,
            hostname: &event.hostname,
            user: &event.user,
            kind,
            observed_at_us: event.observed_at_us,
            event_seq: Some(event.seq),
        };
        self.raise(subject, v)
    }

    /// An alert for `verdict` about `subject`, under this policy's version.
    pub fn raise(&self, subject: Subject<'_>, v: Verdict) -> NewAlert {
        NewAlert {
            agent_id: subject.agent_id.to_owned(),
            hostname: subject.hostname.to_owned(),
            user: subject.user.to_owned(),
            kind: subject.kind.to_owned(),
            rule: v.rule,
            category: v.category,
            severity: v.severity.as_str().into(),
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
mod tests {
    use super::*;
    use invigilator_proto::v1::ProcessExec;

    fn exec(exe: &str, name: &str, argv: &[&str]) -> Event {
        Event {
            seq: 7,
            observed_at_us: 1,
            hostname: "ict-01".into(),
            user: "pupil".into(),
            kind: Some(Kind::Process(ProcessExec {
                exe: exe.into(),
                name: name.into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
        }
    }

    const CTX: AgentContext<'static> = AgentContext {
        agent_id: "a",
        group: "pupils",
        user_logged_on_elsewhere: Vec::new(),
    };

    #[test]
    fn the_default_policy_catches_circumvention_p2p_and_games_and_not_ordinary_programs() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        let fired = |e: Event| {
            p.evaluate(&CTX, &e)
                .into_iter()
                .map(|a| a.rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fired(exec("/usr/bin/tor", "tor", &["tor"])),
            ["circumvention.tor"]
        );
        assert_eq!(
            fired(exec("", "tor", &[])),
            ["circumvention.tor"],
            "comm alone is enough"
        );
        assert_eq!(
            fired(exec(
                "C:\\Users\\p\\Desktop\\Psiphon3.exe",
                "Psiphon3.exe",
                &[]
            )),
            ["circumvention.psiphon"]
        );
        assert_eq!(
            fired(exec(
                "/usr/sbin/openvpn",
                "openvpn",
                &["openvpn", "--config", "x"]
            )),
            ["circumvention.vpn"]
        );
        assert_eq!(
            fired(exec("/usr/bin/qbittorrent", "qbittorrent", &[])),
            ["filesharing.p2p"]
        );
        assert_eq!(
            fired(exec("/usr/games/steam", "steam", &[])),
            ["games.non_educational"]
        );
        for benign in [
            exec("/usr/bin/bash", "bash", &["bash"]),
            exec("/usr/bin/torsocks-docs-viewer", "torsocks-docs-v", &[]),
            exec(
                "/usr/bin/python3",
                "python3",
                &["python3", "history_of_tortoises.py"],
            ),
            exec(
                "/opt/minecraft-education/Minecraft.Education",
                "Minecraft.Educat",
                &[],
            ),
        ] {
            assert!(fired(benign.clone()).is_empty(), "{benign:?}");
        }
    }

    #[test]
    fn an_alert_says_which_rule_what_matched_and_which_policy() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        let a = &p.evaluate(
            &CTX,
            &exec(
                "/home/p/tor-browser/Browser/firefox.real",
                "firefox.real",
                &[],
            ),
        )[0];
        assert_eq!(a.rule, "circumvention.tor");
        assert!(a.matched.contains("path"), "{}", a.matched);
        assert!(
            a.policy_version
                .starts_with(p.version.split('#').next().unwrap())
        );
        assert_eq!(a.severity, "serious");
        assert_eq!(a.event_seq, Some(7));
    }

    fn usb(action: &str, classes: &[&str], keyboard: bool) -> Event {
        Event {
            seq: 9,
            observed_at_us: 1,
            hostname: "pc".into(),
            kind: Some(Kind::Usb(invigilator_proto::v1::UsbDevice {
                action: action.into(),
                vendor_id: "0781".into(),
                product_id: "5581".into(),
                product: "Ultra".into(),
                serial: "4C53".into(),
                interface_classes: classes.iter().map(|c| c.to_string()).collect(),
                keyboard,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn usb_rules_depend_on_the_device_group_and_the_approved_list() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        let on = |group: &str, e: Event| {
            let ctx = AgentContext {
                agent_id: "a",
                group,
                user_logged_on_elsewhere: vec![],
            };
            p.evaluate(&ctx, &e)
                .into_iter()
                .map(|a| a.rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            on("pupils-ks2", usb("attach", &["mass-storage"], false)),
            ["usb.storage_on_pupil_device"]
        );
        assert_eq!(
            on("staff", usb("attach", &["mass-storage"], false)),
            ["usb.unapproved_storage"]
        );
        assert!(on("staff", usb("detach", &["mass-storage"], false)).is_empty());
        assert_eq!(
            on("staff", usb("attach", &["hid"], true)),
            ["usb.keyboard_attached"]
        );
        assert!(
            on("staff", usb("present", &["hid"], true)).is_empty(),
            "keyboards there at start-up are not mid-session"
        );
        let approved = DEFAULT_POLICY.replace(
            "approved_storage = []",
            "approved_storage = [\"0781:5581\"]",
        );
        let p2 = Policy::parse(&approved).unwrap();
        let ctx = AgentContext {
            agent_id: "a",
            group: "staff",
            user_logged_on_elsewhere: vec![],
        };
        assert!(
            p2.evaluate(&ctx, &usb("attach", &["mass-storage"], false))
                .is_empty()
        );
        let bad =
            DEFAULT_POLICY.replace("approved_storage = []", "approved_storage = [\"sandisk\"]");
        assert!(
            Policy::parse(&bad)
                .unwrap_err()
                .contains("approved_storage")
        );
    }

    #[test]
    fn session_rules_catch_a_pupil_on_a_staff_laptop_and_double_logons() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        let logon = |user: &str| Event {
            seq: 1,
            observed_at_us: 1,
            user: user.into(),
            kind: Some(Kind::Session(invigilator_proto::v1::SessionChange {
                action: "logon".into(),
                user: user.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let rules = |group: &str, elsewhere: Vec<String>, user: &str| {
            let ctx = AgentContext {
                agent_id: "a",
                group,
                user_logged_on_elsewhere: elsewhere,
            };
            p.evaluate(&ctx, &logon(user))
                .into_iter()
                .map(|a| a.rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rules("staff-laptops", vec![], "pupil042"),
            ["session.pupil_on_staff_device"]
        );
        assert!(rules("pupils-ks2", vec![], "pupil042").is_empty());
        assert!(
            rules("pupils-ks2", vec![], "staff.jones").is_empty(),
            "teachers help at pupils' desks"
        );
        assert_eq!(
            rules("pupils-ks2", vec!["lab-1".into()], "pupil042"),
            ["session.concurrent_logon"]
        );
    }

    #[test]
    fn errors_point_at_the_line_and_field() {
        let bad = "version = \"1\"\n\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"catastrophic\"\nsummary = \"s\"\nnames = [\"a\"]\n";
        let err = Policy::parse(bad).unwrap_err();
        assert!(
            err.contains("line 6") && err.contains("catastrophic"),
            "{err}"
        );
        let bad_regex = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\ncmdline = [\"(\"]\n";
        let err = Policy::parse(bad_regex).unwrap_err();
        assert!(
            err.contains("rule \"x\"") && err.contains("cmdline"),
            "{err}"
        );
        let empty = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\n";
        assert!(
            Policy::parse(empty)
                .unwrap_err()
                .contains("matches nothing")
        );
    }
}
