//! The recommended response from the policy's sanctions tables (Appendix 5 and 6 of the SWGfL
//! template): what a teacher, head of year or headteacher should do, different for pupils and
//! staff. The response to the illegal class is fixed here, not in the policy file: nobody can
//! edit away "do not investigate, refer to the police".

use super::Severity;
use super::groups::Class;
use serde::Deserialize;
use std::sync::LazyLock;

/// Said of every illegal-class alert, whoever the user is.
pub const ILLEGAL_RESPONSE: &str = "Do not open, view, copy or investigate the content: \
    monitoring of it stops here. Refer to the Designated Safeguarding Lead now, who refers to the \
    police (and the IWF or CTIRU). The address is withheld; the alert keeps its SHA-256 hash.";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResponsesSpec {
    /// For pupils (and anyone whose class is unknown: safeguarding first).
    pub pupil: LevelResponses,
    /// For staff, supply staff and visitors.
    pub staff: LevelResponses,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LevelResponses {
    pub serious: String,
    pub inappropriate: String,
    pub informational: String,
}

impl Default for ResponsesSpec {
    fn default() -> Self {
        Self {
            pupil: LevelResponses {
                serious: "Refer to the head of year / headteacher and the DSL; inform parents; \
                    technical staff to check the device; consider removing network access."
                    .into(),
                inappropriate: "Refer to the class teacher; warning.".into(),
                informational: "Recorded for the weekly review.".into(),
            },
            staff: LevelResponses {
                serious: "Refer to the headteacher; consider LA / HR and disciplinary action."
                    .into(),
                inappropriate: "Refer to the line manager; warning.".into(),
                informational: "Recorded for the weekly review.".into(),
            },
        }
    }
}

impl ResponsesSpec {
    pub fn for_alert(&self, severity: Severity, class: Class) -> &str {
        let chosen = self.table(class).level(severity);
        if !chosen.is_empty() {
            return chosen;
        }
        // A table given in part keeps the built-in wording for the levels it leaves out.
        static BUILT_IN: LazyLock<ResponsesSpec> = LazyLock::new(ResponsesSpec::default);
        BUILT_IN.table(class).level(severity)
    }

    fn table(&self, class: Class) -> &LevelResponses {
        match class {
            Class::Staff | Class::Visitor | Class::System => &self.staff,
            Class::Pupil | Class::Unknown => &self.pupil,
        }
    }
}

impl LevelResponses {
    fn level(&self, severity: Severity) -> &str {
        match severity {
            Severity::Illegal => ILLEGAL_RESPONSE,
            Severity::Serious => &self.serious,
            Severity::Inappropriate => &self.inappropriate,
            Severity::Informational => &self.informational,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pupils_and_staff_get_their_own_table_and_illegal_is_fixed() {
        let r = ResponsesSpec::default();
        assert!(
            r.for_alert(Severity::Serious, Class::Pupil)
                .contains("parents")
        );
        assert!(
            r.for_alert(Severity::Serious, Class::Staff)
                .contains("headteacher")
        );
        assert_eq!(
            r.for_alert(Severity::Serious, Class::Unknown),
            r.for_alert(Severity::Serious, Class::Pupil)
        );
        let edited: ResponsesSpec =
            toml::from_str("[staff]\nserious = \"call the head\"\n").unwrap();
        assert_eq!(
            edited.for_alert(Severity::Serious, Class::Visitor),
            "call the head"
        );
        assert_eq!(
            edited.for_alert(Severity::Illegal, Class::Staff),
            ILLEGAL_RESPONSE
        );
        assert_eq!(
            edited.for_alert(Severity::Inappropriate, Class::Staff),
            r.for_alert(Severity::Inappropriate, Class::Staff)
        );
    }
}
