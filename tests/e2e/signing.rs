//! Signed requests: a function that does not skip signing takes a mutating request only with a
//! fresh, matching signature made with the caller's key; one that skips signing takes unsigned
//! ones. The README's curl + openssl example is run as written.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_shared::{db, domain::ApiKey};
use slipway_tests::{
    Signer, StackOptions, StoreKind, TestStack, eventually, hello_archive, repo_root,
    signature_headers, signature_headers_v2,
};
use uuid::Uuid;

/// A deploy form with a fixed boundary, so the test knows the exact bytes it signs.
fn deploy_form(function_id: Uuid, archive: &[u8]) -> (String, Vec<u8>) {
    let boundary = "test-boundary-0123456789";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"function_id\"\r\n\r\n\
         {function_id}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; \
         filename=\"f.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(archive);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn nonce() -> String {
    format!("n-{}", Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_does_not_skip_signing_takes_only_fresh_matching_signatures()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("guarded").await?;
    assert_eq!(stack.function(function_id).await?["skip_signing"], false);
    let nonces_before = stack.count("request_nonces").await?;
    let (content_type, body) = deploy_form(function_id, &hello_archive("signed\n")?);
    let path = "/api/functions/deploy";
    let now = chrono::Utc::now().timestamp();
    let signer = stack
        .signer_of(&stack.api_key)
        .expect("the stack's key signs v2");
    let sign = |signer: &Signer, body: &[u8], at: i64, nonce: &str| {
        signature_headers_v2(signer, "POST", path, body, at, nonce)
    };
    let other_key = ApiKey::generate();
    let wrong_secret = Signer {
        key_id: signer.key_id,
        secret: format!("ss_{}", "x".repeat(40)),
    };
    let right_nonce = nonce();
    let right = sign(&signer, &body, now, &right_nonce);
    let mut tampered_body = body.clone();
    tampered_body.push(b'\n');
    let short_nonce = sign(&signer, &body, now, "short");

    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Headers, u16, &str)> = vec![
        ("missing", vec![], 401, "signature_required"),
        (
            "another secret's signature",
            sign(&wrong_secret, &body, now, &nonce()).to_vec(),
            401,
            "signature_invalid",
        ),
        (
            // What anyone holding the bearer key alone could make.
            "v1, made with the key itself",
            signature_headers(&stack.api_key, "POST", path, &body, now, &nonce()).to_vec(),
            401,
            "signature_scheme_retired",
        ),
        (
            "signed for another body",
            sign(&signer, &tampered_body, now, &nonce()).to_vec(),
            401,
            "signature_invalid",
        ),
        (
            "stale",
            sign(&signer, &body, now - 400, &nonce()).to_vec(),
            401,
            "signature_expired",
        ),
        (
            "from the future",
            sign(&signer, &body, now + 400, &nonce()).to_vec(),
            401,
            "signature_expired",
        ),
        (
            "nonce too short",
            short_nonce.to_vec(),
            401,
            "signature_malformed",
        ),
        (
            "signature header missing",
            right[..3].to_vec(),
            401,
            "signature_malformed",
        ),
        (
            "key id missing",
            right[1..].to_vec(),
            401,
            "signature_malformed",
        ),
        ("right", right.to_vec(), 202, ""),
        ("replayed", right.to_vec(), 401, "signature_replayed"),
    ];
    for (case, headers, status, code) in cases {
        let mut request = stack
            .post(path)
            .unsigned()
            .header("content-type", content_type.as_str())
            .body(body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "{case}");
        let answer: Value = response.json().await?;
        if status == 202 {
            assert_eq!(answer["version"], 1, "{case}: {answer}");
        } else {
            assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
            assert!(answer["error"]["message"].is_string(), "{case}: {answer}");
        }
    }
    assert_eq!(stack.count("deployments").await?, 1, "only the right one");
    assert_eq!(
        stack.count("request_nonces").await? - nonces_before,
        1,
        "only a verified signature consumes its nonce"
    );

    // Rollback checks the signature as soon as it holds the function, before anything else.
    let rollback = format!("/api/functions/{function_id}/rollback");
    let unsigned = stack
        .post(&rollback)
        .unsigned()
        .json(&json!({"version": 9}))
        .send()
        .await?;
    assert_eq!(unsigned.status(), 401);
    let answer: Value = unsigned.json().await?;
    assert_eq!(answer["error"]["code"], "signature_required");
    let signed = stack
        .post(&rollback)
        .json(&json!({"version": 9}))
        .send()
        .await?;
    assert_eq!(signed.status(), 404, "past the signature check");
    let answer: Value = signed.json().await?;
    assert_eq!(answer["error"]["code"], "version_not_found");

    // The query string is signed too.
    let at = chrono::Utc::now().timestamp();
    let nonce_q = nonce();
    let mut request = stack
        .post(&format!("{rollback}?x=1"))
        .unsigned()
        .header("content-type", "application/json")
        .body(r#"{"version":9}"#);
    for (name, value) in signature_headers_v2(
        &signer,
        "POST",
        &rollback,
        br#"{"version":9}"#,
        at,
        &nonce_q,
    ) {
        request = request.header(name, value);
    }
    let answer: Value = request.send().await?.json().await?;
    assert_eq!(answer["error"]["code"], "signature_invalid");

    // A key made before signing secrets still signs v1, with a deprecation notice; a signature
    // made with a key that authenticates someone else is still that user's request.
    {
        let mut conn = stack.conn().await?;
        let mallory = db::users::ensure(&mut conn, "mallory").await?;
        db::users::insert_api_key(&mut conn, mallory, &other_key, None).await?;
    }
    let at = chrono::Utc::now().timestamp();
    let mut request = stack
        .http
        .post(stack.url(path))
        .bearer_auth(other_key.expose())
        .header("content-type", content_type.as_str())
        .body(body.clone());
    for (name, value) in signature_headers(other_key.expose(), "POST", path, &body, at, &nonce()) {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    assert_eq!(response.status(), 404, "mallory cannot see the function");
    assert_eq!(
        response.headers().get("deprecation").map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "v1 is answered as deprecated"
    );
    assert_eq!(stack.count("deployments").await?, 1);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_skips_signing_takes_unsigned_requests_but_never_a_bad_signature()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init_with("open", true).await?;
    assert_eq!(stack.function(function_id).await?["skip_signing"], true);
    let (content_type, body) = deploy_form(function_id, &hello_archive("open\n")?);

    let response = stack
        .post("/api/functions/deploy")
        .unsigned()
        .header("content-type", content_type.as_str())
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await?;
    assert_eq!(answer["version"], 1);

    let response = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .unsigned()
        .json(&json!({"version": 9}))
        .send()
        .await?;
    assert_eq!(response.status(), 404);

    // A signature that is there is checked, whatever the function allows.
    let mut request = stack
        .post("/api/functions/deploy")
        .unsigned()
        .header("content-type", content_type.as_str())
        .body(body.clone());
    let now = chrono::Utc::now().timestamp();
    let wrong_secret = Signer {
        key_id: stack.signer_of(&stack.api_key).expect("v2").key_id,
        secret: format!("ss_{}", "w".repeat(40)),
    };
    for (name, value) in signature_headers_v2(
        &wrong_secret,
        "POST",
        "/api/functions/deploy",
        &body,
        now,
        &nonce(),
    ) {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await?;
    assert_eq!(answer["error"]["code"], "signature_invalid");
    assert_eq!(stack.count("deployments").await?, 1);
    stack.shutdown().await
}

/// Runs the README's "Signed requests" block with bash, curl and openssl: its deploy and its
/// rollback are both accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_and_openssl_example_is_accepted() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let block = readme
        .split_once("<!-- signed-request-example:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- signed-request-example:end -->"))
        .map(|(block, _)| block)
        .expect("the README marks its signed-request example");
    let script = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|s| s.strip_suffix("```"))
        .expect("the example is one sh block");

    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("from-the-readme").await?;
    for greeting in ["one\n", "two\n"] {
        let (deployment, _) = stack.deploy(function_id, hello_archive(greeting)?).await?;
        stack.wait_active(deployment).await?;
    }

    let nonces_before = stack.count("request_nonces").await?;
    let signer = stack
        .signer_of(&stack.api_key)
        .expect("the stack's key signs v2");
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(repo_root())
        .env("SLIPWAY_URL", &stack.base_url)
        .env("SLIPWAY_API_KEY", &stack.api_key)
        .env("SLIPWAY_KEY_ID", signer.key_id.to_string())
        .env("SLIPWAY_SIGNING_SECRET", &signer.secret)
        .env("id", function_id.to_string())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(answers.len(), 2, "{stdout}");
    assert_eq!(answers[0]["version"], 3, "the deploy: {stdout}");
    assert_eq!(answers[1]["target_version"], 1, "the rollback: {stdout}");
    assert_eq!(stack.count("request_nonces").await? - nonces_before, 2);

    // Let the worker finish what the example started before the stack stops.
    let v3: Uuid = answers[0]["deployment_id"].as_str().unwrap().parse()?;
    stack.wait_settled(v3, Duration::from_secs(180)).await?;
    eventually(Duration::from_secs(60), "the rollback job done", || async {
        let mut conn = stack.conn().await?;
        let jobs = db::queue::jobs(&mut conn, &["slipway::rollback"]).await?;
        Ok(jobs.iter().all(|j| j.status == "Done").then_some(()))
    })
    .await?;
    stack.shutdown().await
}

/// What a captured request gives whoever captured it, every header included: nothing that signs
/// another request. A v2 request carries no bearer key and its secret never travels; the bearer
/// key (which reads carry) cannot sign for a key that has a secret, nor manage keys, nor verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_request_lets_nobody_sign_another() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("captured").await?;
    let signer = stack
        .signer_of(&stack.api_key)
        .expect("the stack's key signs v2");
    let rollback = format!("/api/functions/{function_id}/rollback");
    let body = br#"{"version":9}"#;
    let captured = signature_headers_v2(
        &signer,
        "POST",
        &rollback,
        body,
        chrono::Utc::now().timestamp(),
        &nonce(),
    );
    let send = |path: &str, body: &'static [u8], headers: &[(&'static str, String)]| {
        let mut request = stack
            .http
            .post(stack.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send()
    };
    let code = |answer: Value| answer["error"]["code"].as_str().unwrap_or("").to_owned();

    // As captured (no Authorization header at all): it is a valid request, once.
    let first = send(&rollback, body, &captured).await?;
    assert_eq!(first.status(), 404, "past the signature: no version 9");
    assert_eq!(code(first.json().await?), "version_not_found");
    let again = send(&rollback, body, &captured).await?;
    assert_eq!(code(again.json().await?), "signature_replayed");
    // Its headers on another body or another route sign nothing.
    let other_body = send(&rollback, br#"{"version":1}"#, &captured).await?;
    assert_eq!(code(other_body.json().await?), "signature_invalid");
    let other_route = send(
        &format!("/api/functions/{function_id}/cancel-deletion"),
        body,
        &captured,
    )
    .await?;
    assert_eq!(code(other_route.json().await?), "signature_invalid");

    // The bearer key, as every read carries it: a v1 signature made with it is refused …
    let bearer_signed = signature_headers(
        &stack.api_key,
        "POST",
        &rollback,
        body,
        chrono::Utc::now().timestamp(),
        &nonce(),
    );
    let mut request = stack
        .http
        .post(stack.url(&rollback))
        .bearer_auth(&stack.api_key)
        .header("content-type", "application/json")
        .body(&body[..]);
    for (name, value) in bearer_signed {
        request = request.header(name, value);
    }
    assert_eq!(
        code(request.send().await?.json().await?),
        "signature_scheme_retired"
    );
    // … and unsigned it mints no key, revokes none, and verifies (which can fail a function)
    // nothing.
    for (method, path) in [
        (reqwest::Method::POST, "/api/keys".to_owned()),
        (
            reqwest::Method::DELETE,
            format!("/api/keys/{}", signer.key_id),
        ),
        (
            reqwest::Method::POST,
            format!("/api/functions/{function_id}/verify"),
        ),
    ] {
        let response = stack
            .request(method.clone(), &path)
            .unsigned()
            .send()
            .await?;
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(
            code(response.json().await?),
            "signature_required",
            "{method} {path}"
        );
    }
    assert_eq!(stack.count("api_keys").await?, 1, "no key was minted");

    // Signed, a new key comes with its own signing secret, shown once, and signs on its own.
    let created: Value = stack
        .post("/api/keys")
        .json(&json!({"name": "rotated"}))
        .send()
        .await?
        .json()
        .await?;
    let secret = created["signing_secret"]
        .as_str()
        .expect("a signing secret");
    let new_signer = Signer {
        key_id: created["id"].as_str().expect("an id").parse()?,
        secret: secret.to_owned(),
    };
    let init = br#"{"name":"by-the-new-key"}"#;
    let headers = signature_headers_v2(
        &new_signer,
        "POST",
        "/api/functions/init",
        init,
        chrono::Utc::now().timestamp(),
        &nonce(),
    );
    let made = send("/api/functions/init", init, &headers).await?;
    assert_eq!(made.status(), 201);
    let listed = stack.get("/api/keys").send().await?.text().await?;
    assert!(!listed.contains(secret), "listings never show a secret");
    stack.shutdown().await
}
