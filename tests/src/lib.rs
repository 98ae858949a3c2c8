//! Harness for whole-system tests: starts real `invigilator-collector` and `invigilator-agent`
//! processes (built by `cargo build --workspace --bins`) in temporary directories, and reads
//! the results back through the contract's CLI, as an operator would.
#![forbid(unsafe_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod console;
pub mod fake_logind;
pub mod flood;
pub mod sgdiff;
pub mod store;
pub mod urlgen;

/// A Telemetry client on its own mTLS connection, with `agent`'s enrolled identity.
pub fn telemetry(
    c: &Collector,
    agent: &Agent,
) -> invigilator_proto::v1::telemetry_client::TelemetryClient<tonic::transport::Channel> {
    use invigilator_agent::{identity::StatePaths, tls};
    let cfg = tls::mtls_config(&StatePaths::new(&agent.state_dir())).unwrap();
    invigilator_proto::v1::telemetry_client::TelemetryClient::new(
        tls::channel(&c.collectors(), cfg).unwrap(),
    )
}

/// A program `user` started on the device "ict-07", as the agent reports it.
pub fn process_exec(seq: u64, name: &str, user: &str) -> invigilator_proto::v1::Event {
    use invigilator_proto::v1::{Event, ProcessExec, event::Kind};
    Event {
        seq,
        observed_at_us: now_us(),
        hostname: "ict-07".into(),
        user: user.into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: 4000 + seq as u32,
            name: name.into(),
            exe: format!("/usr/bin/{name}"),
            argv: vec![name.into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Streams `batches` from `agent`'s enrolled identity over one Telemetry stream, exactly as the
/// agent sends them, and waits until the last batch is acknowledged.
pub fn stream_batches(
    c: &Collector,
    agent: &Agent,
    batches: Vec<Vec<invigilator_proto::v1::Event>>,
) {
    use invigilator_proto::v1::EventBatch;
    let Some(last) = batches.iter().flatten().map(|e| e.seq).max() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = telemetry(c, agent);
        let (tx, rx) = tokio::sync::mpsc::channel(batches.len().max(1));
        for events in batches {
            tx.send(EventBatch { events }).await.unwrap();
        }
        let mut acks = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        loop {
            let ack = acks
                .message()
                .await
                .unwrap()
                .expect("stream ended before the last ack");
            if ack.up_to_seq >= last {
                break;
            }
        }
    });
}

/// Microseconds since the Unix epoch, as events carry them.
/// Runs a copy of `sleep` named `name` (e.g. "tor") for 50 ms, as a pupil would start a
/// renamed tool.
pub fn run_as(name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = renamed_sleep(dir.path(), name);
    let status = Command::new(&exe).arg("0.05").status().expect("running it");
    assert!(status.success(), "{name}: {status}");
}

/// A copy of `/bin/sleep` at `dir/name`, ready to execute.
///
/// The copy is written by a `cp` child rather than in this process: tests run on several
/// threads, and a thread forking while this one holds the new file open for writing would hand
/// the open descriptor to its child until that child execs, making our exec fail with "Text file
/// busy" (ETXTBSY). `cp` has exited, and its descriptor with it, before we return.
pub fn renamed_sleep(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let copied = Command::new("cp")
        .arg("/bin/sleep")
        .arg(&exe)
        .status()
        .expect("running cp");
    assert!(
        copied.success(),
        "copying /bin/sleep to {}: {copied}",
        exe.display()
    );
    exe
}

/// The `setpriv` command line that applies what systemd would for `unit` (a unit file's text):
/// its `CapabilityBoundingSet=` as the bounding set, no-new-privileges, no inheritable
/// capabilities. The program and its arguments follow it.
pub fn as_unit_would(unit: &str) -> Vec<String> {
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit names a capability bounding set")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    [
        "setpriv".to_owned(),
        "--no-new-privs".to_owned(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".to_owned(),
        "--".to_owned(),
    ]
    .into()
}

/// A Chromium-shaped History database with one visit to `url` now (the columns the agent's
/// reader uses).
pub fn chromium_history(path: &Path, url: &str) {
    let db = rusqlite::Connection::open(path).unwrap();
    // Chromium's epoch: microseconds since 1601-01-01.
    let now = now_us() + 11_644_473_600_000_000;
    db.execute_batch(&format!(
        "CREATE TABLE urls(id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR);
         CREATE TABLE visits(id INTEGER PRIMARY KEY, url INTEGER NOT NULL, visit_time INTEGER NOT NULL,
                             transition INTEGER DEFAULT 0 NOT NULL);
         INSERT INTO urls VALUES (1, '{url}', 'page');
         INSERT INTO visits VALUES (1, 1, {now}, 1);"
    ))
    .unwrap();
}

/// `user` starting Tor on ict-07: one serious alert each (distinct programs by `seq`, so none
/// aggregate).
pub fn tor_started(seq: u64, user: &str) -> invigilator_proto::v1::Event {
    let mut e = process_exec(seq, "tor", user);
    if let Some(invigilator_proto::v1::event::Kind::Process(p)) = &mut e.kind {
        p.exe = format!("/home/y9/tor-browser-{seq}/Browser/tor");
    }
    e
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// target/<profile>/ beside the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `text` with each TOML table that `overrides` defines replaced by the one in `overrides`.
fn override_tables(text: &str, overrides: &str) -> String {
    let mut text = text.to_owned();
    let tables = overrides
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'));
    for table in tables {
        if let Some(i) = text.find(&format!("\n[{table}]")) {
            let end = text[i + 1..]
                .find("\n[")
                .map(|j| i + 1 + j)
                .unwrap_or(text.len());
            text.replace_range(i..end, "");
        }
    }
    text.push('\n');
    text.push_str(overrides);
    text
}

/// A loopback port free at the moment of asking, for a server that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Kills a child with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Collector {
    pub dir: tempfile::TempDir,
    pub grpc: String,
    pub http: String,
    /// The start-up line naming every listener.
    listening: String,
    child: Option<Child>,
    /// The PostgreSQL database it keeps its data in, on the tests' PostgreSQL pass.
    pub store_url: Option<String>,
}

impl Collector {
    /// `init` and `serve` on loopback ports chosen by the OS. `config` is appended to
    /// collector.toml (e.g. shorter silent-agent timings).
    pub fn start(config: &str) -> Self {
        let mut c = Self::init(config);
        c.spawn();
        c
    }

    /// Like [`Collector::start`], on the embedded SQLite file whatever the tests' engine (a
    /// school's store before `store migrate`).
    pub fn start_on_sqlite(config: &str) -> Self {
        let mut c = Self::init_on(config, None);
        c.spawn();
        c
    }

    /// Like [`Collector::start`], on the PostgreSQL database `url` names.
    pub fn start_on_postgres(config: &str, url: &str) -> Self {
        let mut c = Self::init_on(config, Some(url.to_owned()));
        c.spawn();
        c
    }

    /// `init` only, with `config` appended to collector.toml: nothing is started.
    pub fn init(config: &str) -> Self {
        Self::init_on(config, store::new_postgres_url())
    }

    fn init_on(config: &str, store_url: Option<String>) -> Self {
        Self::init_with(config, store_url, &[])
    }

    /// `init` with `args` besides the data directory and store, and `config` appended to
    /// collector.toml: nothing is started (see [`Collector::serve_on`]).
    pub fn init_with(config: &str, store_url: Option<String>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut init = Command::new(bin("invigilator-collector"));
        init.arg("init")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args);
        if let Some(url) = &store_url {
            init.arg("--store-url").arg(url);
        }
        run_ok(&mut init);
        if !config.is_empty() {
            let path = dir.path().join("data/collector.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, override_tables(&text, config)).unwrap();
        }
        Self {
            dir,
            grpc: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            listening: String::new(),
            child: None,
            store_url,
        }
    }

    /// `init --join` of this collector's data directory, then `serve`: another collector on
    /// the same PostgreSQL database, with the same CA, configuration and policy.
    pub fn start_joined(&self) -> Self {
        let mut c = self.joined(&[]);
        c.spawn();
        c
    }

    /// `init --join` of this collector's data directory, with `args` (e.g. `--server-name`):
    /// nothing is started.
    pub fn joined(&self, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run_ok(
            Command::new(bin("invigilator-collector"))
                .arg("init")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--join")
                .arg(self.data_dir())
                .args(args),
        );
        Self {
            dir,
            grpc: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            listening: String::new(),
            child: None,
            store_url: self.store_url.clone(),
        }
    }

    /// `serve` with agents' gRPC on `grpc` (an address and port; port 0 for any).
    pub fn serve_on(&mut self, grpc: &str) {
        self.grpc = grpc.to_owned();
        self.spawn();
    }

    /// The collector's database, whichever engine keeps it.
    pub fn db(&self) -> store::TestDb {
        store::TestDb::open(&self.data_dir(), self.store_url.as_deref())
    }

    /// `serve` on this data directory, expected to refuse to start: its standard error.
    pub fn serve_refused(&self) -> String {
        let out = output(
            Command::new(bin("invigilator-collector"))
                .args([
                    "serve",
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ])
                .arg("--data-dir")
                .arg(self.data_dir()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "serve started: {stderr}");
        stderr
    }

    /// An address from the start-up line: `listening("metrics=")`.
    pub fn listening(&self, key: &str) -> String {
        self.listening
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.listening))
            .to_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("collector.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let start_len = log.metadata().unwrap().len() as usize;
        let child = Command::new(bin("invigilator-collector"))
            .args([
                "serve",
                "--grpc-listen",
                &self.grpc,
                "--http-listen",
                &self.http,
                "--data-dir",
            ])
            .arg(self.data_dir())
            .env("INVIGILATOR_LOG", "info,invigilator_collector=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn collector");
        self.child = Some(child);
        let line = wait_for(Duration::from_secs(30), "the collector to listen", || {
            let text = std::fs::read_to_string(self.log_path()).ok()?;
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("collector exited with {status}:\n{text}");
            }
            // Only a whole line: the log is read while the collector may be writing it.
            text[start_len.min(text.len())..]
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.starts_with("invigilator-collector listening:"))
                .map(|l| l.trim_end().to_owned())
        });
        self.listening = line;
        self.grpc = self.listening("grpc=");
        self.http = self.listening("http=");
    }

    /// https://localhost:PORT, a name the server certificate carries.
    pub fn url(&self) -> String {
        format!(
            "https://localhost:{}",
            self.grpc.rsplit(':').next().unwrap()
        )
    }

    /// This collector alone, as an agent's list of collectors.
    pub fn collectors(&self) -> invigilator_agent::dial::Collectors {
        invigilator_agent::dial::Collectors::new([self.url()]).unwrap()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// Rewrites policy.toml and restarts the collector so it takes effect.
    pub fn edit_policy(&mut self, edit: impl FnOnce(String) -> String) {
        let path = self.data_dir().join("policy.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        self.restart();
    }

    /// Starts again on the same ports, as after a crash.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("invigilator-collector"));
        let (sub, rest) = args.split_at(args.len().min(2));
        cmd.args(sub)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(rest);
        cmd
    }

    pub fn token(&self, group: &str, ttl: &str, uses: u32) -> String {
        run_ok(&mut self.cli(&[
            "token",
            "create",
            "--group",
            group,
            "--ttl",
            ttl,
            "--uses",
            &uses.to_string(),
        ]))
        .trim()
        .to_owned()
    }

    /// The CA fingerprint every token of this collector carries (its last part).
    pub fn ca_fingerprint(&self) -> String {
        self.token("staff", "1h", 1)
            .rsplit('.')
            .next()
            .unwrap()
            .to_owned()
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let out = run_ok(&mut self.cli(args));
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    pub fn alerts(&self) -> Vec<Value> {
        self.json(&["alerts", "list", "--json"])
    }

    /// The first stored alert of `rule`, waited for up to `timeout`.
    pub fn wait_for_alert(&self, rule: &str, timeout: Duration) -> Value {
        wait_for(timeout, &format!("a {rule} alert"), || {
            self.alerts().into_iter().find(|a| a["rule"] == rule)
        })
    }

    /// The rule of each stored alert.
    pub fn alert_rules(&self) -> Vec<String> {
        self.alerts()
            .iter()
            .map(|a| a["rule"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A hand-off's receiver got `got` (alert ids, in arrival order): in order, none twice,
    /// every alert stored, each delivery in the audit trail under `destination`, and the trail
    /// still verifies.
    pub fn assert_handed_off_once_each(&self, got: &[i64], destination: &str) {
        let mut sorted = got.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(got, sorted, "in order, none twice: {got:?}");
        let stored: Vec<i64> = self
            .alerts()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            got.len(),
            stored.len(),
            "every alert: {got:?} vs {stored:?}"
        );
        let audited = self.db().count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'alert.handoff' AND detail = '{}'",
            destination.replace('\'', "''")
        ));
        assert_eq!(audited as usize, got.len());
        run_ok(&mut self.cli(&["audit", "verify"]));
    }

    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.json(&["events", "list", "--json", "--kind", kind])
    }

    pub fn agents(&self) -> Vec<Value> {
        self.json(&["agents", "list", "--json"])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every event stored for one agent, decoded from the database directly (the CLI pages
    /// and renders; a storm's thousands are read faster this way).
    pub fn stored_events(&self, agent_id: &str) -> Vec<invigilator_proto::v1::Event> {
        use prost::Message;
        self.db()
            .blobs(&format!(
                "SELECT payload FROM events WHERE agent_id = '{}' ORDER BY seq",
                agent_id.replace('\'', "''")
            ))
            .iter()
            .map(|p| invigilator_proto::v1::Event::decode(p.as_slice()).unwrap())
            .collect()
    }

    /// Sequence numbers stored for one agent, read from the database directly.
    pub fn stored_seqs(&self, agent_id: &str) -> Vec<u64> {
        self.db()
            .column(&format!(
                "SELECT seq FROM events WHERE agent_id = '{}' ORDER BY seq",
                agent_id.replace('\'', "''")
            ))
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The agent's binary, run through `wrapper` when there is one (e.g. `setpriv`, `unshare`).
fn agent_command(wrapper: &[String]) -> Command {
    let agent = bin("invigilator-agent");
    match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&agent);
            c
        }
        None => Command::new(&agent),
    }
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub agent_id: String,
    child: Option<Child>,
}

impl Agent {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `enroll`; returns its output without asserting success.
    pub fn try_enroll(collector_url: &str, token: &str, state_dir: &Path) -> Output {
        Self::try_enroll_under(&[], collector_url, token, state_dir)
    }

    /// `enroll`, through `wrapper` as [`Agent::start_under`] runs the agent.
    pub fn try_enroll_under(
        wrapper: &[String],
        collector_url: &str,
        token: &str,
        state_dir: &Path,
    ) -> Output {
        output(
            agent_command(wrapper)
                .args([
                    "enroll",
                    "--collector",
                    collector_url,
                    "--token",
                    token,
                    "--state-dir",
                ])
                .arg(state_dir),
        )
    }

    /// Enrols with a fresh token of group "staff"; `settings` is appended to agent.toml.
    pub fn enroll(collector: &Collector, settings: &str) -> Self {
        Self::enroll_with(collector, &collector.token("staff", "1h", 1), settings)
    }

    pub fn enroll_with(collector: &Collector, token: &str, settings: &str) -> Self {
        Self::enroll_to(&collector.url(), token, settings)
    }

    /// Enrols with `collectors` (one URL, or several comma-separated) and `token`.
    pub fn enroll_to(collectors: &str, token: &str, settings: &str) -> Self {
        Self::enroll_under(&[], collectors, token, settings)
    }

    /// [`Agent::enroll_to`], the enrolment run through `wrapper` (see [`Agent::start_under`]).
    pub fn enroll_under(wrapper: &[String], collectors: &str, token: &str, settings: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let out = Self::try_enroll_under(wrapper, collectors, token, &state);
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = std::fs::read_to_string(state.join("agent.toml")).unwrap();
        let agent_id = cfg
            .lines()
            .find_map(|l| l.strip_prefix("agent_id = "))
            .map(|v| v.trim_matches('"').to_owned())
            .expect("agent_id in agent.toml");
        // Each test agent listens for the browser extension on a socket of its own, unless the
        // test says where: several agents share this machine.
        let mut settings = settings.to_owned();
        if !settings.contains("[extension]") {
            settings.push_str(&format!(
                "\n[extension]\nsocket = \"{}\"\n",
                dir.path().join("browser.sock").display()
            ));
        }
        std::fs::write(state.join("agent.toml"), override_tables(&cfg, &settings)).unwrap();
        Self {
            dir,
            agent_id,
            child: None,
        }
    }

    pub fn start(&mut self) {
        self.start_under(&[]);
    }

    /// Starts the agent through `wrapper` (e.g. `setpriv` with a unit's capability set).
    pub fn start_under(&mut self, wrapper: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = agent_command(wrapper)
            .arg("run")
            .arg("--state-dir")
            .arg(self.state_dir())
            .env("INVIGILATOR_LOG", "info,invigilator_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
    }

    /// Waits until the agent's process source is running (it logs which one).
    pub fn wait_ready(&self) {
        wait_for(
            Duration::from_secs(30),
            "the agent's process source",
            || self.log().contains("process source running").then_some(()),
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The last sequence number this agent's spool has assigned.
    pub fn spool_last_seq(&self) -> u64 {
        let db = rusqlite::Connection::open(self.state_dir().join("spool.db")).unwrap();
        db.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64 - 1)
        .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asserts `seqs` is exactly 1..=last: nothing missing, nothing twice.
pub fn assert_exactly_once(seqs: &[u64], last: u64) {
    let mut dups = 0;
    let mut missing = Vec::new();
    let mut expect = 1;
    for &s in seqs {
        if s < expect {
            dups += 1;
            continue;
        }
        missing.extend(expect..s);
        expect = s + 1;
    }
    missing.extend(expect..=last);
    assert!(
        dups == 0 && missing.is_empty(),
        "{} stored, {dups} duplicates, {} missing (first: {:?})",
        seqs.len(),
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
