//! Staff single sign-on against a real OpenID Connect provider: panva's oidc-provider (OpenID
//! Certified) under node, with its own log-in and consent pages. A DSL signs in through
//! headless Chromium; the refusals (a replayed answer, groups that map to no role or are left
//! out, another domain, a cancelled sign-in, a token expired by the provider's slow clock, a
//! provider naming another issuer) are driven with a plain HTTP client through the same pages.
//! The provider names itself `localhost` and the console is reached as 127.0.0.1, so the
//! return from the provider is a cross-site navigation, as it is from Entra ID or Google.

use invigilator_tests::browser::Browser;
use invigilator_tests::{Collector, free_port, wait_for};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CLIENT_ID: &str = "invigilator-console";
const SECRET: &str = "a-client-secret-long-enough-for-the-provider";

/// The people the provider knows, as Entra ID (groups) and Google (hd, no groups) describe them.
fn people(amy_groups: &[&str]) -> Value {
    json!({
        "amy": {"email": "amy@school.example", "email_verified": true, "name": "Amy Adams",
                "groups": amy_groups},
        "gus": {"email": "gus@school.example", "email_verified": true, "groups": ["g-canteen"]},
        // Entra ID's overage: too many groups for the token, so none and a pointer instead.
        "olly": {"email": "olly@school.example", "email_verified": true,
                 "_claim_names": {"groups": "src1"},
                 "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/olly/getMemberObjects"}}},
        "bob-google": {"email": "Bob@School.example", "email_verified": true,
                       "hd": "school.example", "name": "Bob Brown"},
        "eve": {"email": "eve@other.example", "email_verified": true, "hd": "other.example",
                "groups": ["g-dsl"]},
    })
}

struct Idp {
    child: Child,
    port: u16,
}

impl Idp {
    fn start(port: u16, console: &str, people: &Value) -> Self {
        Self::start_at(port, console, people, None)
    }

    /// `clock`: a libfaketime offset for the provider's clock alone (e.g. "-2h").
    fn start_at(port: u16, console: &str, people: &Value, clock: Option<&str>) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
        let clients = json!([{
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "redirect_uris": [format!("{console}/login/sso/callback")],
        }]);
        let mut node = Command::new("node");
        if let Some(offset) = clock {
            node.env(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            )
            .env("FAKETIME", offset);
        }
        let mut child = node
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("ISSUER", format!("http://localhost:{port}"))
            .env("CLIENTS", clients.to_string())
            .env("ACCOUNTS", people.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (tests/setup.sh installs it, and the provider with npm ci)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the provider did not start");
        // Kept open and drained: a provider writing to a closed pipe would die of it.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self { child, port }
    }

    fn issuer(&self) -> String {
        format!("http://localhost:{}", self.port)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `[console.sso]` to collector.toml and restarts the collector on the same ports.
fn configure(c: &mut Collector, issuer: &str) {
    std::fs::write(
        c.data_dir().join("sso-client-secret"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    let path = c.data_dir().join("collector.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if let Some(at) = text.find("\n[console.sso]") {
        text.truncate(at);
    }
    text.push_str(&format!(
        "\n[console.sso]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"sso-client-secret\"\n\
         redirect_url = \"http://{}/login/sso/callback\"\ndomains = [\"school.example\"]\n\
         [[console.sso.roles]]\ngroup = \"g-dsl\"\nrole = \"dsl\"\n\
         [[console.sso.roles]]\ngroup = \"g-tech\"\nrole = \"technician\"\n",
        c.http
    ));
    std::fs::write(&path, text).unwrap();
    c.restart();
}

/// A plain HTTP client that keeps cookies per host and port (paths and expiry aside, which
/// these few requests do not need), as a browser would across the provider and the console.
#[derive(Default)]
struct Http {
    jar: RefCell<HashMap<String, BTreeMap<String, String>>>,
}

fn client() -> Http {
    Http::default()
}

struct Answer {
    status: u16,
    location: Option<String>,
    page: String,
}

impl Http {
    fn send(&self, url: &url::Url, form: Option<&[(String, String)]>) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let origin = url.authority().to_string();
        let cookies = self.jar.borrow().get(&origin).map(|c| {
            c.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let r = match form {
            Some(fields) => {
                let mut req = agent.post(url.as_str());
                if let Some(c) = &cookies {
                    req = req.header("cookie", c);
                }
                req.send_form(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }
            None => {
                let mut req = agent.get(url.as_str());
                if let Some(c) = &cookies {
                    req = req.header("cookie", c);
                }
                req.call()
            }
        }
        .unwrap();
        for set in r.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let mut jar = self.jar.borrow_mut();
            let cookies = jar.entry(origin.clone()).or_default();
            if value.is_empty() || attrs.to_ascii_lowercase().contains("max-age=0") {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        Answer {
            status,
            location,
            page: r.into_body().read_to_string().unwrap(),
        }
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    Some(&text[from..from + text[from..].find(end)?])
}

/// Goes through the provider's pages as `login` with a plain HTTP client (cookies kept), from
/// the console's sign-on link to the moment the provider sends the browser back: that address.
/// `cancel`: the person presses the provider's Cancel instead of signing in.
fn through_provider(http: &Http, console: &str, login: &str, cancel: bool) -> String {
    let mut url = url::Url::parse(&format!("{console}/login/sso")).unwrap();
    let mut post: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let r = http.send(&url, post.take().as_deref());
        if let Some(to) = r.location {
            url = url.join(&to).unwrap();
            if url.path() == "/login/sso/callback" {
                return url.to_string();
            }
            continue;
        }
        let page = r.page;
        assert_eq!(r.status, 200, "at {url}: {page}");
        if cancel {
            let abort = between(&page, "<a href=\"", "\"").expect("a Cancel link");
            url = url.join(&abort.replace("&amp;", "&")).unwrap();
            continue;
        }
        let action = between(&page, "action=\"", "\"").expect("a form");
        let prompt = between(&page, "name=\"prompt\" value=\"", "\"").expect("a prompt");
        let mut fields = vec![("prompt".to_owned(), prompt.to_owned())];
        if prompt == "login" {
            fields.push(("login".into(), login.into()));
            fields.push(("password".into(), "whatever the provider checks".into()));
        }
        url = url.join(&action.replace("&amp;", "&")).unwrap();
        post = Some(fields);
    }
    panic!("the provider never sent {login} back to the console");
}

/// Signs in by HTTP: (status, page) of the console's answer to the provider's return.
fn sign_in(http: &Http, console: &str, login: &str) -> (u16, String) {
    let back = through_provider(http, console, login, false);
    answer(http, &back)
}

fn answer(http: &Http, url: &str) -> (u16, String) {
    let r = http.send(&url::Url::parse(url).unwrap(), None);
    (r.status, r.page)
}

fn me(http: &Http, console: &str) -> Value {
    let (status, page) = answer(http, &format!("{console}/api/me"));
    assert_eq!(status, 200, "{page}");
    serde_json::from_str(&page).unwrap()
}

/// (action, actor, detail) of every audit entry after `after`, oldest first.
fn trail(c: &Collector, after: i64) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    let mut q = db
        .prepare("SELECT action, actor, detail FROM audit_log WHERE id > ?1 ORDER BY id")
        .unwrap();
    q.query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn last_id(c: &Collector) -> i64 {
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    db.query_row("SELECT coalesce(max(id), 0) FROM audit_log", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_through_the_schools_provider_and_are_refused_what_it_does_not_vouch_for() {
    let mut c = Collector::start("");
    let console = format!("http://{}", c.http);
    let port = free_port();
    let mut idp = Idp::start(port, &console, &people(&["g-staff", "g-dsl"]));
    configure(&mut c, &idp.issuer());

    // Amy's groups give her the DSL role: her account is created at her first sign-in, in a
    // real browser, through the provider's pages.
    let b = Browser::start().await;
    b.goto(&format!("{console}/login")).await;
    b.click("#sso").await;
    b.wait_for("input[name=login]").await;
    b.fill("input[name=login]", "amy").await;
    b.fill("input[name=password]", "anything").await;
    b.click("button[type=submit]").await;
    b.wait_for("input[name=prompt][value=consent]").await;
    b.click("button[type=submit]").await;
    let who = b.text("header.top .who").await;
    assert!(
        who.contains("amy@school.example") && who.contains("Designated Safeguarding Lead"),
        "{who}\ncollector log:\n{}",
        c.log()
    );
    b.close().await;
    let entries = trail(&c, 0);
    let created = entries
        .iter()
        .find(|e| e.0 == "staff.create")
        .expect("the account's creation is audited");
    assert_eq!(created.1, "(single sign-on)");
    assert!(created.2.contains("role=dsl admin=false") && created.2.contains("g-dsl"));
    assert!(
        entries
            .iter()
            .any(|e| e.0 == "login" && e.1 == "amy@school.example" && e.2.contains(&idp.issuer())),
        "{entries:#?}"
    );

    // The provider's answer is used once: the same return again is refused, and audited.
    let http = client();
    let back = through_provider(&http, &console, "amy", false);
    assert_eq!(answer(&http, &back).0, 200);
    assert_eq!(me(&http, &console)["role"], "dsl");
    let mark = last_id(&c);
    let (status, page) = answer(&http, &back);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("already used"), "{page}");
    // ... and from another browser, which never began that sign-in.
    let (status, _) = answer(&client(), &back);
    assert_eq!(status, 403);

    // Refusals, each named on the page and in the trail; nobody gets a role by default.
    let refusals = [
        ("gus", "none of this person's groups is given a role"),
        ("olly", "too many"),
        ("eve", "accounts of other.example cannot sign in here"),
    ];
    for (login, why) in refusals {
        let (status, page) = sign_in(&client(), &console, login);
        assert_eq!(status, 403, "{login}: {page}");
        assert!(page.contains(why), "{login}: {page}");
    }
    let http = client();
    let cancelled = through_provider(&http, &console, "gus", true);
    let (status, page) = answer(&http, &cancelled);
    assert_eq!(status, 403);
    assert!(page.contains("access_denied"), "{page}");
    let failed: Vec<_> = trail(&c, mark)
        .into_iter()
        .filter(|e| e.0 == "login.failed")
        .map(|e| e.2)
        .collect();
    assert_eq!(failed.len(), 6, "{failed:#?}");
    assert!(failed.iter().any(|d| d.contains("gus@school.example")));

    // Google: no groups; Bob's account was made by an administrator with his e-mail, and he
    // signs in to it with the role it has, linked from then on.
    let out = c
        .cli(&[
            "users",
            "add",
            "bob",
            "--role",
            "leadership",
            "--email",
            "bob@school.example",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let http = client();
    let (status, page) = sign_in(&http, &console, "bob-google");
    assert_eq!(status, 200, "{page}");
    let bob = me(&http, &console);
    assert_eq!(
        (bob["username"].as_str(), bob["role"].as_str()),
        (Some("bob"), Some("leadership"))
    );
    assert!(trail(&c, mark).iter().any(|e| e.0 == "staff.sso_link"));

    // Amy moves to the technicians' group: her role follows at her next sign-in, audited;
    // once in no mapped group she is refused.
    drop(idp);
    idp = Idp::start(port, &console, &people(&["g-tech"]));
    let http = client();
    assert_eq!(sign_in(&http, &console, "amy").0, 200);
    assert_eq!(me(&http, &console)["role"], "technician");
    assert!(
        trail(&c, mark)
            .iter()
            .any(|e| e.0 == "staff.update" && e.2.contains("role dsl -> technician"))
    );
    drop(idp);
    idp = Idp::start(port, &console, &people(&[]));
    let (status, page) = sign_in(&client(), &console, "amy");
    assert_eq!(status, 403, "{page}");

    // A provider whose clock is two hours slow issues ID tokens that expired an hour ago: the
    // code is good, the token is refused, and the refusal is in the trail.
    drop(idp);
    idp = Idp::start_at(port, &console, &people(&["g-dsl"]), Some("-2h"));
    let mark = last_id(&c);
    let (status, page) = sign_in(&client(), &console, "amy");
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("ID token was refused") && page.contains("xpired"),
        "{page}"
    );
    assert!(
        trail(&c, mark)
            .iter()
            .any(|e| e.0 == "login.failed" && e.2.contains("xpired")),
        "{:#?}",
        trail(&c, mark)
    );

    // A provider that is not the configured issuer is refused at the start, by name.
    configure(&mut c, &format!("http://127.0.0.1:{}", idp.port));
    let (status, page) = answer(&client(), &format!("{console}/login/sso"));
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("issuer"), "{page}");
    wait_for(
        Duration::from_secs(10),
        "the start-up check's log line",
        || {
            c.log()
                .contains("single sign-on cannot reach its provider")
                .then_some(())
        },
    );
    // Local accounts still work: single sign-on never locks out break-glass access.
    let pw = invigilator_tests::console::add_user(&c, "tech", "technician", false);
    invigilator_tests::console::Session::login(&c, "tech", &pw);
}
