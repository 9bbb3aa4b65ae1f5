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
    pub const ALL: [Self; 8] = [
        Self::Fetching,
        Self::Building,
        Self::Pushing,
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

    #[test]
    fn every_function_state_and_event() {
        use FunctionStatus::*;
        let cancelled = |in_flight, has_active| FunctionEvent::DeletionCancelled {
            in_flight,
            has_active,
        };
        let events = [
            FunctionEvent::DeployRequested,
            settled(false, false),
            settled(false, true),
            settled(true, false),
            settled(true, true),
            FunctionEvent::DeletionRequested,
            cancelled(false, false),
            cancelled(false, true),
            cancelled(true, false),
            cancelled(true, true),
            FunctionEvent::Purged,
        ];
        for state in FunctionStatus::ALL {
            for event in events {
                let expected = match (state, event) {
                    (Init | Building | Active, FunctionEvent::DeployRequested) => Some(Building),
                    (
                        Building,
                        FunctionEvent::DeploymentSettled {
                            others_in_flight: true,
                            ..
                        },
                    ) => Some(Building),
                    (
                        Building,
                        FunctionEvent::DeploymentSettled {
                            has_active: true, ..
                        },
                    ) => Some(Active),
                    (Building, FunctionEvent::DeploymentSettled { .. }) => Some(Init),
                    (PendingDeletion, FunctionEvent::DeploymentSettled { .. }) => {
                        Some(PendingDeletion)
                    }
                    (Deleted, FunctionEvent::DeploymentSettled { .. }) => Some(Deleted),
                    (Init | Building | Active, FunctionEvent::DeletionRequested) => {
                        Some(PendingDeletion)
                    }
                    (
                        PendingDeletion,
                        FunctionEvent::DeletionCancelled {
                            in_flight: true, ..
                        },
                    ) => Some(Building),
                    (
                        PendingDeletion,
                        FunctionEvent::DeletionCancelled {
                            has_active: true, ..
                        },
                    ) => Some(Active),
                    (PendingDeletion, FunctionEvent::DeletionCancelled { .. }) => Some(Init),
                    (PendingDeletion, FunctionEvent::Purged) => Some(Deleted),
                    _ => None,
                };
                assert_eq!(state.apply(event).ok(), expected, "{state:?} × {event:?}");
            }
        }
    }

    #[test]
    fn every_deployment_state_and_event() {
        use DeploymentEvent as E;
        use DeploymentStatus as S;
        let events = [
            E::Fetched,
            E::Built,
            E::Pushed,
            E::Activated,
            E::Superseded,
            E::Reinstated,
            E::Failed,
            E::Overtaken,
        ];
        for state in DeploymentStatus::ALL {
            for event in events {
                let expected = match (state, event) {
                    (S::Fetching, E::Fetched) => Some(S::Building),
                    (S::Building, E::Built) => Some(S::Pushing),
                    (S::Pushing, E::Pushed) => Some(S::Deploying),
                    (S::Deploying, E::Activated) => Some(S::Active),
                    (S::Active, E::Superseded) => Some(S::Inactive),
                    (S::Inactive, E::Reinstated) => Some(S::Active),
                    (S::Fetching | S::Building | S::Pushing | S::Deploying, E::Failed) => {
                        Some(S::Failed)
                    }
                    (S::Fetching | S::Building | S::Pushing | S::Deploying, E::Overtaken) => {
                        Some(S::Superseded)
                    }
                    _ => None,
                };
                assert_eq!(state.apply(event).ok(), expected, "{state:?} × {event:?}");
            }
        }
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
