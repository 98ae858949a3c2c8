//! Process rules: executable name, path and command-line patterns.

use super::Severity;
use super::groups::{DeviceClass, Groups};
use super::located::SpecError;
use super::schedule::When;
use super::scope::Scope;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use invigilator_proto::v1::ProcessExec;
use regex::RegexSet;
use serde::Deserialize;

/// One `[[process]]` table of the policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRuleSpec {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub summary: String,
    /// Globs matched, case-insensitively, against the program's file name (from its path, its
    /// first argument, or the kernel's short name).
    #[serde(default)]
    pub names: Vec<String>,
    /// Globs matched, case-insensitively, against the full executable path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Regular expressions matched against the command line, arguments joined by spaces.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Groups or classes (pupil, staff, visitor) the rule applies to; everyone when empty.
    #[serde(default)]
    pub users: Vec<toml::Spanned<String>>,
    /// Device classes the rule applies to; all when empty.
    #[serde(default)]
    pub devices: Vec<DeviceClass>,
    /// "lessons", "outside-lessons" or "always" (the default).
    #[serde(default)]
    pub when: When,
}

#[derive(Debug)]
pub(super) struct ProcessRules {
    rules: Vec<ProcessRuleSpec>,
    scopes: Vec<Scope>,
    names: GlobSet,
    name_owner: Vec<usize>,
    paths: GlobSet,
    path_owner: Vec<usize>,
    cmdline: RegexSet,
    cmdline_owner: Vec<usize>,
}

fn glob(rule: &str, field: &str, pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map_err(|e| format!("rule {rule:?}: {field} pattern {pattern:?}: {e}"))
}

impl ProcessRules {
    pub(super) fn compile(rules: Vec<ProcessRuleSpec>, groups: &Groups) -> Result<Self, SpecError> {
        if let Some(r) = rules.iter().find(|r| r.severity == Severity::Illegal) {
            return Err(SpecError::new(format!(
                "rule {:?}: severity \"illegal\" belongs to the licensed illegal-content lists; use \"serious\"",
                r.id
            )));
        }
        let scopes = rules
            .iter()
            .map(|r| Scope::compile(&r.id, &r.users, &r.devices, r.when, groups))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scopes,
            ..Self::compile_patterns(rules)?
        })
    }

    fn compile_patterns(rules: Vec<ProcessRuleSpec>) -> Result<Self, String> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut name_owner, mut path_owner, mut cmdline_owner) = (vec![], vec![], vec![]);
        let mut regexes = vec![];
        let mut seen = std::collections::HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            if !seen.insert(r.id.as_str()) {
                return Err(format!("rule id {:?} is used twice", r.id));
            }
            if r.names.is_empty() && r.paths.is_empty() && r.cmdline.is_empty() {
                return Err(format!(
                    "rule {:?} matches nothing: give names, paths or cmdline",
                    r.id
                ));
            }
            for p in &r.names {
                names.add(glob(&r.id, "names", p)?);
                name_owner.push(i);
            }
            for p in &r.paths {
                // Windows paths are matched with forward slashes, like Unix ones.
                paths.add(glob(&r.id, "paths", &p.replace('\\', "/"))?);
                path_owner.push(i);
            }
            for p in &r.cmdline {
                regex::Regex::new(p)
                    .map_err(|e| format!("rule {:?}: cmdline pattern {p:?}: {e}", r.id))?;
                regexes.push(p.clone());
                cmdline_owner.push(i);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| e.to_string());
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            cmdline: RegexSet::new(&regexes).map_err(|e| e.to_string())?,
            rules,
            scopes: Vec::new(),
            name_owner,
            path_owner,
            cmdline_owner,
        })
    }

    /// Each rule that matches, once, with a description of the first thing that matched it.
    pub(super) fn matches<'a>(
        &'a self,
        p: &ProcessExec,
    ) -> impl Iterator<Item = (&'a ProcessRuleSpec, &'a Scope, String)> + 'a {
        let mut found: Vec<Option<String>> = vec![None; self.rules.len()];
        let exe = p.exe.replace('\\', "/");
        let mut candidates: Vec<&str> = vec![];
        if let Some(base) = exe.rsplit('/').next().filter(|b| !b.is_empty()) {
            candidates.push(base);
        }
        let argv0 = p.argv.first().map(|a| a.replace('\\', "/"));
        if let Some(base) = argv0.as_deref().and_then(|a| a.rsplit('/').next()) {
            candidates.push(base);
        }
        if !p.name.is_empty() {
            candidates.push(&p.name);
        }
        for c in candidates {
            for i in self.names.matches(c) {
                found[self.name_owner[i]].get_or_insert_with(|| format!("name {c:?}"));
            }
        }
        if !exe.is_empty() {
            for i in self.paths.matches(&exe) {
                found[self.path_owner[i]].get_or_insert_with(|| format!("path {exe:?}"));
            }
        }
        if !self.cmdline.is_empty() && !p.argv.is_empty() {
            let line = p.argv.join(" ");
            for i in self.cmdline.matches(&line) {
                let pat = &self.cmdline.patterns()[i];
                found[self.cmdline_owner[i]].get_or_insert_with(|| format!("cmdline /{pat}/"));
            }
        }
        found
            .into_iter()
            .enumerate()
            .filter_map(move |(i, m)| m.map(|m| (&self.rules[i], &self.scopes[i], m)))
    }
}
