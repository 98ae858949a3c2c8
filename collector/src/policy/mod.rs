//! The Acceptable Use Policy, as code: a TOML file compiled into matchers that turn events into
//! alerts. Every alert records the rule that fired, what matched, and the policy version.

use crate::store::NewAlert;
use invigilator_proto::v1::{Event, event::Kind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

mod process;

pub use process::ProcessRuleSpec;

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
    process: Vec<ProcessRuleSpec>,
}

/// Who an event came from, as far as the policy cares.
#[derive(Debug, Clone)]
pub struct AgentContext<'a> {
    pub agent_id: &'a str,
    pub group: &'a str,
}

/// A compiled policy. Cheap to evaluate; swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// The file's declared version and a hash of its content, so an edit without a version
    /// bump is still told apart.
    pub version: String,
    process: process::ProcessRules,
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
        Ok(Self {
            version: format!("{}#{hash}", file.version.trim()),
            process: process::ProcessRules::compile(file.process)?,
        })
    }

    /// The alerts an event raises under this policy (usually none).
    pub fn evaluate(&self, agent: &AgentContext<'_>, event: &Event) -> Vec<NewAlert> {
        let Some(Kind::Process(p)) = &event.kind else {
            return Vec::new();
        };
        self.process
            .matches(p)
            .map(|(rule, matched)| NewAlert {
                agent_id: agent.agent_id.to_owned(),
                hostname: event.hostname.clone(),
                user: event.user.clone(),
                kind: "process".into(),
                rule: rule.id.clone(),
                category: rule.category.clone(),
                severity: rule.severity.as_str().into(),
                summary: format!("{}: {}", rule.summary, display_program(p)),
                matched,
                observed_at_us: event.observed_at_us,
                policy_version: self.version.clone(),
                event_seq: Some(event.seq),
            })
            .collect()
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
