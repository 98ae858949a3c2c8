//! The store on a real PostgreSQL server, when things go wrong: TLS (the workspace's rustls
//! against a server that accepts TCP connections with TLS only, its certificate from the
//! trust's own CA), the server crashing mid-stream, and its disk filling up (a tablespace on a
//! small tmpfs, which needs root, as the whole suite does).

use invigilator_collector::store::{Store, StoreConfig};
use invigilator_tests::free_port;
use invigilator_tests::store::{PgServer, TestDb};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::process::Command;

/// A server with a certificate for localhost from a new CA (its PEM in `ca.pem`), taking TCP
/// connections with TLS only.
struct TlsServer {
    pg: PgServer,
    certs: tempfile::TempDir,
    port: u16,
}

impl TlsServer {
    fn start() -> Self {
        let certs = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "trust database CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(certs.path().join("server.crt"), cert.pem()).unwrap();
        std::fs::write(certs.path().join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(certs.path().join("ca.pem"), ca.pem()).unwrap();
        let port = free_port();
        let pg = PgServer::start_with(&[
            ("PG_TLS_DIR", certs.path().display().to_string()),
            ("PG_PORT", port.to_string()),
        ]);
        Self { pg, certs, port }
    }

    /// The server's Unix socket, which needs no TLS: for the test's own look at the server.
    fn local(&self) -> TestDb {
        TestDb::Postgres(format!(
            "host={} port={} user=postgres dbname=postgres",
            self.pg.socket_dir().display(),
            self.port
        ))
    }
}

#[test]
fn the_store_reaches_postgresql_over_verified_tls_and_not_otherwise() {
    let server = TlsServer::start();
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(
        server.certs.path().join("ca.pem"),
        data.path().join("db-ca.pem"),
    )
    .unwrap();
    let config = |mode: &str, ca: &str| StoreConfig {
        // By name: the certificate is the server's as localhost.
        url: format!(
            "host=localhost port={} user=postgres dbname=postgres sslmode={mode}",
            server.port
        ),
        ca_file: ca.to_owned(),
        ..StoreConfig::default()
    };

    // The trust's CA named: the schema is made over TLS, and the server sees TLS.
    let store = Store::create(data.path(), &config("require", "db-ca.pem")).unwrap();
    let encrypted = server.local().count(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
         WHERE s.ssl AND a.application_name = 'invigilator-collector'",
    );
    assert!(encrypted >= 1, "no TLS connection from the store");
    drop(store);
    assert_eq!(
        server
            .local()
            .column("SELECT value FROM meta WHERE key = 'schema_version'"),
        ["4"],
        "every migration applied"
    );

    // Without the CA (the system's roots) the server's certificate is not trusted, and the
    // error says so.
    let err = Store::open(data.path(), &config("require", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("localhost"), "names the database: {err}");

    // A wrong CA file is named as such.
    std::fs::write(data.path().join("not-a-ca.pem"), "hello").unwrap();
    let err = Store::open(data.path(), &config("require", "not-a-ca.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not-a-ca.pem"), "{err}");

    // Without TLS the server refuses, and the refusal is shown.
    let err = Store::open(data.path(), &config("disable", "db-ca.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no encryption") || err.contains("pg_hba"),
        "{err}"
    );
}

/// The database crashes and comes back while an agent streams: commits in flight fail and
/// are not acknowledged, the agent resends, and every event is stored exactly once.
#[test]
fn a_database_crash_mid_stream_loses_and_duplicates_nothing() {
    use invigilator_tests::{Agent, Collector, wait_for};
    use std::time::Duration;
    let pg = PgServer::start();
    let c = Collector::start_on_postgres("", &pg.new_database());
    let mut a = Agent::enroll(
        &c,
        "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n",
    );
    a.start();
    a.wait_ready();
    let mut storm = Command::new("bash")
        .arg("-c")
        .arg("for i in $(seq 3000); do /bin/true; done")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    pg.restart();
    storm.wait().unwrap();
    let (seqs, last) = wait_for(Duration::from_secs(120), "the spool to drain", || {
        let last = a.spool_last_seq();
        let seqs = c.stored_seqs(&a.agent_id);
        (last > 0 && seqs.last() == Some(&last)).then_some((seqs, last))
    });
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "gaps or duplicates");
    assert!(last > 1000, "the storm was stored: {last}");
    assert!(
        c.log().contains("PostgreSQL"),
        "the failed commits were logged with their cause:\n{}",
        c.log()
    );
}

/// A tmpfs of the test's own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "this test mounts a small tmpfs, and needs root to");
        let ok = Command::new("chown")
            .arg("invigilator-pg")
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Self(dir)
    }

    fn used_mib(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-B1M"])
            .arg(self.0.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn resize(&self, mib: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.0.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// 100 events whose command lines do not compress (PostgreSQL compresses large values): each
/// batch takes its size on disk.
fn incompressible(first_seq: u64) -> invigilator_proto::v1::EventBatch {
    let arg = || {
        (0..60)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect::<String>()
    };
    invigilator_proto::v1::EventBatch {
        events: (0..100)
            .map(|i| invigilator_tests::flood::exec(first_seq + i, vec![arg(), arg()]))
            .collect(),
    }
}

/// The database's disk fills mid-stream: the batch that does not fit is refused, not
/// acknowledged, with the server's reason; nothing stored before is lost; once there is room
/// again the agent's resend is stored, each event once.
#[test]
fn a_full_database_disk_refuses_batches_and_resumes_when_there_is_room() {
    use invigilator_tests::{Agent, Collector, telemetry};
    use std::time::Duration;
    // Dropped after the server, which has its files open on it.
    let disk = SmallDisk::mount(32);
    let pg = PgServer::start();
    let admin = TestDb::Postgres(format!(
        "host={} user=postgres dbname=postgres",
        pg.socket_dir().display()
    ));
    admin.execute_batch(&format!(
        "CREATE TABLESPACE small LOCATION '{}'",
        disk.0.path().display()
    ));
    admin.execute_batch("CREATE DATABASE full_disk TABLESPACE small");
    let c = Collector::start_on_postgres(
        "",
        &format!(
            "host={} user=postgres dbname=full_disk",
            pg.socket_dir().display()
        ),
    );
    let a = Agent::enroll(&c, "");
    // A few MiB of room left: a dozen batches or so.
    disk.resize(disk.used_mib() + 4);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |from: u64, until: u64| {
        rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut acks = telemetry(&c, &a)
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let mut acked = from - 1;
            while acked < until {
                tx.send(incompressible(acked + 1)).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(30), acks.message()).await {
                    Ok(Ok(Some(ack))) => acked = ack.up_to_seq,
                    Ok(Err(status)) => return (acked, Some(status)),
                    other => panic!("no acknowledgement nor refusal: {other:?}"),
                }
            }
            (acked, None)
        })
    };
    let (acked, refused) = send(1, 100_000);
    let refused = refused.expect("the disk filled");
    eprintln!(
        "full disk: {acked} events stored, then: {}",
        refused.message()
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("No space left on device"),
        "the agent is told why: {refused:?}"
    );
    assert!(acked >= 300, "only {acked} stored before the disk filled");
    assert_eq!(
        c.stored_seqs(&a.agent_id),
        (1..=acked).collect::<Vec<_>>(),
        "what was acknowledged is kept, and nothing of the refused batch"
    );
    assert!(
        c.log().contains("No space left on device"),
        "the collector's log names the problem:\n{}",
        c.log()
    );

    // Room again: the agent resends what was refused, and more.
    disk.resize(disk.used_mib() + 64);
    let (last, refused) = send(acked + 1, acked + 300);
    assert!(refused.is_none(), "{refused:?}");
    assert_eq!(
        c.stored_seqs(&a.agent_id),
        (1..=last).collect::<Vec<_>>(),
        "gaps or duplicates after the disk had room again"
    );
}
