//! `[roster]` in collector.toml: how a OneRoster export (Groupcall Xporter, Wonde, an MIS's own)
//! becomes the policy's roster, and the drop folder it is re-imported from.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RosterConfig {
    /// A folder (relative to the data directory unless absolute) the MIS export is dropped in;
    /// checked every `check_interval` and imported once its files have stopped changing. None
    /// (the default) imports only by `roster import`.
    pub drop_dir: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// The users.csv column holding the name a person signs in to a device with (what the
    /// agents report): `username` (default), `email`, `identifier` or `sourcedId`.
    pub login: LoginField,
    /// The policy group of each OneRoster grade. The default reads grades as English year
    /// groups: nursery and reception (`PK`, `PR`, `TK`, `KG`, `R`, `N`) eyfs; `01`-`02` ks1;
    /// `03`-`06` ks2; `07`-`13` pupils. Check a few pupils with `roster import --dry-run`.
    pub grades: BTreeMap<String, String>,
    /// The group of a pupil whose export gives no grade, in users.csv or any class they are
    /// enrolled in (default "pupils"). A grade that is given but mapped nowhere is an error.
    pub pupils_without_grade: String,
    /// The group of teachers, administrators and aides (default "staff").
    pub staff: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum LoginField {
    #[default]
    #[serde(rename = "username")]
    Username,
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "identifier")]
    Identifier,
    #[serde(rename = "sourcedId")]
    SourcedId,
}

impl LoginField {
    pub fn column(self) -> &'static str {
        match self {
            LoginField::Username => "username",
            LoginField::Email => "email",
            LoginField::Identifier => "identifier",
            LoginField::SourcedId => "sourcedId",
        }
    }
}

impl Default for RosterConfig {
    fn default() -> Self {
        let mut grades = BTreeMap::new();
        for g in ["PK", "PR", "TK", "KG", "R", "N"] {
            grades.insert(g.to_owned(), "eyfs".to_owned());
        }
        for (years, group) in [(1..=2, "ks1"), (3..=6, "ks2"), (7..=13, "pupils")] {
            for y in years {
                grades.insert(format!("{y:02}"), group.to_owned());
            }
        }
        Self {
            drop_dir: None,
            check_interval: Duration::from_secs(300),
            login: LoginField::Username,
            grades,
            pupils_without_grade: "pupils".into(),
            staff: "staff".into(),
        }
    }
}

impl RosterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.check_interval < Duration::from_secs(10) {
            return Err("roster.check_interval must be at least 10s".into());
        }
        Ok(())
    }
}
