//! The console in a real browser (Debian's Chromium, headless, through chromedriver): each role
//! logs in through the form and does its job, and is refused what its role does not allow.
//! The data shown was written by strangers: process paths, user and host names carrying HTML
//! and script must appear as text and never run.

use invigilator_proto::v1::{Event, ProcessExec, event::Kind};
use invigilator_tests::browser::Browser;
use invigilator_tests::console::{Session, add_user};
use invigilator_tests::{Agent, Collector, now_us, stream_batches, wait_for};
use std::sync::Arc;
use std::time::Duration;

const HOSTILE_USER: &str = "y5<b>smith</b><img src=x onerror=\"window.pwned=1\">";
const HOSTILE_HOST: &str = "ict<script>window.pwned=2</script>07";
const HOSTILE_EXE: &str = "/tmp/<svg onload=window.pwned=3>/tor";
const HOSTILE_TITLE: &str = "self harm <script>window.pwned=5</script> - Search";
const HOSTILE_URL: &str = "https://example.org/\"><img src=x onerror=window.pwned=6>?q=self+harm";

fn hostile_visit(seq: u64) -> Event {
    use invigilator_proto::v1::BrowsingVisit;
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: now_us(),
        hostname: "staff-lap-02".into(),
        user: "mr.jones".into(),
        kind: Some(Kind::Browsing(BrowsingVisit {
            action: "visit".into(),
            url: HOSTILE_URL.into(),
            title: HOSTILE_TITLE.into(),
            browser: "chromium".into(),
            ..Default::default()
        })),
    }
}

fn tor(seq: u64, user: &str) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: now_us(),
        hostname: HOSTILE_HOST.into(),
        user: user.into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: 31337,
            name: "tor".into(),
            exe: HOSTILE_EXE.into(),
            argv: vec!["tor".into(), "<script>window.pwned=4</script>".into()],
            ..Default::default()
        })),
    }
}

/// Nothing the strangers wrote became markup or ran.
async fn assert_inert(b: &Browser, where_: &str) {
    let injected = b
        .eval(
            "return [typeof window.pwned, document.querySelectorAll(\
             '[onload], [onerror], main script, main img, td b, td i, dd b, dd i, li b, li i').length]",
        )
        .await;
    assert_eq!(
        injected,
        serde_json::json!(["undefined", 0]),
        "injected markup on {where_}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_in_a_real_browser() {
    let c = Arc::new(Collector::start(""));
    let base = format!("http://{}", c.http);
    let agent = Arc::new(Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), ""));
    send(&c, &agent, tor(1, HOSTILE_USER)).await;
    wait_for(Duration::from_secs(20), "the first alert", || {
        (!c.alerts().is_empty()).then_some(())
    });
    let tech_pw = add_user(&c, "tech", "technician", false);
    let dsl_pw = add_user(&c, "dsl", "dsl", false);
    let head_pw = add_user(&c, "head", "leadership", false);
    let gov_pw = add_user(&c, "gov", "governor", false);

    let b = Browser::start().await;

    // The technician triages: the list shows the strangers' strings as text.
    let log_in = |user, pw| {
        let (b, base, c) = (&b, &base, &c);
        async move {
            b.log_in(base, user, pw)
                .await
                .unwrap_or_else(|e| panic!("{e}\ncollector log:\n{}", c.log()))
        }
    };
    log_in("tech", &tech_pw).await;
    assert!(
        b.client
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/alerts")
    );
    let row = b.text("#alerts-body tr").await;
    assert!(row.contains(HOSTILE_USER), "{row}");
    assert!(row.contains(HOSTILE_HOST), "{row}");
    assert!(row.contains(HOSTILE_EXE), "{row}");
    assert_inert(&b, "the alerts list").await;

    // A new alert (another pupil, so not counted into the first) arrives while the page is
    // open: live update, still inert.
    send(&c, &agent, tor(2, "y6<i>jones</i>")).await;
    b.wait_text("#alerts-body tr.fresh", "y6<i>jones</i>").await;
    b.wait_text("#live-count", "1 new").await;
    assert_inert(&b, "the live-updated list").await;

    // Open the first alert, see why it fired, triage it.
    b.click("#alerts-body tr:last-child a").await;
    b.wait_text("#rule", "tor").await;
    assert!(b.body_text().await.contains("Policy version"));
    assert_inert(&b, "the alert detail").await;
    let select = b.wait_for("select[name=status]").await;
    select.select_by_value("triaged").await.unwrap();
    b.fill("textarea[name=note]", "Spoke to <i>class teacher</i>")
        .await;
    b.click("form.stack button[type=submit]").await;
    b.wait_text("#status", "triaged").await;
    assert!(
        b.body_text()
            .await
            .contains("Spoke to <i>class teacher</i>")
    );
    assert_inert(&b, "the triaged alert").await;
    b.log_out().await;
    let tech = Session::login(&c, "tech", &tech_pw);

    // A member of staff's search, with a title and an address written to attack the console:
    // the DSL sees them in full (an adult's alert needs no second approver), as text.
    let laptop = Arc::new(Agent::enroll_with(
        &c,
        &c.token("staff-laptops", "1h", 1),
        "",
    ));
    send(&c, &laptop, hostile_visit(1)).await;
    let staff_alert = wait_for(Duration::from_secs(20), "the staff keyword alert", || {
        let a = tech.get("/api/alerts?user=mr.jones").json();
        a.as_array()?.first().map(|a| a["id"].as_i64().unwrap())
    });
    log_in("dsl", &dsl_pw).await;
    b.goto(&format!("{base}/alerts/{staff_alert}")).await;
    b.wait_text("#events", HOSTILE_TITLE).await;
    let events = b.text("#events").await;
    assert!(events.contains(HOSTILE_URL), "{events}");
    assert_inert(
        &b,
        "a staff member's alert with a hostile title and address",
    )
    .await;
    b.log_out().await;

    // The DSL records an incident from the alert, with the action taken from the sanctions
    // table and the parents informed.
    log_in("dsl", &dsl_pw).await;
    let first = tech.json("/api/alerts?status=triaged")[0]["id"]
        .as_i64()
        .unwrap();
    b.goto(&format!("{base}/alerts/{first}")).await;
    b.click("#alert-incidents a").await;
    b.wait_text("main h1", "ncident").await;
    b.fill(
        "textarea[name=summary]",
        "Pupil ran Tor <b>during</b> a lesson.",
    )
    .await;
    b.click("input[name=action]").await;
    b.click("input[name=parents_informed]").await;
    b.click("form.stack button[type=submit]").await;
    b.wait_text("main", "Pupil ran Tor <b>during</b> a lesson.")
        .await;
    let page = b.body_text().await;
    assert!(
        page.contains(HOSTILE_USER),
        "the subject is the alert's user: {page}"
    );
    assert_inert(&b, "the incident").await;
    let incident_url = b.client.current_url().await.unwrap().to_string();
    b.log_out().await;

    // The headteacher reads this week's report: charts, no pupil names.
    log_in("head", &head_pw).await;
    let week = chrono::Utc::now().format("%G-W%V").to_string();
    b.goto(&format!("{base}/reports/weekly?week={week}")).await;
    b.wait_text("#period", "alerts").await;
    b.wait_for("svg#chart-category rect").await;
    let report = b.body_text().await;
    assert!(report.contains("circumvention"), "{report}");
    assert!(
        !report.contains("smith") && !report.contains("jones"),
        "names in the report: {report}"
    );
    assert_inert(&b, "the weekly report").await;
    b.goto(&format!("{base}/alerts")).await;
    b.wait_text("main", "may not").await;
    // ... and asks for a check of the pupils' devices today, with a reason.
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    b.goto(&format!("{base}/checks/new")).await;
    b.fill(
        "textarea[name=reason]",
        "Weekly check after a report from the class teacher",
    )
    .await;
    b.fill("input[name=groups]", "pupils-ks2").await;
    b.fill("input[name=from]", &today).await;
    b.fill("input[name=to]", &today).await;
    b.click("input[name=kinds][value=process]").await;
    b.click("form.stack button[type=submit]").await;
    b.wait_text("#requested-by", "head").await;
    b.log_out().await;

    // A technician (not the requester) runs it; the result lists what the pupils' devices ran.
    log_in("tech", &tech_pw).await;
    b.goto(&format!("{base}/checks")).await;
    b.click("#checks tbody a").await;
    b.click("main form button[type=submit]").await;
    b.wait_text("#run-by", "tech").await;
    b.wait_text("#check-rows", "tor").await;
    assert_inert(&b, "the check's result").await;
    b.log_out().await;

    // A governor reads no alerts: the page refuses, saying why.
    log_in("gov", &gov_pw).await;
    b.goto(&format!("{base}/alerts")).await;
    b.wait_text("main", "may not").await;
    b.goto(&format!("{base}/audit?verify=1")).await;
    b.wait_text("#audit", "alert.triage").await;
    b.wait_text("#chain", "intact").await;
    // The incident log as a summary: what was done, never who.
    b.goto(&format!("{base}/incidents")).await;
    let summary = b.wait_text("#incidents", "yes").await;
    assert!(
        !summary.contains("smith") && !summary.contains("Tor"),
        "{summary}"
    );
    b.goto(&incident_url).await;
    b.wait_text("main", "may not").await;
    b.log_out().await;
    b.close().await;

    // What the browser did is what the store holds.
    let dsl = Session::login(&c, "dsl", &dsl_pw);
    let incidents = dsl.json("/api/incidents");
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    let alerts = dsl.json("/api/alerts?status=escalated");
    assert_eq!(
        alerts.as_array().unwrap().len(),
        1,
        "creating the incident escalated the alert: {alerts}"
    );
}

/// Sends one event as the agent would, off the async threads (the harness blocks).
async fn send(c: &Arc<Collector>, agent: &Arc<Agent>, event: Event) {
    let (c, agent) = (Arc::clone(c), Arc::clone(agent));
    tokio::task::spawn_blocking(move || stream_batches(&c, &agent, vec![vec![event]]))
        .await
        .unwrap();
}
