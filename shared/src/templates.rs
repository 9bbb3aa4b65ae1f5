//! Functions from handler code (seed 003): a template wraps a few lines of handler code in a
//! small HTTP server on `$PORT` (POST `{"data": …}` → the handler's return value as JSON; a
//! handler that throws → 500 with its message) and makes the build context an upload would
//! have been. That context then goes through the same pipeline: validation, build rules,
//! BuildKit, push, digest, cache-warm, the sandbox. The servers and Dockerfiles live in
//! `templates/` at the repository's root (see its README); the runtime base images are made
//! offline from Debian's packages by `scripts/lib/runtimes.sh`.

use std::io::Write;

/// The most handler source a function may hold.
pub const MAX_HANDLER_BYTES: usize = 256 * 1024;

/// The tag of every runtime image `scripts/lib/runtimes.sh` makes.
const RUNTIME_IMAGE_TAG: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `export default function(data) { … }` in `handler.mjs`, on Debian's Node.js.
    Node,
    /// `def handler(data): …` in `handler.py`, on Debian's Python 3.
    Python,
}

struct Files {
    dockerfile: &'static str,
    server_name: &'static str,
    server: &'static str,
    handler_name: &'static str,
}

impl Template {
    pub const ALL: [Self; 2] = [Self::Node, Self::Python];

    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Python => "python",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == raw)
    }

    /// The runtime the template runs on, seed 003's `runtime` field; one per template.
    pub fn runtime(self) -> &'static str {
        self.name()
    }

    /// The runtime image under `repository` (`SLIPWAY_RUNTIME_IMAGES`, e.g.
    /// `registry:5000/slipway`).
    pub fn base_image(self, repository: &str) -> String {
        format!(
            "{}/{}:{RUNTIME_IMAGE_TAG}",
            repository.trim_end_matches('/'),
            self.runtime()
        )
    }

    fn files(self) -> Files {
        match self {
            Self::Node => Files {
                dockerfile: include_str!("../../templates/node/Dockerfile"),
                server_name: "server.mjs",
                server: include_str!("../../templates/node/server.mjs"),
                handler_name: "handler.mjs",
            },
            Self::Python => Files {
                dockerfile: include_str!("../../templates/python/Dockerfile"),
                server_name: "server.py",
                server: include_str!("../../templates/python/server.py"),
                handler_name: "handler.py",
            },
        }
    }

    /// The build context (a tar.gz, as an upload would be) for `handler` on the runtime image
    /// under `repository`. The handler is a file of its own: its text never reaches the
    /// Dockerfile, so no handler can change how it is built.
    pub fn build_context(self, repository: &str, handler: &str) -> std::io::Result<Vec<u8>> {
        let files = self.files();
        let dockerfile = files
            .dockerfile
            .replace("{{BASE_IMAGE}}", &self.base_image(repository));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut archive = tar::Builder::new(&mut encoder);
            for (name, content) in [
                ("Dockerfile", dockerfile.as_str()),
                (files.server_name, files.server),
                (files.handler_name, handler),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(content.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                archive.append_data(&mut header, name, content.as_bytes())?;
            }
            archive.finish()?;
        }
        encoder.flush()?;
        encoder.finish()
    }
}

/// What a handler's source must be before it is stored: text, not empty, within the limit.
pub fn check_handler(handler: &str) -> Result<(), String> {
    if handler.trim().is_empty() {
        return Err("handler is empty".into());
    }
    if handler.len() > MAX_HANDLER_BYTES {
        return Err(format!(
            "handler takes {} bytes; at most {MAX_HANDLER_BYTES}",
            handler.len()
        ));
    }
    if handler.contains('\0') {
        return Err("handler contains a NUL byte".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_has_the_template_the_handler_apart_and_the_base_image_in_place() {
        let handler = "export default function(data) { return data; }\n";
        let context = Template::Node
            .build_context("registry:5000/slipway", handler)
            .unwrap();
        let summary =
            crate::archive::validate_archive(&context, &crate::archive::ArchiveLimits::default())
                .unwrap();
        let dockerfile = String::from_utf8(summary.dockerfile).unwrap();
        assert!(
            dockerfile.contains("FROM registry:5000/slipway/node:1\n"),
            "{dockerfile}"
        );
        assert!(!dockerfile.contains("{{"), "{dockerfile}");
        assert!(!dockerfile.contains("return data"), "{dockerfile}");
    }

    #[test]
    fn a_handler_must_be_text_within_the_limit() {
        assert!(check_handler("def handler(data):\n    return data\n").is_ok());
        assert!(check_handler(" \n").is_err());
        assert!(check_handler("a\0b").is_err());
        assert!(check_handler(&"x".repeat(MAX_HANDLER_BYTES + 1)).is_err());
    }
}
