//! `.dockerignore`, with Docker's matching rules (moby's `patternmatcher`): one pattern per line,
//! `#` comments, `!` re-includes, paths cleaned and taken from the context's root, `*`, `?`,
//! `[…]` classes and `\` escapes within a path segment, `**` across segments, and a pattern
//! that matches a directory covering everything under it; the last matching line decides.
//!
//! The CLI applies it when it packs a directory and the worker applies it again when it prepares
//! a build context, so an archive uploaded with curl builds the same image as one the CLI sent.

/// The parsed rules of one `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    /// (re-include, pattern segments), in file order.
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (include, pattern) = match line.strip_prefix('!') {
                    Some(pattern) => (true, pattern.trim()),
                    None => (false, line),
                };
                let segments = clean(pattern);
                // A pattern that cleans to nothing ("/", ".") would match the root itself.
                (!segments.is_empty()).then_some((include, segments))
            })
            .collect();
        Self { rules }
    }

    /// Whether the file or directory at `path` (relative, `/`-separated) is left out.
    pub fn ignores(&self, path: &str) -> bool {
        let path = clean(path);
        let mut ignored = false;
        for (include, pattern) in &self.rules {
            if (1..=path.len()).any(|n| matches(pattern, &path[..n])) {
                ignored = !include;
            }
        }
        ignored
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a `!` rule could re-include something under an ignored directory.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(include, _)| *include)
    }
}

/// Go's `filepath.Clean` on a path taken from the root: no empty or `.` segments, `..` pops.
fn clean(path: &str) -> Vec<String> {
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    segments
}

fn matches(pattern: &[String], path: &[String]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            matches(&pattern[1..], path) || (!path.is_empty() && matches(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            segment_matches(p.as_bytes(), s.as_bytes()) && matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Go's `filepath.Match` within one segment: `*`, `?`, `[…]` (with `^` or `!` negation and
/// ranges) and `\` escapes.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        Some(b'?') => !name.is_empty() && segment_matches(&pattern[1..], &name[1..]),
        Some(b'[') => match (class(&pattern[1..]), name.first()) {
            (Some((matcher, rest)), Some(&c)) => matcher(c) && segment_matches(rest, &name[1..]),
            _ => false,
        },
        Some(b'\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && segment_matches(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && segment_matches(&pattern[1..], &name[1..]),
    }
}

/// A `[…]` class (after its `[`): a test for one byte, and the rest of the pattern; `None` for
/// an unterminated class, which matches nothing (Go reports it as a bad pattern).
#[allow(clippy::type_complexity)]
fn class(pattern: &[u8]) -> Option<(Box<dyn Fn(u8) -> bool>, &[u8])> {
    let (negated, mut rest) = match pattern.first() {
        Some(b'^' | b'!') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        match rest.first()? {
            b']' if !first => break,
            _ => {}
        }
        first = false;
        let (low, after) = escaped(rest)?;
        let (high, after) = match after.split_first() {
            Some((b'-', tail)) if tail.first() != Some(&b']') => escaped(tail)?,
            _ => (low, after),
        };
        ranges.push((low, high));
        rest = after;
    }
    let test = move |c: u8| ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != negated;
    Some((Box::new(test), &rest[1..]))
}

/// One byte of a class, `\` escapes taken into account.
fn escaped(pattern: &[u8]) -> Option<(u8, &[u8])> {
    match pattern {
        [b'\\', c, rest @ ..] => Some((*c, rest)),
        [c, rest @ ..] => Some((*c, rest)),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_s_rules() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.tmp\n/secrets\nlogs/\n!logs/keep.txt\n**/*.bak\nfile[0-9].txt\n\
             node_modules\n!node_modules/keep\nweird\\*name\n./dotted/../cleaned\n",
        );
        for (path, ignored) in [
            ("a.tmp", true),
            ("dir/a.tmp", false),
            ("secrets/key", true),
            ("logs/drop.txt", true),
            ("logs/keep.txt", false),
            ("deep/er/x.bak", true),
            ("x.bak", true),
            ("file1.txt", true),
            ("filex.txt", false),
            ("node_modules/a/b.js", true),
            ("node_modules/keep", false),
            ("weird*name", true),
            ("weirdXname", false),
            ("cleaned", true),
            ("Dockerfile", false),
            ("./a.tmp", true),
        ] {
            assert_eq!(ignore.ignores(path), ignored, "{path}");
        }
    }

    #[test]
    fn classes_and_nonsense() {
        let ignore = DockerIgnore::parse("[!a-c]x\n[\n/\n.\n");
        assert!(ignore.ignores("dx"));
        assert!(!ignore.ignores("bx"));
        assert!(
            !ignore.ignores("["),
            "an unterminated class matches nothing"
        );
        assert!(
            !ignore.ignores("anything"),
            "/ and . do not ignore the root"
        );
        assert!(DockerIgnore::parse("\n# only comments\n").is_empty());
    }
}
