//! Progress for people at a terminal: a bar while the archive uploads, then one live line per
//! phase of the build log (BuildKit's current step), each phase closed with its duration. In CI
//! (`CI` set), with `--json`, or when stderr is not a terminal nothing is drawn and the caller
//! prints plain lines, which logs keep readable.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use futures::stream;

const CLEAR_LINE: &str = "\r\x1b[2K";
const UPLOAD_CHUNK: usize = 64 * 1024;

pub struct Progress {
    live: bool,
    width: usize,
    phase: Option<(String, Instant)>,
}

impl Progress {
    pub fn detect(json: bool) -> Self {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Self {
            live: !json && !in_ci && !dumb && std::io::stderr().is_terminal(),
            width: std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(100),
            phase: None,
        }
    }

    /// The upload body: on a terminal, handed out in chunks that move the bar as the HTTP client
    /// takes them.
    pub fn upload_body(&self, bytes: Vec<u8>) -> reqwest::Body {
        if !self.live {
            return bytes.into();
        }
        let total = bytes.len();
        let sent = Arc::new(AtomicUsize::new(0));
        let chunks: Vec<bytes::Bytes> = bytes
            .chunks(UPLOAD_CHUNK)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        let stream = stream::iter(chunks.into_iter().map(move |chunk| {
            let done = sent.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            let mut err = std::io::stderr();
            write!(err, "{CLEAR_LINE}uploading {}", upload_bar(done, total, 30)).ok();
            if done == total {
                writeln!(err).ok();
            }
            err.flush().ok();
            Ok::<_, std::io::Error>(chunk)
        }));
        reqwest::Body::wrap_stream(stream)
    }

    /// Shows one log line; returns false when not live (the caller prints it plainly).
    pub fn log_line(&mut self, phase: &str, message: &str) -> bool {
        if !self.live {
            return false;
        }
        if self
            .phase
            .as_ref()
            .is_none_or(|(current, _)| current != phase)
        {
            self.close_phase();
            self.phase = Some((phase.to_owned(), Instant::now()));
        }
        let line = truncate(&format!("▸ {phase:<10} {message}"), self.width);
        eprint!("{CLEAR_LINE}{line}");
        std::io::stderr().flush().ok();
        true
    }

    /// Ends the phase being drawn with its duration.
    pub fn close_phase(&mut self) {
        if let Some((phase, started)) = self.phase.take() {
            eprintln!(
                "{CLEAR_LINE}✓ {phase:<10} {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// `[#####-----]  50% 1.2 MB / 2.4 MB`
fn upload_bar(done: usize, total: usize, width: usize) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!(
        "[{}{}] {:>3}% {} / {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        (fraction * 100.0).round() as u32,
        human_bytes(done),
        human_bytes(total)
    )
}

fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn truncate(line: &str, width: usize) -> String {
    match line.char_indices().nth(width.saturating_sub(1)) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_bars() {
        assert_eq!(upload_bar(0, 2048, 10), "[----------]   0% 0 B / 2.0 kB");
        assert_eq!(
            upload_bar(1 << 20, 2 << 20, 10),
            "[#####-----]  50% 1.0 MB / 2.0 MB"
        );
        assert_eq!(upload_bar(5, 5, 4), "[####] 100% 5 B / 5 B");
        assert_eq!(upload_bar(0, 0, 4), "[####] 100% 0 B / 0 B");
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }

    #[test]
    fn nothing_is_drawn_for_scripts() {
        let mut progress = Progress::detect(true);
        assert!(!progress.live);
        assert!(!progress.log_line("build", "#1 load"));
    }
}
