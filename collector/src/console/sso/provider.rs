//! The provider's side of a sign-in, with the `openidconnect` crate: discovery (cached an hour),
//! the authorization request (code flow, PKCE S256, state and nonce), the code exchange and the
//! ID token's validation against the provider's published keys (issuer, audience, expiry,
//! signature, nonce). Blocking: run it off the async threads.

use crate::config::SsoConfig;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, Client,
    ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Discovery and keys are fetched again after this long, or at once when a token is signed
/// with a key not in them (the provider rotated its keys).
const METADATA_FOR: Duration = Duration::from_secs(3600);
/// A failed discovery is tried again after this long.
const FAILURE_FOR: Duration = Duration::from_secs(30);
/// The largest answer read from the provider (its discovery document, keys or token).
const MAX_ANSWER: u64 = 1 << 20;
/// Bounds on what a token may carry into the console and the trail.
const MAX_GROUPS: usize = 2_000;
const MAX_CLAIM: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(
        "the identity provider {issuer} could not be reached or gave no usable settings: {message}"
    )]
    Discovery { issuer: String, message: String },
    #[error("cannot read the client secret {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
    #[error("console.sso.ca_file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("the identity provider refused the sign-in code: {0}")]
    Exchange(String),
    #[error("the identity provider did not answer in time: {0}")]
    Unavailable(String),
    #[error("the identity provider's answer held no ID token")]
    NoIdToken,
    #[error("the ID token was refused: {0}")]
    Token(String),
}

/// Every claim the token carries beyond the standard ones (the groups claim's name is set in
/// collector.toml, and Google's `hd`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
pub(super) type SsoIdToken = openidconnect::IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub(super) type SsoClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The groups a token gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    Listed(Vec<String>),
    /// No groups claim (Google never sends one; Entra ID only when configured to).
    Absent,
    /// Entra ID's overage: more groups than fit in a token, so it sent none and a pointer.
    Overage,
}

/// Who the provider says signed in: from a validated ID token only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// Lower-cased; only kept when the provider says it is verified.
    pub email: Option<String>,
    pub name: String,
    pub groups: Groups,
    /// Google Workspace's hosted domain.
    pub hd: Option<String>,
}

/// A sign-in to start: where to send the browser, and what to keep until it returns.
pub struct Authorization {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct Provider {
    pub cfg: SsoConfig,
    data_dir: PathBuf,
    http: ureq::Agent,
    /// The last discovery, and when: a failure is kept briefly too, so that a provider that is
    /// down costs one wait, not one per visitor.
    metadata: Mutex<Option<(Instant, Result<CoreProviderMetadata, String>)>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

fn bounded(s: &str) -> String {
    super::bounded(s, MAX_CLAIM)
}

impl Provider {
    /// Reads the CA file now, so that a bad one stops the start with its reason.
    pub fn new(cfg: SsoConfig, data_dir: &Path) -> Result<Self, SsoError> {
        let ca = cfg.ca_file.as_ref().map(|ca| data_dir.join(ca));
        let http = crate::outbound::client(ca.as_deref()).map_err(|message| SsoError::Ca {
            path: ca
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            message,
        })?;
        Ok(Self {
            cfg,
            data_dir: data_dir.to_path_buf(),
            http,
            metadata: Mutex::new(None),
        })
    }

    /// The client secret, read now: a rotated one needs no restart.
    pub fn secret(&self) -> Result<ClientSecret, SsoError> {
        let path = self.data_dir.join(&self.cfg.client_secret_file);
        std::fs::read_to_string(&path)
            .map(|s| ClientSecret::new(s.trim().to_owned()))
            .map_err(|source| SsoError::Secret {
                path: path.display().to_string(),
                source,
            })
    }

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, ureq::Error> {
        let response = self.http.run(request)?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.with_config().limit(MAX_ANSWER).read_to_vec()?;
        Ok(HttpResponse::from_parts(parts, bytes))
    }

    fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, SsoError> {
        let discovery = |message: String| SsoError::Discovery {
            issuer: self.cfg.issuer.clone(),
            message,
        };
        // Held while fetching: visitors arriving meanwhile wait for this one fetch.
        let mut cached = self
            .metadata
            .lock()
            .map_err(|_| discovery("a previous fetch failed badly".into()))?;
        if let Some((at, m)) = cached.as_ref() {
            let keep = if m.is_ok() { METADATA_FOR } else { FAILURE_FOR };
            if !fresh && at.elapsed() < keep {
                return m.clone().map_err(discovery);
            }
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| e.to_string());
        let http = |r: HttpRequest| self.call(r);
        // Checks the document's issuer is exactly the configured one, and fetches the keys.
        let m = issuer.and_then(|issuer| {
            CoreProviderMetadata::discover(&issuer, &http).map_err(|e| error_chain(&e))
        });
        *cached = Some((Instant::now(), m.clone()));
        m.map_err(discovery)
    }

    pub(super) fn client(&self, m: CoreProviderMetadata) -> Result<SsoClient, SsoError> {
        let redirect =
            RedirectUrl::new(self.cfg.redirect_url.clone()).map_err(|e| SsoError::Discovery {
                issuer: self.cfg.issuer.clone(),
                message: format!("redirect_url: {e}"),
            })?;
        Ok(SsoClient::from_provider_metadata(
            m,
            ClientId::new(self.cfg.client_id.clone()),
            Some(self.secret()?),
        )
        .set_redirect_uri(redirect))
    }

    /// Checks the provider can be used (at start-up: a wrong issuer is named at once). Not
    /// fatal to the console: local accounts still work while the provider is away.
    pub fn check(&self) -> Result<(), SsoError> {
        self.secret()?;
        self.metadata(false).map(drop)
    }

    pub fn authorize(&self) -> Result<Authorization, SsoError> {
        let client = self.client(self.metadata(false)?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &self.cfg.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Authorization {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code and validates the ID token it brings.
    pub fn finish(
        &self,
        code: String,
        nonce: &str,
        verifier: String,
    ) -> Result<Identity, SsoError> {
        let client = self.client(self.metadata(false)?)?;
        let http = |r: HttpRequest| self.call(r);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SsoError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request(&http)
            .map_err(|e| match e {
                // The provider answered, and said no (a used or forged code, a wrong verifier).
                openidconnect::RequestTokenError::ServerResponse(_) => {
                    SsoError::Exchange(error_chain(&e))
                }
                _ => SsoError::Unavailable(error_chain(&e)),
            })?;
        let id_token = tokens.id_token().ok_or(SsoError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        match self.identity(&client, id_token, &nonce) {
            Ok(who) => Ok(who),
            // Signed with a key not in the set fetched: the provider rotated its keys since.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let fresh = self.client(self.metadata(true)?)?;
                self.identity(&fresh, id_token, &nonce)
                    .map_err(|e| SsoError::Token(error_chain(&e)))
            }
            Err(e) => Err(SsoError::Token(error_chain(&e))),
        }
    }

    /// Validates the ID token (signature against the provider's keys, issuer, audience,
    /// expiry, nonce) and reads who it names.
    pub(super) fn identity(
        &self,
        client: &SsoClient,
        id_token: &SsoIdToken,
        nonce: &Nonce,
    ) -> Result<Identity, ClaimsVerificationError> {
        // Public-key signatures only: a provider advertising HS256 must not make the client
        // secret (which the console holds) a key that signs identities.
        let verifier = client.id_token_verifier().set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ]);
        let claims = id_token.claims(&verifier, nonce)?;
        let extra = &claims.additional_claims().claims;
        let groups = match extra.get(&self.cfg.groups_claim) {
            Some(serde_json::Value::Array(items)) => Groups::Listed(
                items
                    .iter()
                    .take(MAX_GROUPS)
                    .filter_map(|g| g.as_str().map(bounded))
                    .collect(),
            ),
            Some(serde_json::Value::String(one)) => Groups::Listed(vec![bounded(one)]),
            _ if extra
                .get("_claim_names")
                .and_then(|n| n.get(&self.cfg.groups_claim))
                .is_some() =>
            {
                Groups::Overage
            }
            _ => Groups::Absent,
        };
        let email = claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            // ASCII only, as the store compares: Unicode folding would let "K" (Kelvin) be "k".
            .map(|e| bounded(e).to_ascii_lowercase());
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| bounded(n))
            .unwrap_or_default();
        Ok(Identity {
            issuer: claims.issuer().to_string(),
            subject: bounded(claims.subject()),
            email,
            name,
            groups,
            hd: extra
                .get("hd")
                .and_then(|h| h.as_str())
                .map(|h| bounded(h).to_ascii_lowercase()),
        })
    }
}

/// An error with its causes, for a message that names the real problem.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}
