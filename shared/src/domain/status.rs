//! The lifecycle status of a function (seed 000) and of each of its deployments, as pure state
//! machines. Every change of status in the database goes through `apply`, so an illegal transition
//! is an error and never silently written.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionStatus {
    Init,
    Building,
    Active,
    PendingDeletion,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentStatus {
    /// Accepted from a git push; its archive is being fetched from the pushed commit.
    Fetching,
    Building,
    Pushing,
    /// Built and pushed for `POST /api/v1/functions/build/{id}`: held, not serving, until a
    /// deploy releases it.
    Built,
    Deploying,
    Active,
    Inactive,
    Failed,
    /// A newer push overtook it before it served; final.
    Superseded,
}

/// What happens to a function, as far as its lifecycle status cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionEvent {
    /// A new version was accepted and its build queued.
    DeployRequested,
    /// One of its deployments reached a final state (active or failed).
    DeploymentSettled {
        /// Another deployment of the function is still on its way.
        others_in_flight: bool,
        /// The function has an active deployment after the change.
        has_active: bool,
    },
    /// Its owner (or the scheduler) scheduled it for deletion; it stops serving.
    DeletionRequested,
    /// The scheduled deletion was cancelled; the function goes back to what its deployments say.
    DeletionCancelled { in_flight: bool, has_active: bool },
    /// Its containers, images and archives are gone; only the tombstone is left.
    Purged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentEvent {
    /// The pushed commit's archive is stored: it builds like an upload.
    Fetched,
    Built,
    Pushed,
    /// A held deployment's image is pushed: it waits, built, for a deploy.
    Held,
    /// A deploy asked for the held version: it goes on to serving.
    Released,
    Activated,
    /// Another deployment of the same function took the traffic.
    Superseded,
    /// A rollback brought this superseded deployment back.
    Reinstated,
    Failed,
    /// A newer push of the same function was accepted (while this one waited) or went live
    /// (while this one built): this one must never take the traffic.
    Overtaken,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {state} cannot take {event}")]
pub struct IllegalTransition {
    pub state: String,
    pub event: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

fn illegal(state: impl fmt::Debug, event: impl fmt::Debug) -> IllegalTransition {
    IllegalTransition {
        state: format!("{state:?}"),
        event: format!("{event:?}"),
    }
}

impl FunctionStatus {
    pub const ALL: [Self; 5] = [
        Self::Init,
        Self::Building,
        Self::Active,
        Self::PendingDeletion,
        Self::Deleted,
    ];

    pub fn apply(self, event: FunctionEvent) -> Result<Self, IllegalTransition> {
        use FunctionEvent::*;
        use FunctionStatus::*;
        match (self, event) {
            (Init | Building | Active, DeployRequested) => Ok(Building),
            (
                Building,
                DeploymentSettled {
                    others_in_flight: in_flight,
                    has_active,
                },
            )
            | (
                PendingDeletion,
                DeletionCancelled {
                    in_flight,
                    has_active,
                },
            ) => Ok(match (in_flight, has_active) {
                (true, _) => Building,
                (false, true) => Active,
                (false, false) => Init,
            }),
            // A deletion requested while a build ran wins; the build's outcome changes nothing.
            (PendingDeletion | Deleted, DeploymentSettled { .. }) => Ok(self),
            (Init | Building | Active, DeletionRequested) => Ok(PendingDeletion),
            (PendingDeletion, Purged) => Ok(Deleted),
            (PendingDeletion | Deleted, DeployRequested | DeletionRequested)
            | (Init | Active, DeploymentSettled { .. })
            | (Init | Building | Active | Deleted, DeletionCancelled { .. } | Purged) => {
                Err(illegal(self, event))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Building => "building",
            Self::Active => "active",
            Self::PendingDeletion => "pending_deletion",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

impl DeploymentStatus {
    pub const ALL: [Self; 9] = [
        Self::Fetching,
        Self::Building,
        Self::Pushing,
        Self::Built,
        Self::Deploying,
        Self::Active,
        Self::Inactive,
        Self::Failed,
        Self::Superseded,
    ];

    pub fn apply(self, event: DeploymentEvent) -> Result<Self, IllegalTransition> {
        use DeploymentEvent as E;
        use DeploymentStatus as S;
        match (self, event) {
            (S::Fetching, E::Fetched) => Ok(S::Building),
            (S::Building, E::Built) => Ok(S::Pushing),
            (S::Pushing, E::Pushed) => Ok(S::Deploying),
            (S::Pushing, E::Held) => Ok(S::Built),
            (S::Built, E::Released) => Ok(S::Deploying),
            (S::Deploying, E::Activated) => Ok(S::Active),
            (S::Active, E::Superseded) => Ok(S::Inactive),
            (S::Inactive, E::Reinstated) => Ok(S::Active),
            (S::Fetching | S::Building | S::Pushing | S::Deploying, E::Failed) => Ok(S::Failed),
            (S::Fetching | S::Building | S::Pushing | S::Deploying, E::Overtaken) => {
                Ok(S::Superseded)
            }
            _ => Err(illegal(self, event)),
        }
    }

    /// Still on its way to serving: a function with such a deployment is `building`.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Fetching | Self::Building | Self::Pushing | Self::Deploying
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetching => "fetching",
            Self::Building => "building",
            Self::Pushing => "pushing",
            Self::Built => "built",
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

impl DeploymentEvent {
    pub const ALL: [Self; 10] = [
        Self::Fetched,
        Self::Built,
        Self::Pushed,
        Self::Held,
        Self::Released,
        Self::Activated,
        Self::Superseded,
        Self::Reinstated,
        Self::Failed,
        Self::Overtaken,
    ];

    /// The statuses that take this event, and the one status all of them move to: what a single
    /// conditional write needs. `None` if no status takes it or they would part ways (a test
    /// holds `apply` to one target per event).
    pub fn moves(self) -> Option<(Vec<DeploymentStatus>, DeploymentStatus)> {
        let mut sources = Vec::new();
        let mut target = None;
        for status in DeploymentStatus::ALL {
            if let Ok(next) = status.apply(self) {
                if *target.get_or_insert(next) != next {
                    return None;
                }
                sources.push(status);
            }
        }
        Some((sources, target?))
    }
}

/// The steps that work on a deployment, in pipeline order, each run by a job of its own. A run
/// claims the deployment for its step (`db::deployments::claim_run`). Cache-warm and deploy both
/// run while it is `deploying`, so the claim records the step too: a re-delivered cache-warm never
/// takes the deployment over from the deploy that already follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PipelineStep {
    Source,
    Build,
    Push,
    CacheWarm,
    Deploy,
    Rollback,
}

impl PipelineStep {
    /// The status the deployment is in while the step runs.
    pub const fn runs_in(self) -> DeploymentStatus {
        match self {
            Self::Source => DeploymentStatus::Fetching,
            Self::Build => DeploymentStatus::Building,
            Self::Push => DeploymentStatus::Pushing,
            Self::CacheWarm | Self::Deploy => DeploymentStatus::Deploying,
            Self::Rollback => DeploymentStatus::Inactive,
        }
    }

    /// The name its lines carry in the deployment's log.
    pub const fn phase(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Build => "build",
            Self::Push => "push",
            Self::CacheWarm => "cache-warm",
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
        }
    }

    /// Its place in the pipeline, as stored with a claim.
    pub const fn rank(self) -> i16 {
        self as i16
    }
}

/// Statuses go over the API as their names.
impl serde::Serialize for FunctionStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl serde::Serialize for DeploymentStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// ...and are documented as the enumeration of those names.
macro_rules! status_schema {
    ($status:ty) => {
        impl utoipa::PartialSchema for $status {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::ALL.iter().map(|status| status.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $status {}
    };
}

status_schema!(FunctionStatus);
status_schema!(DeploymentStatus);

impl fmt::Display for FunctionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(others_in_flight: bool, has_active: bool) -> FunctionEvent {
        FunctionEvent::DeploymentSettled {
            others_in_flight,
            has_active,
        }
    }

    /// Every function event, with each combination of what its deployments say.
    fn function_events() -> Vec<FunctionEvent> {
        let mut events = vec![
            FunctionEvent::DeployRequested,
            FunctionEvent::DeletionRequested,
            FunctionEvent::Purged,
        ];
        for in_flight in [false, true] {
            for has_active in [false, true] {
                events.push(settled(in_flight, has_active));
                events.push(FunctionEvent::DeletionCancelled {
                    in_flight,
                    has_active,
                });
            }
        }
        events
    }

    /// The statuses reachable from `start` by any sequence of events.
    fn reachable<S: Copy + Eq + std::hash::Hash, E: Copy>(
        start: &[S],
        events: &[E],
        apply: impl Fn(S, E) -> Result<S, IllegalTransition>,
    ) -> std::collections::HashSet<S> {
        let mut seen: std::collections::HashSet<S> = start.iter().copied().collect();
        let mut pending = start.to_vec();
        while let Some(status) = pending.pop() {
            for &event in events {
                if let Ok(next) = apply(status, event)
                    && seen.insert(next)
                {
                    pending.push(next);
                }
            }
        }
        seen
    }

    #[test]
    fn every_function_status_is_reachable_from_init() {
        let seen = reachable(
            &[FunctionStatus::Init],
            &function_events(),
            FunctionStatus::apply,
        );
        assert_eq!(seen.len(), FunctionStatus::ALL.len(), "{seen:?}");
    }

    #[test]
    fn a_deleted_function_never_changes_again() {
        for event in function_events() {
            let next = FunctionStatus::Deleted.apply(event);
            assert!(
                matches!(next, Err(_) | Ok(FunctionStatus::Deleted)),
                "{event:?} → {next:?}"
            );
        }
    }

    #[test]
    fn a_function_scheduled_for_deletion_takes_no_deployment_and_no_build_revives_it() {
        for status in [FunctionStatus::PendingDeletion, FunctionStatus::Deleted] {
            assert!(status.apply(FunctionEvent::DeployRequested).is_err());
            assert!(status.apply(FunctionEvent::DeletionRequested).is_err());
            for in_flight in [false, true] {
                for has_active in [false, true] {
                    assert_eq!(status.apply(settled(in_flight, has_active)), Ok(status));
                }
            }
        }
    }

    #[test]
    fn only_a_function_scheduled_for_deletion_is_purged_or_restored() {
        for status in FunctionStatus::ALL {
            for event in function_events() {
                let leaves_deletion = matches!(
                    event,
                    FunctionEvent::Purged | FunctionEvent::DeletionCancelled { .. }
                );
                if leaves_deletion {
                    assert_eq!(
                        status.apply(event).is_ok(),
                        status == FunctionStatus::PendingDeletion,
                        "{status:?} × {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_settled_or_restored_function_says_what_its_deployments_do() {
        for in_flight in [false, true] {
            for has_active in [false, true] {
                let expected = if in_flight {
                    FunctionStatus::Building
                } else if has_active {
                    FunctionStatus::Active
                } else {
                    FunctionStatus::Init
                };
                let restored = FunctionEvent::DeletionCancelled {
                    in_flight,
                    has_active,
                };
                assert_eq!(
                    FunctionStatus::Building.apply(settled(in_flight, has_active)),
                    Ok(expected)
                );
                assert_eq!(
                    FunctionStatus::PendingDeletion.apply(restored),
                    Ok(expected)
                );
            }
        }
    }

    #[test]
    fn every_deployment_event_moves_to_one_status_as_the_database_writes_it() {
        for event in DeploymentEvent::ALL {
            let (sources, target) = event.moves().unwrap_or_else(|| panic!("{event:?}"));
            assert!(!sources.is_empty(), "{event:?}");
            for status in DeploymentStatus::ALL {
                assert_eq!(
                    status.apply(event).ok(),
                    sources.contains(&status).then_some(target),
                    "{status:?} × {event:?}"
                );
            }
        }
    }

    #[test]
    fn every_deployment_status_is_reachable_from_an_accepted_deployment() {
        // An upload is accepted `building`, a push `fetching`.
        let starts = [DeploymentStatus::Fetching, DeploymentStatus::Building];
        let seen = reachable(&starts, &DeploymentEvent::ALL, DeploymentStatus::apply);
        assert_eq!(seen.len(), DeploymentStatus::ALL.len(), "{seen:?}");
    }

    #[test]
    fn a_settled_deployment_goes_back_in_flight_only_when_released_and_failed_or_superseded_is_final()
     {
        for status in DeploymentStatus::ALL {
            for event in DeploymentEvent::ALL {
                let Ok(next) = status.apply(event) else {
                    continue;
                };
                assert!(
                    status.is_in_flight()
                        || !next.is_in_flight()
                        || event == DeploymentEvent::Released,
                    "{status:?} × {event:?} → {next:?}"
                );
                assert!(
                    !matches!(
                        status,
                        DeploymentStatus::Failed | DeploymentStatus::Superseded
                    ),
                    "{status:?} × {event:?} → {next:?}"
                );
            }
        }
    }

    #[test]
    fn every_in_flight_deployment_can_fail_or_be_overtaken_and_only_those() {
        for status in DeploymentStatus::ALL {
            for event in [DeploymentEvent::Failed, DeploymentEvent::Overtaken] {
                assert_eq!(
                    status.apply(event).is_ok(),
                    status.is_in_flight(),
                    "{status:?}"
                );
            }
        }
    }

    #[test]
    fn a_deployment_serves_only_once_activated_or_reinstated() {
        for status in DeploymentStatus::ALL {
            for event in DeploymentEvent::ALL {
                if status.apply(event) == Ok(DeploymentStatus::Active) {
                    assert!(
                        matches!(
                            event,
                            DeploymentEvent::Activated | DeploymentEvent::Reinstated
                        ),
                        "{status:?} × {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn pipeline_steps_run_in_order_through_the_in_flight_statuses() {
        let steps = [
            PipelineStep::Source,
            PipelineStep::Build,
            PipelineStep::Push,
            PipelineStep::CacheWarm,
            PipelineStep::Deploy,
        ];
        for pair in steps.windows(2) {
            assert!(pair[0].rank() < pair[1].rank());
            assert!(pair[0].runs_in().is_in_flight() && pair[1].runs_in().is_in_flight());
        }
        assert_eq!(PipelineStep::Rollback.runs_in(), DeploymentStatus::Inactive);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in FunctionStatus::ALL {
            assert_eq!(FunctionStatus::parse(s.as_str()), Ok(s));
        }
        for s in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Ok(s));
        }
        assert!(FunctionStatus::parse("running").is_err());
    }

    #[test]
    fn only_unsettled_deployments_are_in_flight() {
        let in_flight: Vec<_> = DeploymentStatus::ALL
            .into_iter()
            .filter(|s| s.is_in_flight())
            .collect();
        assert_eq!(
            in_flight,
            [
                DeploymentStatus::Fetching,
                DeploymentStatus::Building,
                DeploymentStatus::Pushing,
                DeploymentStatus::Deploying
            ]
        );
    }
}
