//! Rosters from the MIS, end to end: a OneRoster 1.1 CSV export, as Groupcall Xporter or Wonde
//! write it, becomes the policy's roster. A bad export is refused with its file and line and the
//! old roster stays byte for byte; a dry run shows who would change group; an export dropped in
//! the drop folder is imported by the running collector, whose policy then judges the pupil as
//! a pupil; the CLI imports the next one. Every import is in the audit trail.

use invigilator_proto::v1::{Event, ProcessExec, event::Kind};
use invigilator_tests::{Agent, Collector, now_us, output, run_ok, stream_batches, wait_for};
use std::path::Path;
use std::time::Duration;

const USERS_HEADER: &str = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password";

fn export(dir: &Path, users: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("manifest.csv"),
        "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,bulk\nfile.classes,bulk\nfile.enrollments,bulk\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("users.csv"),
        format!("{USERS_HEADER}\n{}\n", users.join("\n")),
    )
    .unwrap();
    // Rae's grade is only on her class, as some MIS exports give it.
    std::fs::write(
        dir.join("classes.csv"),
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\nc-robins,active,2026-09-01,Reception Robins,KG,,RR,homeroom,,s1,t1,,,\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("enrollments.csv"),
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\ne1,active,2026-09-01,c-robins,s1,u-rae,student,true,,\ne2,active,2026-09-01,c-robins,s1,u-tia,teacher,true,,\n",
    )
    .unwrap();
}

const RAE: &str = "u-rae,active,2026-09-01,true,s1,student,r.noor,,Rae,Noor,,1004,,,,,,";
const SAM: &str = "u-sam,active,2026-09-01,true,s1,student,Sam.Smith,,Sam,Smith,,1001,,,,,09,";
const TIA: &str = "u-tia,active,2026-09-01,true,s1,teacher,t.jones,,Tia,Jones,,2001,,,,,,";
const PAT: &str = "u-pat,active,2026-09-01,true,s1,guardian,,,Pat,Noor,,,,,,,,";
const LEFT: &str = "u-lee,tobedeleted,2026-09-01,true,s1,student,l.left,,Lee,Left,,1002,,,,,13,";

/// r.noor starts a program; `name` decides which rules can see it.
fn run_by_rae(seq: u64, name: &str) -> Event {
    Event {
        seq,
        observed_at_us: now_us(),
        hostname: "staff-lt-04".into(),
        user: "r.noor".into(),
        kind: Some(Kind::Process(ProcessExec {
            exe: format!("C:\\Users\\r.noor\\Downloads\\{name}"),
            name: name.into(),
            argv: vec![name.into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn audit_count(c: &Collector, action: &str, source: &str) -> i64 {
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    db.query_row(
        "SELECT count(*) FROM audit_log WHERE action = ?1 AND source = ?2",
        [action, source],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_oneroster_export_becomes_the_roster_all_or_nothing_by_hand_and_from_the_drop_folder() {
    let mut c = Collector::init("[roster]\ndrop_dir = \"roster-drop\"\ncheck_interval = \"10s\"\n");
    let data = c.data_dir();
    let policy = data.join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.contains("# roster = \"roster.csv\""));
    std::fs::write(
        &policy,
        text.replace("# roster = \"roster.csv\"", "roster = \"roster.csv\""),
    )
    .unwrap();
    let roster = data.join("roster.csv");
    std::fs::write(&roster, "user,group\n").unwrap();
    let work = tempfile::tempdir().unwrap();

    // A bad export: every bad row named, nothing written.
    let bad = work.path().join("bad");
    export(
        &bad,
        &[
            RAE,
            "u-x,active,2026-09-01,true,s1,pupil,x.y,,X,Y,,,,,,,07,",
            SAM,
            "u-z,active,2026-09-01,true,s1,student,z.z,,Z,Z,,,,,,,Y7,",
        ],
    );
    let out = output(&mut c.cli(&["roster", "import", bad.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("2 row(s) rejected; nothing was imported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("users.csv line 3: role \"pupil\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("users.csv line 5: grade \"Y7\""),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&roster).unwrap(), "user,group\n");

    // A dry run shows the changes and makes none.
    let good = work.path().join("good");
    export(&good, &[RAE, SAM, TIA, PAT, LEFT]);
    let shown = run_ok(&mut c.cli(&["roster", "import", good.to_str().unwrap(), "--dry-run"]));
    assert!(shown.contains("+ r.noor eyfs"), "{shown}");
    assert!(shown.contains("+ sam.smith pupils"), "{shown}");
    assert!(shown.contains("+ t.jones staff"), "{shown}");
    assert!(!shown.contains("l.left"), "{shown}");
    assert!(
        shown.contains("dry run: added=3 removed=0 moved=0"),
        "{shown}"
    );
    assert_eq!(std::fs::read_to_string(&roster).unwrap(), "user,group\n");

    // On a staff laptop r.noor is taken for staff until the roster says otherwise.
    c.restart();
    let pc = Agent::enroll_with(&c, &c.token("staff-laptops", "1h", 1), "");
    stream_batches(
        &c,
        &pc,
        vec![vec![run_by_rae(1, "setup.exe"), run_by_rae(2, "tor.exe")]],
    );
    wait_for(Duration::from_secs(20), "the tor alert", || {
        c.alert_rules()
            .contains(&"circumvention.tor".to_owned())
            .then_some(())
    });
    assert!(
        !c.alert_rules().contains(&"install.by_pupil".to_owned()),
        "{:?}",
        c.alert_rules()
    );

    // The MIS drops its export; the running collector imports it and judges r.noor a pupil.
    copy_dir(&good, &data.join("roster-drop"));
    wait_for(
        Duration::from_secs(40),
        "the dropped export imported",
        || {
            std::fs::read_to_string(&roster)
                .unwrap()
                .contains("r.noor,eyfs")
                .then_some(())
        },
    );
    assert_eq!(audit_count(&c, "roster.import", "system"), 1);
    // The policy reloads when its roster changes; an event after that is judged by it. One
    // stream every few seconds (an agent may open only a dozen a minute).
    let judged_a_pupil = (3..9).any(|seq| {
        stream_batches(&c, &pc, vec![vec![run_by_rae(seq, "setup.exe")]]);
        std::thread::sleep(Duration::from_secs(5));
        c.alert_rules().contains(&"install.by_pupil".to_owned())
    });
    assert!(judged_a_pupil, "{:?}", c.alert_rules());

    // The next export by hand: Rae moves up, Tia has left.
    let next = work.path().join("next");
    export(&next, &[&RAE.replace(",,,,,,", ",,,,,01,"), SAM]);
    let shown = run_ok(&mut c.cli(&["roster", "import", next.to_str().unwrap()]));
    assert!(shown.contains("~ r.noor eyfs -> ks1"), "{shown}");
    assert!(shown.contains("- t.jones staff"), "{shown}");
    assert!(
        shown.contains("imported: added=0 removed=1 moved=1"),
        "{shown}"
    );
    assert_eq!(audit_count(&c, "roster.import", "cli"), 1);
    let again = run_ok(&mut c.cli(&["roster", "import", next.to_str().unwrap()]));
    assert!(again.contains("no change"), "{again}");
    assert_eq!(audit_count(&c, "roster.import", "cli"), 1);
    run_ok(&mut c.cli(&["audit", "verify"]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_policy_without_a_roster_is_told_where_to_name_one() {
    let c = Collector::init("");
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[SAM]);
    let out = output(&mut c.cli(&["roster", "import", dir.path().to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("names no roster: add roster = \"roster.csv\" under [groups]"),
        "{stderr}"
    );
}
