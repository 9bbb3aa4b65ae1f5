//! A function's serving state and the status of its last update (seed 001), beside its lifecycle
//! status (seed 000). Only `Active` is invocable; while an update is `InProgress`, or after it
//! `Failed`, invocations keep going to the pre-update deployment.

use std::fmt;

use super::{IllegalTransition, UnknownStatus};

/// The reason's prefix while the engine places a lost instance again.
const RESCHEDULING: &str = "rescheduling";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServingState {
    /// Resources are being prepared (first deploy, or waking an inactive function).
    Pending,
    Active,
    /// Preparation failed, or the recorded image is no longer in the registry.
    Failed,
    /// Idle long enough that its runtime resources were released.
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateStatus {
    InProgress,
    Successful,
    Failed,
}

/// Why a function is `Failed` because of its image (seed 001's "original image is no longer
/// accessible").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFailure {
    /// The recorded digest is gone and the tag points at another one.
    TagOverwritten,
    /// The recorded digest and the tag are both gone.
    NotFound,
}

impl ImageFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::TagOverwritten => "image_tag_overwritten",
            Self::NotFound => "image_not_found",
        }
    }
}

/// Why a function is `Failed` because of its running instance rather than its image: a
/// restart (a fresh instance) is the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceFailure {
    /// The engine killed the instance for using more memory than its limit.
    OutOfMemory,
    /// The engine has no node that can take the instance (resources, constraints, nodes down).
    Unschedulable,
}

impl InstanceFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::OutOfMemory => "out_of_memory",
            Self::Unschedulable => "unschedulable",
        }
    }
}

/// What happens to a function, as far as its serving state cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServingEvent {
    /// A deploy or a rollback was accepted.
    UpdateStarted,
    /// An update's version took the traffic. With another update still in flight, the last
    /// update is that one, so it stays in progress.
    UpdateSucceeded {
        others_in_flight: bool,
    },
    /// A pushed version finished after a newer one had gone live, so it never served. Once
    /// nothing else is in flight, the update in progress was the newer one, and it succeeded.
    UpdateOvertaken {
        others_in_flight: bool,
    },
    /// An update failed; whatever served before keeps serving.
    UpdateFailed {
        reason: String,
        others_in_flight: bool,
    },
    /// The recorded image cannot be run any more.
    ImageLost {
        failure: ImageFailure,
        detail: String,
    },
    /// No invocation for the idle period: its runtime resources are released.
    IdleReleased,
    /// An invocation or a redeploy wants an inactive function back.
    WakeRequested,
    /// The woken function's image is on the runtime host and it answers again.
    Woken,
    WakeFailed {
        reason: String,
    },
    /// The serving instance died of its own doing (its memory, say): nothing serves.
    InstanceFailed {
        failure: InstanceFailure,
        detail: String,
    },
    /// A fresh instance of the serving version answers again (a restart or recycle).
    InstanceReplaced,
    /// The engine lost the serving instance (its node went down) and is placing it again:
    /// invocations wait as for a wake.
    InstanceRescheduling {
        reason: String,
    },
    /// The rescheduled instance runs again, at its new endpoint.
    InstanceRescheduled,
}

/// The whole serving view of a function, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub state: ServingState,
    pub state_reason: Option<String>,
    pub last_update_status: Option<UpdateStatus>,
    pub last_update_status_reason: Option<String>,
}

impl Serving {
    /// A function nothing was deployed to yet.
    pub fn new() -> Self {
        Self {
            state: ServingState::Pending,
            state_reason: None,
            last_update_status: None,
            last_update_status_reason: None,
        }
    }

    pub fn apply(&self, event: &ServingEvent) -> Result<Self, IllegalTransition> {
        use ServingEvent as E;
        use ServingState as S;
        let illegal = || IllegalTransition {
            state: format!("{:?}/{:?}", self.state, self.last_update_status),
            event: format!("{event:?}"),
        };
        let with_state = |state: S, reason: Option<String>| Self {
            state,
            state_reason: reason,
            ..self.clone()
        };
        let in_progress = self.last_update_status == Some(UpdateStatus::InProgress);
        Ok(match (self.state, event) {
            // An update of a serving function keeps serving the previous version meanwhile.
            (S::Active, E::UpdateStarted) => Self {
                last_update_status: Some(UpdateStatus::InProgress),
                last_update_status_reason: None,
                ..self.clone()
            },
            (S::Pending | S::Failed | S::Inactive, E::UpdateStarted) => Self {
                state: S::Pending,
                state_reason: None,
                last_update_status: Some(UpdateStatus::InProgress),
                last_update_status_reason: None,
            },
            // Overlapping updates (a deploy and a rollback, say) each complete; one completing
            // after another already settled the status still says how the latest one ended.
            (_, E::UpdateSucceeded { others_in_flight }) => Self {
                state: S::Active,
                state_reason: None,
                last_update_status: Some(if *others_in_flight && in_progress {
                    UpdateStatus::InProgress
                } else {
                    UpdateStatus::Successful
                }),
                last_update_status_reason: None,
            },
            (_, E::UpdateOvertaken { others_in_flight }) => Self {
                last_update_status: if in_progress && !others_in_flight {
                    Some(UpdateStatus::Successful)
                } else {
                    self.last_update_status
                },
                ..self.clone()
            },
            (
                _,
                E::UpdateFailed {
                    others_in_flight: true,
                    ..
                },
            ) if in_progress => self.clone(),
            (state, E::UpdateFailed { reason, .. }) => Self {
                state: if state == S::Active {
                    S::Active
                } else {
                    S::Failed
                },
                state_reason: if state == S::Active {
                    self.state_reason.clone()
                } else {
                    Some(reason.clone())
                },
                last_update_status: Some(UpdateStatus::Failed),
                last_update_status_reason: Some(reason.clone()),
            },
            (
                S::Active | S::Inactive | S::Pending | S::Failed,
                E::ImageLost { failure, detail },
            ) => with_state(S::Failed, Some(format!("{}: {detail}", failure.code()))),
            (S::Active, E::InstanceFailed { failure, detail }) => {
                with_state(S::Failed, Some(format!("{}: {detail}", failure.code())))
            }
            (S::Pending, E::InstanceFailed { failure, detail }) if self.rescheduling() => {
                with_state(S::Failed, Some(format!("{}: {detail}", failure.code())))
            }
            (S::Active, E::InstanceRescheduling { reason }) => {
                with_state(S::Pending, Some(format!("{RESCHEDULING}: {reason}")))
            }
            (S::Pending, E::InstanceRescheduling { reason }) if self.rescheduling() => {
                with_state(S::Pending, Some(format!("{RESCHEDULING}: {reason}")))
            }
            (S::Pending, E::InstanceRescheduled) if self.rescheduling() => {
                with_state(S::Active, None)
            }
            (S::Active, E::InstanceReplaced) => self.clone(),
            (S::Failed, E::InstanceReplaced) if self.failed_by_instance() => {
                with_state(S::Active, None)
            }
            (S::Active, E::IdleReleased) if !in_progress => with_state(S::Inactive, None),
            (S::Inactive, E::WakeRequested) => with_state(S::Pending, None),
            (S::Pending, E::Woken) if !in_progress => with_state(S::Active, None),
            // Seed 001: if preparing the woken function fails, it remains Inactive.
            (S::Pending, E::WakeFailed { reason }) if !in_progress => {
                with_state(S::Inactive, Some(reason.clone()))
            }
            _ => return Err(illegal()),
        })
    }

    /// `Failed` because its instance failed (not its image, not an update): a restart of the
    /// serving version may bring it back.
    pub fn failed_by_instance(&self) -> bool {
        self.state == ServingState::Failed
            && self.state_reason.as_deref().is_some_and(|reason| {
                [InstanceFailure::OutOfMemory, InstanceFailure::Unschedulable]
                    .iter()
                    .any(|f| reason.starts_with(&format!("{}:", f.code())))
            })
    }

    /// `Pending` because the engine is placing the serving instance again, not because it is
    /// being woken or deployed.
    pub fn rescheduling(&self) -> bool {
        self.state == ServingState::Pending
            && self
                .state_reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with(&format!("{RESCHEDULING}:")))
    }

    /// Only an active function takes invocations.
    pub fn is_invocable(&self) -> bool {
        self.state == ServingState::Active
    }
}

impl Default for Serving {
    fn default() -> Self {
        Self::new()
    }
}

impl ServingState {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Active, Self::Failed, Self::Inactive];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Active => "Active",
            Self::Failed => "Failed",
            Self::Inactive => "Inactive",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

impl UpdateStatus {
    pub const ALL: [Self; 3] = [Self::InProgress, Self::Successful, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

impl fmt::Display for ServingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(state: ServingState, update: Option<UpdateStatus>) -> Serving {
        Serving {
            state,
            state_reason: None,
            last_update_status: update,
            last_update_status_reason: None,
        }
    }

    fn events() -> Vec<ServingEvent> {
        vec![
            ServingEvent::UpdateStarted,
            ServingEvent::UpdateSucceeded {
                others_in_flight: false,
            },
            ServingEvent::UpdateSucceeded {
                others_in_flight: true,
            },
            ServingEvent::UpdateOvertaken {
                others_in_flight: false,
            },
            ServingEvent::UpdateOvertaken {
                others_in_flight: true,
            },
            ServingEvent::UpdateFailed {
                reason: "build failed".into(),
                others_in_flight: false,
            },
            ServingEvent::UpdateFailed {
                reason: "build failed".into(),
                others_in_flight: true,
            },
            ServingEvent::ImageLost {
                failure: ImageFailure::NotFound,
                detail: "gone".into(),
            },
            ServingEvent::IdleReleased,
            ServingEvent::WakeRequested,
            ServingEvent::Woken,
            ServingEvent::WakeFailed {
                reason: "pull failed".into(),
            },
            ServingEvent::InstanceFailed {
                failure: InstanceFailure::OutOfMemory,
                detail: "killed at 64 MiB".into(),
            },
            ServingEvent::InstanceReplaced,
            ServingEvent::InstanceRescheduling {
                reason: "node down".into(),
            },
            ServingEvent::InstanceRescheduled,
        ]
    }

    /// The expected (state, last update status) after each event, written as a table.
    fn expected(
        state: ServingState,
        update: Option<UpdateStatus>,
        event: &ServingEvent,
    ) -> Option<(ServingState, Option<UpdateStatus>)> {
        use ServingEvent as E;
        use ServingState as S;
        use UpdateStatus as U;
        let in_progress = update == Some(U::InProgress);
        match (state, event) {
            (S::Active, E::UpdateStarted) => Some((S::Active, Some(U::InProgress))),
            (_, E::UpdateStarted) => Some((S::Pending, Some(U::InProgress))),
            (
                _,
                E::UpdateSucceeded {
                    others_in_flight: true,
                },
            ) if in_progress => Some((S::Active, update)),
            (_, E::UpdateSucceeded { .. }) => Some((S::Active, Some(U::Successful))),
            (
                _,
                E::UpdateOvertaken {
                    others_in_flight: false,
                },
            ) if in_progress => Some((state, Some(U::Successful))),
            (_, E::UpdateOvertaken { .. }) => Some((state, update)),
            (
                _,
                E::UpdateFailed {
                    others_in_flight: true,
                    ..
                },
            ) if in_progress => Some((state, update)),
            (S::Active, E::UpdateFailed { .. }) => Some((S::Active, Some(U::Failed))),
            (_, E::UpdateFailed { .. }) => Some((S::Failed, Some(U::Failed))),
            (_, E::ImageLost { .. }) => Some((S::Failed, update)),
            (S::Active, E::IdleReleased) if !in_progress => Some((S::Inactive, update)),
            (S::Inactive, E::WakeRequested) => Some((S::Pending, update)),
            (S::Pending, E::Woken) if !in_progress => Some((S::Active, update)),
            (S::Pending, E::WakeFailed { .. }) if !in_progress => Some((S::Inactive, update)),
            (S::Active, E::InstanceFailed { .. }) => Some((S::Failed, update)),
            (S::Active, E::InstanceReplaced) => Some((S::Active, update)),
            (S::Active, E::InstanceRescheduling { .. }) => Some((S::Pending, update)),
            _ => None,
        }
    }

    #[test]
    fn only_an_instance_failure_is_undone_by_a_fresh_instance() {
        let active = serving(ServingState::Active, Some(UpdateStatus::Successful));
        let oom = active
            .apply(&ServingEvent::InstanceFailed {
                failure: InstanceFailure::OutOfMemory,
                detail: "killed at 64 MiB".into(),
            })
            .unwrap();
        assert_eq!(oom.state, ServingState::Failed);
        assert_eq!(
            oom.state_reason.as_deref(),
            Some("out_of_memory: killed at 64 MiB")
        );
        assert!(oom.failed_by_instance());
        let back = oom.apply(&ServingEvent::InstanceReplaced).unwrap();
        assert_eq!(back.state, ServingState::Active);
        assert_eq!(back.state_reason, None);

        let lost = active
            .apply(&ServingEvent::ImageLost {
                failure: ImageFailure::NotFound,
                detail: "gone".into(),
            })
            .unwrap();
        assert!(!lost.failed_by_instance());
        assert!(lost.apply(&ServingEvent::InstanceReplaced).is_err());
    }

    #[test]
    fn every_state_and_update_status_by_every_event() {
        let updates = [
            None,
            Some(UpdateStatus::InProgress),
            Some(UpdateStatus::Successful),
            Some(UpdateStatus::Failed),
        ];
        for state in ServingState::ALL {
            for update in updates {
                for event in events() {
                    let got = serving(state, update)
                        .apply(&event)
                        .ok()
                        .map(|s| (s.state, s.last_update_status));
                    assert_eq!(
                        got,
                        expected(state, update, &event),
                        "{state:?}/{update:?} × {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_failed_update_keeps_the_active_function_invocable_and_says_why() {
        let updating = serving(ServingState::Active, Some(UpdateStatus::Successful))
            .apply(&ServingEvent::UpdateStarted)
            .unwrap();
        assert!(updating.is_invocable());
        let failed = updating
            .apply(&ServingEvent::UpdateFailed {
                reason: "build failed: no Dockerfile".into(),
                others_in_flight: false,
            })
            .unwrap();
        assert!(failed.is_invocable());
        assert_eq!(failed.last_update_status, Some(UpdateStatus::Failed));
        assert_eq!(
            failed.last_update_status_reason.as_deref(),
            Some("build failed: no Dockerfile")
        );
        assert_eq!(failed.state_reason, None);
    }

    #[test]
    fn a_lost_image_fails_the_function_with_its_code() {
        let lost = serving(ServingState::Active, Some(UpdateStatus::Successful))
            .apply(&ServingEvent::ImageLost {
                failure: ImageFailure::TagOverwritten,
                detail: "v1 now points at sha256:…".into(),
            })
            .unwrap();
        assert!(!lost.is_invocable());
        assert!(
            lost.state_reason
                .as_deref()
                .unwrap()
                .starts_with("image_tag_overwritten: ")
        );
    }

    #[test]
    fn names_round_trip() {
        for s in ServingState::ALL {
            assert_eq!(ServingState::parse(s.as_str()), Ok(s));
        }
        for u in UpdateStatus::ALL {
            assert_eq!(UpdateStatus::parse(u.as_str()), Ok(u));
        }
        assert!(ServingState::parse("active").is_err());
    }

    #[test]
    fn a_lost_instance_is_pending_while_rescheduled_and_failed_when_no_node_takes_it() {
        let active = serving(ServingState::Active, Some(UpdateStatus::Successful));
        let moving = active
            .apply(&ServingEvent::InstanceRescheduling {
                reason: "node worker1 down".into(),
            })
            .unwrap();
        assert_eq!(moving.state, ServingState::Pending);
        assert!(moving.rescheduling());
        assert_eq!(
            moving.state_reason.as_deref(),
            Some("rescheduling: node worker1 down")
        );
        let back = moving.apply(&ServingEvent::InstanceRescheduled).unwrap();
        assert_eq!(back.state, ServingState::Active);
        assert_eq!(back.state_reason, None);
        assert_eq!(back.last_update_status, Some(UpdateStatus::Successful));

        let stuck = moving
            .apply(&ServingEvent::InstanceFailed {
                failure: InstanceFailure::Unschedulable,
                detail: "no suitable node (insufficient resources on 3 nodes)".into(),
            })
            .unwrap();
        assert_eq!(stuck.state, ServingState::Failed);
        assert!(stuck.failed_by_instance());
        let placed = stuck.apply(&ServingEvent::InstanceReplaced).unwrap();
        assert_eq!(placed.state, ServingState::Active);

        // A wake is Pending too, but not the engine's to finish.
        let waking = serving(ServingState::Pending, Some(UpdateStatus::Successful));
        assert!(!waking.rescheduling());
        assert!(waking.apply(&ServingEvent::InstanceRescheduled).is_err());
    }
}
