//! The operators' console in a real browser: Debian's headless chromium, driven through
//! chromedriver's W3C WebDriver API. An operator signs in, finds a failed job, retries it and
//! watches it succeed; every page is saved as a screenshot under `target/console/`. Around it,
//! what the browser cannot show: the cookie's scope, nothing readable without a session, a
//! tenant's key refused, and a form posted from another site refused.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};

/// A chromedriver of this test's own, and one browser session on it; both end on drop.
struct Browser {
    driver: Child,
    /// The browser's profile, named so that every process of this browser can be found: killing
    /// chromedriver alone leaves its chromium running.
    profile: tempfile::TempDir,
    http: reqwest::Client,
    session: String,
    base: String,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "chromedriver (Debian's chromium-driver) must be installed: scripts/test.sh does",
            )?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build()?;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console");
        std::fs::create_dir_all(&shots)?;
        let profile = tempfile::Builder::new()
            .prefix("slipway-console-")
            .tempdir()?;
        let mut browser = Self {
            driver,
            profile,
            http,
            session: String::new(),
            base,
            shots,
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--disable-crash-reporter", "--disable-breakpad",
                         "--no-first-run", "--no-proxy-server", "--window-size=1400,900",
                         format!("--user-data-dir={}", browser.profile.path().display())],
            },
        }}});
        let started = eventually(
            Duration::from_secs(20),
            "chromedriver answering",
            || async {
                Ok(browser
                    .http
                    .post(format!("{}/session", browser.base))
                    .json(&capabilities)
                    .send()
                    .await
                    .ok())
            },
        )
        .await?;
        let answer: Value = started.json().await?;
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {answer}"))?
            .to_owned();
        // Elements are looked for until they appear (a page still loading after a click).
        browser
            .call(
                reqwest::Method::POST,
                "/timeouts",
                json!({"implicit": 10_000}),
            )
            .await?;
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method.clone(), url);
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request.send().await?.json().await?;
        if answer["value"]["error"].is_string() {
            bail!("webdriver {path}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    async fn go(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await
            .map(drop)
    }

    async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self
            .call(reqwest::Method::GET, "/url", Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(found[ELEMENT]
            .as_str()
            .with_context(|| format!("no element {css}"))?
            .to_owned())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await
        .map(drop)
    }

    async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({"text": text}),
        )
        .await
        .map(drop)
    }

    async fn text_of(&self, css: &str) -> anyhow::Result<String> {
        let element = self.find(css).await?;
        Ok(self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                Value::Null,
            )
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Waits for `css` to read `expected`: a click that submits a form returns before the next
    /// page has replaced the one clicked on.
    async fn wait_for_text(&self, css: &str, expected: &str) -> anyhow::Result<()> {
        let what = format!("{css} reading {expected:?}");
        eventually(Duration::from_secs(15), &what, || async {
            let text = self.text_of(css).await.ok();
            Ok(text.filter(|text| text.contains(expected)).map(drop))
        })
        .await
    }

    async fn wait_for_url(&self, suffix: &str) -> anyhow::Result<()> {
        let what = format!("the page {suffix}");
        eventually(Duration::from_secs(15), &what, || async {
            let url = self.current_url().await.ok();
            Ok(url.filter(|url| url.ends_with(suffix)).map(drop))
        })
        .await
    }

    /// Ends the session: chromedriver closes the browser.
    async fn quit(self) -> anyhow::Result<()> {
        let url = format!("{}/session/{}", self.base, self.session);
        self.http.delete(url).send().await?.error_for_status()?;
        Ok(())
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().context("screenshot")?)?;
        std::fs::write(self.shots.join(format!("{name}.png")), png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.driver.kill().ok();
        self.driver.wait().ok();
        // Whatever the test did not close (it failed half-way): every process of this profile.
        Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.profile.path())
            .status()
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_retries_a_failed_job_and_watches_it_succeed() -> anyhow::Result<()> {
    // No worker yet: the build job waits until the test has failed it.
    let mut stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let operator = stack.add_operator().await?;
    let function_id = stack.init("console").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("from the console\n")?)
        .await?;
    // The build's attempt failed with its error recorded, as a worker leaves a job whose
    // registry was down; its deployment is still building, so a retry is worth it.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, done_at = now(),
                last_result = '{\"Err\": \"registry unavailable: connection refused\"}'
         WHERE convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $1",
    )
    .bind(deployment.to_string())
    .execute(&stack.pool)
    .await?;

    // Without a session nothing is readable: every page leads to the sign-in form.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    for page in [
        "/ops/",
        "/ops/jobs?state=Failed",
        "/ops/deployments",
        "/ops/schedules",
    ] {
        let answer = no_redirects.get(stack.url(page)).send().await?;
        assert_eq!(answer.status(), 303, "{page}");
        assert_eq!(answer.headers()["location"], "/ops/sign-in", "{page}");
    }
    // A tenant's key is no operator's; a real sign-in sets a cookie only /ops sees.
    let tenant = no_redirects
        .post(stack.url("/ops/sign-in"))
        .form(&[("key", stack.api_key.as_str())])
        .send()
        .await?;
    assert_eq!(tenant.status(), 401);
    assert!(tenant.headers().get("set-cookie").is_none());
    let signed_in = no_redirects
        .post(stack.url("/ops/sign-in"))
        .form(&[("key", operator.expose())])
        .send()
        .await?;
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str()?.to_owned();
    for attribute in ["Path=/ops", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    // A form posted from another site does nothing, even with the session.
    let forged = no_redirects
        .post(stack.url("/ops/queues/slipway::build/pause"))
        .header("cookie", &session)
        .header("origin", "https://elsewhere.example")
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let queues: Value = stack
        .http
        .get(stack.url("/api/ops/queues"))
        .bearer_auth(operator.expose())
        .send()
        .await?
        .json()
        .await?;
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["paused"] == false),
        "{queues}"
    );

    let browser = Browser::start().await?;
    browser.go(&stack.url("/ops/")).await?;
    browser.wait_for_url("/ops/sign-in").await?;
    browser.type_into("#key", "sk_not_a_key").await?;
    browser.click("#sign-in").await?;
    browser
        .wait_for_text("#refused", "not a live operator key")
        .await?;
    browser.screenshot("sign-in").await?;
    browser.type_into("#key", operator.expose()).await?;
    browser.click("#sign-in").await?;
    browser.wait_for_url("/ops/").await?;
    browser.wait_for_text("#queues", "slipway::build").await?;
    browser.screenshot("queues").await?;

    browser.go(&stack.url("/ops/jobs?state=Failed")).await?;
    browser
        .wait_for_text("#jobs", "registry unavailable")
        .await?;
    browser.screenshot("jobs-failed").await?;
    browser.click("#jobs a[href^='/ops/jobs/']").await?;
    browser.wait_for_text("#state", "Failed").await?;
    browser.screenshot("job-failed").await?;
    browser.click("#retry").await?;
    browser.wait_for_text("#state", "Pending").await?;

    // A worker takes the retried build; the page, refreshed, shows it done.
    let worker = stack.spawn_worker(|_| {})?;
    stack.adopt(worker);
    let job_page = browser.current_url().await?;
    eventually(Duration::from_secs(120), "the retried job done", || async {
        browser.go(&job_page).await?;
        Ok((browser.text_of("#state").await.ok().as_deref() == Some("Done")).then_some(()))
    })
    .await?;
    browser.screenshot("job-done").await?;
    stack.wait_active(deployment).await?;
    assert_eq!(
        stack.invoke(function_id, "/").await?,
        (200, "from the console\n".to_owned())
    );

    for (page, name) in [
        ("/ops/jobs", "jobs"),
        ("/ops/deployments", "deployments"),
        ("/ops/functions?state=Active", "functions"),
        ("/ops/schedules", "schedules"),
    ] {
        browser.go(&stack.url(page)).await?;
        browser.screenshot(name).await?;
    }
    browser.wait_for_text("#schedules", "retention").await?;
    browser
        .go(&stack.url("/ops/functions?state=Active"))
        .await?;
    browser
        .wait_for_text("#functions", &function_id.to_string())
        .await?;

    // Signing out in the browser leads back to the sign-in form.
    browser.go(&stack.url("/ops/")).await?;
    browser.click("header form button").await?;
    browser.wait_for_url("/ops/sign-in").await?;
    browser.go(&stack.url("/ops/jobs")).await?;
    browser.wait_for_url("/ops/sign-in").await?;
    browser.quit().await?;
    // And it ends the session on the server, whatever a client keeps of its cookie.
    let out = no_redirects
        .post(stack.url("/ops/sign-out"))
        .header("cookie", &session)
        .send()
        .await?;
    assert_eq!(out.status(), 303);
    let after = no_redirects
        .get(stack.url("/ops/"))
        .header("cookie", &session)
        .send()
        .await?;
    assert_eq!(after.status(), 303);
    stack.shutdown().await
}
