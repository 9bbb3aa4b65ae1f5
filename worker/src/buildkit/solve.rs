//! `Control/Solve` with `Control/Status` for the same ref alongside it, BuildKit's progress turned
//! into ordered log lines, and the outcome sorted into "retry later" versus "the build failed".

use std::{
    collections::{HashMap, HashSet},
    error::Error as StdError,
    time::Duration,
};

use bollard_buildkit_proto::{
    google::protobuf::Timestamp,
    moby::buildkit::v1::{
        SolveRequest, StatusRequest, StatusResponse, Vertex, control_client::ControlClient,
    },
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Code, transport::Channel};
use tracing::{debug, warn};

use super::{BuildError, BuildLogLine, LogStream, error_chain, new_id, session::SessionHandle};

/// buildkitd's own gRPC message limit; status batches of chatty builds exceed tonic's 4 MiB default.
pub(super) const MAX_MESSAGE_SIZE: usize = 16 << 20;
/// After Solve returns, how long the status stream may take to deliver its last lines (it normally
/// ends at once; it only lingers when the job never started).
const STATUS_GRACE: Duration = Duration::from_secs(3);
/// A "line" without a newline is flushed once this long, so one binary blob cannot grow unbounded.
const MAX_LINE: usize = 16 * 1024;

pub(super) struct SolveSpec {
    pub session_id: String,
    pub exporter: String,
    pub exporter_attrs: HashMap<String, String>,
    pub frontend_attrs: HashMap<String, String>,
    pub stall_timeout: std::time::Duration,
}

/// Runs the build and returns the exporter response.
pub(super) async fn solve(
    control: ControlClient<Channel>,
    spec: SolveSpec,
    session: &SessionHandle,
    logs: mpsc::Sender<BuildLogLine>,
) -> Result<HashMap<String, String>, BuildError> {
    let build_ref = new_id();
    // The deprecated single-exporter fields are what BuildKit 0.8 (Docker 20.10) reads; newer
    // buildkitd still honours them when `exporters` is empty.
    let request = SolveRequest {
        r#ref: build_ref.clone(),
        session: spec.session_id,
        frontend: "dockerfile.v0".to_owned(),
        frontend_attrs: spec.frontend_attrs,
        exporter_deprecated: spec.exporter,
        exporter_attrs_deprecated: spec.exporter_attrs,
        ..Default::default()
    };
    debug!(build_ref, "solving");

    let mut progress = Progress::default();
    let (progressed, last_progress) = tokio::sync::watch::channel(tokio::time::Instant::now());
    let stall_timeout = spec.stall_timeout;
    let result = {
        let mut solving = control.clone();
        let solve = solving.solve(request);
        let status = follow_status(control, build_ref, &mut progress, &logs, &progressed);
        tokio::pin!(solve, status);
        let mut status_done = false;
        let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
        let result = loop {
            tokio::select! {
                result = &mut solve => break Some(result),
                () = &mut status, if !status_done => status_done = true,
                _ = check.tick() => {
                    if last_progress.borrow().elapsed() > stall_timeout {
                        // Dropping the solve cancels the request, and BuildKit the build.
                        break None;
                    }
                }
            }
        };
        if !status_done
            && tokio::time::timeout(STATUS_GRACE, &mut status)
                .await
                .is_err()
        {
            debug!("status stream still open after the solve; dropping it");
        }
        result
    };
    for line in progress.finish() {
        send(&logs, line).await;
    }

    match result {
        Some(Ok(response)) => Ok(response.into_inner().exporter_response),
        Some(Err(status)) => Err(classify(&status, &progress, session.has_ended())),
        None => Err(BuildError::Unavailable(format!(
            "the build made no progress for {}s (SLIPWAY_BUILD_STALL_TIMEOUT) and was cancelled",
            stall_timeout.as_secs()
        ))),
    }
}

async fn follow_status(
    mut control: ControlClient<Channel>,
    build_ref: String,
    progress: &mut Progress,
    logs: &mpsc::Sender<BuildLogLine>,
    progressed: &tokio::sync::watch::Sender<tokio::time::Instant>,
) {
    let mut stream = match control.status(StatusRequest { r#ref: build_ref }).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // The log is a courtesy; the solve's own result decides the outcome.
            warn!(error = %error_chain(&status), "cannot follow the build status");
            return;
        }
    };
    while let Some(message) = stream.next().await {
        match message {
            Ok(update) => {
                progressed.send_replace(tokio::time::Instant::now());
                for line in progress.update(update) {
                    send(logs, line).await;
                }
            }
            Err(status) => {
                debug!(error = %error_chain(&status), "status stream ended with an error");
                return;
            }
        }
    }
}

async fn send(logs: &mpsc::Sender<BuildLogLine>, line: BuildLogLine) {
    // A closed receiver only means nobody reads the log any more; the build goes on.
    let _ = logs.send(line).await;
}

/// Transient (retry) unless BuildKit itself answered with an error about the build.
fn classify(status: &tonic::Status, progress: &Progress, session_ended: bool) -> BuildError {
    let message = status.message().trim().to_owned();
    // tonic attaches a source only to errors it produced locally (connection refused, reset,
    // h2 protocol errors); statuses sent by BuildKit have none.
    let local = status.source().is_some();
    let transient_code = matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
    );
    // Messages BuildKit gives when the session (our side of the build) went away.
    let lost_session = ["no active session", "session not found", "context canceled"]
        .iter()
        .any(|needle| message.contains(needle));
    if local || transient_code || session_ended || (lost_session && progress.failure().is_none()) {
        let mut text = format!("solve: {}", error_chain(status));
        if session_ended {
            text.push_str(" (the session connection closed)");
        }
        return BuildError::Unavailable(text);
    }
    // Naming the failing step tells the user which Dockerfile line to look at; BuildKit 0.8's
    // messages ("exit code: 3", "\"/x\" not found") do not.
    let message = match progress.failure() {
        Some((step, _)) if message.contains(step) => message,
        Some((step, error)) if message.contains(error) || message.is_empty() => {
            if message.is_empty() {
                format!("{step}: {error}")
            } else {
                format!("{step}: {message}")
            }
        }
        Some((step, error)) => format!("{message}\n{step}: {error}"),
        None if message.is_empty() => {
            format!("BuildKit returned {:?} without a message", status.code())
        }
        None => message,
    };
    BuildError::Failed { message }
}

struct VertexState {
    index: usize,
    name: String,
    announced: bool,
    finished: bool,
}

/// Turns the cumulative status updates into log lines, each said once, like BuildKit's plain
/// progress printer.
#[derive(Default)]
struct Progress {
    vertexes: HashMap<String, VertexState>,
    next_index: usize,
    /// Output not yet ended by a newline, per (vertex, stream).
    partial: HashMap<(String, i64), Vec<u8>>,
    statuses_done: HashSet<(String, String)>,
    /// First step errors in order; "context canceled" on siblings of the failing step comes after.
    failures: Vec<(String, String)>,
}

impl Progress {
    fn vertex(&mut self, digest: &str) -> &mut VertexState {
        let next_index = &mut self.next_index;
        self.vertexes.entry(digest.to_owned()).or_insert_with(|| {
            *next_index += 1;
            VertexState {
                index: *next_index,
                name: String::new(),
                announced: false,
                finished: false,
            }
        })
    }

    fn update(&mut self, update: StatusResponse) -> Vec<BuildLogLine> {
        let mut lines = Vec::new();
        // A vertex's output and its completion can arrive in the same update: such vertexes are
        // announced first and completed after the output. The rest (cache hits mostly) say
        // "started" and "done" together, which keeps a cached build readable.
        let busy: HashSet<&str> = update
            .logs
            .iter()
            .map(|l| l.vertex.as_str())
            .chain(update.statuses.iter().map(|s| s.vertex.as_str()))
            .collect();
        let mut deferred = Vec::new();
        for v in &update.vertexes {
            if v.started.is_none() && !v.cached {
                continue;
            }
            let state = self.vertex(&v.digest);
            if !v.name.is_empty() {
                state.name.clone_from(&v.name);
            }
            if !state.announced {
                state.announced = true;
                lines.push(line(state, LogStream::Step, state.name.clone()));
            }
            if busy.contains(v.digest.as_str()) {
                deferred.push(v.clone());
            } else {
                self.complete(v, &mut lines);
            }
        }
        for s in &update.statuses {
            if s.completed.is_none() || !self.statuses_done.insert((s.vertex.clone(), s.id.clone()))
            {
                continue;
            }
            let what = if s.name.is_empty() { &s.id } else { &s.name };
            let text = if s.current > 0 {
                format!("{what} {} done", human_bytes(s.current))
            } else {
                format!("{what} done")
            };
            let state = self.vertex(&s.vertex);
            lines.push(line(state, LogStream::Step, text));
        }
        for log in update.logs {
            let stream = if log.stream == 2 {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            };
            let key = (log.vertex.clone(), log.stream);
            let mut buffered = self.partial.remove(&key).unwrap_or_default();
            buffered.extend_from_slice(&log.msg);
            let mut rest: &[u8] = &buffered;
            let mut texts = Vec::new();
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                texts.push(text_of(&rest[..pos]));
                rest = &rest[pos + 1..];
            }
            while rest.len() >= MAX_LINE {
                texts.push(text_of(&rest[..MAX_LINE]));
                rest = &rest[MAX_LINE..];
            }
            if !rest.is_empty() {
                self.partial.insert(key, rest.to_vec());
            }
            let state = self.vertex(&log.vertex);
            for text in texts {
                lines.push(line(state, stream, text));
            }
        }
        for v in &deferred {
            self.complete(v, &mut lines);
        }
        lines
    }

    /// Says how a vertex ended, once.
    fn complete(&mut self, v: &Vertex, lines: &mut Vec<BuildLogLine>) {
        let Some(completed) = &v.completed else {
            return;
        };
        if self.vertexes.get(&v.digest).is_some_and(|s| s.finished) {
            return;
        }
        self.flush_vertex(&v.digest, lines);
        let state = self.vertex(&v.digest);
        state.finished = true;
        if !v.error.is_empty() {
            lines.push(line(state, LogStream::Error, format!("ERROR: {}", v.error)));
            let name = if state.name.is_empty() {
                v.digest.clone()
            } else {
                state.name.clone()
            };
            self.failures.push((name, v.error.clone()));
        } else if v.cached {
            lines.push(line(state, LogStream::Step, "CACHED".to_owned()));
        } else {
            let took = v
                .started
                .as_ref()
                .map(|s| seconds_between(s, completed))
                .unwrap_or_default();
            lines.push(line(state, LogStream::Step, format!("DONE {took:.1}s")));
        }
    }

    fn flush_vertex(&mut self, digest: &str, lines: &mut Vec<BuildLogLine>) {
        for stream in [1, 2] {
            if let Some(rest) = self.partial.remove(&(digest.to_owned(), stream)) {
                let kind = if stream == 2 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                let state = self.vertex(digest);
                lines.push(line(state, kind, text_of(&rest)));
            }
        }
    }

    /// Output still buffered when the build ends (no final newline).
    fn finish(&mut self) -> Vec<BuildLogLine> {
        let mut lines = Vec::new();
        let mut digests: Vec<String> = self.partial.keys().map(|(d, _)| d.clone()).collect();
        digests.sort_by_key(|d| self.vertexes.get(d).map(|s| s.index));
        digests.dedup();
        for digest in digests {
            self.flush_vertex(&digest, &mut lines);
        }
        lines
    }

    /// The step that failed and its error; siblings cancelled because of it do not count.
    fn failure(&self) -> Option<(&str, &str)> {
        self.failures
            .iter()
            .find(|(_, e)| !e.contains("context canceled"))
            .or_else(|| self.failures.first())
            .map(|(step, error)| (step.as_str(), error.as_str()))
    }
}

fn line(state: &VertexState, stream: LogStream, text: String) -> BuildLogLine {
    BuildLogLine {
        step: (!state.name.is_empty()).then(|| state.name.clone()),
        stream,
        message: if text.is_empty() {
            format!("#{}", state.index)
        } else {
            format!("#{} {text}", state.index)
        },
    }
}

/// A line of process output: lossy UTF-8, `\r\n` endings and progress-bar redraws reduced to
/// what was last drawn.
fn text_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches('\r');
    text.rsplit('\r').next().unwrap_or_default().to_owned()
}

fn seconds_between(from: &Timestamp, to: &Timestamp) -> f64 {
    let nanos = (to.seconds - from.seconds) as f64 * 1e9 + f64::from(to.nanos - from.nanos);
    (nanos / 1e9).max(0.0)
}

fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.2}{unit}")
}

#[cfg(test)]
mod tests {
    use bollard_buildkit_proto::moby::buildkit::v1::{VertexLog, VertexStatus};

    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn vertex(
        digest: &str,
        name: &str,
        started: Option<Timestamp>,
        completed: Option<Timestamp>,
    ) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            started,
            completed,
            ..Default::default()
        }
    }

    fn messages(lines: &[BuildLogLine]) -> Vec<(&str, &str)> {
        lines
            .iter()
            .map(|l| (l.stream.as_str(), l.message.as_str()))
            .collect()
    }

    #[test]
    fn maps_steps_and_output_in_order() {
        let mut p = Progress::default();
        let lines = p.update(StatusResponse {
            vertexes: vec![vertex("a", "[1/2] FROM base", ts(1, 0), None)],
            ..Default::default()
        });
        assert_eq!(messages(&lines), [("step", "#1 [1/2] FROM base")]);

        let lines = p.update(StatusResponse {
            vertexes: vec![
                vertex("a", "[1/2] FROM base", ts(1, 0), ts(1, 500_000_000)),
                vertex("b", "[2/2] RUN echo hi", ts(2, 0), None),
            ],
            statuses: vec![VertexStatus {
                id: "transferring".into(),
                vertex: "a".into(),
                current: 2048,
                completed: ts(1, 400_000_000),
                ..Default::default()
            }],
            logs: vec![
                VertexLog {
                    vertex: "b".into(),
                    stream: 1,
                    msg: b"hello\nwor".to_vec(),
                    ..Default::default()
                },
                VertexLog {
                    vertex: "b".into(),
                    stream: 2,
                    msg: b"oops\r\n".to_vec(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            messages(&lines),
            [
                ("step", "#2 [2/2] RUN echo hi"),
                ("step", "#1 transferring 2.05kB done"),
                ("stdout", "#2 hello"),
                ("stderr", "#2 oops"),
                ("step", "#1 DONE 0.5s"),
            ]
        );

        let mut failed = vertex("b", "[2/2] RUN echo hi", ts(2, 0), ts(3, 0));
        failed.error = "exit code: 1".into();
        let lines = p.update(StatusResponse {
            vertexes: vec![failed],
            logs: vec![VertexLog {
                vertex: "b".into(),
                stream: 1,
                msg: b"ld".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(
            messages(&lines),
            [("stdout", "#2 world"), ("error", "#2 ERROR: exit code: 1")]
        );
        assert_eq!(lines[1].step.as_deref(), Some("[2/2] RUN echo hi"));
        assert_eq!(p.failure(), Some(("[2/2] RUN echo hi", "exit code: 1")));
        assert!(p.finish().is_empty());
    }

    #[test]
    fn cached_steps_say_so_once() {
        let mut p = Progress::default();
        let mut v = vertex("a", "[2/2] COPY x /", ts(1, 0), ts(1, 0));
        v.cached = true;
        let update = StatusResponse {
            vertexes: vec![v],
            ..Default::default()
        };
        let lines = p.update(update.clone());
        assert_eq!(
            messages(&lines),
            [("step", "#1 [2/2] COPY x /"), ("step", "#1 CACHED")]
        );
        assert!(p.update(update).is_empty());

        let cached = |d: &str, n: &str| {
            let mut v = vertex(d, n, ts(2, 0), ts(2, 0));
            v.cached = true;
            v
        };
        let lines = p.update(StatusResponse {
            vertexes: vec![cached("b", "[1/2] FROM x"), cached("c", "[2/2] RUN y")],
            ..Default::default()
        });
        assert_eq!(
            messages(&lines),
            [
                ("step", "#2 [1/2] FROM x"),
                ("step", "#2 CACHED"),
                ("step", "#3 [2/2] RUN y"),
                ("step", "#3 CACHED")
            ]
        );
    }

    #[test]
    fn flushes_unterminated_output_at_the_end() {
        let mut p = Progress::default();
        p.update(StatusResponse {
            vertexes: vec![vertex("a", "RUN x", ts(1, 0), None)],
            ..Default::default()
        });
        p.update(StatusResponse {
            logs: vec![VertexLog {
                vertex: "a".into(),
                stream: 1,
                msg: b"50%\r100%".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(messages(&p.finish()), [("stdout", "#1 100%")]);
    }

    #[test]
    fn build_errors_are_permanent_and_transport_errors_transient() {
        let p = Progress::default();
        let failed = classify(
            &tonic::Status::unknown("dockerfile parse error line 2: unknown instruction: FOO"),
            &p,
            false,
        );
        assert!(
            matches!(&failed, BuildError::Failed { message } if message.contains("unknown instruction: FOO"))
        );

        let mut p = Progress::default();
        p.failures
            .push(("[2/2] RUN exit 3".into(), "exit code: 3".into()));
        let failed = classify(
            &tonic::Status::unknown("executor failed running [/bin/sh -c exit 3]: exit code: 3"),
            &p,
            false,
        );
        assert!(
            matches!(&failed, BuildError::Failed { message } if message == "[2/2] RUN exit 3: executor failed running [/bin/sh -c exit 3]: exit code: 3"),
            "{failed}"
        );
        assert!(matches!(
            classify(&tonic::Status::unavailable("connection refused"), &p, false),
            BuildError::Unavailable(_)
        ));
        assert!(matches!(
            classify(&tonic::Status::unknown("boom"), &p, true),
            BuildError::Unavailable(_)
        ));
        assert!(matches!(
            classify(
                &tonic::Status::unknown("no active session for x: context deadline exceeded"),
                &Progress::default(),
                false
            ),
            BuildError::Unavailable(_)
        ));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(35), "35B");
        assert_eq!(human_bytes(2048), "2.05kB");
        assert_eq!(human_bytes(3_500_000), "3.50MB");
    }
}
