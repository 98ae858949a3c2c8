//! The payload of the `Microsoft-Windows-Kernel-Process` ProcessStart event, decoded by hand so
//! that no TDH schema lookup (a system call per event) is needed, and kernel image paths turned
//! into drive-letter paths. Pure code: compiled and unit-tested on every platform; the ETW
//! session itself is in `etw.rs`.
//!
//! Layouts per event version, from the provider manifest's templates `ProcessStartArgs`,
//! `ProcessStartArgs_V1` .. `_V4` as published in OTRF/OSSEM
//! (`data_dictionaries/windows/etw-providers/Microsoft-Windows-Kernel-Process/events/event-1*.md`)
//! and quoted in the manual parsers of other ETW consumers (e.g. the `ProcessStartArgs_V4`
//! template comments in open-source Rust and Go agents):
//!
//! | version | fields, in order |
//! |---|---|
//! | 0 | ProcessID u32, CreateTime FILETIME, ParentProcessID u32, SessionID u32, ImageName |
//! | 1 | v0 with Flags u32 before ImageName |
//! | 2 | v1, then ImageChecksum u32, TimeDateStamp u32, PackageFullName, PackageRelativeAppId |
//! | 3 | ProcessID u32, ProcessSequenceNumber u64, CreateTime, ParentProcessID u32, ParentProcessSequenceNumber u64, SessionID u32, Flags u32, ProcessTokenElevationType u32, ProcessTokenIsElevated u32, MandatoryLabel SID, then as v2 from ImageName on |
//! | 4 | v3, then SecurityMitigations u32 |
//!
//! Strings are NUL-terminated UTF-16LE (`win:UnicodeString`); a `win:SID` is the SID itself,
//! 8 bytes plus 4 per sub-authority. Numbers are little-endian and unaligned. Bytes after the
//! last known field are ignored, so a version that only appends fields still decodes; an
//! unknown version is refused rather than guessed at.

use thiserror::Error;

/// `Microsoft-Windows-Kernel-Process`.
pub const KERNEL_PROCESS_PROVIDER: u128 = 0x22fb2cd6_0e7b_422b_a0c7_2fad1fd0e716;
/// `WINEVENT_KEYWORD_PROCESS`: process start and stop only, not threads or image loads.
pub const KEYWORD_PROCESS: u64 = 0x10;
/// Event id of ProcessStart.
pub const PROCESS_START: u16 = 1;
/// The newest layout decoded here.
pub const MAX_VERSION: u8 = 4;

/// Windows' FILETIME epoch (1601-01-01) is this many microseconds before the Unix epoch.
const FILETIME_TO_UNIX_US: i64 = 11_644_473_600_000_000;

/// A SID has at most 15 sub-authorities (`SID_MAX_SUB_AUTHORITIES`).
const SID_MAX_SUB_AUTHORITIES: u8 = 15;

/// One decoded ProcessStart. Fields a version does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStart {
    pub version: u8,
    pub pid: u32,
    /// FILETIME: 100 ns units since 1601-01-01 UTC ([`filetime_to_unix_us`]).
    pub create_time: u64,
    pub parent_pid: u32,
    pub session_id: u32,
    /// Kernel path of the image, e.g. `\Device\HarddiskVolume3\Windows\System32\cmd.exe`
    /// ([`nt_to_dos_path`]).
    pub image_name: String,
    pub flags: Option<u32>,
    pub sequence_number: Option<u64>,
    pub parent_sequence_number: Option<u64>,
    pub token_elevation_type: Option<u32>,
    pub token_is_elevated: Option<bool>,
    pub image_checksum: Option<u32>,
    pub time_date_stamp: Option<u32>,
    /// Empty for programs that are not packaged (Store) apps.
    pub package_full_name: Option<String>,
    pub package_relative_app_id: Option<String>,
    pub security_mitigations: Option<u32>,
}

impl ProcessStart {
    /// When the process was created, in microseconds since the Unix epoch.
    pub fn create_time_unix_us(&self) -> i64 {
        filetime_to_unix_us(self.create_time)
    }
}

/// Why a ProcessStart payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("ProcessStart version {0} has no known layout (0 to {MAX_VERSION} are decoded)")]
    UnknownVersion(u8),
    #[error(
        "ProcessStart v{version}: {field} needs {needed} bytes at offset {offset}, but the \
         payload has {len}"
    )]
    Truncated {
        version: u8,
        field: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("ProcessStart v{version}: {field} at offset {offset} has no NUL terminator")]
    Unterminated {
        version: u8,
        field: &'static str,
        offset: usize,
    },
    #[error(
        "ProcessStart v{version}: {field} at offset {offset} ends in half a UTF-16 code unit \
         (odd number of bytes) without a NUL terminator"
    )]
    OddLength {
        version: u8,
        field: &'static str,
        offset: usize,
    },
    #[error(
        "ProcessStart v{version}: MandatoryLabel SID claims {count} sub-authorities (at most 15)"
    )]
    BadSid { version: u8, count: u8 },
}

/// Decodes the UserData of a ProcessStart event of the given version.
pub fn parse_process_start(version: u8, data: &[u8]) -> Result<ProcessStart, LayoutError> {
    if version > MAX_VERSION {
        return Err(LayoutError::UnknownVersion(version));
    }
    let mut r = Reader {
        data,
        offset: 0,
        version,
    };
    let v3 = version >= 3;
    let pid = r.u32("ProcessID")?;
    let sequence_number = v3.then(|| r.u64("ProcessSequenceNumber")).transpose()?;
    let create_time = r.u64("CreateTime")?;
    let parent_pid = r.u32("ParentProcessID")?;
    let parent_sequence_number = v3
        .then(|| r.u64("ParentProcessSequenceNumber"))
        .transpose()?;
    let session_id = r.u32("SessionID")?;
    let flags = (version >= 1).then(|| r.u32("Flags")).transpose()?;
    let token_elevation_type = v3.then(|| r.u32("ProcessTokenElevationType")).transpose()?;
    let token_is_elevated = v3
        .then(|| r.u32("ProcessTokenIsElevated").map(|e| e != 0))
        .transpose()?;
    if v3 {
        r.skip_sid()?;
    }
    let image_name = r.utf16_z("ImageName")?;
    let v2 = version >= 2;
    let image_checksum = v2.then(|| r.u32("ImageChecksum")).transpose()?;
    let time_date_stamp = v2.then(|| r.u32("TimeDateStamp")).transpose()?;
    let package_full_name = v2.then(|| r.utf16_z("PackageFullName")).transpose()?;
    let package_relative_app_id = v2.then(|| r.utf16_z("PackageRelativeAppId")).transpose()?;
    let security_mitigations = (version >= 4)
        .then(|| r.u32("SecurityMitigations"))
        .transpose()?;
    Ok(ProcessStart {
        version,
        pid,
        create_time,
        parent_pid,
        session_id,
        image_name,
        flags,
        sequence_number,
        parent_sequence_number,
        token_elevation_type,
        token_is_elevated,
        image_checksum,
        time_date_stamp,
        package_full_name,
        package_relative_app_id,
        security_mitigations,
    })
}

/// FILETIME (100 ns units since 1601) to microseconds since the Unix epoch; earlier times are
/// negative.
pub fn filetime_to_unix_us(filetime: u64) -> i64 {
    // u64::MAX / 10 is below i64::MAX, so the division always fits.
    (filetime / 10) as i64 - FILETIME_TO_UNIX_US
}

/// A bounds-checked cursor over the payload.
struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
    version: u8,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], LayoutError> {
        let bytes = self
            .data
            .get(self.offset..)
            .and_then(|rest| rest.first_chunk::<N>())
            .ok_or(LayoutError::Truncated {
                version: self.version,
                field,
                offset: self.offset,
                needed: N,
                len: self.data.len(),
            })?;
        self.offset += N;
        Ok(*bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, LayoutError> {
        self.take(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, LayoutError> {
        self.take(field).map(u64::from_le_bytes)
    }

    fn skip_sid(&mut self) -> Result<(), LayoutError> {
        const FIELD: &str = "MandatoryLabel";
        let [_revision, count] = self.take::<2>(FIELD)?;
        if count > SID_MAX_SUB_AUTHORITIES {
            return Err(LayoutError::BadSid {
                version: self.version,
                count,
            });
        }
        // Identifier authority (6 bytes), then the sub-authorities.
        let rest = 6 + 4 * usize::from(count);
        if self.data.len().saturating_sub(self.offset) < rest {
            return Err(LayoutError::Truncated {
                version: self.version,
                field: FIELD,
                offset: self.offset - 2,
                needed: 2 + rest,
                len: self.data.len(),
            });
        }
        self.offset += rest;
        Ok(())
    }

    fn utf16_z(&mut self, field: &'static str) -> Result<String, LayoutError> {
        let start = self.offset;
        let rest = self.data.get(start..).unwrap_or_default();
        let units = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        let Some(len) = units.clone().position(|u| u == 0) else {
            return Err(if rest.len() % 2 == 1 {
                LayoutError::OddLength {
                    version: self.version,
                    field,
                    offset: start,
                }
            } else {
                LayoutError::Unterminated {
                    version: self.version,
                    field,
                    offset: start,
                }
            });
        };
        self.offset += 2 * (len + 1);
        Ok(char::decode_utf16(units.take(len))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect())
    }
}

/// Turns a kernel (NT namespace) path into the path a user would type.
///
/// `devices` maps device names to drive letters, as `QueryDosDeviceW` reports them
/// (`("\Device\HarddiskVolume3", "C:")`); an entry for `\SystemRoot` (to `%SystemRoot%`,
/// e.g. `C:\Windows`) resolves paths of boot-time programs. Device names compare without
/// regard to case, and only whole path components match (`HarddiskVolume1` is not a prefix of
/// `HarddiskVolume10`). `\??\` and `\\?\` prefixes are dropped, `\??\UNC\` and
/// `\Device\Mup\` become `\\`. A path on an unknown device is returned unchanged.
pub fn nt_to_dos_path(nt: &str, devices: &[(String, String)]) -> String {
    for (device, dos) in devices {
        if let Some(rest) = strip_component_prefix(nt, device) {
            return format!("{}{rest}", dos.trim_end_matches('\\'));
        }
    }
    for unc in [r"\??\UNC\", r"\\?\UNC\", r"\Device\Mup\"] {
        if let Some(rest) = strip_prefix_ignore_case(nt, unc) {
            return format!(r"\\{rest}");
        }
    }
    for prefix in [r"\??\", r"\\?\", r"\\.\"] {
        if let Some(rest) = nt.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    nt.to_owned()
}

/// `path` without `prefix` (case-insensitive) when `prefix` is followed by `\` or the end.
fn strip_component_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('\\');
    if prefix.is_empty() {
        return None;
    }
    let rest = strip_prefix_ignore_case(path, prefix)?;
    (rest.is_empty() || rest.starts_with('\\')).then_some(rest)
}

fn strip_prefix_ignore_case<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let head = path.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    path.get(prefix.len()..)
}

#[cfg(test)]
mod tests;
