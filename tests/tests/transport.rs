//! mTLS and message validation at the collector's gRPC port, with real TLS handshakes.

use invigilator_agent::identity::StatePaths;
use invigilator_agent::tls;
use invigilator_proto::v1::{
    Event, EventBatch, HeartbeatRequest, ProcessExec, event::Kind,
    telemetry_client::TelemetryClient,
};
use invigilator_tests::{Agent, Collector};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn mtls(c: &Collector, state: &std::path::Path) -> TelemetryClient<Channel> {
    let cfg = tls::mtls_config(&StatePaths::new(state)).unwrap();
    TelemetryClient::new(tls::channel(&c.collectors(), cfg).unwrap())
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest {
        hostname: "h".into(),
        ..Default::default()
    }
}

fn event(seq: u64, argv: Vec<String>) -> Event {
    Event {
        seq,
        observed_at_us: 1_700_000_000_000_000,
        hostname: "h".into(),
        user: "u".into(),
        truncated: vec![],
        device_time_us: 0,
        kind: Some(Kind::Process(ProcessExec {
            pid: 1,
            name: "x".into(),
            argv,
            ..Default::default()
        })),
    }
}

#[test]
fn no_client_certificate_is_refused_and_a_valid_one_is_accepted() {
    let c = Collector::start("");
    let a = Agent::enroll(&c, "");
    let fp = c.ca_fingerprint();
    rt().block_on(async {
        // Server-authenticated TLS only, as during enrolment.
        let anon = tls::channel(&c.collectors(), tls::enrolment_config(&fp).unwrap()).unwrap();
        let err = TelemetryClient::new(anon)
            .heartbeat(heartbeat())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(
            err.message().contains("client certificate"),
            "{}",
            err.message()
        );

        mtls(&c, &a.state_dir())
            .heartbeat(heartbeat())
            .await
            .expect("a valid agent certificate is accepted");
    });
}

#[test]
fn a_certificate_from_another_ca_fails_the_handshake() {
    let c = Collector::start("");
    let other = Collector::start("");
    let ours = Agent::enroll(&c, "");
    let theirs = Agent::enroll(&other, "");
    // Trusts our collector's CA, but presents a certificate the other collector issued.
    let mixed = tempfile::tempdir().unwrap();
    std::fs::copy(ours.state_dir().join("ca.pem"), mixed.path().join("ca.pem")).unwrap();
    for f in ["agent.pem", "agent.key"] {
        std::fs::copy(theirs.state_dir().join(f), mixed.path().join(f)).unwrap();
    }
    rt().block_on(async {
        let err = mtls(&c, mixed.path())
            .heartbeat(heartbeat())
            .await
            .unwrap_err();
        // Refused by the TLS layer before any handler ran: the connection fails (with TLS 1.3
        // the client may see the server's alert or just the reset that follows it), never a
        // status a handler would return.
        let text = format!("{err:?}");
        let transport = std::error::Error::source(&err)
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
        assert!(transport, "not a transport failure: {text}");
        assert!(
            !matches!(
                err.code(),
                Code::Ok | Code::Unauthenticated | Code::PermissionDenied
            ),
            "{text}"
        );
        // Same connection set-up with our own certificate works.
        mtls(&c, &ours.state_dir())
            .heartbeat(heartbeat())
            .await
            .unwrap();
    });
}

#[test]
fn a_revoked_agent_is_refused_and_its_open_stream_is_cut() {
    let c = Collector::start("");
    let a = Agent::enroll(&c, "");
    rt().block_on(async {
        let mut client = mtls(&c, &a.state_dir());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut acks = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(EventBatch {
            events: vec![event(1, vec![])],
        })
        .await
        .unwrap();
        assert_eq!(acks.message().await.unwrap().unwrap().up_to_seq, 1);

        let out = invigilator_tests::output(&mut c.cli(&["agents", "revoke", &a.agent_id]));
        assert!(out.status.success(), "{out:?}");
        let err = client.heartbeat(heartbeat()).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

        // The open stream, idle, is cut within the refresh interval (2 s), without waiting
        // for the agent's next message. The margin is for a loaded machine.
        let cut = tokio::time::timeout(Duration::from_secs(5), acks.message())
            .await
            .expect("the idle stream of a revoked agent stayed open");
        assert_eq!(cut.unwrap_err().code(), Code::PermissionDenied);
        let _ = tx
            .send(EventBatch {
                events: vec![event(2, vec![])],
            })
            .await;
    });
    assert_eq!(
        c.stored_seqs(&a.agent_id),
        vec![1],
        "nothing stored after revocation"
    );
    let out = invigilator_tests::output(&mut c.cli(&["agents", "revoke", "no-such-agent"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent with id"));
}

#[test]
fn malformed_and_oversized_messages_are_rejected_with_a_clear_error() {
    let c = Collector::start("");
    let a = Agent::enroll(&c, "");
    rt().block_on(async {
        let send = |batch: EventBatch| {
            let mut client = mtls(&c, &a.state_dir());
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(batch).await.unwrap();
                drop(tx);
                match client
                    .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                {
                    Ok(r) => r.into_inner().message().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        let err = send(EventBatch {
            events: vec![event(0, vec![])],
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("seq 0 is out of range"),
            "{}",
            err.message()
        );

        let err = send(EventBatch {
            events: vec![event(2, vec![]), event(1, vec![])],
        })
        .await
        .unwrap_err();
        assert!(
            err.message().contains("does not increase"),
            "{}",
            err.message()
        );

        let huge = vec!["A".repeat(5 * 1024 * 1024)];
        let err = send(EventBatch {
            events: vec![event(1, huge)],
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{err:?}"
        );
        assert!(
            err.message().contains("too large") || err.message().contains("length"),
            "{}",
            err.message()
        );

        // Bytes that are not a protobuf message at all.
        let err = raw_heartbeat(&c, &a, vec![0xff; 64]).await.unwrap_err();
        assert!(err.message().contains("decode"), "{err:?}");
    });
    // The collector is still serving, and nothing was stored.
    assert!(c.stored_seqs(&a.agent_id).is_empty());
    assert!(c.agents()[0]["revoked"] == false);
}

/// Sends arbitrary bytes as the body of a Heartbeat call.
async fn raw_heartbeat(c: &Collector, a: &Agent, body: Vec<u8>) -> Result<(), tonic::Status> {
    let cfg = tls::mtls_config(&StatePaths::new(&a.state_dir())).unwrap();
    let mut grpc = tonic::client::Grpc::new(tls::channel(&c.collectors(), cfg).unwrap());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/invigilator.v1.Telemetry/Heartbeat");
    grpc.unary(tonic::Request::new(body), path, raw::RawCodec)
        .await
        .map(|_| ())
}

mod raw {
    use bytes::BufMut;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            use bytes::Buf;
            let mut v = vec![0; src.remaining()];
            src.copy_to_slice(&mut v);
            Ok(Some(v))
        }
    }
}

/// Finding 10 of issue 13: a renewal is for the enrolled key only, and the certificate it
/// replaces stops working (except to renew again, in case the answer was lost).
#[test]
fn a_renewal_keeps_the_key_and_retires_the_old_certificate() {
    use invigilator_agent::identity;
    use invigilator_proto::v1::RenewRequest;
    let c = Collector::start("");
    let a = Agent::enroll(&c, "");
    let old = StatePaths::new(&a.state_dir());
    // A second state directory: same key, the renewed certificate.
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = StatePaths::new(renewed_dir.path());
    for f in ["ca.pem", "agent.key", "agent.toml"] {
        let _ = std::fs::copy(a.state_dir().join(f), renewed_dir.path().join(f));
    }
    let csr = identity::csr_pem(&identity::load_key(&old).unwrap()).unwrap();
    let thief = rcgen::KeyPair::generate().unwrap();
    let thief_csr = identity::csr_pem(&thief).unwrap();
    rt().block_on(async {
        let pem = mtls(&c, &a.state_dir())
            .renew(RenewRequest {
                csr_pem: csr.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .certificate_pem;
        std::fs::write(renewed.cert(), pem).unwrap();

        let refused = mtls(&c, &a.state_dir())
            .heartbeat(heartbeat())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("replaced by a renewal"),
            "{refused:?}"
        );
        mtls(&c, renewed_dir.path())
            .heartbeat(heartbeat())
            .await
            .expect("the renewed certificate works");

        let err = mtls(&c, renewed_dir.path())
            .renew(RenewRequest { csr_pem: thief_csr })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("key of the certificate presented"),
            "{err:?}"
        );

        // The agent missed the answer: the replaced certificate may still renew, once.
        mtls(&c, &a.state_dir())
            .renew(RenewRequest {
                csr_pem: csr.clone(),
            })
            .await
            .expect("a lost renewal answer can be asked for again");
        let err = mtls(&c, &a.state_dir())
            .heartbeat(heartbeat())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    });
}
