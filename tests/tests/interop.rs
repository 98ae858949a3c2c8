//! A client written in another language (Python grpcio), generated from the project's .proto
//! files, against the real collector: refused without a certificate or with one from another
//! CA, accepted with a valid agent certificate.

use invigilator_tests::{Agent, Collector, output};
use std::path::PathBuf;
use std::process::Command;

fn python(
    c: &Collector,
    case: &str,
    cert_dir: Option<&std::path::Path>,
    ca: &std::path::Path,
) -> String {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(here.join("interop/python_client.py"))
        .arg(here.join("../proto/proto"))
        .arg(format!("localhost:{}", c.grpc.rsplit(':').next().unwrap()))
        .arg(ca)
        .arg(case);
    if let Some(d) = cert_dir {
        cmd.arg(d.join("agent.pem")).arg(d.join("agent.key"));
    }
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "python client failed (tests/setup.sh installs grpcio): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_python_grpc_client_is_refused_without_a_valid_certificate_and_accepted_with_one() {
    let c = Collector::start("");
    let other = Collector::start("");
    let ours = Agent::enroll(&c, "");
    let theirs = Agent::enroll(&other, "");
    let ca = ours.state_dir().join("ca.pem");

    let no_cert = python(&c, "no-cert", None, &ca);
    assert!(no_cert.starts_with("UNAUTHENTICATED"), "{no_cert}");
    let foreign = python(&c, "cert", Some(&theirs.state_dir()), &ca);
    assert!(foreign.starts_with("UNAVAILABLE"), "{foreign}");
    let valid = python(&c, "cert", Some(&ours.state_dir()), &ca);
    assert_eq!(valid, "OK");
}
