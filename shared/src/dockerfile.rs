//! What a tenant's Dockerfile would make BuildKit fetch, and the one rewrite it needs before it is
//! built. Pure: no I/O.
//!
//! Tenants must stay inside their own builds. Before a build the worker therefore needs every image
//! the build would pull or read (to hold each against the operator's allow-list and the tenant's
//! own repositories, see [`BaseImageAllowList`] and [`normalize`]); it refuses what cannot be
//! known before the build runs (files fetched from URLs, extra RUN privileges, image names hidden
//! behind build arguments); and it scopes every `RUN --mount=type=cache` to the tenant, because
//! BuildKit shares cache mounts between all builds of a daemon by their `id`.
//!
//! The reading follows BuildKit v0.8's Dockerfile frontend (the one built into Docker 20.10) step
//! by step: line joining and parser directives, `splitCommand`, `extractBuilderFlags` (which reads
//! flags byte by byte), the shell lexer, JSON arguments, Go's `encoding/csv` for mounts. Any place
//! where this module reads a Dockerfile differently from BuildKit is a place a tenant can hide
//! something, so where exact fidelity would cost too much it refuses instead.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    mem,
    ops::Range,
};

/// The escape character unless a `# escape=` directive says otherwise.
const DEFAULT_ESCAPE: char = '\\';
/// Prepended to a RUN's flags when one of its cache mounts cannot be rewritten faithfully: BuildKit
/// refuses unknown flags, so the instruction fails instead of running with a shared cache.
const UNNAMESPACEABLE_FLAG: &str = "--slipway-unsupported-cache-mount";
/// The ASCII whitespace of BuildKit's `reWhitespace`, which splits instructions and FROM arguments.
const SPLIT_WHITESPACE: [char; 5] = ['\t', '\u{b}', '\u{c}', '\r', ' '];

/// An image the build would pull or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// 1-based number of the instruction's first line.
    pub line: usize,
    /// The whole instruction, continuation lines joined.
    pub instruction: String,
    /// The reference as BuildKit would resolve it (build arguments expanded), not normalised.
    pub reference: String,
}

/// What a Dockerfile that passed [`inspect`] will fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerfileFacts {
    pub images: Vec<ImageUse>,
}

/// Something in a Dockerfile that would reach outside the tenant's build, or cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DockerfileViolation {
    /// 1-based number of the instruction's first line.
    pub line: usize,
    pub message: String,
}

/// Reads `dockerfile` as BuildKit v0.8 would and reports every image it would pull or read, or
/// every violation found (all of them, in file order).
///
/// Images come from `FROM` (not `scratch`, not an earlier stage), `COPY --from` and
/// `RUN --mount=…,from=` (not a stage; for COPY also not a stage index). Violations: URL sources
/// in ADD/COPY, `RUN --network` other than `none`/`default`, `RUN --security` other than
/// `sandbox`, image names that depend on build arguments without a default, and anything BuildKit
/// reads in a way this module does not reproduce (malformed mounts, non-ASCII mount flags, ADD
/// sources built from variables, ONBUILD triggers that name other images).
pub fn inspect(dockerfile: &str) -> Result<DockerfileFacts, Vec<DockerfileViolation>> {
    let parsed = tokenize(dockerfile);
    let commands: Vec<_> = parsed
        .instructions
        .iter()
        .map(|instruction| (instruction, split_command(&instruction.text, 0)))
        .collect();
    // COPY --from and mounts resolve names against every stage of the file, later ones included.
    let all_stages = commands
        .iter()
        .filter(|(_, command)| command.keyword == "from")
        .filter_map(|(_, command)| stage_name(&whitespace_split(&command.args)))
        .collect();
    let mut inspector = Inspector {
        escape: parsed.escape,
        meta_args: HashMap::new(),
        seen_from: false,
        earlier_stages: Vec::new(),
        all_stages,
        images: Vec::new(),
        violations: parsed.violations,
    };
    for (instruction, command) in &commands {
        inspector.instruction(instruction, command);
    }
    if inspector.violations.is_empty() {
        Ok(DockerfileFacts {
            images: inspector.images,
        })
    } else {
        Err(inspector.violations)
    }
}

/// Rewrites every `RUN --mount=type=cache,…` (ONBUILD ones included) so its cache id is
/// `<namespace>/<id, or target when there is no id>`: BuildKit keys cache mounts by id alone,
/// across every build of the daemon, and defaults the id to the target.
///
/// Only the mount flags change; every other byte, line breaks included, is kept. A flag written
/// plainly (`--mount=a,b` or `--mount="a,b"` on one line) keeps its options as written, with the
/// id replaced in place or appended; any other spelling (inner quotes, backslashes, a flag broken
/// over lines) is rewritten whole as `--mount="…"` with the same options, its line breaks kept as
/// comment lines so later line numbers do not move. Mounts BuildKit would refuse to parse are left
/// alone ([`inspect`] reports them); a cache mount that cannot be rewritten faithfully (non-ASCII
/// bytes split by BuildKit's byte-wise flag reader) gets an unknown flag so BuildKit refuses the
/// instruction. Meant for Dockerfiles that passed [`inspect`].
pub fn namespace_cache_mounts(dockerfile: &str, namespace: &str) -> String {
    let parsed = tokenize(dockerfile);
    let mut edits = Vec::new();
    for instruction in &parsed.instructions {
        let command = split_command(&instruction.text, 0);
        let inner;
        let flags = match command.keyword.as_str() {
            "run" => &command.flags,
            "onbuild" => {
                // The trigger is stored as written and run by a later build of an image based on
                // this one: namespace it now, nobody will see it again before it runs.
                let Some(at) = command.args_at else { continue };
                inner = split_command(&instruction.text[at..at + command.args.len()], at);
                if inner.keyword != "run" {
                    continue;
                }
                &inner.flags
            }
            _ => continue,
        };
        edits.extend(namespace_flags(
            dockerfile,
            instruction,
            flags,
            namespace,
            parsed.escape,
        ));
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(dockerfile.len() + 64 * edits.len());
    let mut copied = 0;
    for (range, replacement) in edits {
        out.push_str(&dockerfile[copied..range.start]);
        out.push_str(&replacement);
        copied = range.end;
    }
    out.push_str(&dockerfile[copied..]);
    out
}

/// An image reference in Docker's normalised form: `busybox` is `docker.io` + `library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedRef {
    /// The registry as written (`docker.io` for none, and for `index.docker.io`).
    pub host: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl NormalizedRef {
    /// `host/path`: the repository, whatever the tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

/// Parses `reference` the way Docker's `ParseNormalizedNamed` does (the grammar of
/// distribution/reference, digests as go-digest accepts them); `None` when Docker would refuse it.
/// A host is the first component when it contains `.` or `:` or is `localhost`; hosts are compared
/// as written, like Docker does.
pub fn normalize(reference: &str) -> Option<NormalizedRef> {
    // Docker refuses these as names: they look like image ids.
    if reference.len() == 64 && reference.bytes().all(is_lower_hex) {
        return None;
    }
    let (host, remainder) = match reference.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("docker.io", reference),
    };
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    };
    let remainder = if host == "docker.io" && !remainder.contains('/') {
        Cow::Owned(format!("library/{remainder}"))
    } else {
        Cow::Borrowed(remainder)
    };
    let (name, digest) = match remainder.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (remainder.as_ref(), None),
    };
    // The path cannot hold a ':', so the last one starts the tag.
    let (path, tag) = match name.rsplit_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (name, None),
    };
    let valid = is_domain(host)
        && path.split('/').all(is_path_component)
        && host.len() + 1 + path.len() <= 255
        && tag.is_none_or(is_tag)
        && digest.is_none_or(is_digest);
    valid.then(|| NormalizedRef {
        host: host.to_owned(),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// The operator's list of base images tenants may build from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageAllowList {
    entries: Vec<NormalizedRef>,
}

impl BaseImageAllowList {
    /// Entries separated by commas or whitespace. An entry without tag or digest allows the whole
    /// repository; with a tag, only that tag (a reference without one means `latest`, as in
    /// Docker); with a digest, only that digest.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let entries = raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                normalize(entry)
                    .ok_or_else(|| format!("base image {entry:?} is not a valid image reference"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// This list and the entries in `raw` (as for [`Self::parse`]).
    pub fn with(mut self, raw: &str) -> Result<Self, String> {
        self.entries.extend(Self::parse(raw)?.entries);
        Ok(self)
    }

    /// Whether `reference` (as BuildKit would pull it) is allowed; invalid references never are.
    pub fn allows(&self, reference: &str) -> bool {
        let Some(wanted) = normalize(reference) else {
            return false;
        };
        self.entries.iter().any(|entry| {
            entry.host == wanted.host
                && entry.path == wanted.path
                && match (&entry.digest, &entry.tag) {
                    (Some(digest), _) => wanted.digest.as_ref() == Some(digest),
                    // A digest pins content the tag may never have pointed to.
                    (None, Some(tag)) => {
                        wanted.digest.is_none() && wanted.tag.as_deref().unwrap_or("latest") == tag
                    }
                    (None, None) => true,
                }
        })
    }
}

// ---- Lines: BuildKit's parser.Parse -------------------------------------------------------------

/// A stretch of an instruction's logical line and where it came from in the Dockerfile.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Start in the logical line.
    at: usize,
    /// Start in the Dockerfile.
    source: usize,
}

/// One instruction, its physical lines joined as BuildKit joins them.
#[derive(Debug)]
struct Instruction {
    /// 1-based number of its first physical line.
    line: usize,
    /// Continuation escapes removed; comment and blank lines inside it dropped.
    text: String,
    pieces: Vec<Piece>,
}

impl Instruction {
    fn push(&mut self, source: usize, text: &str) {
        if !text.is_empty() {
            self.pieces.push(Piece {
                at: self.text.len(),
                source,
            });
            self.text.push_str(text);
        }
    }

    /// Index of the piece holding byte `at` of the logical line.
    fn piece(&self, at: usize) -> usize {
        self.pieces
            .iter()
            .rposition(|piece| piece.at <= at)
            .expect("every byte of the logical line comes from a piece")
    }

    fn source_offset(&self, at: usize) -> usize {
        let piece = self.pieces[self.piece(at)];
        piece.source + (at - piece.at)
    }

    /// The bytes of the Dockerfile `span` (of the logical line) was read from, including any line
    /// breaks and skipped lines in between.
    fn source_range(&self, span: &Range<usize>) -> Range<usize> {
        self.source_offset(span.start)..self.source_offset(span.end - 1) + 1
    }

    fn crosses_lines(&self, span: &Range<usize>) -> bool {
        self.piece(span.start) != self.piece(span.end - 1)
    }
}

struct Parsed {
    escape: char,
    instructions: Vec<Instruction>,
    /// Parser-directive errors: BuildKit refuses the whole file for them.
    violations: Vec<DockerfileViolation>,
}

/// Parser directives as BuildKit reads them: only a leading run of `# key=value` lines counts, and
/// anything else (a blank line, a comment, an instruction) ends it.
struct Directives {
    done: bool,
    seen: Vec<String>,
    escape: char,
}

impl Directives {
    fn check(&mut self, line: &str, number: usize, violations: &mut Vec<DockerfileViolation>) {
        if self.done {
            return;
        }
        let Some((key, value)) = parse_directive(line) else {
            self.done = true;
            return;
        };
        let key = key.to_ascii_lowercase();
        if key != "escape" && key != "syntax" {
            self.done = true;
            return;
        }
        if self.seen.contains(&key) {
            violations.push(DockerfileViolation {
                line: number,
                message: format!("only one {key} parser directive can be used"),
            });
            return;
        }
        if key == "escape" {
            match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => violations.push(DockerfileViolation {
                    line: number,
                    message: format!("the escape parser directive must be \\ or `, not {value:?}"),
                }),
            }
        }
        self.seen.push(key);
    }
}

/// `(key, value)` if `line` matches BuildKit's `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
/// (Go's `\s` is ASCII `[\t\n\f\r ]`).
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let key_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = rest[key_len..]
        .trim_start_matches(is_space)
        .strip_prefix('=')?;
    match after.trim_matches(is_space) {
        // `.+?` still takes one whitespace character when nothing else follows the `=`.
        "" if !after.is_empty() => Some((key, &after[..1])),
        "" => None,
        value => Some((key, value)),
    }
}

/// `line` without its continuation escape, and whether the instruction ends with it. BuildKit:
/// `([^E])E[ \t]*$|^E[ \t]*$`, so an escaped escape at the end does not continue the line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    if let Some(before) = line.trim_end_matches([' ', '\t']).strip_suffix(escape)
        && !before.ends_with(escape)
    {
        return (before, false);
    }
    (line, true)
}

/// Splits a Dockerfile into instructions the way BuildKit's `parser.Parse` does.
fn tokenize(dockerfile: &str) -> Parsed {
    // bufio.ScanLines: split on \n, drop one \r before it, no empty line after a final \n.
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for raw in dockerfile.split_inclusive('\n') {
        let body = raw.strip_suffix('\n').unwrap_or(raw);
        lines.push((offset, body.strip_suffix('\r').unwrap_or(body)));
        offset += raw.len();
    }
    if let Some((offset, body)) = lines.first_mut() {
        let first = *body;
        if let Some(rest) = first.strip_prefix('\u{feff}') {
            *offset += '\u{feff}'.len_utf8();
            *body = rest;
        }
    }
    let mut directives = Directives {
        done: false,
        seen: Vec::new(),
        escape: DEFAULT_ESCAPE,
    };
    let mut violations = Vec::new();
    let mut instructions = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let (offset, body) = lines[next];
        next += 1;
        let trimmed = body.trim_start();
        directives.check(trimmed, next, &mut violations);
        let escape = directives.escape;
        let content = if trimmed.starts_with('#') {
            ""
        } else {
            trimmed
        };
        let (kept, mut ended) = trim_continuation(content, escape);
        if ended && kept.is_empty() {
            continue;
        }
        let mut instruction = Instruction {
            line: next,
            text: String::new(),
            pieces: Vec::new(),
        };
        instruction.push(offset + (body.len() - trimmed.len()), kept);
        while !ended && next < lines.len() {
            let (offset, body) = lines[next];
            next += 1;
            // Continuation lines keep their indentation; comment and blank lines inside an
            // instruction are skipped without ending it.
            let trimmed = body.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (kept, last) = trim_continuation(body, escape);
            instruction.push(offset, kept);
            ended = last;
        }
        instructions.push(instruction);
    }
    Parsed {
        escape: directives.escape,
        instructions,
        violations,
    }
}

// ---- Instructions: splitCommand and extractBuilderFlags -----------------------------------------

/// A `--name[=value]` word before an instruction's arguments.
#[derive(Debug)]
struct FlagWord {
    /// Where the raw word sits in the logical line.
    span: Range<usize>,
    /// The word as BuildKit decodes it: quotes and backslashes removed. BuildKit reads flags byte
    /// by byte (each byte becoming one character), so this stays bytes.
    decoded: Vec<u8>,
}

impl FlagWord {
    /// The value of a `--name=value` flag; `None` for other flags and for `--name` alone.
    fn value_of(&self, name: &str) -> Option<&[u8]> {
        let body = &self.decoded[2..];
        let eq = body.iter().position(|&b| b == b'=')?;
        (&body[..eq] == name.as_bytes()).then(|| &body[eq + 1..])
    }
}

/// An instruction as BuildKit's `splitCommand` sees it.
#[derive(Debug)]
struct Command<'a> {
    /// Lowercased as Go does it.
    keyword: String,
    flags: Vec<FlagWord>,
    /// The arguments after the flags, trimmed.
    args: Cow<'a, str>,
    /// Where `args` starts in the logical line, unless it had to be read lossily (it starts
    /// inside a character BuildKit's byte-wise flag reader split).
    args_at: Option<usize>,
}

/// Splits `line` (found at byte `base` of the logical line) into keyword, flags and arguments.
fn split_command(line: &str, base: usize) -> Command<'_> {
    let lead = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    let keyword_end = trimmed.find(SPLIT_WHITESPACE).unwrap_or(trimmed.len());
    let keyword = go_lower(&trimmed[..keyword_end]);
    let after = &trimmed[keyword_end..];
    let rest = after.trim_start_matches(SPLIT_WHITESPACE);
    let rest_at = base + lead + keyword_end + (after.len() - rest.len());
    let (args_start, flags) = extract_builder_flags(rest, rest_at);
    let (args, args_at) = match rest.get(args_start..) {
        Some(args) => {
            let trimmed = args.trim_start();
            let at = rest_at + args_start + (args.len() - trimmed.len());
            (Cow::Borrowed(trimmed.trim_end()), Some(at))
        }
        None => {
            let text = String::from_utf8_lossy(&rest.as_bytes()[args_start..]);
            (Cow::Owned(text.trim().to_owned()), None)
        }
    };
    Command {
        keyword,
        flags,
        args,
        args_at,
    }
}

/// Go's `unicode.IsSpace` applied to a single byte, as `extractBuilderFlags` does.
fn is_go_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// BuildKit's `extractBuilderFlags`: leading `--` words, quotes and backslashes processed; returns
/// where the arguments start in `line` and the flags (spans offset by `base`).
fn extract_builder_flags(line: &str, base: usize) -> (usize, Vec<FlagWord>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = Vec::new();
    let mut start = 0;
    let mut quote = 0;
    let mut blank_ok = false;
    let mut pos = 0;
    loop {
        let at_end = pos == bytes.len();
        let mut ch = bytes.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if at_end {
                return (pos, flags);
            }
            if is_go_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (pos, flags);
            }
            phase = Phase::Word;
            start = pos;
        }
        if at_end {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                flags.push(FlagWord {
                    span: base + start..base + pos,
                    decoded: word,
                });
            }
            return (pos, flags);
        }
        if phase == Phase::Word {
            if is_go_space_byte(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (pos, flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(FlagWord {
                        span: base + start..base + pos,
                        decoded: mem::take(&mut word),
                    });
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
        } else if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        // In a word or a quote alike, a backslash (never the escape directive's character) takes
        // the next byte as is; a backslash at the very end is dropped.
        if ch == b'\\' {
            if pos + 1 == bytes.len() {
                if phase == Phase::Quote {
                    phase = Phase::Word;
                }
                pos += 1;
                continue;
            }
            pos += 1;
            ch = bytes[pos];
        }
        word.push(ch);
        pos += 1;
    }
}

/// Go's `strings.ToLower` as far as comparisons with ASCII names go: ASCII, plus the two other
/// letters Go lowercases into ASCII (so `ONBUİLD` is ONBUILD, as for BuildKit).
fn go_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Go's `strings.EqualFold(word, "as")`, whose `s` also folds with `ſ`.
fn is_as(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(
        (chars.next(), chars.next(), chars.next()),
        (Some('a' | 'A'), Some('s' | 'S' | '\u{17f}'), None)
    )
}

/// BuildKit's `parseStringsWhitespaceDelimited` (FROM, and ADD/COPY in shell form).
fn whitespace_split(args: &str) -> Vec<&str> {
    args.split(SPLIT_WHITESPACE)
        .filter(|word| !word.is_empty())
        .collect()
}

/// The stage a `FROM image AS name` declares, lowercased, if the name is one BuildKit accepts.
fn stage_name(args: &[&str]) -> Option<String> {
    let [_, as_, name] = args else { return None };
    let name = go_lower(name);
    let valid = is_as(as_)
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    valid.then_some(name)
}

/// BuildKit's `parseWords` (ARG): words split on whitespace outside quotes; quotes and escapes are
/// kept, for the shell lexer to process later.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i == chars.len();
        let mut ch = chars.get(i).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
        } else {
            if ch == quote {
                phase = Phase::Word;
            }
            // Nothing escapes inside single quotes.
            if ch == escape && quote != '\'' {
                if i + 1 == chars.len() {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// The arguments of ADD/COPY in JSON form, if they are a JSON array of strings (text after the
/// array is ignored, as Go's `json.Decoder` does). Anything else makes BuildKit either fail or
/// fall back to splitting on whitespace; callers fall back too.
fn parse_json_strings(args: &str) -> Option<Vec<String>> {
    fn skip_space(text: &str) -> &str {
        text.trim_start_matches([' ', '\t', '\n', '\r'])
    }
    let mut rest = skip_space(args.trim_start().strip_prefix('[')?);
    let mut strings = Vec::new();
    if rest.starts_with(']') {
        return Some(strings);
    }
    loop {
        let (string, after) = json_string(rest)?;
        strings.push(string);
        let after = skip_space(after);
        match after.strip_prefix(',') {
            Some(next) => rest = skip_space(next),
            None => return after.starts_with(']').then_some(strings),
        }
    }
}

/// A JSON string at the start of `text`, decoded as Go does (a lone surrogate becomes U+FFFD),
/// and what follows it.
fn json_string(text: &str) -> Option<(String, &str)> {
    fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u32> {
        (0..4).try_fold(0, |value, _| {
            Some(value * 16 + chars.next()?.1.to_digit(16)?)
        })
    }
    let body = text.strip_prefix('"')?;
    let mut decoded = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((decoded, &body[at + 1..])),
            '\\' => match chars.next()?.1 {
                '"' => decoded.push('"'),
                '\\' => decoded.push('\\'),
                '/' => decoded.push('/'),
                'b' => decoded.push('\u{8}'),
                'f' => decoded.push('\u{c}'),
                'n' => decoded.push('\n'),
                'r' => decoded.push('\r'),
                't' => decoded.push('\t'),
                'u' => {
                    let high = hex4(&mut chars)?;
                    if (0xd800..0xe000).contains(&high) {
                        let mut ahead = chars.clone();
                        let low = match (ahead.next(), ahead.next()) {
                            (Some((_, '\\')), Some((_, 'u'))) => hex4(&mut ahead),
                            _ => None,
                        };
                        match low {
                            Some(low)
                                if (0xd800..0xdc00).contains(&high)
                                    && (0xdc00..0xe000).contains(&low) =>
                            {
                                let pair = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
                                decoded.push(char::from_u32(pair)?);
                                chars = ahead;
                            }
                            _ => decoded.push('\u{fffd}'),
                        }
                    } else {
                        decoded.push(char::from_u32(high)?);
                    }
                }
                _ => return None,
            },
            c if u32::from(c) < 0x20 => return None,
            c => decoded.push(c),
        }
    }
    None
}

/// The source arguments of ADD/COPY: every argument but the last (the destination).
fn copy_sources(args: &str) -> Vec<String> {
    let words = parse_json_strings(args).unwrap_or_else(|| {
        whitespace_split(args)
            .into_iter()
            .map(str::to_owned)
            .collect()
    });
    match words.split_last() {
        Some((_, sources)) => sources.to_vec(),
        None => Vec::new(),
    }
}

// ---- Words: BuildKit's shell lexer ---------------------------------------------------------------

/// A piece of a processed word: text, or the value of a variable that cannot be known here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// Build arguments by name: `Some(value)` when known, `None` when declared without a default.
type Args = HashMap<String, Option<String>>;

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if let Some(Part::Text(last)) = parts.last_mut() {
        last.push_str(text);
    } else if !text.is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
}

fn extend_parts(parts: &mut Vec<Part>, more: Vec<Part>) {
    for part in more {
        match part {
            Part::Text(text) => push_text(parts, &text),
            var => parts.push(var),
        }
    }
}

/// BuildKit's `shell.Lex.ProcessWord` (quotes removed, escapes applied, `$VAR`, `${VAR}`,
/// `${VAR:-word}`, `${VAR:+word}`, `${VAR?word}`, `${VAR:?word}` expanded), except that a variable
/// not known in `args` stays a [`Part::Var`] instead of becoming empty.
fn lex(word: &str, escape: char, args: &Args) -> Result<Vec<Part>, String> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        at: 0,
        escape,
        args,
    };
    lexer.word(None)
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    escape: char,
    args: &'a Args,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    /// `processStopOn`: up to the end, or up to and including `stop`.
    fn word(&mut self, stop: Option<char>) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok(parts);
            }
            match c {
                '\'' => push_text(&mut parts, &self.single_quoted()?),
                '"' => extend_parts(&mut parts, self.double_quoted()?),
                '$' => extend_parts(&mut parts, self.dollar()?),
                _ => {
                    self.next();
                    let c = if c == self.escape {
                        match self.next() {
                            Some(escaped) => escaped,
                            None => break,
                        }
                    } else {
                        c
                    };
                    push_text(&mut parts, c.encode_utf8(&mut [0; 4]));
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok(parts),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.next();
        let mut text = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<Vec<Part>, String> {
        self.next();
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    return Ok(parts);
                }
                Some('$') => extend_parts(&mut parts, self.dollar()?),
                Some(_) => {
                    let mut c = self.next().unwrap_or_default();
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                c = next;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    push_text(&mut parts, c.encode_utf8(&mut [0; 4]));
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        self.args.get(name)?.as_deref()
    }

    fn value(&self, name: &str) -> Vec<Part> {
        match self.lookup(name) {
            Some("") => Vec::new(),
            Some(value) => vec![Part::Text(value.to_owned())],
            None => vec![Part::Var(name.to_owned())],
        }
    }

    fn dollar(&mut self) -> Result<Vec<Part>, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name()?;
            if name.is_empty() {
                return Ok(vec![Part::Text("$".into())]);
            }
            return Ok(self.value(&name));
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name()?;
        match self.next() {
            Some('}') => Ok(self.value(&name)),
            Some('?') => {
                self.braced_word()?;
                Ok(self.value(&name))
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.braced_word()?;
                if !matches!(modifier, Some('+' | '-' | '?')) {
                    return Err(format!("unsupported modifier in ${{{name}:…}}"));
                }
                // Whatever the modifier, the outcome depends on a value we do not know.
                let Some(value) = self.lookup(&name) else {
                    return Ok(vec![Part::Var(name)]);
                };
                match modifier {
                    Some('+') if value.is_empty() => Ok(Vec::new()),
                    Some('+') => Ok(word),
                    Some('-') if value.is_empty() => Ok(word),
                    Some(_) if !value.is_empty() => Ok(self.value(&name)),
                    _ => Err(format!("{name}: is not allowed to be empty")),
                }
            }
            _ => Err("missing ':' in substitution".into()),
        }
    }

    /// The word of `${name:-word}` and friends, up to the closing brace.
    fn braced_word(&mut self) -> Result<Vec<Part>, String> {
        self.word(Some('}')).map_err(|error| {
            if self.peek().is_none() {
                "syntax error: missing '}'".into()
            } else {
                error
            }
        })
    }

    /// `processName`: digits, one special parameter, or letters, digits and `_`. Go decides what a
    /// letter is with Unicode tables; rather than guess, a non-ASCII character here is an error.
    fn name(&mut self) -> Result<String, String> {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if !c.is_ascii() {
                return Err(format!("non-ASCII character {c:?} in a variable name"));
            }
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(digit) = self.peek() {
                    if !digit.is_ascii() {
                        return Err(format!("non-ASCII character {digit:?} in a variable name"));
                    }
                    if !digit.is_ascii_digit() {
                        break;
                    }
                    name.push(digit);
                    self.next();
                }
                return Ok(name);
            }
            if name.is_empty() && "@*#?-$!0".contains(c) {
                self.next();
                return Ok(c.into());
            }
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.next();
        }
        Ok(name)
    }
}

/// The text of a fully known word, or the names of the variables it depends on.
fn resolved(parts: &[Part]) -> Result<String, Vec<&str>> {
    let vars: Vec<&str> = parts
        .iter()
        .filter_map(|part| match part {
            Part::Var(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
        .collect();
    if vars.is_empty() {
        Ok(parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.as_str(),
                Part::Var(_) => "",
            })
            .collect())
    } else {
        Err(vars)
    }
}

// ---- Mounts: Go's encoding/csv, then BuildKit's parseMount ---------------------------------------

/// One CSV record as Go's `encoding/csv` reads it with default settings; errors where Go errors.
fn parse_csv(line: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    // Go drops a trailing \r before the end of input, and reads an empty input as no record.
    let mut rest = line.strip_suffix(b"\r").unwrap_or(line);
    if rest.is_empty() {
        return Err("no fields");
    }
    let mut fields = Vec::new();
    loop {
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            rest = quoted;
            let mut field = Vec::new();
            loop {
                let Some(quote) = rest.iter().position(|&b| b == b'"') else {
                    return Err("extraneous or missing \" in quoted-field");
                };
                field.extend_from_slice(&rest[..quote]);
                rest = &rest[quote + 1..];
                match rest.first() {
                    Some(b'"') => {
                        field.push(b'"');
                        rest = &rest[1..];
                    }
                    Some(b',') => {
                        rest = &rest[1..];
                        fields.push(field);
                        break;
                    }
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(_) => return Err("extraneous or missing \" in quoted-field"),
                }
            }
        } else {
            let end = rest.iter().position(|&b| b == b',');
            let field = &rest[..end.unwrap_or(rest.len())];
            if field.contains(&b'"') {
                return Err("bare \" in non-quoted-field");
            }
            fields.push(field.to_vec());
            match end {
                Some(end) => rest = &rest[end + 1..],
                None => return Ok(fields),
            }
        }
    }
}

/// A `key=value` mount option: the key lowercased, as BuildKit compares it.
fn mount_option(field: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let eq = field.iter().position(|&b| b == b'=')?;
    Some((field[..eq].to_ascii_lowercase(), &field[eq + 1..]))
}

/// What of a `--mount` matters here; the last of repeated options wins, as in BuildKit.
struct Mount<'a> {
    kind: Vec<u8>,
    from: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    target: Option<&'a [u8]>,
}

impl<'a> Mount<'a> {
    fn of(fields: &'a [Vec<u8>]) -> Self {
        let mut mount = Mount {
            kind: b"bind".to_vec(),
            from: None,
            id: None,
            target: None,
        };
        for field in fields {
            let Some((key, value)) = mount_option(field) else {
                continue;
            };
            match key.as_slice() {
                b"type" => mount.kind = value.to_ascii_lowercase(),
                b"from" => mount.from = Some(value),
                b"id" => mount.id = Some(value),
                b"target" | b"dst" | b"destination" => mount.target = Some(value),
                _ => {}
            }
        }
        mount
    }
}

/// The edits that namespace the cache mounts among one RUN's flags.
fn namespace_flags(
    dockerfile: &str,
    instruction: &Instruction,
    flags: &[FlagWord],
    namespace: &str,
    escape: char,
) -> Vec<(Range<usize>, String)> {
    let mut edits = Vec::new();
    for flag in flags {
        let Some(value) = flag.value_of("mount") else {
            continue;
        };
        let Ok(fields) = parse_csv(value) else {
            continue;
        };
        let mount = Mount::of(&fields);
        if mount.kind != b"cache" {
            continue;
        }
        // BuildKit uses the target when the id is missing or empty.
        let original = mount
            .id
            .filter(|id| !id.is_empty())
            .or(mount.target)
            .unwrap_or_default();
        let id = [namespace.as_bytes(), b"/", original].concat();
        match rewrite_mount(dockerfile, instruction, flag, &fields, &id, escape) {
            Some(edit) => edits.push(edit),
            None => {
                let at = instruction.source_offset(flags[0].span.start);
                return vec![(at..at, format!("{UNNAMESPACEABLE_FLAG} "))];
            }
        }
    }
    edits
}

/// The replacement for one cache `--mount` word, or `None` if it cannot be written faithfully.
fn rewrite_mount(
    dockerfile: &str,
    instruction: &Instruction,
    flag: &FlagWord,
    fields: &[Vec<u8>],
    id: &[u8],
    escape: char,
) -> Option<(Range<usize>, String)> {
    let source = instruction.source_range(&flag.span);
    // Not on character boundaries when BuildKit's byte-wise reader ended the word mid-character.
    let raw = dockerfile.get(source.clone())?;
    if !instruction.crosses_lines(&flag.span)
        && let Some(word) = edit_plain_mount(raw, id, escape)
    {
        return Some((source, word));
    }
    let word = canonical_mount(fields, id)?;
    let line_breaks = raw.matches('\n').count();
    if line_breaks == 0 {
        return Some((source, word));
    }
    // The word moves to its last line; the lines it spanned become a continuation of whatever
    // preceded it on its first line (nothing or whitespace), then comment lines, which BuildKit
    // skips inside an instruction. Later line numbers stay put.
    let padding = "#\n".repeat(line_breaks - 1);
    Some((source, format!("{escape}\n{padding}{word}")))
}

/// Printable ASCII that neither BuildKit's flag reader nor CSV treats specially.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'))
}

/// `--mount=<options>` or `--mount="<options>"` with plain options: the id replaced in place (every
/// `id=` option, so none stays unscoped) or appended, every other byte kept.
fn edit_plain_mount(raw: &str, id: &[u8], escape: char) -> Option<String> {
    let id = std::str::from_utf8(id)
        .ok()
        .filter(|id| is_plain(id) && !id.contains(','))?;
    let value = raw.strip_prefix("--mount=")?;
    let (quote, options) = match value.as_bytes() {
        [first @ (b'"' | b'\''), .., last] if first == last => {
            (&value[..1], &value[1..value.len() - 1])
        }
        _ => ("", value),
    };
    if !is_plain(options) {
        return None;
    }
    let mut replaced = false;
    let mut edited: Vec<String> = options
        .split(',')
        .map(|option| match option.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("id") => {
                replaced = true;
                format!("{key}={id}")
            }
            _ => option.to_owned(),
        })
        .collect();
    if !replaced {
        edited.push(format!("id={id}"));
    }
    let word = format!("--mount={quote}{}{quote}", edited.join(","));
    // A word ending in the escape character would turn its line into a continuation.
    (!word.ends_with(escape)).then_some(word)
}

/// The mount rewritten whole: options CSV-quoted where needed, the lot double-quoted for BuildKit's
/// flag reader. `None` if the bytes are not UTF-8 (they came from a character BuildKit split).
fn canonical_mount(fields: &[Vec<u8>], id: &[u8]) -> Option<String> {
    let mut replaced = false;
    let mut options: Vec<Vec<u8>> = fields
        .iter()
        .map(|field| match mount_option(field) {
            Some((key, _)) if key == b"id" => {
                replaced = true;
                [&field[..=2], id].concat()
            }
            _ => field.clone(),
        })
        .collect();
    if !replaced {
        options.push([b"id=", id].concat());
    }
    let mut csv = Vec::new();
    for (index, option) in options.iter().enumerate() {
        if index > 0 {
            csv.push(b',');
        }
        if option.iter().any(|b| matches!(b, b',' | b'"' | b'\r')) {
            csv.push(b'"');
            for &b in option {
                if b == b'"' {
                    csv.push(b'"');
                }
                csv.push(b);
            }
            csv.push(b'"');
        } else {
            csv.extend_from_slice(option);
        }
    }
    let mut word = b"--mount=\"".to_vec();
    for b in csv {
        if b == b'\\' || b == b'"' {
            word.push(b'\\');
        }
        word.push(b);
    }
    word.push(b'"');
    String::from_utf8(word).ok()
}

// ---- Checks --------------------------------------------------------------------------------------

/// A flag value for messages and references. BuildKit itself turns each byte into one character,
/// which only differs for non-ASCII bytes: references with those are invalid anyway.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn looks_like_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("://") || lower.starts_with("git@")
}

/// Whether a source whose expansion starts with `prefix` could still turn out to be a URL: the
/// prefix is (the start of) a scheme, possibly followed by `:` or `:/` (`g`, `git` and `git@`
/// are covered too).
fn could_become_url(prefix: &str) -> bool {
    let scheme_end = prefix
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .unwrap_or(prefix.len());
    matches!(&prefix[scheme_end..], "" | ":" | ":/")
}

fn is_go_int(text: &str) -> bool {
    text.parse::<i64>().is_ok()
}

struct Inspector {
    escape: char,
    /// ARGs declared before the first FROM: the only ones FROM can use.
    meta_args: Args,
    seen_from: bool,
    /// Stages declared by the FROMs read so far: what a FROM may refer to.
    earlier_stages: Vec<String>,
    /// Every stage of the file: what COPY --from and mounts may refer to.
    all_stages: HashSet<String>,
    images: Vec<ImageUse>,
    violations: Vec<DockerfileViolation>,
}

impl Inspector {
    fn refuse(&mut self, line: usize, message: String) {
        self.violations.push(DockerfileViolation { line, message });
    }

    fn instruction(&mut self, instruction: &Instruction, command: &Command<'_>) {
        match command.keyword.as_str() {
            "arg" if !self.seen_from => self.meta_arg(&command.args),
            "from" => {
                self.seen_from = true;
                self.from(instruction, &command.args);
            }
            "add" | "copy" => self.copy(instruction, command, false),
            "run" => self.run(instruction, &command.flags, false),
            "onbuild" => {
                // BuildKit stores the trigger and runs it in any later build based on this image,
                // where nothing looks at it first: check it now, for whatever that build may be.
                let trigger = split_command(&command.args, 0);
                match trigger.keyword.as_str() {
                    "add" | "copy" => self.copy(instruction, &trigger, true),
                    "run" => self.run(instruction, &trigger.flags, true),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Meta ARGs are expanded in order, each with those before it; a value that cannot be
    /// expanded (BuildKit then silently uses "") counts as unknown.
    fn meta_arg(&mut self, args: &str) {
        for word in parse_words(args, self.escape) {
            let (name, value) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (word.as_str(), None),
            };
            let value = value
                .and_then(|value| lex(value, self.escape, &self.meta_args).ok())
                .and_then(|parts| resolved(&parts).ok());
            self.meta_args.insert(name.to_owned(), value);
        }
    }

    fn from(&mut self, instruction: &Instruction, args: &str) {
        let args = whitespace_split(args);
        let Some(&base) = args.first() else { return };
        let line = instruction.line;
        match lex(base, self.escape, &self.meta_args) {
            Err(error) => self.refuse(
                line,
                format!("FROM {base}: the image name cannot be parsed ({error})"),
            ),
            Ok(parts) => match resolved(&parts) {
                Err(vars) => {
                    let vars = vars.join(", ");
                    self.refuse(
                        line,
                        format!(
                            "FROM {base}: the image name depends on {vars}, which no ARG before the \
                             first FROM gives a default value, so it cannot be checked"
                        ),
                    );
                }
                // BuildKit looks for an earlier stage of exactly that name before any image.
                Ok(name) if name == "scratch" || self.earlier_stages.contains(&name) => {}
                Ok(name) if name.is_empty() => {
                    self.refuse(line, format!("FROM {base}: the image name is empty"));
                }
                Ok(name) if name.contains('$') => self.refuse(
                    line,
                    format!("FROM {base}: the image name {name:?} cannot be checked"),
                ),
                Ok(name) => self.images.push(ImageUse {
                    line,
                    instruction: instruction.text.trim().to_owned(),
                    reference: name,
                }),
            },
        }
        if let Some(stage) = stage_name(&args) {
            self.earlier_stages.push(stage);
        }
    }

    /// A `--from` of COPY or of a mount: a stage (or, for COPY, a stage index), `scratch`, or an
    /// image. BuildKit v0.8 does not expand variables there, so a `$` is just unverifiable.
    fn stage_or_image(
        &mut self,
        instruction: &Instruction,
        what: &str,
        value: &str,
        index_ok: bool,
    ) {
        if (index_ok && is_go_int(value))
            || self.all_stages.contains(&go_lower(value))
            || value == "scratch"
        {
            return;
        }
        if value.contains('$') {
            self.refuse(
                instruction.line,
                format!("{what}{value}: variables are not expanded there, so it cannot be checked"),
            );
            return;
        }
        self.images.push(ImageUse {
            line: instruction.line,
            instruction: instruction.text.trim().to_owned(),
            reference: value.to_owned(),
        });
    }

    fn copy(&mut self, instruction: &Instruction, command: &Command<'_>, trigger: bool) {
        let line = instruction.line;
        let shown = if trigger {
            format!("ONBUILD {}", command.keyword.to_uppercase())
        } else {
            command.keyword.to_uppercase()
        };
        if command.keyword == "copy" {
            for flag in &command.flags {
                let Some(from) = flag.value_of("from").filter(|from| !from.is_empty()) else {
                    continue;
                };
                let from = lossy(from);
                if !trigger {
                    self.stage_or_image(instruction, &format!("{shown} --from="), &from, true);
                } else if !is_go_int(&from) {
                    self.refuse(
                        line,
                        format!(
                            "{shown} --from={from}: a trigger runs in a later build, where it \
                             cannot be checked whether {from:?} names a stage or an image"
                        ),
                    );
                }
            }
        }
        // A trigger is lexed with the escape character of the build that runs it.
        let escapes: &[char] = if trigger {
            &['\\', '`']
        } else {
            &[self.escape]
        };
        for source in copy_sources(&command.args) {
            if let Some(message) =
                source_problem(&shown, command.keyword == "add", &source, escapes)
            {
                self.refuse(line, message);
            }
        }
    }

    fn run(&mut self, instruction: &Instruction, flags: &[FlagWord], trigger: bool) {
        let line = instruction.line;
        let shown = if trigger { "ONBUILD RUN" } else { "RUN" };
        for flag in flags {
            if let Some(network) = flag.value_of("network")
                && network != b"none"
                && network != b"default"
            {
                let network = lossy(network);
                self.refuse(
                    line,
                    format!(
                        "{shown} --network={network} is not allowed (only none and default are)"
                    ),
                );
            }
            if let Some(security) = flag.value_of("security")
                && security != b"sandbox"
            {
                let security = lossy(security);
                self.refuse(
                    line,
                    format!("{shown} --security={security} is not allowed (only sandbox is)"),
                );
            }
            if let Some(mount) = flag.value_of("mount") {
                self.mount(instruction, shown, mount, trigger);
            }
        }
    }

    fn mount(&mut self, instruction: &Instruction, shown: &str, value: &[u8], trigger: bool) {
        let line = instruction.line;
        let spec = lossy(value);
        // BuildKit splits flag words on bytes that are whitespace in Latin-1, even inside UTF-8
        // characters, and mangles the rest: refuse rather than guess what it would see.
        if !value.is_ascii() {
            self.refuse(
                line,
                format!("{shown} --mount={spec}: non-ASCII characters are not supported in mounts"),
            );
            return;
        }
        let fields = match parse_csv(value) {
            Ok(fields) => fields,
            Err(error) => {
                self.refuse(
                    line,
                    format!("{shown} --mount={spec} cannot be parsed ({error})"),
                );
                return;
            }
        };
        let Some(from) = Mount::of(&fields).from.filter(|from| !from.is_empty()) else {
            return;
        };
        let from = lossy(from);
        if trigger {
            self.refuse(
                line,
                format!(
                    "{shown} --mount={spec}: a trigger runs in a later build, where it cannot be \
                     checked whether from={from} names a stage or an image"
                ),
            );
            return;
        }
        // Unlike COPY --from, a mount's from= is never a stage index in BuildKit v0.8.
        self.stage_or_image(
            instruction,
            &format!("{shown} --mount=…,from="),
            &from,
            false,
        );
    }
}

/// Why an ADD/COPY source is refused, if it is: a URL, as written or once quotes and escapes are
/// processed; for ADD, also a source whose variables could make it one.
fn source_problem(shown: &str, is_add: bool, source: &str, escapes: &[char]) -> Option<String> {
    let url = || {
        Some(format!(
            "{shown} source {source:?} is a URL; builds may only use files from their build context"
        ))
    };
    if looks_like_url(source) {
        return url();
    }
    for &escape in escapes {
        match lex(source, escape, &Args::new()) {
            Ok(parts) => {
                let prefix = match parts.first() {
                    Some(Part::Text(text)) => text.as_str(),
                    _ => "",
                };
                let literal_url = parts
                    .iter()
                    .any(|part| matches!(part, Part::Text(text) if text.contains("://")));
                if literal_url || looks_like_url(prefix) {
                    return url();
                }
                let has_var = parts.iter().any(|part| matches!(part, Part::Var(_)));
                if is_add && has_var && could_become_url(prefix) {
                    return Some(format!(
                        "{shown} source {source:?} could expand to a URL, which cannot be checked \
                         before the build; start it with ./ or use COPY"
                    ));
                }
            }
            Err(error) if is_add => {
                return Some(format!(
                    "{shown} source {source:?} cannot be parsed ({error})"
                ));
            }
            Err(_) => {}
        }
    }
    None
}

// ---- References: distribution/reference's grammar -----------------------------------------------

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `domain-component ('.' domain-component)* (':' port)?`.
fn is_domain(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && name.split('.').all(component)
}

/// `[a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut at = 0;
    loop {
        let run = bytes[at..].iter().take_while(|b| alphanumeric(b)).count();
        if run == 0 {
            return false;
        }
        at += run;
        let separator = match &bytes[at..] {
            [] => return true,
            [b'_', b'_', ..] => 2,
            [b'.' | b'_', ..] => 1,
            [b'-', ..] => bytes[at..].iter().take_while(|&&b| b == b'-').count(),
            _ => return false,
        };
        at += separator;
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (1..=128).contains(&tag.len())
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// The digests go-digest accepts: a known algorithm and its exact length of lowercase hex.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(is_lower_hex)
}

#[cfg(test)]
mod tests;
