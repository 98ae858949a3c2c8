//! The `Enrollment` gRPC service: a one-time token and a CSR in, a client certificate out.
//! Served over server-authenticated TLS; the only call that needs no client certificate.

use crate::metrics::Refusal;
use crate::state::Shared;
use crate::store::{
    self,
    enrol_guard::{self, Gate},
    tokens::TokenRejection,
};
use invigilator_proto::EnrollmentToken;
use invigilator_proto::v1::{EnrollRequest, EnrollResponse, enrollment_server::Enrollment};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct EnrollmentService {
    shared: Arc<Shared>,
}

impl EnrollmentService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Device-supplied text is shown to staff later: keep it short and free of control characters.
fn clean(s: &str, what: &str) -> Result<String, Status> {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.trim().is_empty() || s.len() > 255 {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1 to 255 characters"
        )));
    }
    Ok(s)
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    /// Enrolment is open to anyone who reaches the port, so failures are rationed per address
    /// (in the database: it holds across collectors) and logged sparingly.
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let addr = req
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let now = store::now_us();
        let a = addr.clone();
        let gate = self
            .shared
            .db(move |c| enrol_guard::gate(&c.admin(), &a, now))
            .await?;
        if let Gate::Closed { until_us, refused } = gate {
            if crate::sparse_mark(refused) {
                tracing::warn!(%addr, refused, "enrolment attempts refused: too many failures from this address");
            }
            self.shared.metrics.refused(Refusal::enrolment_rationed);
            return Err(Status::resource_exhausted(format!(
                "too many failed enrolments from {addr}; try again after {}",
                store::rfc3339(until_us)
            )));
        }
        let result = self.try_enroll(req.into_inner()).await;
        if result.is_ok() {
            self.shared.metrics.enrolled();
        }
        // Only what the caller sent counts against it, not the collector's own storage trouble.
        if let Some(status) = result
            .as_ref()
            .err()
            .filter(|s| !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Internal))
        {
            self.shared.metrics.refused(Refusal::enrolment);
            let a = addr.clone();
            let failures = self
                .shared
                .db(move |c| enrol_guard::failed(&c.admin(), &a, now))
                .await?;
            if failures == 1 || failures == enrol_guard::MAX_FAILURES {
                tracing::warn!(%addr, failures, reason = %status.message(), "enrolment refused");
            } else {
                tracing::debug!(%addr, failures, reason = %status.message(), "enrolment refused");
            }
        }
        result
    }
}

impl EnrollmentService {
    async fn try_enroll(&self, r: EnrollRequest) -> Result<Response<EnrollResponse>, Status> {
        let token = EnrollmentToken::parse(&r.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if token.ca_fingerprint != self.shared.ca.fingerprint {
            return Err(Status::failed_precondition(
                "the enrolment token was issued by a different collector (CA fingerprint does not match)",
            ));
        }
        let hostname = clean(&r.hostname, "hostname")?;
        let os = clean(&r.os, "os")?;
        let version = clean(&r.agent_version, "agent_version")?;

        // Check the CSR before spending a use of the token on it.
        let agent_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let issued = self
            .shared
            .ca
            .issue_agent_cert(
                &r.csr_pem,
                &agent_id,
                self.shared.config.agents.cert_validity,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;

        let (id, serial, not_after) = (
            agent_id.clone(),
            issued.serial.clone(),
            issued.not_after.timestamp_micros(),
        );
        let (host, os_, ver) = (hostname.clone(), os.clone(), version.clone());
        let group = self
            .shared
            .db(move |c| {
                let group = match store::tokens::consume_token(&c.admin(), &token)? {
                    Ok(g) => g,
                    Err(rejection) => return Ok(Err(rejection)),
                };
                store::agents::insert_agent(
                    &c.admin(),
                    &store::NewAgent {
                        agent_id: &id,
                        group: &group,
                        hostname: &host,
                        os: &os_,
                        agent_version: &ver,
                        cert_serial: &serial,
                        cert_not_after_us: not_after,
                    },
                )?;
                Ok(Ok(group))
            })
            .await?
            .map_err(|rejection| match rejection {
                TokenRejection::Unknown => Status::unauthenticated(rejection.to_string()),
                TokenRejection::Expired | TokenRejection::UsedUp => {
                    Status::permission_denied(rejection.to_string())
                }
            })?;
        tracing::info!(%agent_id, %group, %hostname, "agent enrolled");
        Ok(Response::new(EnrollResponse {
            agent_id,
            certificate_pem: issued.pem,
            ca_certificate_pem: self.shared.ca.cert_pem.clone(),
            group,
        }))
    }
}
