//! Where each browser keeps its profiles on Windows, under a user's home. Pure functions on path
//! strings, tested on any platform.

use super::Browser;
use crate::platform::windows::join;
use crate::platform::windows::profiles::{local_app_data, roaming_app_data};

/// The browsers looked for on Windows, in reporting order.
pub const BROWSERS: [Browser; 5] = [
    Browser::Chrome,
    Browser::Edge,
    Browser::Brave,
    Browser::Chromium,
    Browser::Firefox,
];

/// The folder holding `browser`'s profiles for the user whose home is `home`
/// (`C:\Users\<user>`).
pub fn profiles_root(browser: Browser, home: &str) -> String {
    match browser {
        Browser::Chrome => join(&local_app_data(home), &["Google", "Chrome", "User Data"]),
        Browser::Edge => join(&local_app_data(home), &["Microsoft", "Edge", "User Data"]),
        Browser::Brave => join(
            &local_app_data(home),
            &["BraveSoftware", "Brave-Browser", "User Data"],
        ),
        Browser::Chromium => join(&local_app_data(home), &["Chromium", "User Data"]),
        Browser::Firefox => join(&roaming_app_data(home), &["Mozilla", "Firefox", "Profiles"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_roots() {
        let home = r"C:\Users\ada";
        assert_eq!(
            profiles_root(Browser::Chrome, home),
            r"C:\Users\ada\AppData\Local\Google\Chrome\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Edge, home),
            r"C:\Users\ada\AppData\Local\Microsoft\Edge\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Brave, home),
            r"C:\Users\ada\AppData\Local\BraveSoftware\Brave-Browser\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Chromium, home),
            r"C:\Users\ada\AppData\Local\Chromium\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Firefox, home),
            r"C:\Users\ada\AppData\Roaming\Mozilla\Firefox\Profiles"
        );
    }
}
