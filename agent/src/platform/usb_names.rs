//! What USB devices are called in events, on every platform: interface classes by name, and
//! device-supplied strings made safe to keep.
//!
//! Device strings (manufacturer, product, serial) come from the device itself and are
//! untrusted: any device can claim any name.

/// Longest device string kept. USB string descriptors hold at most 126 UTF-16 units; anything
/// longer did not come from a descriptor.
pub const MAX_STRING_CHARS: usize = 256;

pub const CLASS_HID: u8 = 0x03;
pub const CLASS_MASS_STORAGE: u8 = 0x08;

/// The name the contract uses for an interface class.
pub fn class_name(class: u8) -> String {
    match class {
        0x01 => "audio",
        0x02 => "comm",
        0x03 => "hid",
        0x06 => "still-image",
        0x07 => "printer",
        0x08 => "mass-storage",
        0x09 => "hub",
        0x0a => "cdc-data",
        0x0b => "smart-card",
        0x0e => "video",
        0xe0 => "wireless",
        0xff => "vendor-specific",
        other => return format!("0x{other:02x}"),
    }
    .to_owned()
}

/// A HID interface with the keyboard protocol (1): what keystroke-injection devices declare so
/// that a BIOS, and every OS, accepts their typing.
pub fn is_keyboard(class: u8, protocol: u8) -> bool {
    class == CLASS_HID && protocol == 1
}

/// A device-supplied string made safe to store and display: control characters (newlines,
/// escape sequences, NULs) and the invisible bidirectional/zero-width formatting characters that
/// can make one name display as another removed, at most [`MAX_STRING_CHARS`] characters.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(MAX_STRING_CHARS)
        .collect()
}

/// Zero-width characters, bidi embeddings/overrides/isolates, and the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_named() {
        assert_eq!(class_name(8), "mass-storage");
        assert_eq!(class_name(0xff), "vendor-specific");
        assert_eq!(class_name(0x0d), "0x0d");
    }

    #[test]
    fn keyboards_are_hid_protocol_one() {
        assert!(is_keyboard(3, 1));
        assert!(!is_keyboard(3, 2)); // a mouse
        assert!(!is_keyboard(8, 1));
    }

    #[test]
    fn device_strings_lose_controls_and_invisible_characters() {
        assert_eq!(
            sanitize("Kingston\u{202E}gpj.exe\r\n\u{0}"),
            "Kingstongpj.exe"
        );
        assert_eq!(
            sanitize(&"x".repeat(1000)).chars().count(),
            MAX_STRING_CHARS
        );
    }
}
