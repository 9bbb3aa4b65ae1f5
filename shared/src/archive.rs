//! Function archives: validation of uploads (before anything is stored) and preparation of the
//! build context (after). Pure and synchronous; callers run it in `spawn_blocking`.
//!
//! An archive is a gzip'd tar with a `Dockerfile` at its root. Everything that could reach outside
//! the build context or exhaust the builder is refused with its own error: sizes are counted while
//! inflating, so a gzip bomb stops at the limit instead of after it has been inflated.

use std::{
    io::{self, Read, Write},
    path::Path,
};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    pub max_compressed_bytes: u64,
    pub max_uncompressed_bytes: u64,
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    /// Lambda's 50 MB zipped / 250 MB unzipped, and room for any real function's file count.
    fn default() -> Self {
        Self {
            max_compressed_bytes: 50 * 1024 * 1024,
            max_uncompressed_bytes: 250 * 1024 * 1024,
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: u64,
    pub uncompressed_bytes: u64,
    /// Hex SHA-256 of the archive as uploaded.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is not gzip-compressed (expected a .tar.gz)")]
    NotGzip,
    #[error("the archive is not a valid tar stream: {0}")]
    NotTar(String),
    #[error("the archive exceeds {limit} bytes compressed")]
    TooLarge { limit: u64 },
    #[error("the archive exceeds {limit} bytes uncompressed")]
    UncompressedTooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the entry {0:?} has an absolute path")]
    AbsolutePath(String),
    #[error("the entry {0:?} leaves the archive root through '..'")]
    ParentTraversal(String),
    #[error("the link {path:?} points to {target:?}, outside the archive root")]
    LinkEscapesRoot { path: String, target: String },
    #[error("the entry {path:?} is a {kind}; only files, directories and links are allowed")]
    UnsupportedEntryType { path: String, kind: String },
    #[error("the archive has no Dockerfile at its root")]
    MissingDockerfile,
    #[error("writing the build context failed: {0}")]
    Io(#[from] io::Error),
}

impl ArchiveError {
    /// Stable codes for the API's error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotGzip => "archive_not_gzip",
            Self::NotTar(_) => "archive_not_tar",
            Self::TooLarge { .. } => "archive_too_large",
            Self::UncompressedTooLarge { .. } => "archive_too_large_uncompressed",
            Self::TooManyEntries { .. } => "archive_too_many_entries",
            Self::AbsolutePath(_) | Self::ParentTraversal(_) => "archive_unsafe_path",
            Self::LinkEscapesRoot { .. } => "archive_link_escapes_root",
            Self::UnsupportedEntryType { .. } => "archive_unsupported_entry",
            Self::MissingDockerfile => "archive_missing_dockerfile",
            Self::Io(_) => "archive_io",
        }
    }
}

/// Counts inflated bytes and fails the read once `limit` is passed.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("uncompressed size limit reached"));
        }
        Ok(n)
    }
}

/// `a/./b/` → `a/b`; refuses absolute paths and any `..`.
fn normalise(raw: &[u8]) -> Result<String, ArchiveError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    if text.starts_with('/') {
        return Err(ArchiveError::AbsolutePath(text));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::ParentTraversal(text)),
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// Whether a symlink at `path` with `target` stays inside the root once resolved.
fn symlink_stays_inside(path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = path.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "fifo".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Checks one entry; returns its normalised path.
fn check_entry<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    let raw_path = entry.path_bytes();
    let path = normalise(&raw_path)?;
    let kind = entry.header().entry_type();
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            if !symlink_stays_inside(&path, &target) {
                return Err(ArchiveError::LinkEscapesRoot { path, target });
            }
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            if normalise(target.as_bytes()).is_err() {
                return Err(ArchiveError::LinkEscapesRoot { path, target });
            }
        }
        other => {
            return Err(ArchiveError::UnsupportedEntryType {
                path,
                kind: kind_name(other),
            });
        }
    }
    Ok(path)
}

fn tar_error(error: io::Error, capped_exceeded: bool, limits: &ArchiveLimits) -> ArchiveError {
    if capped_exceeded {
        ArchiveError::UncompressedTooLarge {
            limit: limits.max_uncompressed_bytes,
        }
    } else {
        ArchiveError::NotTar(error.to_string())
    }
}

pub fn validate_archive(
    bytes: &[u8],
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    if bytes.len() as u64 > limits.max_compressed_bytes {
        return Err(ArchiveError::TooLarge {
            limit: limits.max_compressed_bytes,
        });
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(ArchiveError::NotGzip);
    }
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(bytes),
        read: 0,
        limit: limits.max_uncompressed_bytes,
        exceeded: false,
    });
    let mut entries: u64 = 0;
    let mut has_dockerfile = false;
    let result: Result<(), ArchiveError> = (|| {
        for entry in archive
            .entries()
            .map_err(|e| ArchiveError::NotTar(e.to_string()))?
        {
            let mut entry = entry.map_err(|e| ArchiveError::NotTar(e.to_string()))?;
            entries += 1;
            if entries > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            let path = check_entry(&entry)?;
            if path == "Dockerfile" && entry.header().entry_type().is_file() {
                has_dockerfile = true;
            }
            // Inflate the content so the byte count (and the cap) covers it.
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| ArchiveError::NotTar(e.to_string()))?;
        }
        Ok(())
    })();
    let capped = archive.into_inner();
    match result {
        Err(ArchiveError::NotTar(message)) => {
            return Err(tar_error(
                io::Error::other(message),
                capped.exceeded,
                limits,
            ));
        }
        Err(other) => return Err(other),
        Ok(()) => {}
    }
    if entries == 0 {
        return Err(ArchiveError::NotTar("the archive holds no entries".into()));
    }
    if !has_dockerfile {
        return Err(ArchiveError::MissingDockerfile);
    }
    Ok(ArchiveSummary {
        entries,
        uncompressed_bytes: capped.read,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// A build context ready for BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedContext {
    /// Parser directives removed from the Dockerfile, e.g. `# syntax=docker/dockerfile:1`.
    pub stripped_directives: Vec<String>,
}

/// Removes `# syntax=` parser directives. Directives are only recognised in the leading run of
/// `# key=value` comment lines; the first other line (blank lines included) ends them, and a
/// later `# syntax=` is an ordinary comment.
pub fn strip_syntax_directives(dockerfile: &str) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(dockerfile.len());
    let mut stripped = Vec::new();
    let mut in_directives = true;
    for line in dockerfile.split_inclusive('\n') {
        if in_directives {
            let directive = line
                .trim()
                .strip_prefix('#')
                .and_then(|rest| rest.split_once('='))
                .map(|(key, _)| key.trim())
                .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphabetic()));
            match directive {
                Some(key) if key.eq_ignore_ascii_case("syntax") => {
                    stripped.push(line.trim().to_owned());
                    continue;
                }
                Some(_) => {}
                None => in_directives = false,
            }
        }
        kept.push_str(line);
    }
    (kept, stripped)
}

/// Re-packs a validated archive into an uncompressed tar at `dest`, with `# syntax=` directives
/// removed from the root Dockerfile (they make BuildKit pull a frontend image: impossible offline,
/// and not ours to choose).
pub fn prepare_build_context(
    archive: impl Read,
    dest: &Path,
) -> Result<PreparedContext, ArchiveError> {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut output = tar::Builder::new(io::BufWriter::new(std::fs::File::create(dest)?));
    let mut stripped_directives = Vec::new();
    for entry in input
        .entries()
        .map_err(|e| ArchiveError::NotTar(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| ArchiveError::NotTar(e.to_string()))?;
        let path = check_entry(&entry)?;
        if path.is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        match header.entry_type() {
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                output.append_link(&mut header, &path, target)?;
            }
            _ if path == "Dockerfile" => {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                let (kept, stripped) = strip_syntax_directives(&text);
                stripped_directives = stripped;
                header.set_size(kept.len() as u64);
                output.append_data(&mut header, &path, kept.as_bytes())?;
            }
            _ => output.append_data(&mut header, &path, &mut entry)?,
        }
    }
    output.into_inner()?.flush()?;
    Ok(PreparedContext {
        stripped_directives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(tar: Vec<u8>) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&tar).unwrap();
        encoder.finish().unwrap()
    }

    /// A tar with entries the `tar` crate's safe API refuses to write, header bytes set by hand.
    fn raw(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link, content) in entries {
            let mut header = tar::Header::new_ustar();
            let bytes = header.as_mut_bytes();
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(EntryType::new(*kind));
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            header.set_cksum();
            builder.append(&header, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn ok_entries() -> Vec<(&'static str, u8, &'static str, &'static [u8])> {
        vec![
            ("Dockerfile", b'0', "", b"FROM scratch\n"),
            ("app/main.sh", b'0', "", b"echo"),
        ]
    }

    fn check(entries: &[(&str, u8, &str, &[u8])]) -> Result<ArchiveSummary, ArchiveError> {
        validate_archive(&gz(raw(entries)), &ArchiveLimits::default())
    }

    fn code(entries: &[(&str, u8, &str, &[u8])]) -> &'static str {
        check(entries).unwrap_err().code()
    }

    #[test]
    fn a_plain_function_archive_is_accepted() {
        let mut entries = ok_entries();
        entries.push(("./app/", b'5', "", b""));
        entries.push(("app/link", b'2', "main.sh", b""));
        entries.push(("app/up", b'2', "../Dockerfile", b""));
        entries.push(("app/hard", b'1', "app/main.sh", b""));
        let summary = check(&entries).unwrap();
        assert_eq!(summary.entries, 6);
        assert_eq!(summary.sha256.len(), 64);
    }

    #[test]
    fn each_unsafe_entry_is_refused_with_its_code() {
        let with = |extra: (&'static str, u8, &'static str, &'static [u8])| {
            let mut entries = ok_entries();
            entries.push(extra);
            code(&entries)
        };
        assert_eq!(with(("/etc/passwd", b'0', "", b"x")), "archive_unsafe_path");
        assert_eq!(with(("a/../../x", b'0', "", b"x")), "archive_unsafe_path");
        assert_eq!(with(("..", b'5', "", b"")), "archive_unsafe_path");
        assert_eq!(
            with(("l", b'2', "/etc/shadow", b"")),
            "archive_link_escapes_root"
        );
        assert_eq!(
            with(("a/l", b'2', "../../x", b"")),
            "archive_link_escapes_root"
        );
        assert_eq!(with(("h", b'1', "../x", b"")), "archive_link_escapes_root");
        assert_eq!(with(("h", b'1', "/x", b"")), "archive_link_escapes_root");
        assert_eq!(with(("dev", b'3', "", b"")), "archive_unsupported_entry");
        assert_eq!(with(("blk", b'4', "", b"")), "archive_unsupported_entry");
        assert_eq!(with(("pipe", b'6', "", b"")), "archive_unsupported_entry");
    }

    #[test]
    fn a_dockerfile_is_required_at_the_root() {
        assert_eq!(
            code(&[("sub/Dockerfile", b'0', "", b"FROM scratch")]),
            "archive_missing_dockerfile"
        );
        assert_eq!(
            code(&[("Dockerfile", b'5', "", b"")]),
            "archive_missing_dockerfile"
        );
        assert!(check(&[("./Dockerfile", b'0', "", b"FROM scratch")]).is_ok());
    }

    #[test]
    fn non_gzip_and_non_tar_inputs_are_told_apart() {
        let limits = ArchiveLimits::default();
        assert_eq!(
            validate_archive(b"hello", &limits).unwrap_err().code(),
            "archive_not_gzip"
        );
        let not_tar = gz(b"this is text, not a tar stream".repeat(40));
        assert_eq!(
            validate_archive(&not_tar, &limits).unwrap_err().code(),
            "archive_not_tar"
        );
        let truncated = gz(vec![b'x'; 10]);
        assert_eq!(
            validate_archive(&truncated, &limits).unwrap_err().code(),
            "archive_not_tar"
        );
    }

    #[test]
    fn limits_apply_to_compressed_size_entries_and_inflated_size() {
        let archive = gz(raw(&ok_entries()));
        let tight = |c, u, e| ArchiveLimits {
            max_compressed_bytes: c,
            max_uncompressed_bytes: u,
            max_entries: e,
        };
        assert_eq!(
            validate_archive(&archive, &tight(10, 1 << 20, 100))
                .unwrap_err()
                .code(),
            "archive_too_large"
        );
        assert_eq!(
            validate_archive(&archive, &tight(1 << 20, 1 << 20, 1))
                .unwrap_err()
                .code(),
            "archive_too_many_entries"
        );
        assert_eq!(
            validate_archive(&archive, &tight(1 << 20, 600, 100))
                .unwrap_err()
                .code(),
            "archive_too_large_uncompressed"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros inside a tar entry compresses to well under 1 MiB.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        {
            let mut builder = tar::Builder::new(&mut encoder);
            let mut header = tar::Header::new_gnu();
            header.set_size(64 << 20);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "bomb", io::repeat(0).take(64 << 20))
                .unwrap();
            builder.finish().unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
        let limits = ArchiveLimits {
            max_uncompressed_bytes: 8 << 20,
            ..ArchiveLimits::default()
        };
        let started = std::time::Instant::now();
        let error = validate_archive(&bomb, &limits).unwrap_err();
        assert_eq!(error.code(), "archive_too_large_uncompressed");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "stopped early"
        );
    }

    #[test]
    fn only_leading_syntax_directives_are_stripped() {
        let (kept, stripped) = strip_syntax_directives(
            "# syntax=docker/dockerfile:1\n#escape=`\n# SYNTAX = x\nFROM scratch\n# syntax=later\n",
        );
        assert_eq!(kept, "#escape=`\nFROM scratch\n# syntax=later\n");
        assert_eq!(stripped, ["# syntax=docker/dockerfile:1", "# SYNTAX = x"]);
        let (kept, stripped) = strip_syntax_directives("\n# syntax=x\nFROM scratch\n");
        assert_eq!(kept, "\n# syntax=x\nFROM scratch\n");
        assert!(stripped.is_empty());
        let (kept, _) = strip_syntax_directives("# a comment\n# syntax=x\nFROM scratch");
        assert_eq!(kept, "# a comment\n# syntax=x\nFROM scratch");
    }

    #[test]
    fn the_build_context_keeps_everything_but_the_syntax_line() {
        let archive = gz(raw(&[
            (
                "Dockerfile",
                b'0',
                "",
                b"# syntax=docker/dockerfile:1\nFROM scratch\n",
            ),
            ("app/", b'5', "", b""),
            ("app/main.sh", b'0', "", b"echo hi"),
            ("app/link", b'2', "main.sh", b""),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("context.tar");
        let prepared = prepare_build_context(&archive[..], &dest).unwrap();
        assert_eq!(
            prepared.stripped_directives,
            ["# syntax=docker/dockerfile:1"]
        );
        let mut out = tar::Archive::new(std::fs::File::open(&dest).unwrap());
        let mut seen = Vec::new();
        for entry in out.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            seen.push((path, content));
        }
        assert_eq!(
            seen,
            [
                ("Dockerfile".to_owned(), "FROM scratch\n".to_owned()),
                ("app".to_owned(), String::new()),
                ("app/main.sh".to_owned(), "echo hi".to_owned()),
                ("app/link".to_owned(), String::new()),
            ]
        );
    }
}
