//! Who is who: device groups (from the enrolment token) and OS user names, sorted into the
//! policies' classes of people. Until rosters arrive (issue 4), classes come from name patterns.

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// A class of people the policies treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Pupil,
    Staff,
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsSpec {
    /// Enrolment groups (globs) of devices used by pupils.
    pub pupil_device_groups: Vec<String>,
    /// Enrolment groups (globs) of devices used by staff.
    pub staff_device_groups: Vec<String>,
    /// OS user names (globs, case-insensitive) of pupils.
    pub pupil_users: Vec<String>,
    /// OS user names (globs, case-insensitive) of staff.
    pub staff_users: Vec<String>,
}

impl Default for GroupsSpec {
    fn default() -> Self {
        Self {
            pupil_device_groups: vec!["pupils*".into(), "shared-*".into()],
            staff_device_groups: vec!["staff*".into()],
            pupil_users: vec!["pupil*".into()],
            staff_users: vec!["staff*".into()],
        }
    }
}

#[derive(Debug)]
pub struct Groups {
    pupil_devices: GlobSet,
    staff_devices: GlobSet,
    pupil_users: GlobSet,
    staff_users: GlobSet,
}

fn set(field: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = globset::GlobBuilder::new(p)
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("groups.{field}: pattern {p:?}: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| format!("groups.{field}: {e}"))
}

impl Groups {
    pub fn compile(spec: &GroupsSpec) -> Result<Self, String> {
        Ok(Self {
            pupil_devices: set("pupil_device_groups", &spec.pupil_device_groups)?,
            staff_devices: set("staff_device_groups", &spec.staff_device_groups)?,
            pupil_users: set("pupil_users", &spec.pupil_users)?,
            staff_users: set("staff_users", &spec.staff_users)?,
        })
    }

    pub fn device(&self, group: &str) -> Class {
        classify(&self.pupil_devices, &self.staff_devices, group)
    }

    pub fn user(&self, name: &str) -> Class {
        classify(&self.pupil_users, &self.staff_users, name)
    }
}

fn classify(pupil: &GlobSet, staff: &GlobSet, s: &str) -> Class {
    // Staff first: a name matching both is more likely an adult's account.
    if staff.is_match(s) {
        Class::Staff
    } else if pupil.is_match(s) {
        Class::Pupil
    } else {
        Class::Unknown
    }
}
