//! Archive validation and build-context preparation through the public API, on archives made by
//! GNU tar the way CI makes them.

use std::{io::Read, os::unix::fs::symlink, path::Path, process::Command};

use slipway_shared::archive::{ArchiveLimits, prepare_build_context, validate_archive};

fn gnu_tar_czf(dir: &Path, archive: &Path) {
    let status = Command::new("tar")
        .arg("-czf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("GNU tar is installed");
    assert!(status.success());
}

#[test]
fn an_archive_made_by_gnu_tar_validates_and_prepares() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let long_dir = src.join("a".repeat(80)).join("b".repeat(80));
    std::fs::create_dir_all(&long_dir).unwrap();
    std::fs::write(
        src.join("Dockerfile"),
        "# syntax=docker/dockerfile:1.7\nFROM scratch\nCOPY . /app\n",
    )
    .unwrap();
    std::fs::write(long_dir.join("handler.py"), "def handle(): pass\n").unwrap();
    std::fs::write(src.join("data.bin"), vec![0u8; 1 << 20]).unwrap();
    symlink("data.bin", src.join("alias.bin")).unwrap();
    std::fs::hard_link(src.join("data.bin"), src.join("hard.bin")).unwrap();
    let archive = work.path().join("function.tar.gz");
    gnu_tar_czf(&src, &archive);

    let bytes = std::fs::read(&archive).unwrap();
    let summary = validate_archive(&bytes, &ArchiveLimits::default()).unwrap();
    // ./, Dockerfile, two directories, handler.py, data.bin, alias.bin, hard.bin
    assert_eq!(summary.entries, 8);
    assert!(summary.uncompressed_bytes > 1 << 20);
    assert_eq!(summary.sha256.len(), 64);

    let context = work.path().join("context.tar");
    let prepared = prepare_build_context(&bytes[..], &context, "tenant").unwrap();
    assert_eq!(
        prepared.stripped_directives,
        ["# syntax=docker/dockerfile:1.7"]
    );
    let mut tar = tar::Archive::new(std::fs::File::open(&context).unwrap());
    let mut dockerfile = String::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("Dockerfile") {
            entry.read_to_string(&mut dockerfile).unwrap();
        }
    }
    assert_eq!(dockerfile, "FROM scratch\nCOPY . /app\n");

    // GNU tar extracts what BuildKit will get to the same tree.
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&context)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let handler = out
        .join("a".repeat(80))
        .join("b".repeat(80))
        .join("handler.py");
    assert_eq!(
        std::fs::read_to_string(handler).unwrap(),
        "def handle(): pass\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("alias.bin")).unwrap(),
        Path::new("data.bin")
    );
    assert_eq!(std::fs::read(out.join("hard.bin")).unwrap().len(), 1 << 20);
}

#[test]
fn gnu_tar_archives_with_escaping_links_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    std::fs::write(src.join("Dockerfile"), "FROM scratch\n").unwrap();
    symlink("../../etc/passwd", src.join("app/passwd")).unwrap();
    let archive = work.path().join("function.tar.gz");
    gnu_tar_czf(&src, &archive);
    let error =
        validate_archive(&std::fs::read(&archive).unwrap(), &ArchiveLimits::default()).unwrap_err();
    assert_eq!(error.code(), "archive_link_escapes_root", "{error}");
}
