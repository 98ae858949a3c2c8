//! Rosters from the school's MIS: a OneRoster export ([`oneroster`]) becomes the roster file the
//! policy names (`[groups] roster`), whole or not at all.
//!
//! An import reads and checks the whole export first: every bad row is reported with its file and
//! line, and then nothing changes. Only a complete, valid roster replaces the old one, by an
//! atomic rename, which the policy reloader sees as any other edit of the roster. A dry run shows
//! who would join, leave or change group. Each import that changes the roster is in the audit
//! trail with its counts (the names stay in the roster file, not the trail).

pub mod drop;
pub mod oneroster;

use crate::config::RosterConfig;
use invigilator_policy::{Class, Policy};
use oneroster::Role;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("{file}: cannot read it: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file} line {line}: {message}")]
    Row {
        file: String,
        line: u64,
        message: String,
    },
    #[error("{}", rows(.0))]
    Rows(Vec<RosterError>),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Policy(#[from] invigilator_policy::PolicyError),
    #[error("writing the roster {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// At most this many rejected rows are listed (the count says how many there were).
const ROWS_SHOWN: usize = 50;

fn rows(errors: &[RosterError]) -> String {
    let mut s = format!("{} row(s) rejected; nothing was imported:", errors.len());
    for e in errors.iter().take(ROWS_SHOWN) {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    if errors.len() > ROWS_SHOWN {
        s.push_str(&format!("\n  ... and {} more", errors.len() - ROWS_SHOWN));
    }
    s
}

/// Login (as the roster file keeps it: lower case) -> group.
pub type Roster = BTreeMap<String, String>;

/// The roster an export makes, before it is written.
#[derive(Debug)]
pub struct Plan {
    pub roster: Roster,
    pub pupils: usize,
    pub staff: usize,
    /// Pupils placed in `pupils_without_grade`.
    pub without_grade: usize,
    /// Rows left out as marked for deletion or disabled.
    pub inactive: usize,
}

/// Who would join, leave or move between groups.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    pub moved: Vec<(String, String, String)>,
}

impl Diff {
    pub fn between(old: &Roster, new: &Roster) -> Self {
        let mut d = Diff::default();
        for (user, group) in new {
            match old.get(user) {
                None => d.added.push((user.clone(), group.clone())),
                Some(g) if g != group => d.moved.push((user.clone(), g.clone(), group.clone())),
                Some(_) => {}
            }
        }
        for (user, group) in old {
            if !new.contains_key(user) {
                d.removed.push((user.clone(), group.clone()));
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "added={} removed={} moved={}",
            self.added.len(),
            self.removed.len(),
            self.moved.len()
        )
    }
}

/// Checks that every group the settings name is a `[[groups.users]]` group of the right class,
/// so that a typo stops the import instead of placing a year group nowhere.
fn check_groups(cfg: &RosterConfig, groups: &[(String, Class)]) -> Result<(), RosterError> {
    let class_of = |name: &str| groups.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    let expect = |setting: String, name: &str, class: Class| match class_of(name) {
        Some(c) if c == class => Ok(()),
        Some(c) => Err(RosterError::Config(format!(
            "roster.{setting} is {name:?}, a group of class {:?}, not {:?}",
            c.as_str(),
            class.as_str()
        ))),
        None => Err(RosterError::Config(format!(
            "roster.{setting} is {name:?}, which no [[groups.users]] group in the policy is named"
        ))),
    };
    expect("staff".into(), &cfg.staff, Class::Staff)?;
    expect(
        "pupils_without_grade".into(),
        &cfg.pupils_without_grade,
        Class::Pupil,
    )?;
    for (grade, group) in &cfg.grades {
        expect(format!("grades.{grade}"), group, Class::Pupil)?;
    }
    Ok(())
}

/// The roster the export in `dir` makes under `cfg`, checked against the policy's groups.
pub fn plan(
    dir: &Path,
    cfg: &RosterConfig,
    groups: &[(String, Class)],
) -> Result<Plan, RosterError> {
    check_groups(cfg, groups)?;
    let mut export = oneroster::read(dir, cfg.login)?;
    let mut plan = Plan {
        roster: Roster::new(),
        pupils: 0,
        staff: 0,
        without_grade: 0,
        inactive: export.inactive,
    };
    // login -> the line that placed it, to name both lines of a clash.
    let mut placed_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad = std::mem::take(&mut export.rejected);
    for u in &export.users {
        let reject = |message: String| RosterError::Row {
            file: "users.csv".into(),
            line: u.line,
            message,
        };
        let group = match u.role {
            Role::Staff => cfg.staff.clone(),
            Role::Family => continue,
            Role::Student => {
                let own = &u.grades;
                let from_classes = export.class_grades.get(&u.sourced_id);
                let grade = own.first().or_else(|| from_classes.and_then(|g| g.first()));
                match grade {
                    None => {
                        plan.without_grade += 1;
                        cfg.pupils_without_grade.clone()
                    }
                    Some(g) => match cfg.grades.get(g) {
                        Some(group) => group.clone(),
                        None => {
                            bad.push(reject(format!(
                                "grade {g:?} is mapped to no group in [roster.grades]"
                            )));
                            continue;
                        }
                    },
                }
            }
        };
        let login = u.login.to_lowercase();
        match plan.roster.get(&login) {
            Some(g) if *g != group => {
                bad.push(reject(format!(
                    "{login:?} is also on line {} in group {g:?}, not {group:?}",
                    placed_by[&login]
                )));
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        match u.role {
            Role::Staff => plan.staff += 1,
            _ => plan.pupils += 1,
        }
        placed_by.insert(login.clone(), u.line);
        plan.roster.insert(login, group);
    }
    if !bad.is_empty() {
        // In file order, whichever check found them.
        bad.sort_by_key(|e| match e {
            RosterError::Row { line, .. } => *line,
            _ => 0,
        });
        return Err(RosterError::Rows(bad));
    }
    Ok(plan)
}

/// The roster file as it stands (`user,group` lines; empty when there is none yet).
pub fn current(path: &Path) -> Result<Roster, RosterError> {
    let file = path.display().to_string();
    let mut reader = match csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
    {
        Ok(r) => r,
        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Ok(Roster::new());
        }
        Err(e) => {
            return Err(RosterError::File {
                file,
                message: e.to_string(),
            });
        }
    };
    let mut roster = Roster::new();
    for (n, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| RosterError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if let (Some(u), Some(g)) = (rec.get(0), rec.get(1)) {
            if n == 0 && u.eq_ignore_ascii_case("user") && g.eq_ignore_ascii_case("group") {
                continue;
            }
            roster.insert(u.to_lowercase(), g.to_owned());
        }
    }
    Ok(roster)
}

/// Replaces the roster file with `roster`, atomically: a reader (the policy reloader) sees the
/// old file or the new one, never part of one. The old file is kept beside it as `.csv.bak`
/// (hand-kept lines, such as supply cover, are not lost to a first import), and the new one
/// takes its mode and owner, so an import run as root leaves a file the service can read.
pub fn write(path: &Path, roster: &Roster, source: &str) -> Result<(), RosterError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let err = |source: std::io::Error| RosterError::Write {
        path: path.to_owned(),
        source,
    };
    // Unique, so a CLI import and the drop folder's never write into one file.
    let tmp = path.with_extension(format!(
        "csv.importing-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let mut out = Vec::new();
    writeln!(
        out,
        "# Imported from the MIS's OneRoster export ({}) at {}. Replaced by the next import:\n# change the export or [roster] in collector.toml, not this file.",
        source.replace(['\n', '\r'], " "),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .map_err(err)?;
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["user", "group"])
        .map_err(|e| err(e.into()))?;
    for (user, group) in roster {
        w.write_record([user, group]).map_err(|e| err(e.into()))?;
    }
    let bytes = w.into_inner().map_err(|e| err(e.into_error()))?;
    let old = std::fs::metadata(path).ok();
    let mut f = std::fs::File::create_new(&tmp).map_err(err)?;
    let written = f
        .write_all(&bytes)
        .and_then(|()| {
            let mode = old.as_ref().map_or(0o640, |m| m.mode() & 0o7777);
            f.set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| match &old {
            // Only root may give a file away; anyone else's import keeps its own.
            Some(m) => match std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
                other => other,
            },
            None => Ok(()),
        })
        .and_then(|()| f.sync_all())
        .and_then(|()| match &old {
            Some(_) => std::fs::copy(path, path.with_extension("csv.bak")).map(drop),
            None => Ok(()),
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What an import did (or, dry, would do).
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub diff: Diff,
    pub roster_file: PathBuf,
    pub written: bool,
}

/// Imports the export in `export_dir` into the roster of the data directory's policy. Writes
/// only when not `dry_run` and something changed.
pub fn import(
    data_dir: &Path,
    export_dir: &Path,
    cfg: &RosterConfig,
    dry_run: bool,
) -> Result<Outcome, RosterError> {
    let target = Policy::roster_target(&Policy::path(data_dir))?;
    let roster_file = target.file.ok_or_else(|| {
        RosterError::Config(format!(
            "the policy ({}) names no roster: add roster = \"roster.csv\" under [groups]",
            Policy::path(data_dir).display()
        ))
    })?;
    let plan = plan(export_dir, cfg, &target.groups)?;
    let diff = Diff::between(&current(&roster_file)?, &plan.roster);
    let written = !dry_run && !diff.is_empty();
    if written {
        write(
            &roster_file,
            &plan.roster,
            &export_dir.display().to_string(),
        )?;
    }
    Ok(Outcome {
        plan,
        diff,
        roster_file,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<(String, Class)> {
        [
            ("eyfs", Class::Pupil),
            ("ks1", Class::Pupil),
            ("ks2", Class::Pupil),
            ("pupils", Class::Pupil),
            ("staff", Class::Staff),
        ]
        .map(|(n, c)| (n.to_owned(), c))
        .to_vec()
    }

    fn export(users: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.csv"),
            format!("sourcedId,role,username,grades\n{users}"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn year_groups_become_the_policy_s_groups() {
        let dir = export(
            "u1,student,Y1Ali,01\nu2,student,y5bo,05\nu3,student,y9cy,09\nu4,teacher,t.di,\nu5,student,new.starter,\nu6,student,y5bo,05\n",
        );
        let p = plan(dir.path(), &RosterConfig::default(), &groups()).unwrap();
        let got: Vec<(&str, &str)> = p
            .roster
            .iter()
            .map(|(u, g)| (u.as_str(), g.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("new.starter", "pupils"),
                ("t.di", "staff"),
                ("y1ali", "ks1"),
                ("y5bo", "ks2"),
                ("y9cy", "pupils")
            ]
        );
        assert_eq!((p.pupils, p.staff, p.without_grade), (4, 1, 1));
    }

    #[test]
    fn an_unmapped_grade_a_clash_or_a_group_the_policy_lacks_stops_the_import() {
        let dir = export("u1,student,a,XX\nu2,student,b,01\nu3,teacher,b,\n");
        let e = plan(dir.path(), &RosterConfig::default(), &groups())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("2 row(s) rejected; nothing was imported"),
            "{e}"
        );
        assert!(e.contains("users.csv line 2: grade \"XX\""), "{e}");
        assert!(
            e.contains("users.csv line 4: \"b\" is also on line 3"),
            "{e}"
        );
        let mut cfg = RosterConfig::default();
        cfg.grades.insert("07".into(), "year7".into());
        let e = plan(dir.path(), &cfg, &groups()).unwrap_err().to_string();
        assert!(e.contains("roster.grades.07 is \"year7\", which no"), "{e}");
        cfg.grades.insert("07".into(), "staff".into());
        let e = plan(dir.path(), &cfg, &groups()).unwrap_err().to_string();
        assert!(
            e.contains("a group of class \"staff\", not \"pupil\""),
            "{e}"
        );
    }

    #[test]
    fn the_written_roster_reads_back_and_the_diff_names_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.csv");
        assert!(current(&path).unwrap().is_empty());
        let old: Roster = [("a", "ks1"), ("b", "ks2"), ("c", "staff")]
            .map(|(u, g)| (u.to_owned(), g.to_owned()))
            .into();
        write(&path, &old, "/drop\nforged").unwrap();
        assert_eq!(current(&path).unwrap(), old);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o640);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
            write(&path, &Roster::new(), "again").unwrap();
            assert_eq!(mode(&path), 0o604, "the old file's mode is kept");
            assert_eq!(current(&path.with_extension("csv.bak")).unwrap(), old);
            write(&path, &old, "back").unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with('#')).count(),
            2,
            "{text}"
        );
        let new: Roster = [("a", "ks2"), ("c", "staff"), ("d", "eyfs")]
            .map(|(u, g)| (u.to_owned(), g.to_owned()))
            .into();
        let d = Diff::between(&old, &new);
        assert_eq!(d.added, [("d".to_owned(), "eyfs".to_owned())]);
        assert_eq!(d.removed, [("b".to_owned(), "ks2".to_owned())]);
        assert_eq!(
            d.moved,
            [("a".to_owned(), "ks1".to_owned(), "ks2".to_owned())]
        );
        assert_eq!(d.summary(), "added=1 removed=1 moved=1");
    }
}
