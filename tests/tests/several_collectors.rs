//! Several collectors on one PostgreSQL database (issue 14, items 5 and 6), with real agents,
//! real TLS and a PostgreSQL server of the test's own: a collector joins with the fleet's CA,
//! each takes the others' agents, a revocation on one cuts a stream on another, the once-only
//! jobs run once and move when their leader dies, and an agent whose collector dies resumes
//! on another, losing and duplicating nothing; an agent has one live stream across them; the
//! console on one streams the alerts another commits; one DNS name can stand for them all.

use invigilator_proto::v1::{Event, EventBatch, HeartbeatRequest};
use invigilator_tests::console::{Session, add_user, audit_verify};
use invigilator_tests::flood::heavy_batch;
use invigilator_tests::store::PgServer;
use invigilator_tests::{
    Agent, Collector, assert_exactly_once, bin, output, stream_batches, telemetry, wait_for,
};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;

const FAST: &str =
    "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two collectors on a new database of `pg`, the second joined to the first.
fn pair(pg: &PgServer, config: &str) -> (Collector, Collector) {
    let a = Collector::start_on_postgres(config, &pg.new_database());
    let b = a.start_joined();
    (a, b)
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest {
        hostname: "h".into(),
        ..Default::default()
    }
}

#[test]
fn a_joined_collector_takes_the_others_agents_and_a_stranger_is_refused() {
    let pg = PgServer::start();
    let (a, mut b) = pair(&pg, "");

    // A collector with a CA of its own would refuse the others' agents: init says how to join.
    let stranger = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(bin("invigilator-collector"))
            .arg("init")
            .arg("--data-dir")
            .arg(stranger.path().join("data"))
            .arg("--store-url")
            .arg(a.store_url.as_deref().unwrap()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("init --join"),
        "{err}"
    );

    let (x, y) = (Agent::enroll(&a, ""), Agent::enroll(&b, ""));
    rt().block_on(async {
        telemetry(&b, &x).heartbeat(heartbeat()).await.unwrap();
        telemetry(&a, &y).heartbeat(heartbeat()).await.unwrap();

        // An idle stream on B is cut when A's CLI revokes its agent.
        let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(4);
        let mut acks = telemetry(&b, &x)
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let out = output(&mut a.cli(&["agents", "revoke", &x.agent_id]));
        assert!(out.status.success(), "{out:?}");
        let cut = tokio::time::timeout(Duration::from_secs(5), acks.message())
            .await
            .expect("the stream on the other collector stayed open");
        assert_eq!(cut.unwrap_err().code(), Code::PermissionDenied);
        drop(tx);
    });
    // Both wrote to the one trail (enrolments, the revocation); each verifies it against its
    // own sealed head.
    for c in [&a, &b] {
        audit_verify(c).unwrap();
    }

    // Both announce themselves, with one configuration. An edit made on one collector and not
    // the other is named: in the edited one's log as it starts, and by `collectors`.
    let listed = |c: &Collector| -> Vec<serde_json::Value> {
        let out = output(&mut c.cli(&["collectors"]));
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let peers = listed(&a);
    assert_eq!(peers.len(), 2, "{peers:#?}");
    assert!(
        peers.iter().all(|p| p["settings_differ"] == false),
        "{peers:#?}"
    );
    let config = b.data_dir().join("collector.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\ndaily_mib = "), "{text}");
    std::fs::write(
        &config,
        text.replacen("\ndaily_mib = ", "\ndaily_mib = 1", 1),
    )
    .unwrap();
    b.restart();
    wait_for(
        Duration::from_secs(10),
        "the edited collector's warning",
        || {
            b.log()
                .contains("another collector on this database runs a different collector.toml")
                .then_some(())
        },
    );
    let peers = listed(&a);
    assert_eq!(
        peers
            .iter()
            .filter(|p| p["settings_differ"] == true)
            .count(),
        1,
        "{peers:#?}"
    );
}

/// A program started on the device, as the agent reports it.
fn exec(seq: u64, name: &str) -> Event {
    invigilator_tests::process_exec(seq, name, "y5smith")
}

/// One live stream and one set of quotas per agent, whichever collectors it talks to: a newer
/// stream elsewhere ends the older one's commits, and an agent hopping between collectors gets
/// one ration of new streams and one rate allowance, not one each.
#[test]
fn an_agent_has_one_live_stream_and_one_quota_across_collectors() {
    let pg = PgServer::start();
    let (a, b) = pair(
        &pg,
        "[quotas]\nstreams_per_minute = 4\nrate_mib_per_minute = 1\nburst_mib = 4\n",
    );
    let x = Agent::enroll(&a, "");
    let open = |c: &Collector| {
        let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(4);
        let mut client = telemetry(c, &x);
        async move {
            client
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|acks| (tx, acks.into_inner()))
        }
    };
    let batch = |seq| EventBatch {
        events: vec![exec(seq, "python3")],
    };
    rt().block_on(async {
        let (on_a, mut acks_a) = open(&a).await.unwrap();
        on_a.send(batch(1)).await.unwrap();
        assert_eq!(acks_a.message().await.unwrap().unwrap().up_to_seq, 1);
        // The agent reconnects to B while its stream on A is still open (half-open, or a
        // device cloned): A no longer stores what arrives on the older stream.
        let (on_b, mut acks_b) = open(&b).await.unwrap();
        on_a.send(batch(2)).await.unwrap();
        let err = acks_a.message().await.unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        on_b.send(batch(2)).await.unwrap();
        let ack = acks_b.message().await.unwrap().unwrap();
        assert_eq!((ack.up_to_seq, ack.stored), (2, 1));

        // Back on A, the agent spends its burst: heavy batches are acknowledged at once until
        // the allowance is gone (1 MiB a minute refills a batch in tens of seconds).
        let (on_a, mut acks_a) = open(&a).await.unwrap();
        let mut seq = 1_000;
        let mut acked = 0;
        loop {
            on_a.send(heavy_batch(seq)).await.unwrap();
            seq += 100;
            match tokio::time::timeout(Duration::from_secs(2), acks_a.message()).await {
                Ok(ack) => {
                    ack.unwrap().unwrap();
                    acked += 1;
                }
                Err(_) => break,
            }
            assert!(acked < 100, "the rate allowance never ran out");
        }
        assert!(acked >= 2, "the burst let only {acked} batches through");
        // On B, the agent finds its allowance as A left it: held back, not a fresh burst.
        let (on_b, mut acks_b) = open(&b).await.unwrap();
        on_b.send(heavy_batch(seq)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(3), acks_b.message())
                .await
                .is_err(),
            "B gave the agent a burst of its own"
        );
        // Four streams a minute across both: a fifth is refused on either, though each has
        // seen only two.
        for c in [&a, &b] {
            let refused = open(c).await.map(|_| ()).unwrap_err();
            assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        }
        drop((on_a, on_b));
    });
    assert_eq!(a.stored_seqs(&x.agent_id)[..2], [1, 2]);
}

#[test]
fn the_console_on_one_collector_streams_the_alerts_another_commits() {
    let pg = PgServer::start();
    let (a, b) = pair(&pg, "");
    let password = add_user(&a, "dsl1", "dsl", false);
    let lines = Session::login(&b, "dsl1", &password).lines("/api/alerts/stream");
    let agent = Agent::enroll_with(&a, &a.token("pupils-ks2", "1h", 1), "");
    let committed = Instant::now();
    stream_batches(&a, &agent, vec![vec![exec(1, "tor")]]);
    // Woken by the commit's notification: well inside the 5 s the stream would otherwise poll.
    let deadline = committed + Duration::from_secs(3);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the other collector's console did not stream the alert within 3 s");
        if line == "event: alert" {
            break;
        }
    }
    eprintln!(
        "alert streamed by the other collector {:?} after its commit",
        committed.elapsed()
    );
}

#[test]
fn the_once_only_jobs_run_once_and_move_when_their_leader_dies() {
    let pg = PgServer::start();
    let (mut a, mut b) = pair(
        &pg,
        "[agents]\nsilent_after = \"3s\"\nsilent_check_interval = \"1s\"\n",
    );
    let leads = "this collector now runs the once-only jobs";
    wait_for(Duration::from_secs(10), "a leader", || {
        (a.log().contains(leads) || b.log().contains(leads)).then_some(())
    });
    assert!(
        !(a.log().contains(leads) && b.log().contains(leads)),
        "both collectors lead"
    );
    let silent = |c: &Collector, id: &str| {
        c.alerts()
            .iter()
            .filter(|x| x["rule"] == "agent.silent" && x["agent_id"] == id)
            .count()
    };
    // Heard from on both, then silent: one alert, not one per collector.
    let first = Agent::enroll(&a, "");
    rt().block_on(async {
        telemetry(&a, &first).heartbeat(heartbeat()).await.unwrap();
        telemetry(&b, &first).heartbeat(heartbeat()).await.unwrap();
    });
    wait_for(Duration::from_secs(20), "the silent alert", || {
        (silent(&a, &first.agent_id) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(silent(&a, &first.agent_id), 1, "one alert per silence");

    // The leader dies; the other takes the jobs over and the next silence is still seen.
    let (dead, survivor) = if a.log().contains(leads) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill9();
    let second = Agent::enroll(survivor, "");
    rt().block_on(async {
        telemetry(survivor, &second)
            .heartbeat(heartbeat())
            .await
            .unwrap();
    });
    wait_for(Duration::from_secs(20), "the survivor to lead", || {
        survivor.log().contains(leads).then_some(())
    });
    wait_for(Duration::from_secs(20), "the next silent alert", || {
        (silent(survivor, &second.agent_id) == 1).then_some(())
    });
    assert_eq!(silent(survivor, &first.agent_id), 1);
}

/// Waits for the agent's spool to be stored in full; what is stored, and the spool's last.
fn drained(c: &Collector, agent: &Agent) -> (Vec<u64>, u64) {
    wait_for(Duration::from_secs(60), "the spool to drain", || {
        let last = agent.spool_last_seq();
        let seqs = c.stored_seqs(&agent.agent_id);
        (seqs.last() == Some(&last)).then_some((seqs, last))
    })
}

/// Execs at a steady pace until killed, so the agent always has something to send.
fn exec_stream() -> Child {
    Command::new("bash")
        .arg("-c")
        .arg("while true; do /bin/true; sleep 0.005; done")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_agent_whose_collector_dies_resumes_on_another_within_ten_seconds() {
    let pg = PgServer::start();
    let (mut a, mut b) = pair(&pg, "");
    let token = a.token("staff", "1h", 1);
    let mut agent = Agent::enroll_to(&format!("{},{}", a.url(), b.url()), &token, FAST);
    agent.start();
    agent.wait_ready();
    let mut storm = exec_stream();
    let stored = |c: &Collector| c.stored_seqs(&agent.agent_id).len();
    wait_for(Duration::from_secs(20), "the first events", || {
        (stored(&a) > 100).then_some(())
    });
    // Each collector in turn dies while the other runs: whichever the agent was on, it goes
    // on with the one left.
    let mut worst = Duration::ZERO;
    for round in 0..4 {
        let (dying, left) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        dying.kill9();
        let before = stored(left);
        let killed = Instant::now();
        wait_for(
            Duration::from_secs(10),
            "events through the collector left",
            || (stored(left) > before + 50).then_some(()),
        );
        worst = worst.max(killed.elapsed());
        dying.restart();
    }
    let _ = storm.kill();
    let _ = storm.wait();
    let (seqs, last) = drained(&a, &agent);
    assert_exactly_once(&seqs, last);
    assert!(
        agent.log().contains("failed over to another collector"),
        "{}",
        agent.log()
    );
    eprintln!(
        "{} events, exactly once; slowest resumption {worst:?}",
        seqs.len()
    );
}

/// Runs a command with a private /etc/hosts (a mount namespace of its own, so nothing else on
/// the machine sees it): how a test gives a name several addresses, as DNS would with one A
/// record per collector.
fn with_hosts(hosts: &std::path::Path) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "sh",
        "-c",
        &format!(
            "mount --bind '{}' /etc/hosts && exec \"$0\" \"$@\"",
            hosts.display()
        ),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One name for two collectors (a DNS name with an address each): the agent enrols while
/// the first address is dead, and whichever collector it streams to dies, it goes on with the
/// other address of the same name, losing and duplicating nothing.
#[test]
fn an_agent_given_one_name_for_two_collectors_uses_either_address() {
    let pg = PgServer::start();
    let names = [
        "--server-name",
        "collectors.test",
        "--server-name",
        "localhost",
    ];
    let mut a = Collector::init_with("", Some(pg.new_database()), &names);
    a.serve_on("127.0.0.2:0");
    let port = a.grpc.rsplit(':').next().unwrap().to_owned();
    let mut b = a.joined(&names);
    b.serve_on(&format!("127.0.0.3:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.2 collectors.test\n127.0.0.3 collectors.test\n",
    )
    .unwrap();
    let wrapper = with_hosts(&hosts);
    let url = format!("https://collectors.test:{port}");

    a.kill9();
    let token = b.token("staff", "1h", 1);
    let mut agent = Agent::enroll_under(&wrapper, &url, &token, FAST);
    a.restart();
    agent.start_under(&wrapper);
    agent.wait_ready();
    let mut storm = exec_stream();
    // The database both share, read without holding either collector.
    let db = a.db();
    let count = format!(
        "SELECT count(*) FROM events WHERE agent_id = '{}'",
        agent.agent_id
    );
    let stored = || db.count(&count);
    wait_for(Duration::from_secs(20), "the first events", || {
        (stored() > 100).then_some(())
    });
    for dying in [&mut b, &mut a] {
        dying.kill9();
        let before = stored();
        wait_for(
            Duration::from_secs(10),
            "events through the name's other address",
            || (stored() > before + 50).then_some(()),
        );
        dying.restart();
    }
    let _ = storm.kill();
    let _ = storm.wait();
    let (seqs, last) = drained(&a, &agent);
    assert_exactly_once(&seqs, last);
}

/// Firewall rules dropping every packet to and from `ip:port` on loopback, removed when
/// dropped: a client there is cut off from the server without either end being told (a
/// pulled cable, a partition).
struct CutOff(Vec<Vec<String>>);

impl CutOff {
    fn between(ip: &str, port: u16) -> Self {
        let port = port.to_string();
        let rules: Vec<Vec<String>> = [
            ["-p", "tcp", "-d", ip, "--dport", &port, "-j", "DROP"],
            ["-p", "tcp", "-s", ip, "--sport", &port, "-j", "DROP"],
        ]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
        for rule in &rules {
            let out = output(Command::new("iptables").args(["-I", "INPUT"]).args(rule));
            assert!(out.status.success(), "iptables: {out:?}");
        }
        Self(rules)
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        for rule in &self.0 {
            let _ = Command::new("iptables")
                .args(["-D", "INPUT"])
                .args(rule)
                .status();
        }
    }
}

/// When a log line containing `what` was written (its RFC 3339 timestamp, which sorts as text).
fn logged_at(log: &str, what: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
}

/// The leader is cut off from the database while its connection stays open on both ends (no
/// reset, no error): it stops running the once-only jobs before the server lets another
/// collector take over, so no job runs twice at once, and the other does take over.
#[test]
fn a_leader_cut_off_from_the_database_stops_before_another_takes_over() {
    let leads = "this collector now runs the once-only jobs";
    let stops = "this collector no longer runs the once-only jobs";
    let port = invigilator_tests::free_port();
    let pg = PgServer::start_with(&[("PG_TCP_PORT", port.to_string())]);
    // A reaches the server at 127.0.0.2, B at 127.0.0.1: the cut is A's alone.
    let url = pg.new_database();
    let mut a = Collector::init_with("", Some(url.replace("127.0.0.1", "127.0.0.2")), &[]);
    a.serve_on("127.0.0.1:0");
    wait_for(Duration::from_secs(20), "A to lead", || {
        a.log().contains(leads).then_some(())
    });
    let mut b = a.joined(&[]);
    let config = b.data_dir().join("collector.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("127.0.0.2"), "{text}");
    std::fs::write(&config, text.replace("127.0.0.2", "127.0.0.1")).unwrap();
    b.serve_on("127.0.0.1:0");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!b.log().contains(leads), "two leaders at once");

    let cut = Instant::now();
    let _cut = CutOff::between("127.0.0.2", port);
    let took_over = wait_for(Duration::from_secs(40), "B to take over", || {
        logged_at(&b.log(), leads)
    });
    let waited = cut.elapsed();
    let stopped = logged_at(&a.log(), stops).expect("A never stopped leading");
    eprintln!(
        "cut off at +0; A stopped at {stopped}, B took over at {took_over}, {waited:?} after the cut"
    );
    assert!(
        stopped < took_over,
        "A stopped at {stopped}, after B took over at {took_over}"
    );
}
