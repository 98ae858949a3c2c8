use super::*;

const IMAGE: &str = r"\Device\HarddiskVolume3\Windows\System32\cmd.exe";
/// 2024-01-01T00:00:00Z as a FILETIME.
const JAN_2024: u64 = 133_485_408_000_000_000;
const JAN_2024_UNIX_US: i64 = 1_704_067_200_000_000;

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A payload as the provider writes it for `version`, with the field values the tests expect.
fn payload(version: u8) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(4242u32.to_le_bytes());
    if version >= 3 {
        v.extend(77u64.to_le_bytes());
    }
    v.extend(JAN_2024.to_le_bytes());
    v.extend(1000u32.to_le_bytes());
    if version >= 3 {
        v.extend(66u64.to_le_bytes());
    }
    v.extend(2u32.to_le_bytes());
    if version >= 1 {
        v.extend(0x10u32.to_le_bytes());
    }
    if version >= 3 {
        v.extend(3u32.to_le_bytes()); // TokenElevationTypeLimited
        v.extend(0u32.to_le_bytes());
        // S-1-16-8192 (medium integrity): revision 1, one sub-authority, authority 16.
        v.extend([1, 1, 0, 0, 0, 0, 0, 16]);
        v.extend(0x2000u32.to_le_bytes());
    }
    v.extend(utf16z(IMAGE));
    if version >= 2 {
        v.extend(0xdeadu32.to_le_bytes());
        v.extend(0xbeefu32.to_le_bytes());
        v.extend(utf16z("Pkg_1.0_x64__abc"));
        v.extend(utf16z("App"));
    }
    if version >= 4 {
        v.extend(0x1234u32.to_le_bytes());
    }
    v
}

#[test]
fn etw_layout_decodes_every_known_version() {
    for version in 0..=MAX_VERSION {
        let p = parse_process_start(version, &payload(version))
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(p.version, version);
        assert_eq!(
            (p.pid, p.parent_pid, p.session_id),
            (4242, 1000, 2),
            "v{version}"
        );
        assert_eq!(p.create_time, JAN_2024, "v{version}");
        assert_eq!(p.image_name, IMAGE, "v{version}");
        assert_eq!(p.flags, (version >= 1).then_some(0x10), "v{version}");
        let v2 = version >= 2;
        assert_eq!(p.image_checksum, v2.then_some(0xdead), "v{version}");
        assert_eq!(p.time_date_stamp, v2.then_some(0xbeef), "v{version}");
        assert_eq!(
            p.package_full_name.as_deref(),
            v2.then_some("Pkg_1.0_x64__abc")
        );
        assert_eq!(p.package_relative_app_id.as_deref(), v2.then_some("App"));
        let v3 = version >= 3;
        assert_eq!(p.sequence_number, v3.then_some(77), "v{version}");
        assert_eq!(p.parent_sequence_number, v3.then_some(66), "v{version}");
        assert_eq!(p.token_elevation_type, v3.then_some(3), "v{version}");
        assert_eq!(p.token_is_elevated, v3.then_some(false), "v{version}");
        assert_eq!(
            p.security_mitigations,
            (version >= 4).then_some(0x1234),
            "v{version}"
        );
    }
}

#[test]
fn etw_layout_ignores_bytes_after_the_known_fields() {
    let mut data = payload(1);
    data.extend([9, 9, 9]);
    assert_eq!(parse_process_start(1, &data).unwrap().image_name, IMAGE);
}

#[test]
fn etw_layout_refuses_unknown_versions() {
    assert_eq!(
        parse_process_start(5, &payload(4)),
        Err(LayoutError::UnknownVersion(5))
    );
}

#[test]
fn etw_layout_every_truncation_is_an_error_not_a_panic() {
    for version in 0..=MAX_VERSION {
        let full = payload(version);
        for len in 0..full.len() {
            let err = parse_process_start(version, &full[..len]);
            assert!(
                err.is_err(),
                "v{version}, {len} of {} bytes: {err:?}",
                full.len()
            );
        }
    }
}

#[test]
fn etw_layout_names_the_field_that_is_cut_short() {
    let data = payload(0);
    assert_eq!(
        parse_process_start(0, &data[..10]),
        Err(LayoutError::Truncated {
            version: 0,
            field: "CreateTime",
            offset: 4,
            needed: 8,
            len: 10,
        })
    );
    let msg = parse_process_start(0, &data[..10]).unwrap_err().to_string();
    assert!(
        msg.contains("CreateTime") && msg.contains("offset 4"),
        "{msg}"
    );
}

#[test]
fn etw_layout_string_without_terminator() {
    let mut data = payload(0);
    data.truncate(data.len() - 2); // the NUL of ImageName
    assert_eq!(
        parse_process_start(0, &data),
        Err(LayoutError::Unterminated {
            version: 0,
            field: "ImageName",
            offset: 20,
        })
    );
}

#[test]
fn etw_layout_string_of_odd_length() {
    let mut data = payload(0);
    data.truncate(data.len() - 3); // the NUL and half the last character
    assert_eq!(
        parse_process_start(0, &data),
        Err(LayoutError::OddLength {
            version: 0,
            field: "ImageName",
            offset: 20,
        })
    );
}

#[test]
fn etw_layout_odd_byte_after_a_terminated_string_is_ignored() {
    let mut data = payload(0);
    data.push(0x41);
    assert_eq!(parse_process_start(0, &data).unwrap().image_name, IMAGE);
}

#[test]
fn etw_layout_empty_and_invalid_utf16_strings() {
    let mut data = payload(0);
    data.truncate(20);
    data.extend([0, 0]);
    assert_eq!(parse_process_start(0, &data).unwrap().image_name, "");

    data.truncate(20);
    data.extend([0x00, 0xd8, 0x41, 0x00, 0, 0]); // lone high surrogate, then 'A'
    assert_eq!(
        parse_process_start(0, &data).unwrap().image_name,
        "\u{fffd}A"
    );
}

#[test]
fn etw_layout_sid_with_too_many_sub_authorities() {
    let mut data = payload(3);
    // ProcessID 4, seq 8, CreateTime 8, PPID 4, parent seq 8, session 4, flags 4,
    // elevation type 4, is elevated 4: the SID starts at 48.
    assert_eq!(data[48..50], [1, 1]);
    data[49] = 16;
    assert_eq!(
        parse_process_start(3, &data),
        Err(LayoutError::BadSid {
            version: 3,
            count: 16
        })
    );
}

#[test]
fn etw_layout_sid_longer_than_the_payload() {
    let mut data = payload(3);
    data.truncate(48);
    data.extend([1, 5, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]);
    assert_eq!(
        parse_process_start(3, &data),
        Err(LayoutError::Truncated {
            version: 3,
            field: "MandatoryLabel",
            offset: 48,
            needed: 28,
            len: 60,
        })
    );
}

#[test]
fn etw_filetime_to_unix_microseconds() {
    assert_eq!(filetime_to_unix_us(116_444_736_000_000_000), 0);
    assert_eq!(filetime_to_unix_us(JAN_2024), JAN_2024_UNIX_US);
    // Sub-microsecond ticks are dropped.
    assert_eq!(filetime_to_unix_us(JAN_2024 + 19), JAN_2024_UNIX_US + 1);
    assert_eq!(filetime_to_unix_us(0), -11_644_473_600_000_000);
    assert!(filetime_to_unix_us(u64::MAX) > 0);
    let p = parse_process_start(0, &payload(0)).unwrap();
    assert_eq!(p.create_time_unix_us(), JAN_2024_UNIX_US);
}

fn devices() -> Vec<(String, String)> {
    [
        (r"\Device\HarddiskVolume1", "D:"),
        (r"\Device\HarddiskVolume3", "C:"),
        (r"\SystemRoot", r"C:\Windows"),
    ]
    .into_iter()
    .map(|(d, l)| (d.to_owned(), l.to_owned()))
    .collect()
}

#[test]
fn etw_nt_paths_become_drive_letter_paths() {
    let d = devices();
    assert_eq!(nt_to_dos_path(IMAGE, &d), r"C:\Windows\System32\cmd.exe");
    assert_eq!(
        nt_to_dos_path(r"\device\harddiskvolume1\Tools\x.exe", &d),
        r"D:\Tools\x.exe"
    );
    assert_eq!(nt_to_dos_path(r"\Device\HarddiskVolume3", &d), "C:");
    assert_eq!(
        nt_to_dos_path(r"\SystemRoot\System32\smss.exe", &d),
        r"C:\Windows\System32\smss.exe"
    );
    assert_eq!(
        nt_to_dos_path(r"\??\C:\Windows\System32\conhost.exe", &d),
        r"C:\Windows\System32\conhost.exe"
    );
    assert_eq!(
        nt_to_dos_path(r"\\?\C:\Program Files\a.exe", &d),
        r"C:\Program Files\a.exe"
    );
}

#[test]
fn etw_nt_paths_match_whole_device_names_only() {
    let d = devices();
    assert_eq!(
        nt_to_dos_path(r"\Device\HarddiskVolume10\a.exe", &d),
        r"\Device\HarddiskVolume10\a.exe"
    );
    assert_eq!(
        nt_to_dos_path(r"\Device\HarddiskVolume1\a.exe", &d),
        r"D:\a.exe"
    );
}

#[test]
fn etw_network_and_unknown_paths() {
    let d = devices();
    assert_eq!(
        nt_to_dos_path(r"\Device\Mup\server\share\game.exe", &d),
        r"\\server\share\game.exe"
    );
    assert_eq!(
        nt_to_dos_path(r"\??\UNC\server\share\game.exe", &d),
        r"\\server\share\game.exe"
    );
    for unknown in [r"\Device\CdRom0\setup.exe", "", "cmd.exe", "\\", "é\\x"] {
        assert_eq!(nt_to_dos_path(unknown, &d), unknown);
    }
    assert_eq!(nt_to_dos_path(IMAGE, &[]), IMAGE);
}

#[test]
fn etw_nt_path_non_ascii_prefix_does_not_panic() {
    // A multi-byte character where a device name would end must not split a char.
    let d = vec![("\\Devicé".to_owned(), "X:".to_owned())];
    assert_eq!(nt_to_dos_path("\\Devic\u{e9}\\a", &d), r"X:\a");
    assert_eq!(
        nt_to_dos_path("\\Device\u{e9}", &devices()),
        "\\Device\u{e9}"
    );
    assert_eq!(nt_to_dos_path("\\Devi\u{e9}", &d), "\\Devi\u{e9}");
}
