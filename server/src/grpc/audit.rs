//! `AuditService`: the audit log, read by the siem role (and admin). Entries reach the wire
//! through `procguard_proto::convert::audit`, as on the SIEM stream.

use super::baseline::{page_size, store_status};
use crate::auth::{Gate, Role};
use crate::store::{AuditQuery, Order, SharedStorage};
use procguard_proto::convert::audit::audit_page_to_pb;
use procguard_proto::convert::system_time;
use procguard_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// `AuditService`.
#[derive(Debug, Clone)]
pub struct AuditApi {
    gate: Gate,
    store: SharedStorage,
}

impl AuditApi {
    /// Builds the service over a storage; every call goes through `gate`.
    pub fn new(gate: Gate, store: SharedStorage) -> Self {
        Self { gate, store }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        // The siem role reads the audit log; admin satisfies every role, so it does too.
        let caller = self
            .gate
            .allow(&request, Role::Siem, "ListAudit", "")
            .await?;
        let r = request.get_ref();
        let query = AuditQuery {
            after: r.after_id,
            before_id: (r.before_id > 0).then_some(r.before_id),
            since: r.since.as_ref().map(system_time),
            before: r.before.as_ref().map(system_time),
            limit: page_size(r.limit),
            order: if r.newest_first {
                Order::NewestFirst
            } else {
                Order::OldestFirst
            },
        };
        let result = self
            .store
            .audit_log(&query)
            .map_err(store_status)
            .map(|records| audit_page_to_pb(&records));
        self.gate
            .done(&request, &caller, "ListAudit", "", result)
            .await
            .map(Response::new)
    }
}
