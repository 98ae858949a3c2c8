//! A browser's policy key in the Windows registry, read as the JSON map its policy
//! documentation describes (and `posture` judges), as the browser itself reads it:
//!
//! - a DWORD is an integer, or a boolean for the boolean policies judged here;
//! - a string is a string, except the policies whose value is JSON (`ExtensionSettings`), which
//!   are parsed; a multi-string is its lines joined;
//! - a list policy (`ExtensionInstallForcelist`) is a subkey whose values `1`, `2`, ... are the
//!   list, in number order.
//!
//! Pure, so it is tested everywhere; `windows` does the reading.

use serde_json::{Map, Value};

/// One registry value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegData {
    Dword(u32),
    Sz(String),
    MultiSz(Vec<String>),
    /// A type no policy judged here uses.
    Other,
}

/// Boolean policies: written as DWORD 0 or 1.
const BOOLEANS: &[&str] = &[
    "BrowserGuestModeEnabled",
    "TorDisabled",
    "DisablePrivateBrowsing",
    "DisableDeveloperTools",
];

/// Policies whose string value is JSON.
const JSON: &[&str] = &["ExtensionSettings"];

/// Values of one key (as many as a key may hold: the reader bounds them), and its list
/// subkeys' values, as the policy map.
pub fn policies(
    values: Vec<(String, RegData)>,
    lists: Vec<(String, Vec<(String, RegData)>)>,
    problems: &mut Vec<String>,
) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, data) in values {
        let value = match data {
            RegData::Dword(n) if BOOLEANS.contains(&name.as_str()) => Value::Bool(n != 0),
            RegData::Dword(n) => Value::from(n),
            RegData::Sz(s) if JSON.contains(&name.as_str()) => json(&name, &s, problems),
            RegData::MultiSz(lines) if JSON.contains(&name.as_str()) => {
                json(&name, &lines.join("\n"), problems)
            }
            RegData::Sz(s) => Value::String(s),
            RegData::MultiSz(lines) => Value::String(lines.join("\n")),
            RegData::Other => continue,
        };
        map.insert(name, value);
    }
    for (name, entries) in lists {
        let mut numbered: Vec<(u64, String)> = entries
            .into_iter()
            .filter_map(|(n, data)| match (n.parse::<u64>(), data) {
                (Ok(n), RegData::Sz(s)) => Some((n, s)),
                _ => None,
            })
            .collect();
        numbered.sort();
        map.insert(
            name,
            Value::Array(
                numbered
                    .into_iter()
                    .map(|(_, s)| Value::String(s))
                    .collect(),
            ),
        );
    }
    map
}

fn json(name: &str, text: &str, problems: &mut Vec<String>) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| {
        problems.push(format!("{name}: not JSON: {e}"));
        Value::Null
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::{EXTENSION_ID, Family, chromium_posture, firefox_posture};

    fn sz(s: &str) -> RegData {
        RegData::Sz(s.into())
    }

    #[test]
    fn a_chrome_key_as_group_policy_writes_it_is_judged_like_the_json_file() {
        let ids = vec![EXTENSION_ID.to_owned()];
        let mut problems = Vec::new();
        let open = policies(vec![], vec![], &mut problems);
        let p = chromium_posture(Family::Chromium, &open, &ids);
        assert!(p.private_unseen && !p.extension_forced && p.developer_mode);

        // What deploy/browsers' Chrome policy sets, as registry values.
        let forced = format!("{EXTENSION_ID};https://updates.school.example/invigilator.xml");
        let closed = policies(
            vec![
                ("IncognitoModeAvailability".into(), RegData::Dword(1)),
                ("BrowserGuestModeEnabled".into(), RegData::Dword(0)),
                ("ExtensionDeveloperModeSettings".into(), RegData::Dword(1)),
                ("SomethingElse".into(), RegData::Other),
            ],
            vec![(
                "ExtensionInstallForcelist".into(),
                vec![
                    ("2".into(), sz(&forced)),
                    ("1".into(), sz("aaaabbbbccccddddeeeeffffgggghhhh")),
                    ("x".into(), sz("ignored")),
                ],
            )],
            &mut problems,
        );
        assert_eq!(
            closed["ExtensionInstallForcelist"],
            serde_json::json!(["aaaabbbbccccddddeeeeffffgggghhhh", forced])
        );
        let p = chromium_posture(Family::Chromium, &closed, &ids);
        assert!(
            !p.private_unseen && p.extension_forced && !p.developer_mode,
            "{p:?}"
        );
        assert!(problems.is_empty(), "{problems:?}");

        // Guest mode left on is still a window nobody sees.
        let guest = policies(
            vec![
                ("IncognitoModeAvailability".into(), RegData::Dword(1)),
                ("BrowserGuestModeEnabled".into(), RegData::Dword(1)),
            ],
            vec![],
            &mut problems,
        );
        assert!(chromium_posture(Family::Chromium, &guest, &ids).private_unseen);
    }

    #[test]
    fn json_policies_are_parsed_and_a_bad_one_is_named() {
        let ids = vec![EXTENSION_ID.to_owned()];
        let mut problems = Vec::new();
        let settings =
            format!(r#"{{"{EXTENSION_ID}": {{"installation_mode": "force_installed"}}}}"#);
        let map = policies(
            vec![
                ("ExtensionSettings".into(), sz(&settings)),
                ("InPrivateModeAvailability".into(), RegData::Dword(1)),
                ("BrowserGuestModeEnabled".into(), RegData::Dword(0)),
            ],
            vec![],
            &mut problems,
        );
        let p = chromium_posture(Family::Edge, &map, &ids);
        assert!(p.extension_forced && !p.private_unseen, "{p:?}");

        let firefox = policies(
            vec![(
                "ExtensionSettings".into(),
                RegData::MultiSz(vec![
                    r#"{"invigilator@invigilator.school": {"installation_mode": "force_installed","#.into(),
                    r#""private_browsing": true}}"#.into(),
                ]),
            )],
            vec![],
            &mut problems,
        );
        let p = firefox_posture(&Map::from_iter([(
            "policies".to_owned(),
            Value::Object(firefox),
        )]));
        assert!(p.extension_forced && !p.private_unseen, "{p:?}");

        let bad = policies(
            vec![("ExtensionSettings".into(), sz("{not json"))],
            vec![],
            &mut problems,
        );
        assert_eq!(bad["ExtensionSettings"], Value::Null);
        assert!(
            problems[0].starts_with("ExtensionSettings: not JSON"),
            "{problems:?}"
        );
    }
}
