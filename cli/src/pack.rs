//! Packing a function's directory into the tar.gz `deploy` uploads, leaving out what its
//! `.dockerignore` names (as `docker build` would never send it), and reading `--env-file`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use flate2::{Compression, write::GzEncoder};

/// `.dockerignore` patterns: `#` comments, `!` re-includes, `*` and `?` within a path segment,
/// `**` across segments; a pattern naming a directory covers everything under it.
struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("reading .dockerignore"),
        };
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (include, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                let segments = pattern
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                (include, segments)
            })
            .collect();
        Ok(Self { rules })
    }

    /// The last matching rule decides, as in Docker.
    fn ignores(&self, relative: &[String]) -> bool {
        let mut ignored = false;
        for (include, pattern) in &self.rules {
            if matches_prefix(pattern, relative) {
                ignored = !include;
            }
        }
        ignored
    }
}

/// Whether `pattern` matches `path` or one of its parent directories.
fn matches_prefix(pattern: &[String], path: &[String]) -> bool {
    (1..=path.len()).any(|n| matches(pattern, &path[..n]))
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

fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The directory as a tar.gz, paths relative to it, `.dockerignore` applied.
pub fn pack_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let ignore = Ignore::load(dir)?;
    let mut files = Vec::new();
    collect(dir, PathBuf::new(), &ignore, &mut files)?;
    files.sort();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    builder.follow_symlinks(false);
    for relative in files {
        builder
            .append_path_with_name(dir.join(&relative), &relative)
            .with_context(|| format!("packing {}", relative.display()))?;
    }
    Ok(builder.into_inner()?.finish()?)
}

fn collect(
    root: &Path,
    relative: PathBuf,
    ignore: &Ignore,
    out: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join(&relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let segments: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if ignore.ignores(&segments) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect(root, path, ignore, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `KEY=value` lines (`#` comments, blank lines, optional surrounding quotes).
pub fn read_env_file(file: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut env = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .strip_prefix("export ")
            .unwrap_or(line)
            .split_once('=')
            .with_context(|| format!("{}:{}: not KEY=value", file.display(), n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        env.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Vec<String> {
        raw.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn dockerignore_patterns() {
        let ignore = Ignore {
            rules: vec![
                (false, path("node_modules")),
                (false, path("*.log")),
                (false, path("**/secret?.txt")),
                (false, path("docs")),
                (true, path("docs/keep.md")),
            ],
        };
        assert!(ignore.ignores(&path("node_modules/x/y.js")));
        assert!(ignore.ignores(&path("debug.log")));
        assert!(
            !ignore.ignores(&path("src/debug.log")),
            "*.log is top-level only"
        );
        assert!(ignore.ignores(&path("a/b/secret1.txt")));
        assert!(ignore.ignores(&path("docs/other.md")));
        assert!(!ignore.ignores(&path("docs/keep.md")));
        assert!(!ignore.ignores(&path("Dockerfile")));
    }

    #[test]
    fn packs_a_directory_without_what_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.tmp\n").unwrap();
        std::fs::write(dir.path().join("junk.tmp"), "x").unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
        let archive = pack_dir(dir.path()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "www/index.html"]);
    }

    #[test]
    fn env_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prod.env");
        std::fs::write(
            &file,
            "# comment\nGREETING=\"hi there\"\nexport MODE=prod\n\n",
        )
        .unwrap();
        let env = read_env_file(&file).unwrap();
        assert_eq!(env["GREETING"], "hi there");
        assert_eq!(env["MODE"], "prod");
        std::fs::write(&file, "oops\n").unwrap();
        assert!(read_env_file(&file).is_err());
    }
}
