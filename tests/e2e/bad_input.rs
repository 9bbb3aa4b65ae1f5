//! Bad input gets a 4xx with a stable code, and nothing is written: no function version used, no
//! deployment row, no archive object, no job.

use std::io::Write;

use serde_json::Value;
use slipway_shared::{archive::ArchiveLimits, jobs::ALL_QUEUES};
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};
use uuid::Uuid;

/// One tar entry written byte by byte, so the archive can hold what well-behaved tar writers
/// refuse to produce (absolute paths, `..`, devices).
struct RawEntry<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    content: &'a [u8],
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = [0u8; 512];
        header[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], entry.content.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = entry.kind;
        header[157..157 + entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(entry.content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn file<'a>(name: &'a str, content: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: b'0',
        link: "",
        content,
    }
}

const DOCKERFILE: &[u8] = b"FROM scratch\nCOPY . /\n";

async fn assert_nothing_written(
    stack: &TestStack,
    function_id: Uuid,
    case: &str,
) -> anyhow::Result<()> {
    assert_eq!(
        stack.count("deployments").await?,
        0,
        "{case}: no deployment row"
    );
    assert_eq!(
        stack.count("deployment_logs").await?,
        0,
        "{case}: no log row"
    );
    let mut conn = stack.conn().await?;
    let jobs = slipway_shared::db::queue::jobs(&mut conn, &ALL_QUEUES).await?;
    assert!(jobs.is_empty(), "{case}: no job, found {jobs:?}");
    let objects = stack
        .store
        .list(&format!("functions/{function_id}/"))
        .await?;
    assert!(
        objects.is_empty(),
        "{case}: no archive object, found {objects:?}"
    );
    let function = stack.function(function_id).await?;
    assert_eq!(function["latest_version"], 0, "{case}: no version consumed");
    assert_eq!(function["status"], "init", "{case}: status untouched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_archive_answers_4xx_with_its_code_and_writes_nothing() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::S3,
        workers: 1,
        archive_limits: Some(ArchiveLimits {
            max_compressed_bytes: 64 * 1024,
            max_uncompressed_bytes: 512 * 1024,
            max_entries: 50,
        }),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("target").await?;
    let id = function_id.to_string();

    let many: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    let mut many_entries = vec![file("Dockerfile", DOCKERFILE)];
    many_entries.extend(many.iter().map(|n| file(n, b"x")));
    let incompressible: Vec<u8> = (0..100_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let zeros = vec![0u8; 600 * 1024];

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "not gzip",
            b"plain text, not an archive".to_vec(),
            400,
            "archive_not_gzip",
        ),
        (
            "gzip of non-tar",
            gzip(b"just some text that is not a tar stream at all, long enough"),
            400,
            "archive_not_tar",
        ),
        (
            "over the compressed limit",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                file("noise", &incompressible),
            ])),
            413,
            "archive_too_large",
        ),
        (
            "over the uncompressed limit",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                file("zeros", &zeros),
            ])),
            413,
            "archive_too_large_uncompressed",
        ),
        (
            "too many entries",
            gzip(&raw_tar(&many_entries)),
            400,
            "archive_too_many_entries",
        ),
        (
            "absolute path",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                file("/etc/passwd", b"x"),
            ])),
            400,
            "archive_unsafe_path",
        ),
        (
            "parent traversal",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                file("a/../../escape", b"x"),
            ])),
            400,
            "archive_unsafe_path",
        ),
        (
            "device file",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                RawEntry {
                    name: "dev",
                    kind: b'3',
                    link: "",
                    content: b"",
                },
            ])),
            400,
            "archive_unsupported_entry",
        ),
        (
            "fifo",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                RawEntry {
                    name: "pipe",
                    kind: b'6',
                    link: "",
                    content: b"",
                },
            ])),
            400,
            "archive_unsupported_entry",
        ),
        (
            "symlink escaping the root",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                RawEntry {
                    name: "link",
                    kind: b'2',
                    link: "../../etc/shadow",
                    content: b"",
                },
            ])),
            400,
            "archive_link_escapes_root",
        ),
        (
            "absolute symlink",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                RawEntry {
                    name: "link",
                    kind: b'2',
                    link: "/etc/shadow",
                    content: b"",
                },
            ])),
            400,
            "archive_link_escapes_root",
        ),
        (
            "hard link escaping the root",
            gzip(&raw_tar(&[
                file("Dockerfile", DOCKERFILE),
                RawEntry {
                    name: "hard",
                    kind: b'1',
                    link: "../outside",
                    content: b"",
                },
            ])),
            400,
            "archive_link_escapes_root",
        ),
        (
            "no Dockerfile",
            gzip(&raw_tar(&[file("main.sh", b"echo hi")])),
            400,
            "archive_missing_dockerfile",
        ),
    ];
    for (case, archive, status, code) in cases {
        let (got_status, body) = stack.deploy_raw(&id, archive, None).await?;
        assert_eq!(
            (got_status, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{case}: {body}"
        );
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{case}"
        );
        assert_nothing_written(&stack, function_id, case).await?;
    }

    // Form and reference mistakes.
    let good = hello_archive("x")?;
    let other_user_function = {
        let mut conn = stack.conn().await?;
        let other = slipway_shared::db::users::ensure(&mut conn, "someone-else").await?;
        let name = slipway_shared::domain::FunctionName::parse("theirs")?;
        slipway_shared::db::functions::insert(&mut conn, other, &name, true)
            .await?
            .unwrap()
    };
    let form_cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        (
            "unknown function",
            Uuid::new_v4().to_string(),
            None,
            404,
            "function_not_found",
        ),
        (
            "malformed function id",
            "not-a-uuid".into(),
            None,
            404,
            "function_not_found",
        ),
        (
            "someone else's function",
            other_user_function.to_string(),
            None,
            404,
            "function_not_found",
        ),
        (
            "env not an object",
            id.clone(),
            Some("[1,2]"),
            400,
            "invalid_env",
        ),
        (
            "env overriding PORT",
            id.clone(),
            Some(r#"{"PORT":"1"}"#),
            400,
            "invalid_env",
        ),
    ];
    for (case, target, env, status, code) in form_cases {
        let (got_status, body) = stack.deploy_raw(&target, good.clone(), env).await?;
        assert_eq!(
            (got_status, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{case}: {body}"
        );
        assert_nothing_written(&stack, function_id, case).await?;
    }
    let missing_archive = reqwest::multipart::Form::new().text("function_id", id.clone());
    let response = stack
        .post("/api/functions/deploy")
        .multipart(missing_archive)
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "missing_field");
    assert_nothing_written(&stack, function_id, "missing archive").await?;
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_error_envelope() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("paged").await?;

    let raw = |body: &'static str| {
        stack
            .post("/api/functions/init")
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = vec![
        ("malformed JSON", raw("{\"name\": "), 400, "invalid_json"),
        ("missing name", raw("{}"), 422, "invalid_body"),
        (
            "unknown field",
            raw(r#"{"name":"a","colour":"red"}"#),
            422,
            "invalid_body",
        ),
        (
            "bad name",
            raw(r#"{"name":"Not Valid"}"#),
            400,
            "invalid_name",
        ),
        (
            "no content type",
            stack.post("/api/functions/init").body(r#"{"name":"a"}"#),
            415,
            "unsupported_media_type",
        ),
    ];
    for (case, request, status, code) in cases {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "{case}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], code, "{case}: {body}");
    }
    assert_eq!(
        stack.count("functions").await?,
        1,
        "no function created by bad requests"
    );

    for query in [
        "page=0",
        "page=-1",
        "page=abc",
        "per_page=0",
        "per_page=101",
        "per_page=1.5",
    ] {
        let response = stack
            .get(&format!("/api/functions/{function_id}/deployments?{query}"))
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await?;
        assert_eq!(
            body["error"]["code"], "invalid_pagination",
            "{query}: {body}"
        );
    }
    let page: Value = stack
        .get(&format!(
            "/api/functions/{function_id}/deployments?page=1&per_page=100"
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (
            page["count"].as_i64(),
            page["total_pages"].as_i64(),
            page["has_next"].as_bool()
        ),
        (Some(0), Some(0), Some(false))
    );

    for path in [
        format!("/api/functions/{}", Uuid::new_v4()),
        "/api/functions/not-a-uuid".to_owned(),
        format!("/api/deployments/{}/logs", Uuid::new_v4()),
        format!("/api/functions/{}/deployments", Uuid::new_v4()),
    ] {
        let response = stack.get(&path).send().await?;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await?;
        assert!(
            body["error"]["code"]
                .as_str()
                .unwrap()
                .ends_with("not_found"),
            "{path}: {body}"
        );
    }
    stack.shutdown().await
}
