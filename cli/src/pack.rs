//! Packing a function's directory into the tar.gz `deploy` uploads, leaving out what its
//! `.dockerignore` names (as `docker build` would never send it), and reading `--env-file`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use flate2::{Compression, write::GzEncoder};
use slipway_shared::dockerignore::DockerIgnore;

fn load_ignore(dir: &Path) -> anyhow::Result<DockerIgnore> {
    match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ok(DockerIgnore::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
        Err(e) => Err(e).context("reading .dockerignore"),
    }
}

/// The directory as a tar.gz, paths relative to it, `.dockerignore` applied.
pub fn pack_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let ignore = load_ignore(dir)?;
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

/// The files to pack. An ignored directory is only entered when a `!` rule could re-include
/// something in it; the Dockerfile and the `.dockerignore` always go, as Docker sends them.
fn collect(
    root: &Path,
    relative: PathBuf,
    ignore: &DockerIgnore,
    out: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join(&relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let name = path.to_string_lossy();
        let always = name == "Dockerfile" || name == ".dockerignore";
        let ignored = !always && ignore.ignores(&name);
        if entry.file_type()?.is_dir() {
            if !ignored || ignore.has_exceptions() {
                collect(root, path, ignore, out)?;
            }
        } else if !ignored {
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

    #[test]
    fn packs_a_directory_without_what_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            dir.path().join(".dockerignore"),
            "*.tmp\nwww\n!www/index.html\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("www-notes.tmp"), "x").unwrap();
        std::fs::write(dir.path().join("junk.tmp"), "x").unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
        std::fs::write(dir.path().join("www/drop.html"), "gone").unwrap();
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
