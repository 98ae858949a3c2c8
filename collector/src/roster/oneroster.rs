//! OneRoster 1.1 CSV as an MIS exports it (Groupcall Xporter, Wonde, an MIS's own export): the
//! files and columns a roster needs, read by column name, every bad row named by file and line.
//!
//! Read: `manifest.csv` (when present: only a bulk export of OneRoster 1.0 or 1.1 is taken),
//! `users.csv` (role, status, enabledUser, grades and the login column), and, for pupils whose
//! row gives no grade, `enrollments.csv` with `classes.csv` (the grades of the classes they are
//! enrolled in as students). `orgs.csv` and `academicSessions.csv` are not needed: a trust's
//! collector takes every school in the export.

use super::RosterError;
use crate::config::LoginField;
use std::collections::HashMap;
use std::path::Path;

/// An export larger than this is refused rather than read (a 30,000-pupil trust's users.csv is
/// about 10 MB).
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// What a person is to the school, from OneRoster's `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Student,
    /// teacher, administrator, aide, proctor.
    Staff,
    /// guardian, parent, relative: not people who use the school's devices.
    Family,
}

/// One users.csv row that is in the roster's scope (active, enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub line: u64,
    pub sourced_id: String,
    pub role: Role,
    pub login: String,
    /// The row's own grades, in the order given.
    pub grades: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Export {
    pub users: Vec<User>,
    /// Rows left out: marked for deletion, disabled.
    pub inactive: usize,
    /// A student's sourcedId -> grades of the classes they are enrolled in, in file order.
    pub class_grades: HashMap<String, Vec<String>>,
    /// Rows that could not be taken, each with its file and line: reported together with
    /// what the mapping rejects, so one run shows every bad row.
    pub rejected: Vec<RosterError>,
}

/// A CSV file read by header name.
struct Table {
    file: String,
    reader: csv::Reader<std::fs::File>,
    columns: HashMap<String, usize>,
}

impl Table {
    /// None when the file is absent and `required` is false.
    fn open(dir: &Path, name: &str, required: bool) -> Result<Option<Self>, RosterError> {
        let path = dir.join(name);
        let file = name.to_owned();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(source) => return Err(RosterError::Read { file, source }),
        };
        if meta.len() > MAX_FILE_BYTES {
            return Err(RosterError::File {
                file,
                message: format!("{} bytes, more than the {MAX_FILE_BYTES} taken", meta.len()),
            });
        }
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(false)
            .from_path(&path)
            .map_err(|e| RosterError::File {
                file: file.clone(),
                message: e.to_string(),
            })?;
        let headers = reader.headers().map_err(|e| RosterError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        // Spreadsheet programs save a byte-order mark before the first header.
        let columns = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim_start_matches('\u{feff}').to_ascii_lowercase(), i))
            .collect();
        Ok(Some(Self {
            file,
            reader,
            columns,
        }))
    }

    fn column(&self, name: &str) -> Result<usize, RosterError> {
        self.columns
            .get(&name.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| RosterError::File {
                file: self.file.clone(),
                message: format!("no column {name:?} in its header"),
            })
    }

    /// Every row, with its line; a row the CSV reader cannot read is an error of its line.
    fn rows(&mut self) -> impl Iterator<Item = Result<(u64, csv::StringRecord), RosterError>> {
        let file = self.file.clone();
        self.reader.records().map(move |r| {
            r.map(|rec| (rec.position().map_or(0, |p| p.line()), rec))
                .map_err(|e| RosterError::Row {
                    file: file.clone(),
                    line: e.position().map_or(0, |p| p.line()),
                    message: e.to_string(),
                })
        })
    }
}

fn field(rec: &csv::StringRecord, i: usize) -> &str {
    rec.get(i).unwrap_or("")
}

/// Grades as OneRoster writes several in one field: "07" or "07,08".
fn grades(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Refuses what this reader does not understand, rather than import it wrongly.
fn check_manifest(dir: &Path) -> Result<(), RosterError> {
    let Some(mut t) = Table::open(dir, "manifest.csv", false)? else {
        return Ok(());
    };
    let (name, value) = (t.column("propertyName")?, t.column("value")?);
    let file = t.file.clone();
    for row in t.rows() {
        let (line, rec) = row?;
        let bad = |message: String| RosterError::Row {
            file: file.clone(),
            line,
            message,
        };
        match (field(&rec, name), field(&rec, value)) {
            ("oneroster.version", v) if v != "1.0" && v != "1.1" => {
                return Err(bad(format!(
                    "OneRoster {v} is not read yet; export OneRoster 1.1 CSV"
                )));
            }
            ("file.users", v) if !v.eq_ignore_ascii_case("bulk") => {
                return Err(bad(format!(
                    "users are exported as {v:?}; only a bulk (complete) export can replace the roster"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the export in `dir`. A bad users.csv row is collected in `rejected`; a missing file or
/// column, or a bad row of the other files, fails the read.
pub fn read(dir: &Path, login: LoginField) -> Result<Export, RosterError> {
    check_manifest(dir)?;
    let mut users = Table::open(dir, "users.csv", true)?.expect("required");
    let col = |t: &Table, n: &str| t.column(n);
    let (sourced, status, enabled, role, login_col, grade_col) = (
        col(&users, "sourcedId")?,
        col(&users, "status").ok(),
        col(&users, "enabledUser").ok(),
        col(&users, "role")?,
        col(&users, login.column())?,
        col(&users, "grades").ok(),
    );
    let mut export = Export::default();
    let mut bad = Vec::new();
    let file = users.file.clone();
    for row in users.rows() {
        let (line, rec) = match row {
            Ok(r) => r,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        let mut reject = |message: String| {
            bad.push(RosterError::Row {
                file: file.clone(),
                line,
                message,
            })
        };
        let active = status.is_none_or(|i| !field(&rec, i).eq_ignore_ascii_case("tobedeleted"))
            && enabled.is_none_or(|i| !field(&rec, i).eq_ignore_ascii_case("false"));
        if !active {
            export.inactive += 1;
            continue;
        }
        let role = match field(&rec, role).to_ascii_lowercase().as_str() {
            "student" => Role::Student,
            "teacher" | "administrator" | "aide" | "proctor" => Role::Staff,
            "guardian" | "parent" | "relative" => Role::Family,
            other => {
                reject(format!("role {other:?} is not a OneRoster 1.1 role"));
                continue;
            }
        };
        if role == Role::Family {
            continue;
        }
        let sourced_id = field(&rec, sourced).to_owned();
        if sourced_id.is_empty() {
            reject("empty sourcedId".into());
            continue;
        }
        let name = field(&rec, login_col);
        if let Err(why) = check_login(name) {
            reject(format!("{} {name:?}: {why}", login.column()));
            continue;
        }
        export.users.push(User {
            line,
            sourced_id,
            role,
            login: name.to_owned(),
            grades: grade_col
                .map(|i| grades(field(&rec, i)))
                .unwrap_or_default(),
        });
    }
    export.rejected = bad;
    export.class_grades = class_grades(dir, &export)?;
    Ok(export)
}

/// A login must be what an agent can report and what the roster file can hold unchanged.
fn check_login(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 256 {
        return Err("is longer than 256 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("holds a control character");
    }
    if name.starts_with('#') {
        return Err("starts with '#', which the roster file reads as a comment");
    }
    Ok(())
}

/// For each student with no grade of their own: the grades of the classes they are enrolled in
/// as a student. Both files are optional; a bad row in them is an error of its line.
fn class_grades(dir: &Path, export: &Export) -> Result<HashMap<String, Vec<String>>, RosterError> {
    let wanted: std::collections::HashSet<&str> = export
        .users
        .iter()
        .filter(|u| u.role == Role::Student && u.grades.is_empty())
        .map(|u| u.sourced_id.as_str())
        .collect();
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let (Some(mut classes), Some(mut enrolments)) = (
        Table::open(dir, "classes.csv", false)?,
        Table::open(dir, "enrollments.csv", false)?,
    ) else {
        return Ok(out);
    };
    let (class_id, class_grades_col) = (classes.column("sourcedId")?, classes.column("grades")?);
    let mut by_class: HashMap<String, Vec<String>> = HashMap::new();
    for row in classes.rows() {
        let (_, rec) = row?;
        by_class.insert(
            field(&rec, class_id).to_owned(),
            grades(field(&rec, class_grades_col)),
        );
    }
    let (class, user, role) = (
        enrolments.column("classSourcedId")?,
        enrolments.column("userSourcedId")?,
        enrolments.column("role")?,
    );
    let status = enrolments.column("status").ok();
    for row in enrolments.rows() {
        let (_, rec) = row?;
        let who = field(&rec, user);
        if !wanted.contains(who)
            || !field(&rec, role).eq_ignore_ascii_case("student")
            || status.is_some_and(|i| field(&rec, i).eq_ignore_ascii_case("tobedeleted"))
        {
            continue;
        }
        if let Some(g) = by_class.get(field(&rec, class)) {
            out.entry(who.to_owned())
                .or_insert_with(Vec::new)
                .extend(g.iter().cloned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows the read rejected, one per line.
    fn rejected(dir: &Path, login: LoginField) -> String {
        let e = read(dir, login).unwrap();
        e.rejected.iter().map(|r| format!("{r}\n")).collect()
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const USERS: &str = "\u{feff}sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password
u1,active,2026-09-01,true,s1,student,y9smith,,Sam,Smith,,1001,y9smith@school.example,,,,09,
u2,tobedeleted,2026-09-01,true,s1,student,y13left,,Lee,Left,,1002,,,,,13,
u3,active,2026-09-01,false,s1,student,disabled,,Dee,Sabled,,1003,,,,,05,
u4,active,2026-09-01,true,s1,teacher,t.jones,,Tia,Jones,,2001,,,,,,
u5,active,2026-09-01,true,s1,guardian,,,Pat,Smith,,,,,,,,
u6,active,2026-09-01,true,s1,student,r.noor,,Rae,Noor,,1004,,,,,,
";

    #[test]
    fn active_pupils_and_staff_are_read_by_column_name_and_the_rest_left_out() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "users.csv", USERS);
        write(
            dir.path(),
            "classes.csv",
            "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\nc1,active,,Reception Robins,KG,,,homeroom,,s1,t1,,,\n",
        );
        write(
            dir.path(),
            "enrollments.csv",
            "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\ne1,active,,c1,s1,u6,student,true,,\ne2,active,,c1,s1,u4,teacher,true,,\n",
        );
        let e = read(dir.path(), LoginField::Username).unwrap();
        let logins: Vec<(&str, Role)> =
            e.users.iter().map(|u| (u.login.as_str(), u.role)).collect();
        assert_eq!(
            logins,
            [
                ("y9smith", Role::Student),
                ("t.jones", Role::Staff),
                ("r.noor", Role::Student)
            ]
        );
        assert_eq!(e.inactive, 2);
        assert_eq!(e.users[0].grades, ["09"]);
        assert_eq!(e.class_grades["u6"], ["KG"]);
        let by_email = rejected(dir.path(), LoginField::Email);
        assert!(
            by_email.contains("users.csv line 5: email \"\": is empty"),
            "{by_email}"
        );
    }

    #[test]
    fn every_bad_row_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "users.csv",
            "sourcedId,role,username\nu1,student,ok\nu2,pupil,x\nu3,student,\nu4,student,#hash\n",
        );
        let e = rejected(dir.path(), LoginField::Username);
        assert!(e.contains("users.csv line 3: role \"pupil\""), "{e}");
        assert!(
            e.contains("users.csv line 4: username \"\": is empty"),
            "{e}"
        );
        assert!(e.contains("users.csv line 5: username \"#hash\""), "{e}");
        write(dir.path(), "users.csv", "sourcedId,username\nu1,x\n");
        let e = read(dir.path(), LoginField::Username)
            .unwrap_err()
            .to_string();
        assert!(e.contains("users.csv: no column \"role\""), "{e}");
        write(
            dir.path(),
            "users.csv",
            "sourcedId,role,username\nu1,student\n",
        );
        let e = rejected(dir.path(), LoginField::Username);
        assert!(e.contains("users.csv line 2:"), "{e}");
    }

    #[test]
    fn a_delta_or_a_newer_version_is_refused_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "users.csv", "sourcedId,role,username\n");
        write(
            dir.path(),
            "manifest.csv",
            "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,delta\n",
        );
        let e = read(dir.path(), LoginField::Username)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("manifest.csv line 4") && e.contains("bulk"),
            "{e}"
        );
        write(
            dir.path(),
            "manifest.csv",
            "propertyName,value\noneroster.version,1.2\n",
        );
        let e = read(dir.path(), LoginField::Username)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OneRoster 1.2 is not read yet"), "{e}");
    }
}
