//! Function archives: validation of uploads (before anything is stored) and preparation of the
//! build context (after). Pure and synchronous; callers run it in `spawn_blocking`.
//!
//! An archive is a gzip'd tar with a `Dockerfile` at its root. Everything that could reach outside
//! the build context or exhaust the builder is refused with its own error: sizes are counted while
//! inflating, so a gzip bomb stops one byte past the limit instead of after it has been inflated.
//! Both entry points run the same walk, so the context handed to BuildKit is only ever written
//! from entries that passed every rule.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{self, Read, Write},
    path::Path,
};

use flate2::read::GzDecoder;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::dockerignore::DockerIgnore;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: &[u8] = &[0xef, 0xbb, 0xbf];
/// Linux gives up after this many symlinks in one lookup (MAXSYMLINKS); so do we.
const MAX_LINK_HOPS: usize = 40;

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

impl ArchiveLimits {
    /// For archives already validated at upload, possibly under limits configured differently.
    fn unlimited() -> Self {
        Self {
            max_compressed_bytes: u64::MAX,
            max_uncompressed_bytes: u64::MAX,
            max_entries: u64::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Tar entries, PAX global headers included; GNU/PAX per-entry extension headers are not.
    pub entries: u64,
    /// Bytes inflated: the whole tar stream, padding and end-of-archive blocks included.
    pub uncompressed_bytes: u64,
    /// Hex SHA-256 of the archive as uploaded.
    pub sha256: String,
    /// The root Dockerfile as BuildKit will read it (the last such entry wins on extraction),
    /// for the build rules that look inside it.
    pub dockerfile: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is not gzip-compressed (expected a .tar.gz)")]
    NotGzip,
    #[error("the archive is not a valid tar.gz: {0}")]
    NotTar(String),
    #[error("the archive exceeds {limit} bytes compressed")]
    TooLarge { limit: u64 },
    #[error("the archive exceeds {limit} bytes uncompressed")]
    UncompressedTooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the entry {0:?} has an absolute path")]
    AbsolutePath(String),
    #[error("the entry {0:?} has a '..' component")]
    ParentTraversal(String),
    #[error("a {kind} entry names the archive root itself; only a directory may")]
    RootEntry { kind: String },
    #[error("the entry {path:?} lies beneath the symlink {link:?}")]
    BeneathSymlink { path: String, link: String },
    #[error("the link {path:?} points to {target:?}, which does not resolve inside the archive")]
    LinkEscapesRoot { path: String, target: String },
    #[error("the entry {path:?} is a {kind}; only files, directories and links are allowed")]
    UnsupportedEntryType { path: String, kind: String },
    #[error("the archive has no Dockerfile (a regular file) at its root")]
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
            Self::AbsolutePath(_)
            | Self::ParentTraversal(_)
            | Self::RootEntry { .. }
            | Self::BeneathSymlink { .. } => "archive_unsafe_path",
            Self::LinkEscapesRoot { .. } => "archive_link_escapes_root",
            Self::UnsupportedEntryType { .. } => "archive_unsupported_entry",
            Self::MissingDockerfile => "archive_missing_dockerfile",
            Self::Io(_) => "archive_io",
        }
    }
}

fn not_tar(error: io::Error) -> ArchiveError {
    ArchiveError::NotTar(error.to_string())
}

/// Why the inflating reader stopped; checked after the walk because the tar crate and
/// `io::copy` hand its errors on as plain `io::Error`s.
#[derive(Debug)]
enum Fault {
    Limit,
    Corrupt(String),
}

/// Inflates, counting, and refuses to produce more than one byte past `limit`.
struct Inflate<R> {
    inner: GzDecoder<R>,
    inflated: u64,
    limit: u64,
    fault: Option<Fault>,
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fault.is_some() {
            return Err(io::Error::other("the archive stream already failed"));
        }
        // Never ask the decoder for more than the limit leaves room for: the bomb's remainder is
        // then never inflated, whatever buffer sizes the tar crate uses.
        let room = self.limit.saturating_sub(self.inflated).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(n) => {
                self.inflated += n as u64;
                if self.inflated > self.limit {
                    self.fault = Some(Fault::Limit);
                    return Err(io::Error::other("uncompressed size limit reached"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.fault = Some(Fault::Corrupt(e.to_string()));
                Err(e)
            }
        }
    }
}

/// An entry that passed the per-entry rules.
struct Checked {
    /// Normalised: relative, `/`-separated, no `.` or empty components.
    path: String,
    kind: EntryType,
    /// Symlinks: the target as written. Hard links: the normalised path of the linked entry.
    link: Option<String>,
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

fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "fifo".into(),
        EntryType::GNUSparse => "sparse file".into(),
        other => match other.as_byte() {
            b'V' => "volume label".into(),
            b'D' => "GNU dump directory".into(),
            b'M' => "multi-volume continuation".into(),
            byte if byte.is_ascii_graphic() => format!("entry of type '{}'", byte as char),
            byte => format!("entry of type {byte:#04x}"),
        },
    }
}

/// What the walk has seen: enough to check the rules that span entries.
#[derive(Default)]
struct Tree {
    entries: u64,
    /// Every entry's path, in archive order.
    paths: Vec<String>,
    /// Non-directory entries so far: the only valid hard-link targets.
    linkable: HashSet<String>,
    /// Symlink path → target, kept even if a later entry replaces it (extractors differ there).
    symlinks: HashMap<String, String>,
    /// Whether the last entry named `Dockerfile` is a regular file: it is the one extracted.
    dockerfile: bool,
}

impl Tree {
    /// Applies the per-entry rules; `None` for entries with nothing to extract.
    fn admit<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        limits: &ArchiveLimits,
    ) -> Result<Option<Checked>, ArchiveError> {
        self.entries += 1;
        if self.entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        // `git archive` writes one (holding the commit id); it describes no file.
        if kind == EntryType::XGlobalHeader {
            return Ok(None);
        }
        // The tar crate has already applied GNU long names and PAX `path`: this is the final path.
        let path = normalise(&entry.path_bytes())?;
        let link_name = || {
            entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default()
        };
        let (kind, link) = match kind {
            EntryType::Regular | EntryType::Continuous => (EntryType::Regular, None),
            EntryType::Directory => (EntryType::Directory, None),
            EntryType::Symlink => {
                let target = link_name();
                // Resolved against the whole tree at the end; absolute targets fail right away.
                if target.is_empty() || target.starts_with('/') {
                    return Err(ArchiveError::LinkEscapesRoot { path, target });
                }
                (EntryType::Symlink, Some(target))
            }
            EntryType::Link => {
                let target = link_name();
                match normalise(target.as_bytes()) {
                    Ok(linked) if self.linkable.contains(&linked) => {
                        (EntryType::Link, Some(linked))
                    }
                    _ => return Err(ArchiveError::LinkEscapesRoot { path, target }),
                }
            }
            other => {
                return Err(ArchiveError::UnsupportedEntryType {
                    path,
                    kind: kind_name(other),
                });
            }
        };
        if path.is_empty() {
            if kind == EntryType::Directory {
                return Ok(None);
            }
            return Err(ArchiveError::RootEntry {
                kind: kind_name_of_allowed(kind),
            });
        }
        if path == "Dockerfile" {
            self.dockerfile = kind == EntryType::Regular;
        }
        if kind != EntryType::Directory {
            self.linkable.insert(path.clone());
        }
        if let (EntryType::Symlink, Some(target)) = (kind, &link) {
            self.symlinks.insert(path.clone(), target.clone());
        }
        self.paths.push(path.clone());
        Ok(Some(Checked { path, kind, link }))
    }

    /// The rules that need the whole archive: symlinks can point at symlinks declared later.
    fn finish(self) -> Result<Self, ArchiveError> {
        if self.entries == 0 {
            return Err(ArchiveError::NotTar("the archive holds no entries".into()));
        }
        // Writing through a symlinked directory is how extraction escapes; real archivers never
        // store entries beneath a symlink, so refusing them costs nothing.
        for path in &self.paths {
            for (at, _) in path.match_indices('/') {
                let parent = &path[..at];
                if self.symlinks.contains_key(parent) {
                    return Err(ArchiveError::BeneathSymlink {
                        path: path.clone(),
                        link: parent.to_owned(),
                    });
                }
            }
        }
        for path in &self.paths {
            if let Some(target) = self.symlinks.get(path)
                && !resolves_inside(&self.symlinks, path, target)
            {
                return Err(ArchiveError::LinkEscapesRoot {
                    path: path.clone(),
                    target: target.clone(),
                });
            }
        }
        if !self.dockerfile {
            return Err(ArchiveError::MissingDockerfile);
        }
        Ok(self)
    }
}

fn kind_name_of_allowed(kind: EntryType) -> String {
    match kind {
        EntryType::Symlink => "symlink".into(),
        EntryType::Link => "hard link".into(),
        _ => "file".into(),
    }
}

/// Walks `link`'s target from the root the way the kernel would, following the archive's other
/// symlinks: false if it climbs above the root, hits an absolute target or loops.
fn resolves_inside(symlinks: &HashMap<String, String>, link: &str, target: &str) -> bool {
    let parent = link.rsplit_once('/').map_or("", |(parent, _)| parent);
    let mut pending: VecDeque<String> = parent
        .split('/')
        .chain(target.split('/'))
        .map(str::to_owned)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                if resolved.pop().is_none() {
                    return false;
                }
                continue;
            }
            _ => resolved.push(part),
        }
        if let Some(next) = symlinks.get(&resolved.join("/")) {
            hops += 1;
            if hops > MAX_LINK_HOPS || next.starts_with('/') {
                return false;
            }
            resolved.pop();
            for part in next.split('/').rev() {
                pending.push_front(part.to_owned());
            }
        }
    }
    true
}

/// Streams the archive through every rule, handing each admitted entry to `each`; returns the
/// outcome and the number of bytes inflated, successful or not.
fn walk<R: Read>(
    input: R,
    limits: &ArchiveLimits,
    mut each: impl FnMut(&Checked, &mut tar::Entry<'_, Inflate<R>>) -> Result<(), ArchiveError>,
) -> (Result<Tree, ArchiveError>, u64) {
    let mut archive = tar::Archive::new(Inflate {
        inner: GzDecoder::new(input),
        inflated: 0,
        limit: limits.max_uncompressed_bytes,
        fault: None,
    });
    let mut tree = Tree::default();
    let outcome = (|| -> Result<(), ArchiveError> {
        for entry in archive.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            if let Some(checked) = tree.admit(&entry, limits)? {
                each(&checked, &mut entry)?;
            }
        }
        Ok(())
    })();
    let mut stream = archive.into_inner();
    // The tar ends at its first zero block; inflating the rest checks the gzip trailer (CRC and
    // length), so a truncated or corrupted upload is refused rather than half-accepted.
    let outcome = outcome.and_then(|()| {
        io::copy(&mut stream, &mut io::sink())
            .map(drop)
            .map_err(not_tar)
    });
    let result = match (outcome, stream.fault) {
        (_, Some(Fault::Limit)) => Err(ArchiveError::UncompressedTooLarge {
            limit: limits.max_uncompressed_bytes,
        }),
        (_, Some(Fault::Corrupt(message))) => Err(ArchiveError::NotTar(format!(
            "corrupt or truncated gzip stream: {message}"
        ))),
        (Err(error), None) => Err(error),
        (Ok(()), None) => tree.finish(),
    };
    (result, stream.inflated)
}

/// Hashes what is read through it, so an archive read once from disk is also its own digest.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

/// Validation plus the number of bytes inflated before it stopped (for tests and figures).
/// `input` is read once, front to back: an upload spooled to disk is never held in memory.
fn validate_counting(
    input: impl Read,
    compressed_bytes: u64,
    limits: &ArchiveLimits,
) -> (Result<ArchiveSummary, ArchiveError>, Option<u64>) {
    if compressed_bytes > limits.max_compressed_bytes {
        let error = ArchiveError::TooLarge {
            limit: limits.max_compressed_bytes,
        };
        return (Err(error), None);
    }
    let mut input = Hashing {
        inner: input,
        hasher: Sha256::new(),
    };
    let mut magic = [0u8; 2];
    if input.read_exact(&mut magic).is_err() || magic != GZIP_MAGIC {
        return (Err(ArchiveError::NotGzip), None);
    }
    let mut dockerfile = Vec::new();
    let (result, inflated) = walk(
        io::Cursor::new(magic).chain(&mut input),
        limits,
        |checked, entry| {
            let copied = if checked.path == "Dockerfile" {
                dockerfile.clear();
                io::copy(entry, &mut dockerfile).map_err(not_tar)?
            } else {
                io::copy(entry, &mut io::sink()).map_err(not_tar)?
            };
            // A tar cut inside an entry's data reads as a short entry, not as an error.
            if copied != entry.size() {
                return Err(ArchiveError::NotTar(format!(
                    "the entry {:?} is truncated",
                    checked.path
                )));
            }
            Ok(())
        },
    );
    let summary = result.and_then(|tree| {
        // The digest covers every byte stored, including any after the gzip member.
        io::copy(&mut input, &mut io::sink()).map_err(not_tar)?;
        Ok(ArchiveSummary {
            entries: tree.entries,
            uncompressed_bytes: inflated,
            sha256: hex::encode(input.hasher.finalize()),
            dockerfile,
        })
    });
    (summary, Some(inflated))
}

/// Checks an uploaded archive against `limits` and every path and entry-type rule.
pub fn validate_archive(
    bytes: &[u8],
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    validate_counting(bytes, bytes.len() as u64, limits).0
}

/// [`validate_archive`] for an upload of `length` bytes on disk, read once, never loaded whole.
pub fn validate_archive_file(
    file: &std::fs::File,
    length: u64,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    validate_counting(io::BufReader::with_capacity(64 << 10, file), length, limits).0
}

/// A build context ready for BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedContext {
    /// Parser directives removed from the Dockerfile, e.g. `# syntax=docker/dockerfile:1`.
    pub stripped_directives: Vec<String>,
    /// Entries the archive's `.dockerignore` left out of the context.
    pub left_out: usize,
}

/// The directive key of `line` if it is a `<comment>key=value` parser directive, following
/// BuildKit's parser: whitespace after the comment marker and around `=`, a value of at least one
/// character.
fn directive_key<'a>(line: &'a str, comment: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(comment)?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, after) = rest.split_at(key_len);
    let value = after.trim_start().strip_prefix('=')?;
    (!value.is_empty()).then_some(key)
}

/// One pass of BuildKit's directive scan with the given comment marker.
fn strip_with_comment(dockerfile: &[u8], comment: &str) -> (Vec<u8>, Vec<String>) {
    let mut kept = Vec::with_capacity(dockerfile.len());
    let mut stripped = Vec::new();
    let mut rest = dockerfile;
    // A BOM and a leading shebang line are skipped by BuildKit without ending the directives.
    if let Some(after) = rest.strip_prefix(UTF8_BOM) {
        kept.extend_from_slice(UTF8_BOM);
        rest = after;
    }
    let mut in_directives = true;
    for (index, line) in rest.split_inclusive(|&b| b == b'\n').enumerate() {
        if in_directives {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            let text = String::from_utf8_lossy(body);
            if index == 0 && text.starts_with("#!") {
                kept.extend_from_slice(line);
                continue;
            }
            match directive_key(&text, comment) {
                Some(key) if key.eq_ignore_ascii_case("syntax") => {
                    stripped.push(text.trim().to_owned());
                    continue;
                }
                Some(key)
                    if key.eq_ignore_ascii_case("escape") || key.eq_ignore_ascii_case("check") => {}
                // Unknown keys are comments, and any comment or instruction ends the directives.
                _ => in_directives = false,
            }
        }
        kept.extend_from_slice(line);
    }
    (kept, stripped)
}

/// Removes `syntax` parser directives, the ones that make BuildKit fetch a frontend image. Only
/// the leading run of directive lines counts (a blank line, comment or instruction ends it, and a
/// later `# syntax=` is an ordinary comment); other directives and every other byte are kept.
/// Like BuildKit, `// syntax=` lines are looked for when no `#` one is found.
pub fn strip_syntax_directives(dockerfile: &[u8]) -> (Vec<u8>, Vec<String>) {
    let (kept, stripped) = strip_with_comment(dockerfile, "#");
    if !stripped.is_empty() {
        return (kept, stripped);
    }
    strip_with_comment(dockerfile, "//")
}

/// Marks a short read of entry data so it is reported as a bad archive, not as a write failure.
#[derive(Debug, thiserror::Error)]
#[error("the entry's data is truncated")]
struct Truncated;

/// Reads exactly `remaining` bytes or fails with [`Truncated`].
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, Truncated));
        }
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

fn write_error(error: io::Error) -> ArchiveError {
    if error.get_ref().is_some_and(|inner| inner.is::<Truncated>()) {
        ArchiveError::NotTar(error.to_string())
    } else {
        ArchiveError::Io(error)
    }
}

/// A clean GNU header: permission bits and mtime are what a build can observe; ownership comes
/// from the Dockerfile, so it is not carried over.
fn fresh_header(original: &tar::Header, kind: EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    let default_mode = if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    };
    header.set_mode(original.mode().unwrap_or(default_mode) & 0o7777);
    header.set_mtime(original.mtime().unwrap_or(0));
    header.set_size(size);
    header
}

/// Re-packs a validated archive into an uncompressed tar file at `dest`, removing `# syntax=`
/// parser directives from the root Dockerfile (they make BuildKit pull a frontend image,
/// impossible offline) and returns what was stripped so the build log can say so.
///
/// Every validation rule is applied again (sizes excepted: they were enforced at upload), so on
/// any error `dest` may hold a partial tar and must not be used.
///
/// `RUN --mount=type=cache` ids are scoped to `cache_namespace` (the owner): BuildKit shares a
/// cache mount between every build of the daemon that names the same id.
///
/// What the archive's own `.dockerignore` names is left out, as `docker build` leaves it out, so
/// an upload made with curl builds what the CLI (which applies it when packing) would. The
/// `Dockerfile` and the `.dockerignore` stay, as Docker sends them too: the frontend reads the
/// Dockerfile from the context.
pub fn prepare_build_context(
    archive: &[u8],
    dest: &Path,
    cache_namespace: &str,
) -> Result<PreparedContext, ArchiveError> {
    let ignore = root_file(archive, ".dockerignore")?
        .map(|text| DockerIgnore::parse(&String::from_utf8_lossy(&text)))
        .unwrap_or_default();
    let mut output = tar::Builder::new(io::BufWriter::new(std::fs::File::create(dest)?));
    let mut stripped_directives = Vec::new();
    let mut left_out = 0;
    let (result, _) = walk(archive, &ArchiveLimits::unlimited(), |checked, entry| {
        let path = checked.path.as_str();
        if path != "Dockerfile" && path != ".dockerignore" && ignore.ignores(path) {
            left_out += 1;
            return Ok(());
        }
        match (checked.kind, &checked.link) {
            (EntryType::Symlink | EntryType::Link, Some(target)) => {
                let mut header = fresh_header(entry.header(), checked.kind, 0);
                output
                    .append_link(&mut header, path, target)
                    .map_err(write_error)
            }
            (EntryType::Directory, _) => {
                let mut header = fresh_header(entry.header(), checked.kind, 0);
                output
                    .append_data(&mut header, path, io::empty())
                    .map_err(write_error)
            }
            _ if path == "Dockerfile" => {
                let size = entry.size();
                let mut original = Vec::new();
                Exact {
                    inner: &mut *entry,
                    remaining: size,
                }
                .read_to_end(&mut original)
                .map_err(not_tar)?;
                let (kept, stripped) = strip_syntax_directives(&original);
                let kept = match std::str::from_utf8(&kept) {
                    Ok(text) => crate::dockerfile::namespace_cache_mounts(text, cache_namespace)
                        .into_bytes(),
                    // Not text: BuildKit's parser refuses it with its own message.
                    Err(_) => kept,
                };
                // A later Dockerfile entry replaces this one on extraction; report that one's.
                stripped_directives = stripped;
                let mut header = fresh_header(entry.header(), checked.kind, kept.len() as u64);
                output
                    .append_data(&mut header, path, &kept[..])
                    .map_err(write_error)
            }
            _ => {
                let size = entry.size();
                let mut header = fresh_header(entry.header(), checked.kind, size);
                let data = Exact {
                    inner: &mut *entry,
                    remaining: size,
                };
                output
                    .append_data(&mut header, path, data)
                    .map_err(write_error)
            }
        }
    });
    result?;
    output.into_inner()?.flush()?;
    Ok(PreparedContext {
        stripped_directives,
        left_out,
    })
}

/// The contents of a regular file at the archive's root (the last such entry, as extraction
/// would leave it).
fn root_file(archive: &[u8], name: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
    let mut found = None;
    let (result, _) = walk(archive, &ArchiveLimits::unlimited(), |checked, entry| {
        if checked.path == name && checked.link.is_none() {
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).map_err(not_tar)?;
            found = Some(contents);
        }
        Ok(())
    });
    result?;
    Ok(found)
}

#[cfg(test)]
mod tests;
