//! A deterministic POSIX ustar writer: the bytes depend only on the entries given, never on the
//! host (no owner names, no device numbers, no access times, no file-system order).
//!
//! Only what images need: directories and regular files, names up to 100 bytes (longer names
//! would need the `prefix` field or PAX headers; the layouts written here never have them, so
//! a longer name is refused rather than silently split).

use thiserror::Error;

const BLOCK: usize = 512;
/// `name` field width of a ustar header.
const NAME_LEN: usize = 100;
/// Largest size the 11 octal digits of the `size` field hold (8 GiB - 1).
const MAX_SIZE: u64 = 0o77_777_777_777;

/// Why an entry cannot be written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TarError {
    #[error("path {0:?} is longer than {NAME_LEN} bytes")]
    NameTooLong(String),
    #[error("path {0:?} is empty, absolute, or has `.`/`..`/empty segments")]
    BadPath(String),
    #[error("entry {0:?} is larger than 8 GiB")]
    TooLarge(String),
    #[error("entry {0:?} appears twice")]
    Duplicate(String),
}

/// One entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory (its path is written with a trailing `/`).
    Dir { path: String, mode: u32 },
    /// A regular file.
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
}

impl Entry {
    /// The path without a trailing slash, as given.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } => path,
        }
    }
}

/// Owner and time stamped on every entry.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Writes `entries` as one archive, sorted by path so the caller's order does not matter.
pub fn archive(mut entries: Vec<Entry>, stamp: Stamp) -> Result<Vec<u8>, TarError> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for pair in entries.windows(2) {
        if pair[0].path() == pair[1].path() {
            return Err(TarError::Duplicate(pair[0].path().to_owned()));
        }
    }
    let mut out = Vec::new();
    for entry in &entries {
        validate_path(entry.path())?;
        match entry {
            Entry::Dir { path, mode } => {
                out.extend_from_slice(&header(&format!("{path}/"), *mode, 0, b'5', stamp)?);
            }
            Entry::File { path, mode, data } => {
                let size =
                    u64::try_from(data.len()).map_err(|_| TarError::TooLarge(path.clone()))?;
                if size > MAX_SIZE {
                    return Err(TarError::TooLarge(path.clone()));
                }
                out.extend_from_slice(&header(path, *mode, size, b'0', stamp)?);
                out.extend_from_slice(data);
                out.resize(out.len().next_multiple_of(BLOCK), 0);
            }
        }
    }
    // End of archive: two zero blocks.
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

fn validate_path(path: &str) -> Result<(), TarError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(TarError::BadPath(path.to_owned()));
    }
    Ok(())
}

fn header(
    name: &str,
    mode: u32,
    size: u64,
    kind: u8,
    stamp: Stamp,
) -> Result<[u8; BLOCK], TarError> {
    if name.len() > NAME_LEN {
        return Err(TarError::NameTooLong(name.to_owned()));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], u64::from(stamp.uid));
    octal(&mut h[116..124], u64::from(stamp.gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], stamp.mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    Ok(h)
}

/// Zero-padded octal filling all but the last byte of `field`, which stays NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let bytes = text.as_bytes();
    // A value too wide for the field keeps its low digits; callers bound every value first.
    let start = bytes.len().saturating_sub(digits);
    field[..digits].copy_from_slice(&bytes[start..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        mtime: 1_700_000_000,
        uid: 0,
        gid: 0,
    };

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry::File {
            path: path.into(),
            mode: 0o644,
            data: data.to_vec(),
        }
    }

    #[test]
    fn order_of_entries_does_not_change_the_bytes() {
        let a = vec![
            file("b", b"2"),
            Entry::Dir {
                path: "a".into(),
                mode: 0o755,
            },
            file("a/x", b"1"),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(
            archive(a, STAMP).expect("valid test input"),
            archive(b, STAMP).expect("valid test input")
        );
    }

    #[test]
    fn header_fields_are_exact() {
        let bytes = archive(vec![file("hello.txt", b"hi\n")], STAMP).expect("valid test input");
        // header + one data block + two end blocks
        assert_eq!(bytes.len(), 4 * BLOCK);
        assert_eq!(&bytes[..9], b"hello.txt");
        assert_eq!(&bytes[100..108], b"0000644\0");
        assert_eq!(&bytes[124..136], b"00000000003\0");
        assert_eq!(
            &bytes[136..148],
            format!("{:011o}\0", STAMP.mtime).as_bytes()
        );
        assert_eq!(bytes[156], b'0');
        assert_eq!(&bytes[257..265], b"ustar\x0000");
        let mut copy = bytes[..BLOCK].to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&bytes[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(&bytes[BLOCK..BLOCK + 3], b"hi\n");
        assert!(bytes[BLOCK + 3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn directories_get_a_trailing_slash_and_no_data() {
        let bytes = archive(
            vec![Entry::Dir {
                path: "etc".into(),
                mode: 0o755,
            }],
            STAMP,
        )
        .expect("valid test input");
        assert_eq!(&bytes[..4], b"etc/");
        assert_eq!(bytes[156], b'5');
        assert_eq!(bytes.len(), 3 * BLOCK);
    }

    #[test]
    fn bad_names_are_refused() {
        for path in ["", "/etc", "a//b", "a/./b", "../x", "a/"] {
            assert_eq!(
                archive(vec![file(path, b"")], STAMP),
                Err(TarError::BadPath(path.into())),
                "{path:?}"
            );
        }
        let long = "x".repeat(101);
        assert_eq!(
            archive(vec![file(&long, b"")], STAMP),
            Err(TarError::NameTooLong(long.clone()))
        );
        assert_eq!(
            archive(vec![file("a", b"1"), file("a", b"2")], STAMP),
            Err(TarError::Duplicate("a".into()))
        );
    }
}
