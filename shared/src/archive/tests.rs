//! Unit tests for archive validation and build-context preparation; archives are built in memory,
//! with header bytes set by hand where the `tar` crate's safe API refuses to write them.

use std::time::{Duration, Instant};

use super::*;

fn gz(tar: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(tar).unwrap();
    encoder.finish().unwrap()
}

/// Builds tars entry by entry; names and link names up to 100 bytes go straight into the header.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn with_dockerfile() -> Self {
        let mut tar = Self::new();
        tar.file("Dockerfile", b"FROM scratch\n");
        tar
    }

    fn header(name: &str, kind: u8, link: &str, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        let bytes = header.as_mut_bytes();
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(EntryType::new(kind));
        header.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
        header.set_size(size);
        header.set_cksum();
        header
    }

    fn raw(&mut self, name: &str, kind: u8, link: &str, data: &[u8]) -> &mut Self {
        let header = Self::header(name, kind, link, data.len() as u64);
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name, b'0', "", data)
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, b'5', "", b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, b'2', target, b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, b'1', target, b"")
    }

    /// A GNU `L` record carrying `name`, then the entry with a truncated header name.
    fn gnu_long_file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut long = tar::Header::new_gnu();
        long.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(name.len() as u64 + 1);
        long.set_cksum();
        let mut record = name.as_bytes().to_vec();
        record.push(0);
        self.0.append(&long, &record[..]).unwrap();
        let mut header = tar::Header::new_gnu();
        header.as_mut_bytes()[..99].copy_from_slice(&name.as_bytes()[..99]);
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    /// A PAX `x` header whose `path` overrides the ustar name `short`.
    fn pax_file(&mut self, path: &str, short: &str, data: &[u8]) -> &mut Self {
        let record = Self::pax_record("path", path);
        self.raw("PaxHeaders/x", b'x', "", &record);
        self.file(short, data)
    }

    /// What `git archive` puts first.
    fn pax_global(&mut self) -> &mut Self {
        let record = Self::pax_record("comment", "0123456789abcdef0123456789abcdef01234567");
        self.raw("pax_global_header", b'g', "", &record)
    }

    fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

fn validate(tar: &[u8]) -> Result<ArchiveSummary, ArchiveError> {
    validate_archive(&gz(tar), &ArchiveLimits::default())
}

fn refused(tar: &[u8]) -> ArchiveError {
    match validate(tar) {
        Ok(summary) => panic!("accepted: {summary:?}"),
        Err(error) => error,
    }
}

#[test]
fn a_typical_function_archive_is_accepted() {
    let long_dir = "deep/".repeat(30);
    let tar = Tar::new()
        .pax_global()
        .dir("./")
        .file("./Dockerfile", b"FROM scratch\nCOPY . /app\n")
        .dir("./app/")
        .file("./app/main.sh", b"echo hi")
        .raw("app/contiguous", b'7', "", b"data")
        .symlink("app/link", "main.sh")
        .symlink("app/up", "../Dockerfile")
        .symlink("app/self", ".")
        .symlink("app/chain", "up")
        .hardlink("app/hard", "./app/main.sh")
        .gnu_long_file(&format!("{long_dir}gnu.txt"), b"gnu")
        .pax_file(&format!("{long_dir}pax.txt"), "short", b"pax")
        .finish();
    let archive = gz(&tar);
    let summary = validate_archive(&archive, &ArchiveLimits::default()).unwrap();
    assert_eq!(summary.entries, 13);
    assert_eq!(summary.uncompressed_bytes, tar.len() as u64);
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&archive)));
}

#[test]
fn absolute_paths_are_refused() {
    let long = format!("/{}", "x/".repeat(60));
    for tar in [
        Tar::with_dockerfile().file("/etc/passwd", b"x").finish(),
        Tar::with_dockerfile().file("//etc/passwd", b"x").finish(),
        Tar::with_dockerfile().dir("/").finish(),
        Tar::with_dockerfile().gnu_long_file(&long, b"x").finish(),
        Tar::with_dockerfile()
            .pax_file("/etc/passwd", "innocent", b"x")
            .finish(),
    ] {
        let error = refused(&tar);
        assert!(matches!(error, ArchiveError::AbsolutePath(_)), "{error:?}");
        assert_eq!(error.code(), "archive_unsafe_path");
    }
}

#[test]
fn any_parent_component_is_refused() {
    let long = format!("{}../../escape", "a/".repeat(60));
    for tar in [
        Tar::with_dockerfile().file("../x", b"x").finish(),
        Tar::with_dockerfile().dir("..").finish(),
        Tar::with_dockerfile().file("a/../../x", b"x").finish(),
        // Harmless once normalised, but no legitimate archiver writes it.
        Tar::with_dockerfile().file("a/../b", b"x").finish(),
        Tar::with_dockerfile().file("./../x", b"x").finish(),
        Tar::with_dockerfile().gnu_long_file(&long, b"x").finish(),
        Tar::with_dockerfile()
            .pax_file("../../etc/x", "innocent", b"x")
            .finish(),
        Tar::with_dockerfile().symlink("a/..", "b").finish(),
    ] {
        let error = refused(&tar);
        assert!(
            matches!(error, ArchiveError::ParentTraversal(_)),
            "{error:?}"
        );
        assert_eq!(error.code(), "archive_unsafe_path");
    }
}

#[test]
fn only_directories_may_name_the_root() {
    validate(&Tar::with_dockerfile().dir(".").dir("./").finish()).unwrap();
    for tar in [
        Tar::with_dockerfile().file("./", b"x").finish(),
        Tar::with_dockerfile().symlink(".", "app").finish(),
    ] {
        let error = refused(&tar);
        assert!(matches!(error, ArchiveError::RootEntry { .. }), "{error:?}");
        assert_eq!(error.code(), "archive_unsafe_path");
    }
}

#[test]
fn symlinks_must_resolve_inside_the_root() {
    validate(
        &Tar::with_dockerfile()
            .symlink("a/b/l", "../../Dockerfile")
            .symlink("a/dangling", "nowhere/at/all")
            .symlink("a/up", "..")
            .symlink("a/via", "up/a/up")
            .finish(),
    )
    .unwrap();
    let refusals: [(&str, Vec<u8>); 8] = [
        (
            "absolute",
            Tar::with_dockerfile().symlink("l", "/etc/shadow").finish(),
        ),
        (
            "above the root",
            Tar::with_dockerfile().symlink("l", "../x").finish(),
        ),
        (
            "two up",
            Tar::with_dockerfile().symlink("a/l", "../../x").finish(),
        ),
        (
            "down then up",
            Tar::with_dockerfile()
                .symlink("a/l", "b/../../../x")
                .finish(),
        ),
        ("empty", Tar::with_dockerfile().symlink("l", "").finish()),
        (
            "through another link",
            Tar::with_dockerfile()
                .symlink("d/up", "..")
                .symlink("d/esc", "up/..")
                .finish(),
        ),
        (
            "through a link declared later",
            Tar::with_dockerfile()
                .symlink("d/esc", "up/..")
                .symlink("d/up", "..")
                .finish(),
        ),
        (
            "a loop",
            Tar::with_dockerfile()
                .symlink("a", "b")
                .symlink("b", "a")
                .finish(),
        ),
    ];
    for (case, tar) in refusals {
        let error = refused(&tar);
        assert!(
            matches!(error, ArchiveError::LinkEscapesRoot { .. }),
            "{case}: {error:?}"
        );
        assert_eq!(error.code(), "archive_link_escapes_root", "{case}");
    }
}

#[test]
fn entries_beneath_a_symlink_are_refused() {
    for tar in [
        Tar::with_dockerfile()
            .symlink("lib", "app")
            .file("lib/x", b"x")
            .finish(),
        Tar::with_dockerfile()
            .file("lib/x", b"x")
            .symlink("lib", "app")
            .finish(),
        Tar::with_dockerfile()
            .symlink("a/lib", ".")
            .dir("a/lib/sub")
            .finish(),
    ] {
        let error = refused(&tar);
        assert!(
            matches!(error, ArchiveError::BeneathSymlink { .. }),
            "{error:?}"
        );
        assert_eq!(error.code(), "archive_unsafe_path");
    }
}

#[test]
fn hard_links_must_name_an_earlier_entry() {
    validate(
        &Tar::with_dockerfile()
            .file("a", b"x")
            .hardlink("b", "./a")
            .hardlink("c", "b")
            .finish(),
    )
    .unwrap();
    for (case, tar) in [
        (
            "parent",
            Tar::with_dockerfile().hardlink("h", "../x").finish(),
        ),
        (
            "absolute",
            Tar::with_dockerfile().hardlink("h", "/etc/passwd").finish(),
        ),
        (
            "missing",
            Tar::with_dockerfile().hardlink("h", "missing").finish(),
        ),
        (
            "later",
            Tar::with_dockerfile()
                .hardlink("h", "later")
                .file("later", b"x")
                .finish(),
        ),
        (
            "directory",
            Tar::with_dockerfile().dir("d").hardlink("h", "d").finish(),
        ),
        ("itself", Tar::with_dockerfile().hardlink("h", "h").finish()),
    ] {
        let error = refused(&tar);
        assert!(
            matches!(error, ArchiveError::LinkEscapesRoot { .. }),
            "{case}: {error:?}"
        );
        assert_eq!(error.code(), "archive_link_escapes_root", "{case}");
    }
}

#[test]
fn devices_fifos_and_exotic_types_are_refused() {
    for (kind, name) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "fifo"),
        (b'V', "volume label"),
        (b'D', "GNU dump directory"),
        (b'M', "multi-volume continuation"),
        (b'Z', "entry of type 'Z'"),
    ] {
        let error = refused(&Tar::with_dockerfile().raw("odd", kind, "", b"").finish());
        match &error {
            ArchiveError::UnsupportedEntryType { path, kind } => {
                assert_eq!((path.as_str(), kind.as_str()), ("odd", name));
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(error.code(), "archive_unsupported_entry");
    }
}

#[test]
fn a_regular_dockerfile_is_required_at_the_root() {
    validate(&Tar::new().file("./Dockerfile", b"FROM scratch").finish()).unwrap();
    validate(&Tar::new().file(".//./Dockerfile", b"FROM scratch").finish()).unwrap();
    for (case, tar) in [
        ("none", Tar::new().file("main.sh", b"echo").finish()),
        (
            "nested",
            Tar::new().file("sub/Dockerfile", b"FROM scratch").finish(),
        ),
        (
            "lower case",
            Tar::new().file("dockerfile", b"FROM scratch").finish(),
        ),
        ("directory", Tar::new().dir("Dockerfile").finish()),
        (
            "symlink",
            Tar::new()
                .file("app/Dockerfile", b"FROM scratch")
                .symlink("Dockerfile", "app/Dockerfile")
                .finish(),
        ),
        (
            "hard link",
            Tar::new()
                .file("app/Dockerfile", b"FROM scratch")
                .hardlink("Dockerfile", "app/Dockerfile")
                .finish(),
        ),
        (
            "replaced by a later entry",
            Tar::with_dockerfile()
                .file("x", b"x")
                .symlink("Dockerfile", "x")
                .finish(),
        ),
    ] {
        let error = refused(&tar);
        assert!(
            matches!(error, ArchiveError::MissingDockerfile),
            "{case}: {error:?}"
        );
        assert_eq!(error.code(), "archive_missing_dockerfile");
    }
}

#[test]
fn inputs_that_are_not_tar_gz_are_told_apart() {
    let limits = ArchiveLimits::default();
    let code = |bytes: &[u8]| validate_archive(bytes, &limits).unwrap_err().code();
    assert_eq!(code(b""), "archive_not_gzip");
    assert_eq!(code(b"hello"), "archive_not_gzip");
    assert_eq!(
        code(&Tar::with_dockerfile().finish()),
        "archive_not_gzip",
        "an uncompressed tar"
    );
    assert_eq!(
        code(&gz(&b"this is text, not a tar stream".repeat(40))),
        "archive_not_tar"
    );
    assert_eq!(code(&gz(b"short")), "archive_not_tar");
    assert_eq!(code(&gz(b"")), "archive_not_tar");
    assert_eq!(code(&gz(&[0; 1024])), "archive_not_tar");
    assert_eq!(
        code(b"\x1f\x8b\x08\x00garbage that is no deflate stream"),
        "archive_not_tar"
    );
}

#[test]
fn truncated_or_corrupted_uploads_are_refused() {
    let tar = Tar::with_dockerfile().file("app/data", &[7; 4096]).finish();
    let archive = gz(&tar);
    let limits = ArchiveLimits::default();
    validate_archive(&archive, &limits).unwrap();
    // Without the gzip trailer the tar itself is complete: only the CRC/length check catches it.
    for cut in [8, archive.len() / 2] {
        let error = validate_archive(&archive[..archive.len() - cut], &limits).unwrap_err();
        assert_eq!(error.code(), "archive_not_tar", "cut {cut}: {error}");
    }
    let mut flipped = archive.clone();
    let crc_at = flipped.len() - 8;
    flipped[crc_at] ^= 0xff;
    let error = validate_archive(&flipped, &limits).unwrap_err();
    assert_eq!(error.code(), "archive_not_tar", "{error}");
    // A complete gzip of a tar cut inside an entry's data.
    let error = validate(&tar[..512 * 4]).unwrap_err();
    assert_eq!(error.code(), "archive_not_tar", "{error}");
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn limits_hold_exactly_at_their_boundaries() {
    let tar = Tar::with_dockerfile()
        .file("a", b"x")
        .file("b", b"y")
        .finish();
    let archive = gz(&tar);
    let limits = |compressed: usize, uncompressed: usize, entries: u64| ArchiveLimits {
        max_compressed_bytes: compressed as u64,
        max_uncompressed_bytes: uncompressed as u64,
        max_entries: entries,
    };
    let code = |limits: ArchiveLimits| validate_archive(&archive, &limits).map_err(|e| e.code());
    let (c, u) = (archive.len(), tar.len());
    assert!(code(limits(c, u, 3)).is_ok());
    assert_eq!(code(limits(c - 1, u, 3)).unwrap_err(), "archive_too_large");
    assert_eq!(
        code(limits(c, u - 1, 3)).unwrap_err(),
        "archive_too_large_uncompressed"
    );
    assert_eq!(
        code(limits(c, u, 2)).unwrap_err(),
        "archive_too_many_entries"
    );
}

#[test]
fn a_gzip_bomb_stops_one_byte_past_the_limit() {
    const BOMB: u64 = 300 << 20;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut builder = tar::Builder::new(&mut encoder);
        builder
            .append(
                &Tar::header("Dockerfile", b'0', "", 13),
                &b"FROM scratch\n"[..],
            )
            .unwrap();
        builder
            .append(
                &Tar::header("bomb", b'0', "", BOMB),
                io::repeat(0).take(BOMB),
            )
            .unwrap();
        builder.finish().unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 512 << 10, "the bomb is {} bytes", bomb.len());
    let limits = ArchiveLimits::default();
    let started = Instant::now();
    let (result, inflated) = validate_counting(&bomb[..], bomb.len() as u64, &limits);
    let elapsed = started.elapsed();
    let error = result.unwrap_err();
    assert!(
        matches!(error, ArchiveError::UncompressedTooLarge { limit } if limit == 250 << 20),
        "{error:?}"
    );
    assert_eq!(inflated, Some(limits.max_uncompressed_bytes + 1));
    eprintln!(
        "bomb: {} compressed bytes declaring {BOMB} inflated; stopped after {} bytes in {elapsed:?}",
        bomb.len(),
        limits.max_uncompressed_bytes + 1
    );
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[test]
fn zeros_after_the_end_of_the_tar_count_too() {
    let mut tar = Tar::with_dockerfile().finish();
    tar.resize(tar.len() + (2 << 20), 0);
    let limits = ArchiveLimits {
        max_uncompressed_bytes: 1 << 20,
        ..ArchiveLimits::default()
    };
    let error = validate_archive(&gz(&tar), &limits).unwrap_err();
    assert_eq!(error.code(), "archive_too_large_uncompressed");
}

#[test]
fn every_error_has_a_stable_code() {
    let s = String::new;
    let codes: Vec<&str> = [
        ArchiveError::NotGzip,
        ArchiveError::NotTar(s()),
        ArchiveError::TooLarge { limit: 1 },
        ArchiveError::UncompressedTooLarge { limit: 1 },
        ArchiveError::TooManyEntries { limit: 1 },
        ArchiveError::AbsolutePath(s()),
        ArchiveError::ParentTraversal(s()),
        ArchiveError::RootEntry { kind: s() },
        ArchiveError::BeneathSymlink {
            path: s(),
            link: s(),
        },
        ArchiveError::LinkEscapesRoot {
            path: s(),
            target: s(),
        },
        ArchiveError::UnsupportedEntryType {
            path: s(),
            kind: s(),
        },
        ArchiveError::MissingDockerfile,
        ArchiveError::Io(io::Error::other("x")),
    ]
    .iter()
    .map(ArchiveError::code)
    .collect();
    assert_eq!(
        codes,
        [
            "archive_not_gzip",
            "archive_not_tar",
            "archive_too_large",
            "archive_too_large_uncompressed",
            "archive_too_many_entries",
            "archive_unsafe_path",
            "archive_unsafe_path",
            "archive_unsafe_path",
            "archive_unsafe_path",
            "archive_link_escapes_root",
            "archive_unsupported_entry",
            "archive_missing_dockerfile",
            "archive_io",
        ]
    );
}

fn stripped(dockerfile: &str) -> (String, Vec<String>) {
    let (kept, stripped) = strip_syntax_directives(dockerfile.as_bytes());
    (String::from_utf8(kept).unwrap(), stripped)
}

#[test]
fn only_leading_syntax_directives_are_stripped() {
    assert_eq!(
        stripped(
            "# syntax=docker/dockerfile:1\n#escape=`\n# check=skip=all\nFROM scratch\n# syntax=later\n"
        ),
        (
            "#escape=`\n# check=skip=all\nFROM scratch\n# syntax=later\n".to_owned(),
            vec!["# syntax=docker/dockerfile:1".to_owned()]
        )
    );
    assert_eq!(
        stripped("#escape=\\\n#  SyNtAx  =  x  \nFROM scratch"),
        (
            "#escape=\\\nFROM scratch".to_owned(),
            vec!["#  SyNtAx  =  x".to_owned()]
        )
    );
    // Each of these ends the directives before the `syntax` line.
    for text in [
        "\n# syntax=x\nFROM scratch\n",
        "# a comment\n# syntax=x\nFROM scratch",
        "# unknown=directive\n# syntax=x\nFROM scratch",
        "FROM scratch\n# syntax=x\n",
        " # syntax=x\nFROM scratch\n",
        "# syntax=\n# syntax=x\nFROM scratch\n",
    ] {
        assert_eq!(stripped(text), (text.to_owned(), vec![]), "{text:?}");
    }
}

#[test]
fn directive_stripping_keeps_every_other_byte() {
    let (kept, removed) =
        strip_syntax_directives(b"# syntax=x\r\n# escape=`\r\nFROM scratch\r\n# caf\xe9\r\n");
    assert_eq!(kept, b"# escape=`\r\nFROM scratch\r\n# caf\xe9\r\n");
    assert_eq!(removed, ["# syntax=x"]);
    let (kept, removed) = strip_syntax_directives(b"\xef\xbb\xbf# syntax=x\nFROM scratch");
    assert_eq!(kept, b"\xef\xbb\xbfFROM scratch");
    assert_eq!(removed, ["# syntax=x"]);
    assert_eq!(
        stripped("#!/usr/bin/env buildctl\n# syntax=x\nFROM scratch"),
        (
            "#!/usr/bin/env buildctl\nFROM scratch".to_owned(),
            vec!["# syntax=x".to_owned()]
        )
    );
    // BuildKit also looks for `//` directives when there is no `#` one.
    assert_eq!(
        stripped("// syntax=x\nFROM scratch"),
        ("FROM scratch".to_owned(), vec!["// syntax=x".to_owned()])
    );
    let (kept, removed) = strip_syntax_directives(b"FROM scratch\n");
    assert_eq!((kept, removed.len()), (b"FROM scratch\n".to_vec(), 0));
}

/// The entries of an uncompressed tar: path, type byte, link name, mode, data.
fn read_context(path: &Path) -> Vec<(String, u8, String, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap())
                .unwrap_or_default();
            let kind = entry.header().entry_type().as_byte();
            let mode = entry.header().mode().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, kind, link, mode, data)
        })
        .collect()
}

#[test]
fn the_build_context_keeps_everything_but_the_syntax_line() {
    let long = format!("{}file.txt", "deep/".repeat(30));
    let mut tar = Tar::new();
    tar.pax_global()
        .dir("./")
        .file(
            "./Dockerfile",
            b"# syntax=docker/dockerfile:1\nFROM scratch\n",
        )
        .dir("app/")
        .raw("./app//main.sh", b'0', "", b"echo hi")
        .symlink("app/link", "./main.sh")
        .hardlink("app/hard", "./app//main.sh")
        .gnu_long_file(&long, b"long");
    let archive = gz(&tar.finish());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("context.tar");
    let prepared = prepare_build_context(&archive[..], &dest, "tenant").unwrap();
    assert_eq!(
        prepared.stripped_directives,
        ["# syntax=docker/dockerfile:1"]
    );
    let entries = read_context(&dest);
    let expected: Vec<(String, u8, String, u32, Vec<u8>)> = vec![
        (
            "Dockerfile".into(),
            b'0',
            "".into(),
            0o644,
            b"FROM scratch\n".to_vec(),
        ),
        ("app".into(), b'5', "".into(), 0o755, vec![]),
        (
            "app/main.sh".into(),
            b'0',
            "".into(),
            0o644,
            b"echo hi".to_vec(),
        ),
        ("app/link".into(), b'2', "./main.sh".into(), 0o644, vec![]),
        ("app/hard".into(), b'1', "app/main.sh".into(), 0o644, vec![]),
        (long, b'0', "".into(), 0o644, b"long".to_vec()),
    ];
    assert_eq!(entries, expected);
    // What BuildKit gets passes validation itself.
    let context = std::fs::read(&dest).unwrap();
    assert_eq!(validate(&context).unwrap().entries, 6);
}

#[test]
fn a_dockerfile_without_directives_is_copied_byte_for_byte() {
    let dockerfile = b"\xef\xbb\xbf# escape=`\r\nFROM scratch\r\n# caf\xe9\r\n";
    let archive = gz(&Tar::new().file("Dockerfile", dockerfile).finish());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("context.tar");
    let prepared = prepare_build_context(&archive[..], &dest, "tenant").unwrap();
    assert!(prepared.stripped_directives.is_empty());
    assert_eq!(read_context(&dest)[0].4, dockerfile);
}

#[test]
fn the_build_context_is_refused_for_what_validation_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("context.tar");
    let prepare = |tar: &[u8]| {
        prepare_build_context(&gz(tar)[..], &dest, "tenant")
            .unwrap_err()
            .code()
    };
    assert_eq!(
        prepare(&Tar::with_dockerfile().file("../x", b"x").finish()),
        "archive_unsafe_path"
    );
    assert_eq!(
        prepare(
            &Tar::with_dockerfile()
                .symlink("d/up", "..")
                .symlink("d/esc", "up/..")
                .finish()
        ),
        "archive_link_escapes_root"
    );
    assert_eq!(
        prepare(&Tar::with_dockerfile().raw("dev", b'3', "", b"").finish()),
        "archive_unsupported_entry"
    );
    assert_eq!(
        prepare(&Tar::new().file("main.sh", b"x").finish()),
        "archive_missing_dockerfile"
    );
    let tar = Tar::with_dockerfile().file("data", &[1; 4096]).finish();
    assert_eq!(prepare(&tar[..512 * 4]), "archive_not_tar");
    let archive = gz(&tar);
    let error = prepare_build_context(&archive[..archive.len() - 8], &dest, "tenant").unwrap_err();
    assert_eq!(error.code(), "archive_not_tar");
    assert_eq!(
        prepare_build_context(&b"not gzip"[..], &dest, "tenant")
            .unwrap_err()
            .code(),
        "archive_not_tar"
    );
}

#[test]
fn the_context_leaves_out_what_the_archives_dockerignore_names() {
    let tar = Tar::new()
        .file("Dockerfile", b"FROM scratch\nCOPY . /\n")
        .file(
            ".dockerignore",
            b"# not for the image\nwww/secret.txt\nwww/logs\n!www/logs/keep.txt\nDockerfile\n",
        )
        .file("www/index.html", b"hi")
        .file("www/secret.txt", b"s3cret")
        .file("www/logs/drop.txt", b"drop")
        .file("www/logs/keep.txt", b"keep")
        .finish();
    let archive = gz(&tar);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("context.tar");
    let prepared = prepare_build_context(&archive[..], &dest, "tenant").unwrap();
    assert_eq!(prepared.left_out, 2);
    let names: Vec<String> = read_context(&dest).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "Dockerfile",
            ".dockerignore",
            "www/index.html",
            "www/logs/keep.txt"
        ],
        "the Dockerfile and .dockerignore stay, whatever the file says"
    );
}
