//! Who and which device (the policies' Appendix 2): a device's enrolment group gives its class
//! (school single-user, school shared, personal) and the group of people who normally use it;
//! OS user names map to groups (pupils by key stage, staff, supply staff, visitors) through an
//! imported roster or name patterns. Rules then apply by group and by device class.

use super::located::SpecError;
use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The class of person a group holds; the sanctions table differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Pupil,
    Staff,
    Visitor,
    /// The operating system's own accounts (root, SYSTEM, services): what they run is the
    /// machine's own work (updates, services), never a pupil's.
    System,
    Unknown,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Pupil => "pupil",
            Class::Staff => "staff",
            Class::Visitor => "visitor",
            Class::System => "system",
            Class::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pupil" => Class::Pupil,
            "staff" => Class::Staff,
            "visitor" => Class::Visitor,
            "system" => Class::System,
            "unknown" => Class::Unknown,
            _ => return None,
        })
    }
}

/// Who owns a device and how it is used (Appendix 2's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceClass {
    SchoolSingleUser,
    SchoolShared,
    Personal,
}

impl DeviceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::SchoolSingleUser => "school-single-user",
            DeviceClass::SchoolShared => "school-shared",
            DeviceClass::Personal => "personal",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsSpec {
    /// A CSV file (`user,group`, header optional), relative to the policy file: the school's
    /// roster exported from its MIS. It wins over name patterns.
    pub roster: Option<Spanned<String>>,
    pub devices: Vec<DeviceSpec>,
    pub users: Vec<UserGroupSpec>,
}

/// `[[groups.devices]]`: devices whose enrolment group matches one of `enrolment_groups`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub enrolment_groups: Vec<Spanned<String>>,
    pub class: DeviceClass,
    /// The user group of people on these devices whose user name is not otherwise known.
    pub users: Option<Spanned<String>>,
}

/// `[[groups.users]]`: a group of people, and the OS user names that belong to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserGroupSpec {
    pub name: Spanned<String>,
    pub class: Class,
    /// Globs on the OS user name, case-insensitive ("y5*", "*.staff").
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
}

/// What the policy knows about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device<'a> {
    pub class: Option<DeviceClass>,
    /// The group of people who normally use it.
    pub users: Option<&'a str>,
    /// The class of those people: a "pupil device" or a "staff device".
    pub owner: Class,
}

/// What the policy knows about a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'a> {
    pub group: Option<&'a str>,
    pub class: Class,
}

#[derive(Debug)]
struct Group {
    name: String,
    class: Class,
}

#[derive(Debug)]
pub struct Groups {
    groups: Vec<Group>,
    devices: Vec<(Vec<GlobMatcher>, DeviceClass, Option<usize>)>,
    /// Every group's name patterns in one set (a name is matched once, whatever the number of
    /// patterns), with the group of each pattern in file order.
    user_patterns: GlobSet,
    user_pattern_group: Vec<usize>,
    /// Lower-cased user name -> group index.
    roster: HashMap<String, usize>,
    /// Where the roster was read from, so a change to it reloads the policy.
    pub roster_file: Option<PathBuf>,
}

fn glob(field: &str, p: &Spanned<String>) -> Result<GlobMatcher, SpecError> {
    GlobBuilder::new(p.get_ref())
        .case_insensitive(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            SpecError::at(
                p.span(),
                format!("groups.{field}: pattern {:?}: {e}", p.get_ref()),
            )
        })
}

impl Groups {
    /// `base` is the policy file's directory, where a relative roster path points.
    pub fn compile(spec: &GroupsSpec, base: Option<&Path>) -> Result<Self, SpecError> {
        Self::compile_with(spec, base, true)
    }

    /// As `compile`, with the roster file read or (for an import that is about to write it)
    /// not.
    pub(crate) fn compile_with(
        spec: &GroupsSpec,
        base: Option<&Path>,
        read_roster: bool,
    ) -> Result<Self, SpecError> {
        let mut groups: Vec<Group> = Vec::new();
        let mut index = HashMap::new();
        for g in &spec.users {
            let name = g.name.get_ref().trim();
            // In `users = [...]` a class name means the class, so a group may share a class's
            // name only if it is of that class.
            if name.is_empty() || Class::parse(name).is_some_and(|c| c != g.class) {
                return Err(SpecError::at(
                    g.name.span(),
                    format!(
                        "groups.users: {name:?} cannot name a group of class {:?}",
                        g.class.as_str()
                    ),
                ));
            }
            if index.insert(name.to_owned(), groups.len()).is_some() {
                return Err(SpecError::at(
                    g.name.span(),
                    format!("groups.users: group {name:?} is defined twice"),
                ));
            }
            groups.push(Group {
                name: name.to_owned(),
                class: g.class,
            });
        }
        let lookup = |s: &Spanned<String>, field: &str| {
            index.get(s.get_ref().as_str()).copied().ok_or_else(|| {
                SpecError::at(
                    s.span(),
                    format!(
                        "groups.{field}: no [[groups.users]] group is named {:?}",
                        s.get_ref()
                    ),
                )
            })
        };
        let mut devices = Vec::new();
        for d in &spec.devices {
            if d.enrolment_groups.is_empty() {
                return Err(SpecError::new(
                    "groups.devices: an entry has no enrolment_groups".to_string(),
                ));
            }
            let globs = d
                .enrolment_groups
                .iter()
                .map(|p| glob("devices.enrolment_groups", p))
                .collect::<Result<_, _>>()?;
            let users = d
                .users
                .as_ref()
                .map(|u| lookup(u, "devices.users"))
                .transpose()?;
            devices.push((globs, d.class, users));
        }
        let mut user_set = GlobSetBuilder::new();
        let mut user_pattern_group = Vec::new();
        for (i, g) in spec.users.iter().enumerate() {
            for p in &g.names {
                user_set.add(glob("users.names", p)?.glob().clone());
                user_pattern_group.push(i);
            }
        }
        let user_patterns = user_set
            .build()
            .map_err(|e| SpecError::new(format!("groups.users: {e}")))?;
        let roster_file = spec
            .roster
            .as_ref()
            .map(|f| base.unwrap_or(Path::new(".")).join(f.get_ref()));
        let roster = match (&spec.roster, &roster_file) {
            (Some(file), Some(path)) if read_roster => {
                load_roster(path, &index).map_err(|e| SpecError::at(file.span(), e))?
            }
            _ => HashMap::new(),
        };
        Ok(Self {
            groups,
            devices,
            user_patterns,
            user_pattern_group,
            roster,
            roster_file,
        })
    }

    /// Whether `name` is a group or a class rules may name in `users = [...]`.
    pub fn knows(&self, name: &str) -> bool {
        Class::parse(name).is_some() || self.groups.iter().any(|g| g.name == name)
    }

    /// A device, from the group of the token it enrolled with; the first matching entry wins.
    pub fn device(&self, enrolment_group: &str) -> Device<'_> {
        for (globs, class, users) in &self.devices {
            if globs.iter().any(|g| g.is_match(enrolment_group)) {
                let users = users.map(|i| &self.groups[i]);
                return Device {
                    class: Some(*class),
                    users: users.map(|g| g.name.as_str()),
                    owner: users.map_or(Class::Unknown, |g| g.class),
                };
            }
        }
        Device {
            class: None,
            users: None,
            owner: Class::Unknown,
        }
    }

    /// A person: the roster first, then name patterns (first match in file order), then the
    /// usual users of the device they are on.
    pub fn person<'a>(&'a self, user: &str, device: &Device<'a>) -> Person<'a> {
        let found = self.roster.get(&user.to_lowercase()).copied().or_else(|| {
            // The first matching pattern in file order wins.
            self.user_patterns
                .matches(user)
                .into_iter()
                .min()
                .map(|p| self.user_pattern_group[p])
        });
        match found {
            Some(i) => Person {
                group: Some(&self.groups[i].name),
                class: self.groups[i].class,
            },
            None if user.is_empty() => Person {
                group: None,
                class: Class::Unknown,
            },
            None => Person {
                group: device.users,
                class: device.owner,
            },
        }
    }
}

impl Groups {
    /// Every user group's name and class, in file order (what an imported roster may name).
    pub fn user_groups(&self) -> impl Iterator<Item = (&str, Class)> {
        self.groups.iter().map(|g| (g.name.as_str(), g.class))
    }
}

/// `user,group` lines; a first line of `user,group` is a header. Errors name the line.
fn load_roster(
    path: &Path,
    groups: &HashMap<String, usize>,
) -> Result<HashMap<String, usize>, String> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| format!("groups.roster: cannot read {shown}: {e}"))?;
    let mut roster = HashMap::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("groups.roster: {shown}: {e}"))?;
        let line = record.position().map_or(n as u64 + 1, |p| p.line());
        let (user, group) = match (record.get(0), record.get(1), record.len()) {
            (Some(u), Some(g), 2) => (u, g),
            _ => {
                return Err(format!(
                    "groups.roster: {shown} line {line}: expected two fields, user,group"
                ));
            }
        };
        if n == 0 && user.eq_ignore_ascii_case("user") && group.eq_ignore_ascii_case("group") {
            continue;
        }
        let Some(&i) = groups.get(group) else {
            return Err(format!(
                "groups.roster: {shown} line {line}: no [[groups.users]] group is named {group:?}"
            ));
        };
        if user.is_empty() {
            return Err(format!(
                "groups.roster: {shown} line {line}: empty user name"
            ));
        }
        roster.insert(user.to_lowercase(), i);
    }
    Ok(roster)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        [[devices]]
        enrolment_groups = ["staff*"]
        class = "school-single-user"
        users = "staff"
        [[devices]]
        enrolment_groups = ["suite-ks2*"]
        class = "school-shared"
        users = "ks2"
        [[devices]]
        enrolment_groups = ["guest*"]
        class = "personal"
        users = "visitors"
        [[users]]
        name = "ks2"
        class = "pupil"
        names = ["y[3-6]*"]
        [[users]]
        name = "staff"
        class = "staff"
        names = ["*.staff"]
        [[users]]
        name = "supply"
        class = "staff"
        names = ["supply*"]
        [[users]]
        name = "visitors"
        class = "visitor"
    "#;

    fn groups(extra: &str, base: Option<&Path>) -> Result<Groups, SpecError> {
        let spec: GroupsSpec = toml::from_str(&format!("{extra}\n{SPEC}")).unwrap();
        Groups::compile(&spec, base)
    }

    #[test]
    fn devices_and_people_are_sorted_by_pattern_then_by_the_device() {
        let g = groups("", None).unwrap();
        let suite = g.device("suite-ks2-03");
        assert_eq!(suite.class, Some(DeviceClass::SchoolShared));
        assert_eq!(suite.owner, Class::Pupil);
        let laptop = g.device("staff-laptops");
        assert_eq!(laptop.owner, Class::Staff);
        assert_eq!(g.device("mystery").class, None);

        let p = g.person("Y5Smith", &suite);
        assert_eq!((p.group, p.class), (Some("ks2"), Class::Pupil));
        let t = g.person("jones.staff", &suite);
        assert_eq!((t.group, t.class), (Some("staff"), Class::Staff));
        // Unknown names take the device's usual users; no name at all is unknown.
        let someone = g.person("localadmin", &g.device("guest-wifi"));
        assert_eq!(
            (someone.group, someone.class),
            (Some("visitors"), Class::Visitor)
        );
        assert_eq!(g.person("", &suite).class, Class::Unknown);
        assert!(g.knows("ks2") && g.knows("pupil") && !g.knows("ks9"));
    }

    #[test]
    fn the_roster_wins_over_patterns_and_its_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("roster.csv"),
            "user,group\n# supply teacher this week\ny3cover, supply\nAmir.K,ks2\n",
        )
        .unwrap();
        let g = groups("roster = \"roster.csv\"", Some(dir.path())).unwrap();
        let room = g.device("suite-ks2");
        assert_eq!(g.person("y3cover", &room).group, Some("supply"));
        assert_eq!(g.person("amir.k", &room).class, Class::Pupil);

        std::fs::write(dir.path().join("roster.csv"), "a,ks2\nb,year7\n").unwrap();
        let err = groups("roster = \"roster.csv\"", Some(dir.path()))
            .unwrap_err()
            .message;
        assert!(err.contains("line 2") && err.contains("year7"), "{err}");
        let err = groups("roster = \"missing.csv\"", Some(dir.path()))
            .unwrap_err()
            .message;
        assert!(err.contains("missing.csv"), "{err}");
    }

    #[test]
    fn unknown_groups_and_bad_patterns_point_at_the_text() {
        let text =
            "[[devices]]\nenrolment_groups = [\"x\"]\nclass = \"personal\"\nusers = \"nobody\"\n";
        let spec: GroupsSpec = toml::from_str(text).unwrap();
        let err = Groups::compile(&spec, None).unwrap_err();
        assert_eq!(
            err.render(text),
            "line 4: groups.devices.users: no [[groups.users]] group is named \"nobody\""
        );
        let text = "[[users]]\nname = \"a\"\nclass = \"pupil\"\nnames = [\"[\"]\n";
        let spec: GroupsSpec = toml::from_str(text).unwrap();
        assert!(
            Groups::compile(&spec, None)
                .unwrap_err()
                .render(text)
                .starts_with("line 4:")
        );
    }
}
