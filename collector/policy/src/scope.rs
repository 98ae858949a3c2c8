//! Who, where and when a rule applies: user groups or classes, device classes, and school
//! times ("during lessons", "outside lessons", always). Empty lists mean everyone, everywhere.

use super::groups::{Device, DeviceClass, Groups, Person};
use super::located::SpecError;
use super::schedule::{Schedule, When};
use toml::Spanned;

#[derive(Debug, Clone, Default)]
pub struct Scope {
    users: Vec<String>,
    devices: Vec<DeviceClass>,
    /// Device classes the rule never applies to, when it names none itself.
    not_on: Vec<DeviceClass>,
    pub when: When,
}

/// What a rule is being judged for: the person, their device, and the time of the event.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub person: Person<'a>,
    pub device: Device<'a>,
    pub at_us: i64,
}

impl Scope {
    /// `rule` names the rule in errors; `users` must name groups or classes the policy knows.
    pub fn compile(
        rule: &str,
        users: &[Spanned<String>],
        devices: &[DeviceClass],
        when: When,
        groups: &Groups,
    ) -> Result<Self, SpecError> {
        for u in users {
            if !groups.knows(u.get_ref()) {
                return Err(SpecError::at(
                    u.span(),
                    format!(
                        "rule {rule:?}: users: {:?} is neither a [[groups.users]] group nor one of pupil, staff, visitor, system, unknown",
                        u.get_ref()
                    ),
                ));
            }
        }
        // "During lessons" is a rule about the school's systems: a visitor's (or anyone's) own
        // device in a lesson is not one, unless the rule names its devices itself. A device of
        // no known class is taken to be the school's (the agent is installed on those).
        let not_on = if when == When::Lessons && devices.is_empty() {
            vec![DeviceClass::Personal]
        } else {
            Vec::new()
        };
        Ok(Self {
            users: users.iter().map(|u| u.get_ref().clone()).collect(),
            devices: devices.to_vec(),
            not_on,
            when,
        })
    }

    pub fn applies(&self, s: &Situation<'_>, schedule: &Schedule) -> bool {
        let user_ok = self.users.is_empty()
            || self
                .users
                .iter()
                .any(|u| Some(u.as_str()) == s.person.group || u == s.person.class.as_str());
        let device_ok = (self.devices.is_empty()
            || s.device.class.is_some_and(|c| self.devices.contains(&c)))
            && !s.device.class.is_some_and(|c| self.not_on.contains(&c));
        user_ok && device_ok && self.when.applies(schedule, s.at_us)
    }
}
