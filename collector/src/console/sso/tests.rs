//! ID-token validation with tokens this test signs itself (ES256, ring), through the same
//! verifier a sign-in uses, and the account decision. The whole flow against a real provider is
//! `tests/tests/sso.rs`.

use super::decide::{Outcome, decide};
use super::provider::{Groups, Identity, Provider, SsoClient, SsoIdToken};
use crate::config::SsoConfig;
use crate::store::accounts::sso::Known;
use crate::store::accounts::{Account, Role};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreJsonCurveType, CoreJsonWebKey, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AuthUrl, EmptyAdditionalProviderMetadata, IssuerUrl, JsonWebKeyId, JsonWebKeySet,
    JsonWebKeySetUrl, Nonce, ResponseTypes,
};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.school.example";
const CLIENT: &str = "console-client";

fn cfg(extra: &str) -> SsoConfig {
    toml::from_str(&format!(
        "issuer = \"{ISSUER}\"\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\n\
         redirect_url = \"https://inv.school.example/login/sso/callback\"\n{extra}\n\
         [[roles]]\ngroup = \"g-dsl\"\nrole = \"dsl\"\n\
         [[roles]]\ngroup = \"g-tech\"\nrole = \"technician\"\n"
    ))
    .unwrap()
}

fn key() -> (EcdsaKeyPair, CoreJsonWebKey) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // An uncompressed point: 0x04, then x and y.
    let point = pair.public_key().as_ref().to_vec();
    let jwk = CoreJsonWebKey::new_ec(
        point[1..33].to_vec(),
        point[33..].to_vec(),
        CoreJsonCurveType::P256,
        Some(JsonWebKeyId::new("k1".into())),
    );
    (pair, jwk)
}

fn sign(pair: &EcdsaKeyPair, claims: &Value) -> SsoIdToken {
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = pair
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        .parse()
        .unwrap()
}

/// A provider whose published key is `jwk`, and the client a sign-in would build from it.
fn provider(jwk: CoreJsonWebKey) -> (tempfile::TempDir, Provider, SsoClient) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret").unwrap();
    let p = Provider::new(cfg(""), dir.path()).unwrap();
    let metadata = CoreProviderMetadata::new(
        IssuerUrl::new(ISSUER.into()).unwrap(),
        AuthUrl::new(format!("{ISSUER}/auth")).unwrap(),
        JsonWebKeySetUrl::new(format!("{ISSUER}/jwks")).unwrap(),
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256],
        EmptyAdditionalProviderMetadata {},
    )
    .set_jwks(JsonWebKeySet::new(vec![jwk]));
    let client = p.client(metadata).unwrap();
    (dir, p, client)
}

fn claims() -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "subject-1", "iat": now, "exp": now + 300,
        "nonce": "n-1", "email": "Amy@School.example", "email_verified": true,
        "name": "Amy Adams", "groups": ["g-staff", "g-dsl"],
    })
}

#[test]
fn a_valid_token_names_the_person_and_every_bad_one_is_refused() {
    let (pair, jwk) = key();
    let (_d, p, client) = provider(jwk);
    let nonce = Nonce::new("n-1".into());
    let who = p
        .identity(&client, &sign(&pair, &claims()), &nonce)
        .unwrap();
    assert_eq!(
        who,
        Identity {
            issuer: ISSUER.into(),
            subject: "subject-1".into(),
            email: Some("amy@school.example".into()),
            name: "Amy Adams".into(),
            groups: Groups::Listed(vec!["g-staff".into(), "g-dsl".into()]),
            hd: None,
        }
    );

    let now = chrono::Utc::now().timestamp();
    let bad: [(&str, Value); 4] = [
        ("another issuer", json!({"iss": "https://evil.example"})),
        (
            "a token for another client",
            json!({"aud": "another-client"}),
        ),
        (
            "an expired token",
            json!({"iat": now - 7200, "exp": now - 3600}),
        ),
        ("a token for another sign-in", json!({"nonce": "n-2"})),
    ];
    for (what, change) in bad {
        let mut c = claims();
        for (k, v) in change.as_object().unwrap() {
            c[k] = v.clone();
        }
        let err = p.identity(&client, &sign(&pair, &c), &nonce);
        assert!(err.is_err(), "{what} was accepted");
    }
    let (other_pair, _) = key();
    assert!(
        p.identity(&client, &sign(&other_pair, &claims()), &nonce)
            .is_err(),
        "a token signed with a key the provider does not publish was accepted"
    );
}

#[test]
fn groups_left_out_and_unverified_e_mail_are_told_apart() {
    let (pair, jwk) = key();
    let (_d, p, client) = provider(jwk);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("groups");
    c["_claim_names"] = json!({"groups": "src1"});
    c["email_verified"] = json!(false);
    let who = p
        .identity(&client, &sign(&pair, &c), &Nonce::new("n-1".into()))
        .unwrap();
    assert_eq!(who.groups, Groups::Overage);
    assert_eq!(who.email, None, "an unverified e-mail is not used");
}

fn person(email: Option<&str>, groups: Groups, hd: Option<&str>) -> Identity {
    Identity {
        issuer: ISSUER.into(),
        subject: "subject-1".into(),
        email: email.map(str::to_owned),
        name: String::new(),
        groups,
        hd: hd.map(str::to_owned),
    }
}

fn known(username: &str, role: Role, role_from_sso: bool, disabled: bool) -> Known {
    Known {
        account: Account {
            username: username.into(),
            display_name: String::new(),
            email: String::new(),
            role,
            is_admin: false,
            must_change_password: false,
            totp_enabled: false,
            disabled,
        },
        role_from_sso,
        linked: role_from_sso,
    }
}

fn listed(groups: &[&str]) -> Groups {
    Groups::Listed(groups.iter().map(|g| g.to_string()).collect())
}

#[test]
fn nobody_gets_a_role_by_default_and_an_administrators_role_stands() {
    let c = cfg("");
    let free = |_: &str| false;
    let amy = person(
        Some("amy@s.example"),
        listed(&["g-x", "g-tech", "g-dsl"]),
        None,
    );
    // The first mapped group in the configuration's order wins, not the token's.
    assert_eq!(
        decide(&c, &amy, None, &[], free),
        Outcome::Create {
            username: "amy@s.example".into(),
            role: Role::Dsl,
            group: "g-dsl".into()
        }
    );
    let gus = person(Some("gus@s.example"), listed(&["g-canteen"]), None);
    assert!(
        matches!(decide(&c, &gus, None, &[], free), Outcome::Refuse(r) if r.contains("none of this person's groups"))
    );
    let google = person(Some("bob@s.example"), Groups::Absent, Some("s.example"));
    assert!(
        matches!(decide(&c, &google, None, &[], free), Outcome::Refuse(r) if r.contains("no console account for bob@s.example"))
    );
    let olly = person(Some("olly@s.example"), Groups::Overage, None);
    assert!(
        matches!(decide(&c, &olly, None, &[], free), Outcome::Refuse(r) if r.contains("too many"))
    );

    // An administrator's account found by e-mail keeps its role, whatever the groups say.
    let bob = known("bob", Role::Leadership, false, false);
    assert_eq!(
        decide(&c, &amy, None, std::slice::from_ref(&bob), free),
        Outcome::SignIn {
            username: "bob".into(),
            link: true,
            role_change: None
        }
    );
    let two = [bob.clone(), known("bob2", Role::Dsl, false, false)];
    assert!(
        matches!(decide(&c, &amy, None, &two, free), Outcome::Refuse(r) if r.contains("several accounts"))
    );
    let off = known("bob", Role::Leadership, false, true);
    assert!(
        matches!(decide(&c, &amy, Some(&off), &[], free), Outcome::Refuse(r) if r.contains("disabled"))
    );

    // An account the sign-on made follows the groups, and is refused without one.
    let made = known("amy@s.example", Role::Technician, true, false);
    assert_eq!(
        decide(&c, &amy, Some(&made), &[], free),
        Outcome::SignIn {
            username: "amy@s.example".into(),
            link: false,
            role_change: Some((Role::Technician, Role::Dsl))
        }
    );
    assert!(matches!(
        decide(&c, &gus, Some(&made), &[], free),
        Outcome::Refuse(_)
    ));
    // An e-mail that is no valid user name gives one made from the subject.
    let odd = person(Some("o'brien@s.example"), listed(&["g-dsl"]), None);
    assert!(
        matches!(decide(&c, &odd, None, &[], free), Outcome::Create { username, .. } if username == "sso-subject1")
    );
    // A local account already has the name: not taken over.
    assert!(
        matches!(decide(&c, &amy, None, &[], |n: &str| n == "amy@s.example"), Outcome::Refuse(r) if r.contains("exists but is not this person's"))
    );
}

#[test]
fn only_the_schools_domains_sign_in_when_listed() {
    let c = cfg("domains = [\"school.example\"]");
    let free = |_: &str| false;
    let by_hd = person(
        Some("eve@school.example"),
        listed(&["g-dsl"]),
        Some("other.example"),
    );
    assert!(
        matches!(decide(&c, &by_hd, None, &[], free), Outcome::Refuse(r) if r.contains("accounts of other.example"))
    );
    let by_email = person(Some("amy@school.example"), listed(&["g-dsl"]), None);
    assert!(matches!(
        decide(&c, &by_email, None, &[], free),
        Outcome::Create { .. }
    ));
    // Google: only hd vouches for the domain, not a personal account's verified address.
    let mut personal = person(Some("amy@school.example"), listed(&["g-dsl"]), None);
    personal.issuer = "https://accounts.google.com".into();
    assert!(
        matches!(decide(&c, &personal, None, &[], free), Outcome::Refuse(r) if r.contains("no hosted domain"))
    );
    let nothing = person(None, listed(&["g-dsl"]), None);
    assert!(
        matches!(decide(&c, &nothing, None, &[], free), Outcome::Refuse(r) if r.contains("no hosted domain"))
    );
}
