//! The incident API: the gRPC adapter for `IncidentService`.
//!
//! Authentication, authorisation and auditing go through the same helpers as the baseline API
//! ([`crate::auth::Gate`]): viewers read incidents, approvers acknowledge, resolve and
//! allow them. Allowing adds exactly what the incident ran to the workload's baseline (its
//! element, and the contents its samples ran with: `Incident::allow_in`) as a new, audited
//! version and closes the incident in one store transaction (then the baseline is pushed to
//! every sensor through the [`crate::hub::Hub`]); the incident records the actor and
//! reason, the audit record what was allowed, contents included.
//!
//! Actions are idempotent: repeating the action that led to the current state (a retry, a
//! double click, two people resolving at once) succeeds, returns the incident as it is, and
//! writes no record. A different action on a closed incident is `FAILED_PRECONDITION` naming
//! the state it is in. Concurrent actions are serialised by the store, so exactly one of them
//! decides the outcome.

use crate::auth::{Gate, Role};
use crate::hub::Hub;
use crate::store::{Order, SharedStorage, StoreError};
use procguard_core::incident::{Action, IncidentFilter};
use procguard_proto::convert::incident::{
    incident_to_pb, incidents_page_to_pb, severity_filter, state_filter,
};
use procguard_proto::convert::system_time;
use procguard_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// `IncidentService` implementation.
#[derive(Debug, Clone)]
pub struct IncidentApi {
    gate: Gate,
    store: SharedStorage,
    hub: Hub,
}

impl IncidentApi {
    /// Builds the service over a storage; every call goes through `gate`, and baselines an
    /// allow changed go to the sensors through `hub`.
    pub fn new(gate: Gate, store: SharedStorage, hub: Hub) -> Self {
        Self { gate, store, hub }
    }
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::not_found(format!(
            "no {m}; list incidents with 'procguardctl incidents list'"
        )),
        StoreError::Rejected(m) => Status::failed_precondition(m),
        e => Status::internal(e.to_string()),
    }
}

fn page_size(n: u32) -> usize {
    match n {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// The incident number a request names, parsed here at the edge: the store takes numbers.
fn number(id: &str) -> Result<u64, Status> {
    if id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "id is required: the incident number shown by 'procguardctl incidents list'",
        ));
    }
    id.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            status(StoreError::NotFound(format!(
                "incident '{id}' (IDs are positive numbers)"
            )))
        })
}

impl IncidentApi {
    async fn act(
        &self,
        request: Request<pb::IncidentActionRequest>,
        method: &str,
        action: Action,
    ) -> Result<Response<pb::Incident>, Status> {
        let target = format!("incident/{}", request.get_ref().id);
        let caller = self
            .gate
            .allow(&request, Role::Approver, method, &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let n = number(&r.id)?;
            // Written with the change; its detail then says exactly what an allow allowed.
            let audit = self.gate.record(&request, &caller, method, &target);
            let out = self
                .store
                .incident_action(n, action, &caller.actor, &r.reason, audit)
                .await
                .map_err(status)?;
            let i = &out.incident;
            if let Some(b) = out.baseline {
                let allowed = out.allowed.as_ref().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(message = "Incident allowed into its baseline.", incident = %i.id, workload = %b.workload, version = b.version, allowed, actor = %caller.actor);
                self.hub.publish(b);
            }
            if out.changed {
                tracing::info!(message = "Incident changed.", incident = %i.id, state = i.state.as_str(), actor = %caller.actor);
            } else {
                tracing::info!(message = "Incident action repeated; nothing changed.", incident = %i.id, state = i.state.as_str(), action = action.as_str(), actor = %caller.actor);
            }
            Ok((incident_to_pb(i, true), out.changed))
        }
        .await;
        self.gate
            .done_recorded(&request, &caller, method, &target, result)
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl pb::incident_service_server::IncidentService for IncidentApi {
    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "ListIncidents", "")
            .await?;
        let r = request.get_ref();
        let result = (|| {
            let invalid =
                |e: procguard_proto::ConvertError| Status::invalid_argument(e.to_string());
            let filter = IncidentFilter {
                namespace: (!r.namespace.is_empty()).then(|| r.namespace.clone()),
                min_severity: severity_filter(r.min_severity, "min_severity").map_err(invalid)?,
                state: state_filter(r.state, "state").map_err(invalid)?,
                since: r.since.as_ref().map(system_time),
                before: r.before.as_ref().map(system_time),
            };
            let order = if r.newest_first {
                Order::NewestFirst
            } else {
                Order::OldestFirst
            };
            let after = match r.page_token.as_str() {
                "" => None,
                token => Some(
                    token
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            Status::invalid_argument(
                                "page_token is not one this server returned; start without it",
                            )
                        })?,
                ),
            };
            let (list, next) = self
                .store
                .incidents(&filter, after, page_size(r.page_size), order)
                .map_err(status)?;
            Ok(incidents_page_to_pb(&list, next))
        })();
        self.gate
            .done(&request, &caller, "ListIncidents", "", result)
            .await
            .map(Response::new)
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        let target = format!("incident/{}", request.get_ref().id);
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "GetIncident", &target)
            .await?;
        let id = &request.get_ref().id;
        let result = number(id).and_then(|n| {
            self.store
                .incident(n)
                .map(|i| incident_to_pb(&i, true))
                .map_err(status)
        });
        self.gate
            .done(&request, &caller, "GetIncident", &target, result)
            .await
            .map(Response::new)
    }

    async fn acknowledge_incident(
        &self,
        request: Request<pb::IncidentActionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.act(request, "AcknowledgeIncident", Action::Acknowledge)
            .await
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::IncidentActionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.act(request, "ResolveIncident", Action::Resolve).await
    }

    async fn allow_incident(
        &self,
        request: Request<pb::IncidentActionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.act(request, "AllowIncident", Action::Allow).await
    }
}
