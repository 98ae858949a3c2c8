//! A logged-in member of staff talking to a running collector's console over plain HTTP on
//! loopback, as the browser or an API client would: session cookie, CSRF header, JSON.

use crate::{Collector, output};
use serde_json::Value;
use std::io::Write;
use std::process::Stdio;

/// Creates a console account through the CLI with a known password.
pub fn add_user(c: &Collector, username: &str, role: &str, admin: bool) -> String {
    let password = format!("{username}-password-1234");
    let mut args = vec!["users", "add", username, "--role", role, "--password-stdin"];
    if admin {
        args.push("--admin");
    }
    let mut child = c
        .cli(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "users add {username}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    password
}

/// The CLI's `audit verify`: Ok(stdout) when intact, Err(stderr) naming the broken entry.
pub fn audit_verify(c: &Collector) -> Result<String, String> {
    let out = output(&mut c.cli(&["audit", "verify"]));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    /// Response headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn reply(mut r: ureq::http::Response<ureq::Body>) -> Reply {
    Reply {
        status: r.status().as_u16(),
        location: r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

pub struct Session {
    pub base: String,
    pub username: String,
    pub cookie: String,
    pub csrf: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .finish()
    }
}

impl Session {
    /// Logs in with the JSON API; panics with the reply if refused.
    pub fn login(c: &Collector, username: &str, password: &str) -> Self {
        Self::try_login(c, username, password, None)
            .unwrap_or_else(|r| panic!("log-in of {username} refused: {} {}", r.status, r.body))
    }

    pub fn try_login(
        c: &Collector,
        username: &str,
        password: &str,
        totp: Option<&str>,
    ) -> Result<Self, Reply> {
        let base = format!("http://{}", c.http);
        let agent = agent();
        let mut r = agent
            .post(format!("{base}/api/login"))
            .send_json(
                serde_json::json!({"username": username, "password": password, "totp": totp}),
            )
            .unwrap();
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.split(';').next().map(str::to_owned));
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        match (status, cookie) {
            (200, Some(cookie)) => {
                let v: Value = serde_json::from_str(&body).unwrap();
                Ok(Self {
                    base,
                    username: username.into(),
                    cookie,
                    csrf: v["csrf_token"].as_str().unwrap().to_owned(),
                    agent,
                })
            }
            _ => Err(Reply {
                status,
                location: None,
                body,
                headers: Vec::new(),
            }),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .call()
                .unwrap(),
        )
    }

    /// `path` held open (server-sent events): its lines as they come, on a channel fed by a
    /// thread of its own, so a test can wait for one with a deadline.
    pub fn lines(&self, path: &str) -> std::sync::mpsc::Receiver<String> {
        use std::io::BufRead;
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(r.into_body().into_reader()).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    pub fn head(&self, path: &str) -> Reply {
        reply(
            self.agent
                .head(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .call()
                .unwrap(),
        )
    }

    pub fn options(&self, path: &str) -> Reply {
        reply(
            self.agent
                .options(format!("{}{path}", self.base))
                .call()
                .unwrap(),
        )
    }

    /// GET that must succeed, as JSON.
    pub fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path} as {}: {}", self.username, r.body);
        r.json()
    }

    pub fn post_json(&self, path: &str, body: Value) -> Reply {
        reply(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .header("x-csrf-token", &self.csrf)
                .send_json(body)
                .unwrap(),
        )
    }

    /// A form post as the browser sends it, with the CSRF field unless `csrf` is None.
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)], csrf: Option<&str>) -> Reply {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(t) = csrf {
            all.push(("csrf", t));
        }
        reply(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .send_form(all)
                .unwrap(),
        )
    }

    /// A request with arbitrary extra headers (CSRF and Origin tests).
    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send(body).unwrap())
    }
}

/// A request with no session at all.
pub fn anonymous_get(c: &Collector, path: &str) -> Reply {
    reply(
        agent()
            .get(format!("http://{}{path}", c.http))
            .call()
            .unwrap(),
    )
}
