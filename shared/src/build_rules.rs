//! What a tenant's Dockerfile may ask of the builder, checked when an archive is accepted (an
//! upload by the api, a pushed commit by the `source` job), before anything is built:
//!
//! - nothing is fetched from a URL (`ADD`/`COPY` of `http://…`, `git@…`): BuildKit fetches those
//!   itself, from the builder's network, outside any `RUN` sandbox;
//! - every image it builds on or copies from is `scratch`, an earlier stage, an image on the
//!   operator's allow-list (`SLIPWAY_BUILD_BASE_IMAGES`), or one of the caller's own functions'
//!   repositories: never another tenant's image, which the builder may well have at hand;
//! - no `RUN --network` other than none, no `RUN --security=insecure`.
//!
//! Cache mounts are not refused but scoped to the owner when the context is prepared
//! (`archive::prepare_build_context`).

use std::collections::HashSet;

use uuid::Uuid;

use crate::{
    dockerfile::{self, BaseImageAllowList, DockerfileViolation},
    domain::{FunctionName, ImageRef},
};

/// The images one owner may build from besides the allow-list: `host/path` of each of its
/// functions' repositories.
#[derive(Debug, Default, Clone)]
pub struct OwnRepositories(HashSet<String>);

impl OwnRepositories {
    /// The repositories of `functions` (id and name, as `db::functions::live_of_owner` lists
    /// them) at `registry`.
    pub fn at(registry: &str, functions: &[(Uuid, String)]) -> Self {
        Self(
            functions
                .iter()
                .filter_map(|(id, name)| {
                    let name = FunctionName::parse(name).ok()?;
                    let image = ImageRef::for_version(registry, &name, *id, 1);
                    let normalized = dockerfile::normalize(&image.name())?;
                    Some(format!("{}/{}", normalized.host, normalized.path))
                })
                .collect(),
        )
    }

    fn contains(&self, reference: &str) -> bool {
        dockerfile::normalize(reference)
            .is_some_and(|r| self.0.contains(&format!("{}/{}", r.host, r.path)))
    }
}

/// Every rule the Dockerfile breaks, each naming its line; empty when it may be built.
pub fn check(
    dockerfile: &[u8],
    base_images: &BaseImageAllowList,
    own: &OwnRepositories,
) -> Vec<DockerfileViolation> {
    // What BuildKit will parse: without the parser directives `prepare_build_context` strips,
    // whose removal can turn a later line into a live `# escape=`. They are all at the top, so
    // a line of what is left is `stripped` lines further down in what the tenant wrote.
    let (dockerfile, stripped) = crate::archive::strip_syntax_directives(dockerfile);
    let shift = stripped.len();
    let mut violations = inspect_stripped(&dockerfile, base_images, own);
    for violation in &mut violations {
        violation.line += shift;
    }
    violations
}

fn inspect_stripped(
    dockerfile: &[u8],
    base_images: &BaseImageAllowList,
    own: &OwnRepositories,
) -> Vec<DockerfileViolation> {
    let Ok(text) = std::str::from_utf8(dockerfile) else {
        return vec![DockerfileViolation {
            line: 1,
            message: "the Dockerfile is not UTF-8 text".into(),
        }];
    };
    let facts = match dockerfile::inspect(text) {
        Ok(facts) => facts,
        Err(violations) => return violations,
    };
    facts
        .images
        .into_iter()
        .filter(|image| !base_images.allows(&image.reference) && !own.contains(&image.reference))
        .map(|image| DockerfileViolation {
            line: image.line,
            message: format!(
                "`{}` uses the image {}, which is neither an allowed base image nor one of your \
                 functions' images",
                image.instruction, image.reference
            ),
        })
        .collect()
}

/// The violations as one message for an error answer or a deployment's reason.
pub fn describe(violations: &[DockerfileViolation]) -> String {
    let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "the Dockerfile breaks the build rules: {}",
        lines.join("; ")
    )
}
