//! A rule that can be switched off, or on at a severity: `"off"`, `"informational"`,
//! `"inappropriate"`, `"serious"`.

use super::Severity;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Setting {
    Off,
    On(Severity),
}

impl TryFrom<String> for Setting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "off" => Setting::Off,
            "informational" => Setting::On(Severity::Informational),
            "inappropriate" => Setting::On(Severity::Inappropriate),
            "serious" => Setting::On(Severity::Serious),
            // The illegal class is always on and comes from licensed lists, not from here.
            other => {
                return Err(format!(
                    "{other:?} is not one of \"off\", \"informational\", \"inappropriate\", \"serious\""
                ));
            }
        })
    }
}

impl Setting {
    pub fn severity(self) -> Option<Severity> {
        match self {
            Setting::Off => None,
            Setting::On(s) => Some(s),
        }
    }
}
