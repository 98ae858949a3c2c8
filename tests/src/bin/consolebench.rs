//! Console load test: fills a collector's store with N alerts (default 100,000) spread over
//! users, devices, groups, categories and three school weeks, starts `serve`, logs in as a
//! technician, and times the alerts page and its API under the filters staff use. Prints a
//! Markdown table on stdout: requests per query, p50, p95 and max in milliseconds.
//!
//!   invigilator-consolebench --bin target/release [--alerts 100000] [--requests 40]
//!                            [--login-flood SECONDS] [--guessers 32]

use anyhow::{Context, bail};
use clap::Parser;
use invigilator_tests::console::Reply;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "consolebench/login_flood.rs"]
mod login_flood;

#[derive(Parser)]
struct Args {
    /// Directory holding invigilator-collector (a release build for real numbers).
    #[arg(long)]
    bin: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    alerts: u32,
    /// Timed requests per query (after 3 untimed ones).
    #[arg(long, default_value_t = 40)]
    requests: u32,
    /// Then this many seconds of parallel log-in guessing while a technician works (0: skip).
    #[arg(long, default_value_t = 0)]
    login_flood: u64,
    #[arg(long, default_value_t = 32)]
    guessers: usize,
}

const CATEGORIES: &[&str] = &[
    "gambling",
    "games",
    "social_networks",
    "chat",
    "dating",
    "vpn",
    "redirector",
    "hacking",
    "warez",
    "drogue",
    "agressif",
    "webmail",
    "shopping",
    "self-harm",
    "bullying",
    "extremism",
    "circumvention",
    "usb",
    "session",
    "malware",
];
const SEVERITIES: &[&str] = &["informational", "inappropriate", "inappropriate", "serious"];

fn fill(db: &std::path::Path, n: u32) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    let now = invigilator_tests::now_us();
    let three_weeks = 21 * 24 * 3600 * 1_000_000i64;
    for d in 0..300 {
        tx.execute(
            "INSERT INTO agents(agent_id, grp, hostname, os, agent_version, enrolled_at,
                                cert_serial, cert_not_after, last_seen)
             VALUES (?1, ?2, ?3, 'linux', '0.1.0', ?4, 's', ?4, ?4)",
            rusqlite::params![
                format!("agent-{d}"),
                ["pupils-ks1", "pupils-ks2", "staff-laptops", "ict-suite"][d % 4],
                format!("pc-{d:03}"),
                now
            ],
        )?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut stmt = tx.prepare(
        "INSERT INTO alerts(agent_id, hostname, user, kind, rule, category, severity, summary,
                            matched, observed_at, created_at, policy_version, event_seq, status,
                            count, last_observed_at, response)
         VALUES (?1, ?2, ?3, 'browsing', ?4, ?5, ?6, ?7, ?8, ?9, ?9, 'v1', ?10, ?11, 1, ?9, '')",
    )?;
    for i in 0..n {
        let d = rng.random_range(0..300);
        let cat = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let at = now - three_weeks + (three_weeks / n as i64) * i as i64;
        stmt.execute(rusqlite::params![
            format!("agent-{d}"),
            format!("pc-{d:03}"),
            format!("pupil{:04}", rng.random_range(0..1500)),
            format!("web.{cat}"),
            cat,
            SEVERITIES[rng.random_range(0..SEVERITIES.len())],
            format!("Listed site: www.example-{}.com", rng.random_range(0..5000)),
            format!("domain \"example-{i}.com\" in list \"{cat}\""),
            at,
            i as i64 + 1,
            if rng.random_bool(0.7) {
                "new"
            } else {
                "resolved"
            },
        ])?;
    }
    drop(stmt);
    tx.commit()?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let collector = args.bin.join("invigilator-collector");
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let run = |cmd: &mut Command| -> anyhow::Result<String> {
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(Command::new(&collector)
        .arg("init")
        .arg("--data-dir")
        .arg(&data))?;
    let t = Instant::now();
    fill(&data.join("invigilator.db"), args.alerts)?;
    eprintln!(
        "[consolebench] {} alerts stored in {:.1?}",
        args.alerts,
        t.elapsed()
    );
    let mut add = Command::new(&collector);
    add.args([
        "users",
        "add",
        "tech",
        "--role",
        "technician",
        "--password-stdin",
        "--data-dir",
    ])
    .arg(&data)
    .stdin(Stdio::piped());
    let mut child = add.stdout(Stdio::null()).spawn()?;
    writeln!(child.stdin.take().unwrap(), "bench-password-1234")?;
    child.wait()?;

    let log = work.path().join("serve.log");
    let mut serve = Command::new(&collector)
        .args([
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let http = invigilator_tests::wait_for(Duration::from_secs(30), "serve", || {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("http="))
                .map(str::to_owned)
        })
    });
    let result = measure(&http, &args, &data.join("invigilator.db"));
    let _ = serve.kill();
    let _ = serve.wait();
    result
}

fn measure(http: &str, args: &Args, db: &std::path::Path) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let base = format!("http://{http}");
    let login = agent
        .post(format!("{base}/api/login"))
        .send_json(serde_json::json!({"username": "tech", "password": "bench-password-1234"}))?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    let mid = args.alerts / 2;
    let day = chrono::Local::now() - chrono::Duration::days(7);
    let (day, next) = (
        day.format("%Y-%m-%d").to_string(),
        (day + chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string(),
    );
    let queries = [
        ("alerts page, newest 50 (HTML)", "/alerts".to_string()),
        ("API, newest 50 (JSON)", "/api/alerts".to_string()),
        ("severity = serious", "/alerts?severity=serious".to_string()),
        ("one user (rare)", "/alerts?user=pupil0042".to_string()),
        ("one device", "/alerts?device=pc-017".to_string()),
        ("device group", "/alerts?group=pupils-ks2".to_string()),
        (
            "category + status",
            "/alerts?category=gambling&status=new".to_string(),
        ),
        ("page deep in the list", format!("/alerts?before={mid}")),
        ("user with no alerts", "/alerts?user=nobody".to_string()),
        ("one school day", "/alerts?from=DAY&to=NEXT".to_string()),
        (
            "assigned to someone (no index: full scan)",
            "/alerts?assigned=nobody".to_string(),
        ),
    ];
    println!("| query | requests | p50 ms | p95 ms | max ms | rows |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, path) in queries {
        let path = path.replace("DAY", &day).replace("NEXT", &next);
        let mut times = Vec::new();
        let mut rows = 0;
        for i in 0..args.requests + 3 {
            let t = Instant::now();
            let mut r = agent
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .call()?;
            let reply = Reply {
                status: r.status().as_u16(),
                location: None,
                headers: Vec::new(),
                body: r.body_mut().read_to_string()?,
            };
            let took = t.elapsed().as_secs_f64() * 1000.0;
            if reply.status != 200 {
                bail!("{path}: {} {}", reply.status, reply.body);
            }
            rows = if path.starts_with("/api/") {
                reply.json().as_array().map_or(0, Vec::len)
            } else {
                reply.body.matches("<tr data-id=").count()
            };
            if i >= 3 {
                times.push(took);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {rows} |",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times.last().copied().unwrap_or_default()
        );
    }
    if args.login_flood > 0 {
        login_flood::run(http, &cookie, db, args.login_flood, args.guessers)?;
    }
    Ok(())
}
