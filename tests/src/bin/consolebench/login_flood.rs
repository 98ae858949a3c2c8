//! Finding 6 of issue 13 as a benchmark: parallel log-in guessing (half at a real account, half
//! at made-up names) while a member of staff keeps using the console; their request latency, the
//! guesses made, and the audit rows the guessing left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn run(
    http: &str,
    cookie: &str,
    db: &std::path::Path,
    seconds: u64,
    guessers: usize,
) -> anyhow::Result<()> {
    let base = format!("http://{http}");
    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..guessers)
        .map(|i| {
            let (base, stop, guesses) = (base.clone(), stop.clone(), guesses.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let name = if i % 2 == 0 {
                    "tech".to_owned()
                } else {
                    format!("nobody{i}")
                };
                while !stop.load(Ordering::Relaxed) {
                    let _ = agent
                        .post(format!("{base}/api/login"))
                        .send_json(serde_json::json!({"username": name, "password": "guess"}));
                    guesses.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let r = agent
            .get(format!("{base}/api/alerts"))
            .header("cookie", cookie)
            .call()?;
        anyhow::ensure!(r.status() == 200, "staff request: {}", r.status());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    times.sort_by(f64::total_cmp);
    let rows: i64 = rusqlite::Connection::open(db)?.query_row(
        "SELECT count(*) FROM audit_log WHERE action = 'login.failed'",
        [],
        |r| r.get(0),
    )?;
    println!();
    println!(
        "Log-in flood: {guessers} guessers for {seconds} s, {} guesses; a technician's `/api/alerts` \
         meanwhile: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {rows} `login.failed` audit rows.",
        guesses.load(Ordering::Relaxed),
        times.len(),
        super::percentile(&times, 0.5),
        super::percentile(&times, 0.99),
        times.last().copied().unwrap_or_default()
    );
    Ok(())
}
