//! The auth handshakes against a tiny in-process registry over real HTTP: one that demands a
//! bearer token from its token service (which demands basic auth), and one that demands basic
//! auth itself. The local test registry is open, so these are the only checks of the code paths.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use base64::Engine as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use super::*;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[derive(Clone, Copy)]
enum Mode {
    Token,
    Basic,
}

/// Serves one request per connection; counts token requests.
async fn registry(mode: Mode) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let tokens_issued = Arc::new(AtomicUsize::new(0));
    let issued = Arc::clone(&tokens_issued);
    let realm = format!("http://{address}/token");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let issued = Arc::clone(&issued);
            let realm = realm.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut request_line = String::new();
                stream.read_line(&mut request_line).await.unwrap();
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        authorization = value.trim().to_owned();
                    }
                }
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("ci:s3cret")
                );
                let path = request_line
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let (status, headers, body) = if path.starts_with("/token") {
                    if authorization == basic && path.contains("scope=repository%3Aapp%3Apull") {
                        issued.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", String::new(), r#"{"token":"good"}"#.to_owned())
                    } else {
                        ("401 Unauthorized", String::new(), String::new())
                    }
                } else {
                    let allowed = match mode {
                        Mode::Token => authorization == "Bearer good",
                        Mode::Basic => authorization == basic,
                    };
                    if allowed {
                        (
                            "200 OK",
                            format!("Docker-Content-Digest: {DIGEST}\r\n"),
                            String::new(),
                        )
                    } else {
                        let challenge = match mode {
                            Mode::Token => format!(
                                "Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:app:pull\""
                            ),
                            Mode::Basic => "Basic realm=\"test\"".to_owned(),
                        };
                        (
                            "401 Unauthorized",
                            format!("WWW-Authenticate: {challenge}\r\n"),
                            String::new(),
                        )
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .unwrap();
            });
        }
    });
    (address, tokens_issued)
}

fn login() -> Option<RegistryLogin> {
    Some(RegistryLogin {
        username: "ci".into(),
        password: SecretString::from("s3cret"),
    })
}

fn image(host: &str) -> ImageRef {
    ImageRef::parse_tagged(&format!("{host}/app:v1")).unwrap()
}

#[tokio::test]
async fn a_bearer_challenge_is_answered_with_a_token_that_is_then_reused() {
    let (host, issued) = registry(Mode::Token).await;
    let registry = OciRegistry::new(&host).unwrap().with_login(login());
    let digest = registry.manifest_digest(&image(&host)).await.unwrap();
    assert_eq!(digest.unwrap().as_str(), DIGEST);
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    let again = registry.manifest_digest(&image(&host)).await.unwrap();
    assert!(again.is_some());
    assert_eq!(issued.load(Ordering::SeqCst), 1, "the token was cached");
}

#[tokio::test]
async fn a_token_service_refusing_the_login_is_a_permanent_error() {
    let (host, _) = registry(Mode::Token).await;
    let registry = OciRegistry::new(&host).unwrap();
    let error = registry.manifest_digest(&image(&host)).await.unwrap_err();
    assert!(matches!(error, RegistryError::Refused(_)), "{error}");
}

#[tokio::test]
async fn a_basic_challenge_is_answered_with_the_login() {
    let (host, _) = registry(Mode::Basic).await;
    let anonymous = OciRegistry::new(&host).unwrap();
    assert!(matches!(
        anonymous.manifest_digest(&image(&host)).await,
        Err(RegistryError::Refused(_))
    ));
    let registry = OciRegistry::new(&host).unwrap().with_login(login());
    assert_eq!(
        registry
            .manifest_digest(&image(&host))
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        DIGEST
    );
}

#[test]
fn challenges_parse() {
    assert_eq!(
        parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
        ),
        Some(Challenge::Bearer {
            realm: "https://auth.example/token".into(),
            service: Some("registry.example".into()),
            scope: Some("repository:a/b:pull,push".into()),
        })
    );
    assert_eq!(
        parse_challenge(r#"Basic realm="x""#),
        Some(Challenge::Basic)
    );
    assert_eq!(parse_challenge("Bearer service=\"no realm\""), None);
    assert_eq!(parse_challenge("Negotiate"), None);
}
