//! The console's pages. Each calls the operators' API use case it shows and renders its answer
//! (the same JSON an API client reads), so the two never disagree.

use std::fmt::Write as _;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{StatusCode, Uri},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_shared::{db, jobs::ALL_QUEUES};

use super::Operator;
use crate::{
    AppState,
    error::{ApiError, ApiPath},
    routes::{ops, schedules},
};

/// Seconds between a page's refreshes while it is open.
const REFRESH_SECONDS: u32 = 3;
const STATES: [&str; 7] = [
    "Pending", "Paused", "Queued", "Running", "Done", "Failed", "Killed",
];
const SERVING_STATES: [&str; 4] = ["Active", "Pending", "Inactive", "Failed"];

/// Escapes text for HTML content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn q(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a}\
header{background:#1d232a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}\
header a{color:#cfe3ff;text-decoration:none}header form{margin-left:auto}\
main{padding:1em 1.2em}table{border-collapse:collapse;margin:.6em 0}\
th,td{border-bottom:1px solid #dde;padding:.3em .7em;text-align:left;vertical-align:top}\
th{background:#f3f5f8}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.Failed,.Killed{color:#b00020;font-weight:600}.Done{color:#1b7a3a}.Paused{color:#8a5a00}\
pre{background:#f3f5f8;padding:.6em;overflow:auto;max-width:100ch}\
form.inline{display:inline}button{cursor:pointer}.note{color:#566}";

fn layout(title: &str, refresh: bool, body: &str) -> Html<String> {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
    } else {
        String::new()
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · Slipway operators</title><style>{STYLE}</style></head><body>\
         <header><strong>Slipway</strong><a href=\"/ops/\">Queues</a><a href=\"/ops/jobs\">Jobs</a>\
         <a href=\"/ops/jobs?state=Failed\">Failed</a><a href=\"/ops/deployments\">Deployments</a>\
         <a href=\"/ops/functions\">Functions</a><a href=\"/ops/schedules\">Schedules</a>\
         <form method=\"post\" action=\"/ops/sign-out\"><button>Sign out</button></form></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    ))
}

pub fn sign_in_page(refused: Option<&str>) -> Html<String> {
    let refused = refused
        .map(|m| format!("<p class=\"Failed\" id=\"refused\">{}</p>", esc(m)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sign in · Slipway operators</title><style>{STYLE}</style></head><body>\
         <header><strong>Slipway operators</strong></header><main><h1>Sign in</h1>{refused}\
         <form method=\"post\" action=\"/ops/sign-in\"><label>Operator key \
         <input type=\"password\" name=\"key\" id=\"key\" autocomplete=\"off\" size=\"50\"></label> \
         <button id=\"sign-in\">Sign in</button></form>\
         <p class=\"note\">Make one with <code>slipway create-key &lt;user&gt; --operator</code>.</p>\
         </main></body></html>"
    ))
}

pub fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<p class=\"Failed\" id=\"error\"><code>{}</code>: {}</p><p><a href=\"/ops/\">Back</a></p>",
        esc(code),
        esc(message)
    );
    (status, layout("Refused", false, &body)).into_response()
}

/// The API's own error, told on a page (an internal one is logged, as the API does).
pub fn api_error_page(error: ApiError) -> Response {
    match error {
        ApiError::Client {
            status,
            code,
            message,
        } => error_page(status, code, &message),
        ApiError::Throttled { code, message, .. } => {
            error_page(StatusCode::TOO_MANY_REQUESTS, code, &message)
        }
        ApiError::RetryLater { code, message, .. } => {
            error_page(StatusCode::SERVICE_UNAVAILABLE, code, &message)
        }
        internal @ ApiError::Internal(_) => {
            // The API's response carries the report the logging middleware writes out.
            let mut logged = internal.into_response();
            let mut page = error_page(
                logged.status(),
                "internal",
                "something failed on our side; see the logs",
            );
            if let Some(report) = logged
                .extensions_mut()
                .remove::<crate::error::InternalErrorReport>()
            {
                page.extensions_mut().insert(report);
            }
            page
        }
    }
}

fn json<T: Serialize>(answer: Result<Json<T>, ApiError>) -> Result<Value, ApiError> {
    let Json(value) = answer?;
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

fn state_cell(state: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", esc(state))
}

/// `GET /ops/`: every queue's counts by state, its oldest wait, what it finished lately, and
/// pause or resume.
pub async fn queues(State(state): State<AppState>, Operator(caller): Operator) -> Response {
    let list = match json(ops::queues(State(state), caller).await) {
        Ok(list) => list,
        Err(error) => return api_error_page(error),
    };
    let mut body = String::from("<table id=\"queues\"><tr><th>queue</th>");
    for s in STATES {
        let _ = write!(body, "<th>{s}</th>");
    }
    body.push_str("<th>oldest wait</th><th>finished, 5 min</th><th></th></tr>");
    for queue in list["queues"].as_array().into_iter().flatten() {
        let name = queue["name"].as_str().unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-queue=\"{0}\"><td><a href=\"/ops/jobs?queue={1}\">{0}</a>{2}</td>",
            esc(name),
            q(name),
            if queue["paused"] == true {
                " <span class=\"Paused\">paused</span>"
            } else {
                ""
            }
        );
        for s in STATES {
            let _ = write!(
                body,
                "<td class=\"n\"><a href=\"/ops/jobs?queue={}&amp;state={s}\">{}</a></td>",
                q(name),
                text(&queue["counts"][s])
            );
        }
        let wait = queue["oldest_waiting_seconds"]
            .as_f64()
            .map_or("—".to_owned(), |s| format!("{s:.1} s"));
        let (action, label) = if queue["paused"] == true {
            ("resume", "Resume")
        } else {
            ("pause", "Pause")
        };
        let _ = write!(
            body,
            "<td class=\"n\">{wait}</td><td class=\"n\">{}</td><td><form class=\"inline\" \
             method=\"post\" action=\"/ops/queues/{}/{action}\"><button>{label}</button></form>\
             </td></tr>",
            text(&queue["finished_last_5_minutes"]),
            q(name)
        );
    }
    body.push_str("</table>");
    layout("Queues", true, &body).into_response()
}

/// What the jobs page was asked for, to show and to carry into links and bulk actions.
#[derive(Deserialize, Default)]
pub struct Filters {
    queue: Option<String>,
    state: Option<String>,
    function_id: Option<String>,
    deployment_id: Option<String>,
    page: Option<i64>,
}

impl Filters {
    /// The filters alone (no page), as a query string.
    fn query(&self) -> String {
        [
            ("queue", &self.queue),
            ("state", &self.state),
            ("function_id", &self.function_id),
            ("deployment_id", &self.deployment_id),
        ]
        .iter()
        .filter_map(|(name, value)| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", q(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
    }
}

fn bad_query(rejection: QueryRejection) -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &rejection.body_text(),
    )
}

/// The filters as the operators' API takes them; empty form fields mean "any".
fn api_query(filters: &Filters) -> Result<Query<ops::JobQuery>, QueryRejection> {
    let mut query = filters.query();
    if let Some(page) = filters.page {
        let _ = write!(
            query,
            "{}page={page}",
            if query.is_empty() { "" } else { "&" }
        );
    }
    let uri: Uri = format!("/ops/jobs?{query}").parse().unwrap_or_default();
    Query::try_from_uri(&uri)
}

fn select(name: &str, options: &[&str], chosen: Option<&str>) -> String {
    let mut html = format!("<select name=\"{name}\" id=\"{name}\"><option value=\"\">any</option>");
    for option in options {
        let _ = write!(
            html,
            "<option{}>{}</option>",
            if chosen == Some(option) {
                " selected"
            } else {
                ""
            },
            esc(option)
        );
    }
    html.push_str("</select>");
    html
}

/// `GET /ops/jobs?queue=&state=&function_id=&deployment_id=&page=`: newest first, with the
/// filters, and retry or cancel of every job they match.
pub async fn jobs(
    State(state): State<AppState>,
    Operator(caller): Operator,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Response {
    let Query(filters) = match filters {
        Ok(filters) => filters,
        Err(rejection) => return bad_query(rejection),
    };
    let page = match json(ops::jobs(State(state), caller, api_query(&filters)).await) {
        Ok(page) => page,
        Err(error) => return api_error_page(error),
    };
    let filter_query = filters.query();
    let mut body = format!(
        "<form method=\"get\" action=\"/ops/jobs\" id=\"filters\">{} {} \
         <input name=\"function_id\" placeholder=\"function id\" value=\"{}\"> \
         <input name=\"deployment_id\" placeholder=\"deployment id\" value=\"{}\"> \
         <button>Filter</button></form>\
         <div>Every job these filters match, not just this page: \
         <form class=\"inline\" method=\"post\" action=\"/ops/jobs/retry?{fq}\">\
         <button id=\"retry-matching\">Retry all</button></form> \
         <form class=\"inline\" method=\"post\" action=\"/ops/jobs/cancel?{fq}\">\
         <button id=\"cancel-matching\">Cancel all waiting</button></form></div>",
        select("queue", &ALL_QUEUES, filters.queue.as_deref()),
        select("state", &STATES, filters.state.as_deref()),
        esc(filters.function_id.as_deref().unwrap_or_default()),
        esc(filters.deployment_id.as_deref().unwrap_or_default()),
        fq = esc(&filter_query),
    );
    body.push_str(
        "<table id=\"jobs\"><tr><th>job</th><th>queue</th><th>state</th><th>attempts</th>\
         <th>worker</th><th>run at</th><th>done at</th><th>last result</th></tr>",
    );
    let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    for job in &jobs {
        let id = job["id"].as_str().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/ops/jobs/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            q(id),
            esc(id),
            esc(&text(&job["queue"])),
            state_cell(job["state"].as_str().unwrap_or_default()),
            text(&job["attempts"]),
            text(&job["max_attempts"]),
            esc(&text(&job["worker"])),
            esc(&text(&job["run_at"])),
            esc(&text(&job["done_at"])),
            esc(&text(&job["last_result"])),
        );
    }
    body.push_str("</table>");
    let number = page["page"].as_i64().unwrap_or(1);
    let per_page = page["per_page"].as_i64().unwrap_or(50);
    let sep = if filter_query.is_empty() { "" } else { "&amp;" };
    if number > 1 {
        let _ = write!(
            body,
            "<a href=\"/ops/jobs?{}{sep}page={}\">newer</a> ",
            esc(&filter_query),
            number - 1
        );
    }
    if jobs.len() as i64 == per_page {
        let _ = write!(
            body,
            "<a href=\"/ops/jobs?{}{sep}page={}\">older</a>",
            esc(&filter_query),
            number + 1
        );
    }
    layout("Jobs", true, &body).into_response()
}

/// `GET /ops/jobs/{id}`: the job, its payload, its last result, and its deployment.
pub async fn job(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Response {
    match json(ops::job(State(state), caller, ApiPath(id)).await) {
        Ok(detail) => job_page(&detail),
        Err(error) => api_error_page(error),
    }
}

fn job_page(job: &Value) -> Response {
    let id = job["id"].as_str().unwrap_or_default();
    let state = job["state"].as_str().unwrap_or_default();
    let mut body = format!(
        "<table id=\"job\"><tr><th>queue</th><td>{}</td></tr>\
         <tr><th>state</th><td id=\"state\">{}</td></tr>\
         <tr><th>attempts</th><td>{} of {}</td></tr><tr><th>worker</th><td>{}</td></tr>\
         <tr><th>run at</th><td>{}</td></tr><tr><th>locked at</th><td>{}</td></tr>\
         <tr><th>done at</th><td>{}</td></tr></table>",
        esc(&text(&job["queue"])),
        state_cell(state),
        text(&job["attempts"]),
        text(&job["max_attempts"]),
        esc(&text(&job["worker"])),
        esc(&text(&job["run_at"])),
        esc(&text(&job["locked_at"])),
        esc(&text(&job["done_at"])),
    );
    if matches!(state, "Failed" | "Killed") {
        let _ = write!(
            body,
            "<form class=\"inline\" method=\"post\" action=\"/ops/jobs/{}/retry\">\
             <button id=\"retry\">Retry</button></form> ",
            q(id)
        );
    }
    if matches!(state, "Pending" | "Paused") {
        let _ = write!(
            body,
            "<form class=\"inline\" method=\"post\" action=\"/ops/jobs/{}/cancel\">\
             <button id=\"cancel\">Cancel</button></form>",
            q(id)
        );
    }
    let pretty = |v: &Value| esc(&serde_json::to_string_pretty(v).unwrap_or_default());
    let _ = write!(
        body,
        "<h2>Last result</h2><pre id=\"last-result\">{}</pre><h2>Deployment</h2><pre>{}</pre>\
         <h2>Payload</h2><pre>{}</pre>",
        pretty(&job["last_result"]),
        pretty(&job["deployment"]),
        pretty(&job["payload"]),
    );
    layout(&format!("Job {id}"), true, &body).into_response()
}

/// An action's answer: the page it leads to, or the refusal told on a page.
fn after<T>(outcome: Result<T, ApiError>, then: impl FnOnce() -> Response) -> Response {
    match outcome {
        Ok(_) => then(),
        Err(error) => api_error_page(error),
    }
}

/// Where an action on a job leads: the job as it now stands.
fn to_job(id: &str) -> Response {
    Redirect::to(&format!("/ops/jobs/{}", q(id))).into_response()
}

pub async fn retry(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Response {
    let outcome = ops::retry(State(state), caller, ApiPath(id.clone())).await;
    after(outcome, || to_job(&id))
}

pub async fn cancel(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Response {
    let outcome = ops::cancel(State(state), caller, ApiPath(id.clone())).await;
    after(outcome, || to_job(&id))
}

/// A bulk action over the list's filters; it leads back to the list, which shows what changed.
async fn bulk<T, Action>(
    filters: Result<Query<Filters>, QueryRejection>,
    act: impl FnOnce(Result<Query<ops::JobQuery>, QueryRejection>) -> Action,
) -> Response
where
    Action: Future<Output = Result<T, ApiError>>,
{
    let Query(filters) = match filters {
        Ok(filters) => filters,
        Err(rejection) => return bad_query(rejection),
    };
    let outcome = act(api_query(&filters)).await;
    after(outcome, || {
        Redirect::to(&format!("/ops/jobs?{}", filters.query())).into_response()
    })
}

pub async fn retry_matching(
    State(state): State<AppState>,
    Operator(caller): Operator,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Response {
    bulk(filters, |query| {
        ops::retry_matching(State(state), caller, query)
    })
    .await
}

pub async fn cancel_matching(
    State(state): State<AppState>,
    Operator(caller): Operator,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Response {
    bulk(filters, |query| {
        ops::cancel_matching(State(state), caller, query)
    })
    .await
}

fn to_queues() -> Response {
    Redirect::to("/ops/").into_response()
}

pub async fn pause(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Response {
    after(
        ops::pause(State(state), caller, ApiPath(name)).await,
        to_queues,
    )
}

pub async fn resume(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Response {
    after(
        ops::resume(State(state), caller, ApiPath(name)).await,
        to_queues,
    )
}

fn seconds_between(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    match (from, to) {
        (Some(from), Some(to)) => format!("{:.2} s", (to - from).as_seconds_f64()),
        _ => "—".to_owned(),
    }
}

/// `GET /ops/deployments`: every tenant's deployments on their way, with the time each stage
/// took so far.
pub async fn deployments(State(state): State<AppState>, Operator(_): Operator) -> Response {
    let rows = async {
        let mut conn = state.pool.acquire().await?;
        Ok::<_, ApiError>(db::console::in_flight(&mut conn, 200).await?)
    }
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return api_error_page(error),
    };
    let now = Some(chrono::Utc::now());
    let mut body = String::from(
        "<table id=\"deployments\"><tr><th>function</th><th>version</th><th>status</th>\
         <th>waited</th><th>build</th><th>push</th><th>since accepted</th><th>jobs</th></tr>",
    );
    for d in &rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td><a href=\"/ops/jobs?deployment_id={}\">jobs</a></td></tr>",
            esc(&d.function_name),
            d.version,
            esc(&d.status),
            seconds_between(Some(d.created_at), d.build_started_at.or(now)),
            seconds_between(
                d.build_started_at,
                d.built_at.or(d.build_started_at.and(now))
            ),
            seconds_between(d.built_at, d.pushed_at.or(d.built_at.and(now))),
            seconds_between(Some(d.created_at), now),
            d.id,
        );
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str("<p class=\"note\">No deployment is on its way.</p>");
    }
    layout("Deployments in flight", true, &body).into_response()
}

#[derive(Deserialize)]
pub struct ServingFilter {
    state: Option<String>,
}

/// `GET /ops/functions?state=`: live functions counted by serving state, and those of one.
pub async fn functions(
    State(state): State<AppState>,
    Operator(_): Operator,
    filter: Result<Query<ServingFilter>, QueryRejection>,
) -> Response {
    let chosen = filter
        .ok()
        .and_then(|Query(f)| f.state)
        .filter(|s| SERVING_STATES.contains(&s.as_str()))
        .unwrap_or_else(|| "Failed".to_owned());
    let listed = async {
        let mut conn = state.pool.acquire().await?;
        let counts = db::console::functions_by_state(&mut conn).await?;
        let functions = db::console::functions_in_state(&mut conn, &chosen, 200).await?;
        Ok::<_, ApiError>((counts, functions))
    }
    .await;
    let (counts, functions) = match listed {
        Ok(listed) => listed,
        Err(error) => return api_error_page(error),
    };
    let mut body = String::from("<table id=\"serving\"><tr>");
    for s in SERVING_STATES {
        let count = counts
            .iter()
            .find(|(state, _)| state == s)
            .map_or(0, |c| c.1);
        let _ = write!(
            body,
            "<th><a href=\"/ops/functions?state={s}\">{s}</a></th><td class=\"n\">{count}</td>"
        );
    }
    let _ = write!(
        body,
        "</tr></table><h2>{}</h2><table id=\"functions\"><tr><th>function</th><th>id</th>\
         <th>version</th><th>reason</th><th>last invoked</th></tr>",
        esc(&chosen)
    );
    for f in &functions {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><a href=\"/ops/jobs?function_id={}\">{}</a></td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            f.id,
            f.id,
            f.active_version.map_or("—".to_owned(), |v| v.to_string()),
            esc(f.state_reason.as_deref().unwrap_or("—")),
            f.last_invoked_at
                .map_or("—".to_owned(), crate::routes::timestamp)
        );
    }
    body.push_str("</table>");
    layout("Functions", true, &body).into_response()
}

/// `GET /ops/schedules`: each sweep, when it last fired and what it did, and when it fires next.
pub async fn schedules(State(state): State<AppState>, Operator(caller): Operator) -> Response {
    let list = match json(schedules::list(State(state), caller).await) {
        Ok(list) => list,
        Err(error) => return api_error_page(error),
    };
    let mut body = String::from(
        "<table id=\"schedules\"><tr><th>sweep</th><th>cron</th><th>last fired</th><th>by</th>\
         <th>result</th><th>next</th></tr>",
    );
    for s in list["schedules"].as_array().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td>{}</td></tr>",
            esc(&text(&s["name"])),
            esc(&text(&s["cron"])),
            esc(&text(&s["last_fire_at"])),
            esc(&text(&s["last_fired_by"])),
            esc(&text(&s["last_result"])),
            esc(&text(&s["next_fire_at"])),
        );
    }
    body.push_str("</table>");
    layout("Schedules", true, &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_tenants_cannot_become_markup() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        assert_eq!(q("slipway::build & x"), "slipway%3A%3Abuild%20%26%20x");
    }
}
