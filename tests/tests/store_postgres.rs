//! The store's TLS to PostgreSQL: the workspace's rustls (ring) against a real server that
//! accepts TCP connections with TLS only, its certificate from the trust's own CA.

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
        ["3"],
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
