//! Unit tests for Dockerfile inspection, cache-mount namespacing and image references; most
//! inputs are what a tenant trying to reach outside its build would write.

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What BuildKit sees in a flag: each byte one character.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn accepted(dockerfile: &str) -> DockerfileFacts {
    inspect(dockerfile).unwrap_or_else(|violations| {
        panic!("refused {dockerfile:?}: {violations:?}");
    })
}

/// `(line, reference)` of every image the build would use.
fn images(dockerfile: &str) -> Vec<(usize, String)> {
    accepted(dockerfile)
        .images
        .into_iter()
        .map(|image| (image.line, image.reference))
        .collect()
}

fn refused(dockerfile: &str) -> Vec<DockerfileViolation> {
    match inspect(dockerfile) {
        Ok(facts) => panic!("accepted {dockerfile:?}: {facts:?}"),
        Err(violations) => violations,
    }
}

fn refused_lines(dockerfile: &str) -> Vec<usize> {
    refused(dockerfile).iter().map(|v| v.line).collect()
}

#[test]
fn every_image_a_build_uses_is_reported_with_its_line_and_instruction() {
    let dockerfile = "\
# A comment, then a blank line.

FROM --platform=$BUILDPLATFORM golang:1.22 AS build
WORKDIR /src
COPY --from=127.0.0.1:5000/other:v1 / /
FROM busybox AS Runtime
COPY --from=build /out /app
COPY --from=0 /out /app
COPY --from=RUNTIME /etc/passwd /etc/passwd
RUN --mount=type=bind,from=other/image,target=/x true
RUN --mount=type=cache,from=build,target=/cache \\
    --mount=type=secret,id=token \\
    --mount=type=ssh true
FROM scratch
COPY --from=runtime / /
";
    assert_eq!(
        images(dockerfile),
        [
            (3, "golang:1.22".to_owned()),
            (5, "127.0.0.1:5000/other:v1".to_owned()),
            (6, "busybox".to_owned()),
            (10, "other/image".to_owned()),
        ]
    );
    let facts = accepted(dockerfile);
    assert_eq!(
        facts.images[0].instruction,
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build"
    );
    assert_eq!(
        facts.images[3].instruction,
        "RUN --mount=type=bind,from=other/image,target=/x true"
    );
}

#[test]
fn from_refers_to_an_earlier_stage_of_exactly_that_name_before_any_image() {
    let cases: &[(&str, &[&str])] = &[
        // The second FROM is the stage, not Docker Hub's debian.
        ("FROM busybox AS debian\nFROM debian", &["busybox"]),
        ("FROM busybox as debian\nFROM debian", &["busybox"]),
        // A stage cannot be its own base: this one is built from the image.
        ("FROM debian AS debian", &["debian"]),
        // Not yet declared: the image.
        (
            "FROM debian\nFROM busybox AS debian",
            &["debian", "busybox"],
        ),
        // Stage names are stored lowercased but FROM looks them up as written.
        (
            "FROM busybox AS debian\nFROM Debian",
            &["busybox", "Debian"],
        ),
        ("FROM busybox AS Debian\nFROM debian", &["busybox"]),
        // Not a valid stage name: BuildKit refuses the file, no stage is declared.
        ("FROM busybox AS 1st\nFROM 1st", &["busybox", "1st"]),
        ("FROM scratch\nFROM scratch AS base\nFROM base", &[]),
    ];
    for (dockerfile, expected) in cases {
        let found: Vec<String> = images(dockerfile).into_iter().map(|(_, r)| r).collect();
        assert_eq!(found, *expected, "{dockerfile:?}");
    }
}

#[test]
fn copy_from_names_any_stage_case_insensitively_or_an_index() {
    let cases: &[(&str, &[&str])] = &[
        ("FROM scratch AS a\nCOPY --from=builder / /", &["builder"]),
        (
            "FROM scratch AS builder\nFROM scratch\nCOPY --from=builder / /",
            &[],
        ),
        (
            "FROM scratch AS builder\nFROM scratch\nCOPY --from=BUILDER / /",
            &[],
        ),
        // BuildKit resolves --from against every stage, later ones too.
        (
            "FROM scratch\nCOPY --from=later / /\nFROM scratch AS later",
            &[],
        ),
        ("FROM scratch\nCOPY --from=0 / /", &[]),
        // Any integer is an index to BuildKit (an invalid one fails the build), not an image.
        ("FROM scratch\nCOPY --from=+1 / /\nCOPY --from=-1 / /", &[]),
        // ... unless it overflows, when it is a name again.
        (
            "FROM scratch\nCOPY --from=99999999999999999999 / /",
            &["99999999999999999999"],
        ),
        ("FROM scratch\nCOPY --from=scratch / /", &[]),
        ("FROM scratch\nCOPY --from= / /", &[]),
        // Quotes are removed by BuildKit's flag reader.
        (
            "FROM scratch\nCOPY --from=\"127.0.0.1:5000/other:v1\" / /",
            &["127.0.0.1:5000/other:v1"],
        ),
        (
            "FROM scratch\nCOPY --chown=1:1 --from=127.0.0.1:5000/o\\ther / /",
            &["127.0.0.1:5000/other"],
        ),
    ];
    for (dockerfile, expected) in cases {
        let found: Vec<String> = images(dockerfile).into_iter().map(|(_, r)| r).collect();
        assert_eq!(found, *expected, "{dockerfile:?}");
    }
}

#[test]
fn a_mount_from_names_a_stage_or_an_image_but_never_an_index() {
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM scratch\nRUN --mount=type=bind,from=other/image,target=/x true",
            &["other/image"],
        ),
        (
            "FROM scratch\nRUN --mount=from=other/image,target=/x true",
            &["other/image"],
        ),
        (
            "FROM scratch\nRUN --mount=type=cache,from=127.0.0.1:5000/x:1,target=/x true",
            &["127.0.0.1:5000/x:1"],
        ),
        ("FROM scratch AS b\nRUN --mount=from=B,target=/x true", &[]),
        // BuildKit v0.8 looks mount sources up by name only.
        ("FROM scratch\nRUN --mount=from=0,target=/x true", &["0"]),
        ("FROM scratch\nRUN --mount=type=cache,target=/x true", &[]),
        ("FROM scratch\nRUN --mount=from=scratch,target=/x true", &[]),
        (
            "FROM scratch\nRUN --mount=type=bind,\"from=a/b\",target=/x true",
            &["a/b"],
        ),
        (
            "FROM scratch\nRUN --mount=target=/x --mount=FROM=a/b,target=/y true",
            &["a/b"],
        ),
    ];
    for (dockerfile, expected) in cases {
        let found: Vec<String> = images(dockerfile).into_iter().map(|(_, r)| r).collect();
        assert_eq!(found, *expected, "{dockerfile:?}");
    }
}

#[test]
fn from_expands_the_args_declared_before_it_with_their_defaults() {
    let cases = [
        (
            "ARG BASE=127.0.0.1:5000/other-tenant:v1\nFROM ${BASE}",
            "127.0.0.1:5000/other-tenant:v1",
        ),
        (
            "ARG BASE=127.0.0.1:5000/other-tenant:v1\nFROM $BASE",
            "127.0.0.1:5000/other-tenant:v1",
        ),
        (
            "ARG REG=127.0.0.1:5000\nARG IMG=${REG}/x:1\nFROM $IMG",
            "127.0.0.1:5000/x:1",
        ),
        ("ARG V=1 IMG=busybox:$V\nFROM $IMG", "busybox:1"),
        ("ARG IMG=\"busybox:1\"\nFROM $IMG", "busybox:1"),
        ("ARG TAG=\nFROM busybox${TAG:-:1}", "busybox:1"),
        ("ARG TAG=2\nFROM busybox:${TAG:-1}", "busybox:2"),
        ("ARG TAG=2\nFROM busybox:${TAG:+3}", "busybox:3"),
        ("ARG TAG=\nFROM busybox${TAG:+:3}", "busybox"),
        ("ARG TAG=2\nFROM busybox:${TAG?}", "busybox:2"),
        ("ARG B=busybox\nARG B=debian\nFROM $B", "debian"),
        ("FROM \"busybox\"", "busybox"),
        ("FROM busy\\box", "busybox"),
        ("FROM 'busybox':1", "busybox:1"),
        ("# escape=`\nARG B=busybox\nFROM `$B$B", "$Bbusybox"),
    ];
    for (dockerfile, expected) in cases {
        if expected.contains('$') {
            assert_eq!(refused_lines(dockerfile), [3], "{dockerfile:?}");
            continue;
        }
        let found: Vec<String> = images(dockerfile).into_iter().map(|(_, r)| r).collect();
        assert_eq!(found, [expected], "{dockerfile:?}");
    }
}

#[test]
fn from_an_image_that_depends_on_an_unknown_value_is_refused() {
    let cases = [
        ("FROM $UNSET", 1),
        ("FROM ${UNSET}", 1),
        ("ARG BASE\nFROM ${BASE}", 2),
        // Build arguments BuildKit sets itself, or the worker might pass, are not known either.
        ("FROM ${BASE:-busybox}", 1),
        ("FROM busybox:$TARGETARCH", 1),
        ("ARG BASE=busybox\nARG BASE\nFROM $BASE", 3),
        // ARGs after the first FROM are not visible to later FROMs.
        ("FROM scratch\nARG BASE=busybox\nFROM $BASE", 3),
        // Expanding through another unknown value.
        ("ARG A=$UNSET\nFROM $A", 2),
        // BuildKit silently uses "" for a default it cannot expand: treated as unknown.
        ("ARG A=${B\nFROM busybox$A", 2),
        ("FROM ${BASE", 1),
        ("FROM ${}", 1),
        ("FROM ${X!y}", 1),
        ("FROM busy\"box", 1),
        // A literal `$` left over.
        ("FROM busybox$", 1),
        ("FROM $é", 1),
        ("ARG E=\nFROM $E", 2),
    ];
    for (dockerfile, line) in cases {
        let violations = refused(dockerfile);
        assert_eq!(violations.len(), 1, "{dockerfile:?}: {violations:?}");
        assert_eq!(violations[0].line, line, "{dockerfile:?}");
        assert!(violations[0].message.starts_with("FROM "), "{violations:?}");
    }
    let message = &refused("ARG BASE\nFROM ${BASE}")[0].message;
    assert!(
        message.contains("BASE") && message.contains("cannot be checked"),
        "{message}"
    );
}

#[test]
fn sources_fetched_from_the_network_are_refused_however_they_are_written() {
    let cases = [
        ("FROM scratch\nADD http://127.0.0.1:5000/v2/_catalog /x", 2),
        ("FROM scratch\nadd HTTPS://x/y /z", 2),
        ("FROM scratch\nADD [\"http://x/y\", \"/z\"]", 2),
        (
            "FROM scratch\nADD [\"./a\",\"http://x/y\",\"/z\"] trailing",
            2,
        ),
        (
            "FROM scratch\nCOPY --chown=1:1 git@github.com:a/b.git /x",
            2,
        ),
        (
            "FROM scratch\nCOPY [\"./a\", \"GIT@github.com:a/b.git\", \"/x\"]",
            2,
        ),
        ("FROM scratch\nADD --chmod=644 ftp://x/y /z", 2),
        ("FROM scratch\nADD ./a ./b http://x/y /dest/", 2),
        // Behind a line continuation, split inside the URL, or across a comment line.
        ("FROM scratch\nADD ./a \\\n    http://x/y /z", 2),
        ("FROM scratch\nADD ./a ht\\\ntp://x/y /z", 2),
        ("FROM scratch\nADD \\\n# hidden\n\n  http://x/y /z", 2),
        ("FROM scratch\n\n  ADD \\\n http://x/y \\\n /z", 3),
        // Quotes and escapes BuildKit removes before it looks at the source.
        ("FROM scratch\nADD \"http://x/y\" /z", 2),
        ("FROM scratch\nADD h\"ttp\"://x/y /z", 2),
        ("FROM scratch\nADD http:\\/\\/x/y /z", 2),
        ("FROM scratch\nADD 'http:'//x/y /z", 2),
        ("FROM scratch\nADD [\"http:\\u002f\\u002fx/y\", \"/z\"]", 2),
        ("FROM scratch\nADD [\"http:\\\\/\\\\/x/y\", \"/z\"]", 2),
        // With a backtick escape, the backtick continues lines and escapes characters.
        ("# escape=`\nFROM scratch\nADD ./a `\n  http://x/y /z", 3),
        ("# escape=`\nFROM scratch\nADD http:`/`/x/y /z", 3),
        // A URL made of variables (ENV, ARG, or the base image's environment).
        ("FROM scratch\nADD $URL /z", 2),
        ("FROM scratch\nARG U=http://x/y\nADD ${U} /z", 3),
        ("FROM scratch\nADD ${HOST}/y /z", 2),
        ("FROM scratch\nADD http${S}//x/y /z", 2),
        ("FROM scratch\nADD http:${S}/x/y /z", 2),
        ("FROM scratch\nADD h$X /z", 2),
        ("FROM scratch\nADD \"$U\" /z", 2),
        // A source BuildKit cannot expand: refused rather than guessed.
        ("FROM scratch\nADD ${U /z", 2),
        // ONBUILD triggers run in a later build: with either escape character.
        ("FROM scratch\nONBUILD ADD http://x/y /z", 2),
        ("FROM scratch\nonbuild copy git@x:y/z.git /z", 2),
        ("FROM scratch\nONBUILD ADD http:\\/\\/x/y /z", 2),
        ("FROM scratch\nONBUILD ADD http:`/`/x/y /z", 2),
        // Go lowercases U+0130 to `i`: BuildKit reads this as ONBUILD.
        ("FROM scratch\nONBU\u{130}LD ADD http://x/y /z", 2),
    ];
    for (dockerfile, line) in cases {
        let violations = refused(dockerfile);
        assert_eq!(violations.len(), 1, "{dockerfile:?}: {violations:?}");
        assert_eq!(violations[0].line, line, "{dockerfile:?}");
    }
    let message = refused("FROM scratch\nADD http://127.0.0.1:5000/v2/_catalog /x")[0].to_string();
    assert_eq!(
        message,
        "line 2: ADD source \"http://127.0.0.1:5000/v2/_catalog\" is a URL; builds may only use \
         files from their build context"
    );
}

#[test]
fn local_sources_are_accepted_including_variables_that_cannot_form_a_url() {
    for dockerfile in [
        "FROM scratch\nADD app.tar.gz /srv/",
        "FROM scratch\nADD [\"./a b\", \"/z\"]",
        "FROM scratch\nADD ./${ARCHIVE} /srv/",
        "FROM scratch\nADD dist/$VERSION.tar.gz /srv/",
        "FROM scratch\nADD ./git@x /srv/",
        // COPY never fetches (BuildKit refuses a URL there once expanded).
        "FROM scratch\nARG JAR_FILE=target/*.jar\nCOPY ${JAR_FILE} app.jar",
        // The destination is not fetched.
        "FROM scratch\nCOPY ./a /srv/http://x",
        "FROM scratch\nCOPY --from=0 / /",
        // A single argument has no source; BuildKit refuses it.
        "FROM scratch\nADD http://x/y",
        // Not an instruction BuildKit knows: it fails the build, nothing is fetched.
        "FROM scratch\nDOWNLOAD http://x/y /z",
        "FROM scratch\nRUN curl http://example.com/\nCMD [\"http://x\"]",
        // Without the escape directive first, a backtick is an ordinary character: this ADD is
        // its own instruction, and `http://x/y /z` is a line BuildKit refuses.
        "\n# escape=`\nFROM scratch\nADD ./a `\nhttp://x/y /z",
    ] {
        accepted(dockerfile);
    }
}

#[test]
fn run_may_not_ask_for_another_network_or_insecure_mode() {
    let cases = [
        (
            "FROM scratch\nRUN --network=host true",
            "RUN --network=host",
        ),
        (
            "FROM scratch\nRUN --network=bridge true",
            "RUN --network=bridge",
        ),
        (
            "FROM scratch\nRUN --network=HOST true",
            "RUN --network=HOST",
        ),
        ("FROM scratch\nRUN --network= true", "RUN --network="),
        (
            "FROM scratch\nRUN --network=\"host\" true",
            "RUN --network=host",
        ),
        (
            "FROM scratch\nRUN --\"network\"=host true",
            "RUN --network=host",
        ),
        (
            "FROM scratch\nRUN --mount=type=cache,target=/x --network=host true",
            "RUN --network=host",
        ),
        (
            "FROM scratch\nRUN --security=insecure true",
            "RUN --security=insecure",
        ),
        ("FROM scratch\nRUN --security= true", "RUN --security="),
        (
            "FROM scratch\nRUN \\\n  --network=host \\\n  true",
            "RUN --network=host",
        ),
        (
            "FROM scratch\nONBUILD RUN --network=host true",
            "ONBUILD RUN --network=host",
        ),
    ];
    for (dockerfile, start) in cases {
        let violations = refused(dockerfile);
        assert_eq!(violations.len(), 1, "{dockerfile:?}: {violations:?}");
        assert_eq!(violations[0].line, 2, "{dockerfile:?}");
        assert!(violations[0].message.starts_with(start), "{violations:?}");
    }
}

#[test]
fn run_flags_that_keep_the_build_inside_its_sandbox_are_accepted() {
    for dockerfile in [
        "FROM scratch\nRUN --network=none true",
        "FROM scratch\nRUN --network=default true",
        "FROM scratch\nRUN --security=sandbox true",
        // Secrets and SSH fail at build time without a provider.
        "FROM scratch\nRUN --mount=type=secret,id=token,required cat /run/secrets/token",
        "FROM scratch\nRUN --mount=type=ssh,required=true true",
        "FROM scratch\nRUN --mount=type=tmpfs,target=/tmp true",
        // Unknown flags make BuildKit refuse the instruction.
        "FROM scratch\nRUN --unknown=1 true",
        // `--` ends the flags; the rest is the command.
        "FROM scratch\nRUN -- --network=host",
        "FROM scratch\nRUN echo --network=host",
        "FROM scratch\nRUN [\"--network=host\"]",
        // A flag without `=` is an error for BuildKit.
        "FROM scratch\nRUN --network true",
    ] {
        accepted(dockerfile);
    }
}

#[test]
fn mounts_buildkit_reads_differently_from_this_module_are_refused() {
    for dockerfile in [
        // Go's CSV reader refuses these, and so does BuildKit.
        "FROM scratch\nRUN --mount='type=cache,\"target=/x' true",
        "FROM scratch\nRUN --mount='type=cache,\"target\"x' true",
        "FROM scratch\nRUN --mount= true",
        // BuildKit splits flags on Latin-1 whitespace bytes inside UTF-8 characters.
        "FROM scratch\nRUN --mount=type=bind,target=/\u{e9} true",
        "FROM scratch\nRUN --mount=type=cache,target=/\u{105}x true",
        // A trigger's mount source resolves in a later build.
        "FROM scratch\nONBUILD RUN --mount=from=other,target=/x true",
        "FROM scratch\nONBUILD COPY --from=other / /",
        // Variables are not expanded in --from: unverifiable.
        "FROM scratch\nCOPY --from=$IMAGE / /",
        "FROM scratch\nRUN --mount=from=${IMAGE},target=/x true",
    ] {
        assert_eq!(refused_lines(dockerfile), [2], "{dockerfile:?}");
    }
    accepted("FROM scratch\nONBUILD COPY --from=0 / /");
}

#[test]
fn all_violations_are_reported_in_line_order() {
    let dockerfile = "\
FROM $UNSET
ADD http://x/y /z
RUN --network=host --security=insecure true
COPY --from=$X / /
";
    let violations = refused(dockerfile);
    let lines: Vec<usize> = violations.iter().map(|v| v.line).collect();
    assert_eq!(lines, [1, 2, 3, 3, 4]);
}

#[test]
fn parser_directives_are_read_only_where_buildkit_reads_them() {
    // An invalid or repeated escape directive makes BuildKit refuse the file.
    assert_eq!(refused_lines("# escape=x\nFROM scratch"), [1]);
    assert_eq!(refused_lines("# escape=`\n# escape=`\nFROM scratch"), [2]);
    assert_eq!(refused_lines("# escape =   \nFROM scratch"), [1]);
    assert_eq!(refused_lines("# syntax=a\n#syntax=b\nFROM scratch"), [2]);
    // Case, spacing, a BOM, and `syntax` before it are all fine.
    for prefix in [
        "# ESCAPE = `",
        "#escape=`",
        "\u{feff}# escape=`",
        "# syntax=x\n# escape=`",
    ] {
        let dockerfile = format!("{prefix}\nFROM scratch\nADD ./a `\n  http://x/y /z");
        assert_eq!(refused_lines(&dockerfile).len(), 1, "{dockerfile:?}");
    }
    // After a comment, a blank line or an instruction, it is an ordinary comment.
    for prefix in [
        "# hello\n# escape=`",
        "\n# escape=`",
        "FROM scratch\n# escape=`",
    ] {
        let dockerfile = format!("{prefix}\nFROM scratch\nRUN echo `\nADD ./a /b");
        accepted(&dockerfile);
    }
}

#[test]
fn lines_are_joined_as_buildkit_joins_them() {
    let parsed = tokenize(
        "\u{feff}FROM scratch\r\n\
         RUN a \\\r\n\
         \x20 # a comment inside\n\
         \n\
         \x20   b \\\\\n\
         RUN c\\\\ \\ \t\n\
         d\n\
         \\\n\
         RUN e \\",
    );
    let lines: Vec<(usize, &str)> = parsed
        .instructions
        .iter()
        .map(|i| (i.line, i.text.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (1, "FROM scratch"),
            (2, "RUN a     b \\\\"),
            (6, "RUN c\\\\ d"),
            (8, "RUN e "),
        ]
    );
}

#[test]
fn flags_are_decoded_byte_by_byte_like_buildkit() {
    let command = split_command("RUN  --a=\"x y\" --'b'=c\\ d --e=\\ --=f -- --g=h rest", 0);
    assert_eq!(command.keyword, "run");
    let decoded: Vec<String> = command.flags.iter().map(|f| latin1(&f.decoded)).collect();
    assert_eq!(decoded, ["--a=x y", "--b=c d", "--e= --=f"]);
    assert_eq!(command.args, "--g=h rest");
    let spans: Vec<&str> = command
        .flags
        .iter()
        .map(|f| &"RUN  --a=\"x y\" --'b'=c\\ d --e=\\ --=f -- --g=h rest"[f.span.clone()])
        .collect();
    assert_eq!(spans, ["--a=\"x y\"", "--'b'=c\\ d", "--e=\\ --=f"]);
    // U+0105 is C4 85, and 0x85 is whitespace to Go's byte-wise reader.
    let command = split_command("RUN --mount=x\u{105}--network=host true", 0);
    let decoded: Vec<String> = command.flags.iter().map(|f| latin1(&f.decoded)).collect();
    assert_eq!(decoded, ["--mount=x\u{c4}", "--network=host"]);
}

#[test]
fn csv_is_read_as_go_reads_it() {
    let ok: &[(&str, &[&str])] = &[
        ("a,b", &["a", "b"]),
        ("a,", &["a", ""]),
        ("\"a,b\",c", &["a,b", "c"]),
        ("\"a\"\"b\"", &["a\"b"]),
        ("\"\"", &[""]),
        (" a ,b", &[" a ", "b"]),
        ("a\r", &["a"]),
    ];
    for (line, fields) in ok {
        let parsed = parse_csv(line.as_bytes()).unwrap();
        let parsed: Vec<String> = parsed.iter().map(|f| latin1(f)).collect();
        assert_eq!(parsed, *fields, "{line:?}");
    }
    for line in ["", "a\"b", "\"a", "\"a\"b", "a,\"b\" ,c", "\r"] {
        assert!(parse_csv(line.as_bytes()).is_err(), "{line:?}");
    }
}

#[test]
fn json_arguments_are_decoded_as_go_decodes_them() {
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("[\"a\", \"b\"]", Some(&["a", "b"])),
        ("  [ ]", Some(&[])),
        ("[\"a\"] trailing", Some(&["a"])),
        (
            "[\"\\u00e9\\ud83d\\ude00\\ud800x\"]",
            Some(&["\u{e9}\u{1f600}\u{fffd}x"]),
        ),
        ("[\"a\",]", None),
        ("[\"a\", 1]", None),
        ("[\"a\\q\"]", None),
        ("[\"a\tb\"]", None),
        ("[\"a\"", None),
        ("\"a\"", None),
    ];
    for (args, expected) in cases {
        let parsed = parse_json_strings(args);
        let expected = expected.map(|e| e.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(parsed, expected, "{args:?}");
    }
}

/// The cache ids BuildKit would use for every cache mount of `dockerfile`, read back with this
/// module's own reading of BuildKit.
fn cache_ids(dockerfile: &str) -> Vec<String> {
    let parsed = tokenize(dockerfile);
    let mut ids = Vec::new();
    for instruction in &parsed.instructions {
        let command = split_command(&instruction.text, 0);
        let flags = match command.keyword.as_str() {
            "run" => command.flags,
            "onbuild" => split_command(&command.args, 0).flags,
            _ => continue,
        };
        for flag in flags {
            let Some(value) = flag.value_of("mount") else {
                continue;
            };
            let fields = parse_csv(value).unwrap();
            let mount = Mount::of(&fields);
            if mount.kind == b"cache" {
                let id = mount.id.filter(|id| !id.is_empty()).or(mount.target);
                ids.push(latin1(id.unwrap_or_default()));
            }
        }
    }
    ids
}

#[test]
fn cache_mounts_are_scoped_to_the_namespace_and_nothing_else_changes() {
    let cases = [
        (
            "RUN --mount=type=cache,target=/root/.cache pip install x",
            "RUN --mount=type=cache,target=/root/.cache,id=t1//root/.cache pip install x",
        ),
        (
            "RUN --mount=type=cache,id=shared,target=/root/.cache true",
            "RUN --mount=type=cache,id=t1/shared,target=/root/.cache true",
        ),
        (
            "RUN --mount=\"type=cache,target=/x\" true",
            "RUN --mount=\"type=cache,target=/x,id=t1//x\" true",
        ),
        (
            "RUN --mount='type=cache,dst=/x' true",
            "RUN --mount='type=cache,dst=/x,id=t1//x' true",
        ),
        (
            "RUN --network=none --mount=type=bind,target=/y --mount=type=cache,destination=/x true",
            "RUN --network=none --mount=type=bind,target=/y \
             --mount=type=cache,destination=/x,id=t1//x true",
        ),
        (
            "RUN --mount=type=cache,target=/a --mount=type=cache,target=/b true",
            "RUN --mount=type=cache,target=/a,id=t1//a --mount=type=cache,target=/b,id=t1//b true",
        ),
        (
            "run --mount=TYPE=Cache,ID=x,target=/a true",
            "run --mount=TYPE=Cache,ID=t1/x,target=/a true",
        ),
        // BuildKit uses the last id; none may stay unscoped.
        (
            "RUN --mount=type=cache,id=a,target=/x,id=b true",
            "RUN --mount=type=cache,id=t1/b,target=/x,id=t1/b true",
        ),
        // An empty id means the target.
        (
            "RUN --mount=type=cache,id=,target=/x true",
            "RUN --mount=type=cache,id=t1//x,target=/x true",
        ),
        // The last type wins.
        (
            "RUN --mount=target=/x,type=bind,type=cache true",
            "RUN --mount=target=/x,type=bind,type=cache,id=t1//x true",
        ),
        (
            "RUN --mount=type=cache,target=/x,type=bind true",
            "RUN --mount=type=cache,target=/x,type=bind true",
        ),
        // A cache seeded from a stage is still a shared cache.
        (
            "RUN --mount=type=cache,from=build,target=/x true",
            "RUN --mount=type=cache,from=build,target=/x,id=t1//x true",
        ),
        (
            "ONBUILD RUN --mount=type=cache,target=/x true",
            "ONBUILD RUN --mount=type=cache,target=/x,id=t1//x true",
        ),
        // Other spellings are rewritten whole, with the same options.
        (
            "RUN --mount=type=cache,'\"id=a,b\"',target=/x true",
            "RUN --mount=\"type=cache,\\\"id=t1/a,b\\\",target=/x\" true",
        ),
        (
            "RUN --mount=type=cache,target=/x\\ y true",
            "RUN --mount=\"type=cache,target=/x y,id=t1//x y\" true",
        ),
        (
            "RUN --mo\"unt\"=type=cache,target=/x true",
            "RUN --mount=\"type=cache,target=/x,id=t1//x\" true",
        ),
        (
            "RUN --mount=\"type=cache,target=/x \" true",
            "RUN --mount=\"type=cache,target=/x ,id=t1//x \" true",
        ),
        // An unterminated quote runs to the end of the line in BuildKit's flag reader.
        (
            "RUN --mount=type=cache,\"target=/x true",
            "RUN --mount=\"type=cache,target=/x true,id=t1//x true\"",
        ),
    ];
    for (input, expected) in cases {
        let output = namespace_cache_mounts(input, "t1");
        assert_eq!(output, expected, "{input:?}");
        assert!(
            cache_ids(&output).iter().all(|id| id.starts_with("t1/")),
            "{output:?}"
        );
    }
}

#[test]
fn the_rewritten_mounts_mean_to_buildkit_what_they_meant_before() {
    let input = "\
FROM scratch
RUN --mount=type=cache,'\"id=a,b\"',target=/x \\
    --mount=type=cache,'\"target=/y\"\"z\"' \\
    --mount=type=cache,target=/\u{e9} \\
    --mount=type=cache,id=\"q\",target=/w true
";
    let before = cache_ids(input);
    let after = cache_ids(&namespace_cache_mounts(input, "tenant-1"));
    let expected: Vec<String> = before.iter().map(|id| format!("tenant-1/{id}")).collect();
    assert_eq!(after, expected);
    assert_eq!(before, ["a,b", "/y\"z", "/\u{c3}\u{a9}", "q"]);
}

#[test]
fn a_mount_split_over_lines_is_rewritten_without_moving_later_lines() {
    let cases = [
        (
            "RUN --mount=type=cache,\\\ntarget=/x true\nRUN next",
            "RUN \\\n--mount=\"type=cache,target=/x,id=t1//x\" true\nRUN next",
        ),
        (
            "RUN --mount=type=cache,\\\n  # comment\n\ntarget=/x true\nRUN next",
            "RUN \\\n#\n#\n--mount=\"type=cache,target=/x,id=t1//x\" true\nRUN next",
        ),
        (
            "RUN \\\n--mount=type=cache,\\\ntarget=/x\nRUN next",
            "RUN \\\n\\\n--mount=\"type=cache,target=/x,id=t1//x\"\nRUN next",
        ),
        (
            "# escape=`\nRUN --mount=type=cache,`\ntarget=/x `\n true\nRUN next",
            "# escape=`\nRUN `\n--mount=\"type=cache,target=/x,id=t1//x\" `\n true\nRUN next",
        ),
    ];
    for (input, expected) in cases {
        let output = namespace_cache_mounts(input, "t1");
        assert_eq!(output, expected, "{input:?}");
        let lines = |text: &str| -> Vec<usize> {
            tokenize(text).instructions.iter().map(|i| i.line).collect()
        };
        assert_eq!(lines(&output), lines(input), "{output:?}");
        assert_eq!(cache_ids(&output), ["t1//x"]);
    }
}

#[test]
fn a_typical_dockerfile_is_accepted_and_its_caches_scoped() {
    let input = "\
# syntax=docker/dockerfile:1
ARG PYTHON=3.12
FROM python:${PYTHON}-slim AS deps
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip \\
    pip install --prefix=/install -r requirements.txt

FROM python:${PYTHON}-slim
COPY --from=deps /install /usr/local
COPY . /app
CMD [\"python\", \"/app/main.py\"]
";
    assert_eq!(
        images(input),
        [
            (3, "python:3.12-slim".to_owned()),
            (9, "python:3.12-slim".to_owned())
        ]
    );
    let output = namespace_cache_mounts(input, "acme-7");
    assert_eq!(
        output,
        input.replace(
            "target=/root/.cache/pip ",
            "target=/root/.cache/pip,id=acme-7//root/.cache/pip "
        )
    );
    // CRLF line endings survive, and so does the line count of a flag split over lines.
    let input = "FROM scratch\r\nRUN --mount=type=cache,\\\r\ntarget=/x true\r\nRUN next\r\n";
    let output = namespace_cache_mounts(input, "t1");
    assert_eq!(
        output,
        "FROM scratch\r\nRUN \\\n--mount=\"type=cache,target=/x,id=t1//x\" true\r\nRUN next\r\n"
    );
    let lines: Vec<usize> = tokenize(&output)
        .instructions
        .iter()
        .map(|i| i.line)
        .collect();
    assert_eq!(lines, [1, 2, 4]);
}

#[test]
fn a_rewrite_never_turns_a_line_into_a_continuation() {
    // The id would end in the escape character, then the line would join the next instruction.
    let input = "# escape=`\nFROM scratch\nRUN --mount=target=/a`,type=cache\nFROM scratch";
    let output = namespace_cache_mounts(input, "t1");
    assert_eq!(
        output,
        "# escape=`\nFROM scratch\nRUN --mount=\"target=/a`,type=cache,id=t1//a`\"\nFROM scratch"
    );
    assert_eq!(tokenize(&output).instructions.len(), 3);
    // A continuation after the flag keeps working.
    let input = "# escape=`\nRUN --mount=type=cache,target=/a `\n  true";
    let output = namespace_cache_mounts(input, "t1");
    assert_eq!(
        output,
        "# escape=`\nRUN --mount=type=cache,target=/a,id=t1//a `\n  true"
    );
    assert_eq!(
        tokenize(&output).instructions[0].text,
        "RUN --mount=type=cache,target=/a,id=t1//a   true"
    );
}

#[test]
fn a_cache_mount_that_cannot_be_rewritten_makes_buildkit_refuse_the_instruction() {
    // BuildKit's word ends at the 0x85 inside U+0105: the flag ends mid-character.
    let input = "RUN --network=none --mount=type=cache,target=/\u{105}x true";
    let output = namespace_cache_mounts(input, "t1");
    assert_eq!(
        output,
        "RUN --slipway-unsupported-cache-mount --network=none --mount=type=cache,target=/\u{105}x true"
    );
}

#[test]
fn dockerfiles_without_cache_mounts_come_back_byte_for_byte() {
    for input in [
        "",
        "\u{feff}# syntax=x\r\nFROM scratch\r\nRUN --mount=type=bind,target=/x \\\r\n  true\r\n",
        "FROM scratch\nRUN --mount=type=secret,id=cache true\nCOPY --from=0 / /\n# RUN --mount=type=cache,target=/x\n",
        "FROM scratch\nRUN echo --mount=type=cache,target=/x\nRUN -- --mount=type=cache,target=/x",
        "FROM scratch\nCMD --mount=type=cache,target=/x\n",
        "RUN --mount=type=cache\u{a0},target=/x",
    ] {
        assert_eq!(namespace_cache_mounts(input, "t1"), input);
    }
}

#[test]
fn rewriting_keeps_what_inspect_finds() {
    let input = "\
FROM golang:1.22 AS build
RUN --mount=type=cache,target=/root/.cache/go-build \\
    --mount=type=bind,from=other/image,target=/src go build
FROM busybox
COPY --from=build /out /app
";
    let output = namespace_cache_mounts(input, "t1");
    assert_eq!(images(&output), images(input));
    assert_eq!(cache_ids(&output), ["t1//root/.cache/go-build"]);
}

#[test]
fn references_are_normalised_as_docker_does() {
    let some = |host: &str, path: &str, tag: Option<&str>, digest: Option<&str>| {
        Some(NormalizedRef {
            host: host.into(),
            path: path.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        })
    };
    let with_digest = format!("busybox:1@{DIGEST}");
    let cases = [
        ("busybox", some("docker.io", "library/busybox", None, None)),
        (
            "busybox:1.36",
            some("docker.io", "library/busybox", Some("1.36"), None),
        ),
        (
            "slipway/busybox:1",
            some("docker.io", "slipway/busybox", Some("1"), None),
        ),
        (
            "docker.io/library/python",
            some("docker.io", "library/python", None, None),
        ),
        (
            "docker.io/python",
            some("docker.io", "library/python", None, None),
        ),
        (
            "index.docker.io/python:3",
            some("docker.io", "library/python", Some("3"), None),
        ),
        (
            "127.0.0.1:5000/slipway/busybox",
            some("127.0.0.1:5000", "slipway/busybox", None, None),
        ),
        ("localhost/x", some("localhost", "x", None, None)),
        (
            "localhost:5000/a/b:c",
            some("localhost:5000", "a/b", Some("c"), None),
        ),
        // No slash: `localhost:5000` is the image `localhost`, tag 5000.
        (
            "localhost:5000",
            some("docker.io", "library/localhost", Some("5000"), None),
        ),
        (
            "a/b_c__d-e---f.g",
            some("docker.io", "a/b_c__d-e---f.g", None, None),
        ),
        // A first component with a dot is a host, even if it would make a valid path.
        ("a.b/c", some("a.b", "c", None, None)),
        (
            "Registry.Example.com/x",
            some("Registry.Example.com", "x", None, None),
        ),
        (
            &with_digest,
            some("docker.io", "library/busybox", Some("1"), Some(DIGEST)),
        ),
        ("0", some("docker.io", "library/0", None, None)),
    ];
    for (reference, expected) in cases {
        assert_eq!(normalize(reference), expected, "{reference:?}");
    }
    let long_tag = format!("busybox:{}", "a".repeat(129));
    let long_name = format!("{}/b", "a".repeat(250));
    let hex_id = "0123456789abcdef".repeat(4);
    for reference in [
        "",
        "Busybox",
        "library/Busybox",
        "busybox:",
        "busybox:-x",
        ":tag",
        "a//b",
        "a/",
        "-a",
        "a-",
        "a..b",
        "a___b",
        "a_-b",
        "busy box",
        "$BASE",
        "example.com:abc/x",
        "-example.com/x",
        "example..com/x",
        "busybox@sha256:0123",
        "busybox@md5:0123456789abcdef0123456789abcdef",
        &format!("busybox@{}", DIGEST.to_uppercase()),
        &long_tag,
        &long_name,
        &hex_id,
        "[::1]:5000/x",
        "busybox:1:2",
    ] {
        assert_eq!(normalize(reference), None, "{reference:?}");
    }
    assert_eq!(
        normalize("127.0.0.1:5000/a/b:1").unwrap().repository(),
        "127.0.0.1:5000/a/b"
    );
}

#[test]
fn the_allow_list_allows_repositories_and_pinned_tags_only() {
    let list = BaseImageAllowList::parse(
        "slipway/busybox:1, 127.0.0.1:5000/slipway/busybox\n\tdebian:12 docker.io/library/python,,",
    )
    .unwrap();
    let digest = format!("@{DIGEST}");
    let cases = [
        ("slipway/busybox:1", true),
        ("docker.io/slipway/busybox:1", true),
        ("slipway/busybox", false),
        ("slipway/busybox:2", false),
        (&format!("slipway/busybox:1{digest}"), false),
        ("127.0.0.1:5000/slipway/busybox", true),
        ("127.0.0.1:5000/slipway/busybox:anything", true),
        (&format!("127.0.0.1:5000/slipway/busybox{digest}"), true),
        ("127.0.0.1:5000/slipway/busybox2", false),
        ("127.0.0.1:5000/slipway/busybox/x", false),
        ("127.0.0.1:5000/other-tenant/busybox", false),
        ("localhost:5000/slipway/busybox", false),
        ("debian:12", true),
        ("docker.io/library/debian:12", true),
        ("index.docker.io/debian:12", true),
        ("debian", false),
        ("debian:12-slim", false),
        ("python", true),
        ("python:3.12", true),
        ("index.docker.io/library/python:3", true),
        ("Python", false),
        ("pythonx", false),
        ("evil.example/library/python", false),
        ("", false),
        ("scratch", false),
    ];
    for (reference, allowed) in cases {
        assert_eq!(list.allows(reference), allowed, "{reference:?}");
    }
    let latest = BaseImageAllowList::parse("debian:latest").unwrap();
    assert!(
        latest.allows("debian") && latest.allows("debian:latest") && !latest.allows("debian:12")
    );
    let pinned = BaseImageAllowList::parse(&format!("debian{digest}")).unwrap();
    assert!(pinned.allows(&format!("debian:12{digest}")) && !pinned.allows("debian:12"));
    assert!(!BaseImageAllowList::parse("").unwrap().allows("busybox"));
    let error = BaseImageAllowList::parse("busybox, Not/Valid").unwrap_err();
    assert!(error.contains("\"Not/Valid\""), "{error}");
}
