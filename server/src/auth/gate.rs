//! The gate every API call passes: authentication, the per-token rate limit, authorisation,
//! and the audit record of every denied call and of the outcome of every allowed one. The
//! services in [`crate::grpc`] call [`Gate::allow`] first and [`Gate::done`] (or
//! [`Gate::done_with`]) last; nothing else writes audit records of API calls.

use super::{Caller, Denied, Role, Tokens};
use crate::limits::{Limits, Rate};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, AuditOutcome, SharedStorage};
use std::time::{Instant, SystemTime};
use tonic::{Request, Status};

/// The authentication, rate-limit, authorisation and audit gate; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    store: SharedStorage,
    tokens: Tokens,
    metrics: Metrics,
    limits: Limits,
}

impl Gate {
    /// Builds the gate: `tokens` say who may call what, `limits` how often, and every
    /// decision is audited into `store`.
    pub fn new(store: SharedStorage, tokens: Tokens, metrics: Metrics, limits: Limits) -> Self {
        Self {
            store,
            tokens,
            metrics,
            limits,
        }
    }

    async fn audit(&self, entry: AuditEntry) {
        let (action, actor) = (entry.action.clone(), entry.actor.clone());
        if let Err(e) = self.store.audit(entry).await {
            // An audit write that fails is loud: the call itself has already been decided.
            tracing::error!(message = "Audit write failed.", error = %e, action, actor);
        }
    }

    /// Authenticates, rate-limits and authorises; a refusal is audited and returned. Every API
    /// method of every service goes through here.
    ///
    /// The rate limit is taken before the role check, from the caller's bucket (its token name,
    /// or one shared bucket for all calls without a valid token): a refused call of any
    /// kind is an audit write, so a flood of calls the caller may not make must not be able to
    /// write to disk at will either. Of a run of calls over the rate only the first is audited;
    /// the rest are counted in `procguard_server_limit_exceeded_total{limit="api_rps"}`.
    pub async fn allow<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        action: &str,
        target: &str,
    ) -> Result<Caller, Status> {
        let started = Instant::now();
        let peer = peer_of(request);
        let decision = self.tokens.authorize_request(request, needed);
        let (actor, role) = match &decision {
            Ok(c) => (c.actor.clone(), Some(c.role)),
            Err(d) => (d.actor.clone(), d.role),
        };
        // Calls without a valid token share one bucket, whose key no token name can take.
        let bucket = match role {
            Some(_) => actor.clone(),
            None => "\0unauthenticated".to_string(),
        };
        let role = role.map(Role::as_str).unwrap_or("").to_string();
        let entry = |result, detail: &str| AuditEntry {
            id: 0,
            at: SystemTime::now(),
            actor: actor.clone(),
            role: role.clone(),
            action: action.to_string(),
            target: target.to_string(),
            result,
            detail: detail.to_string(),
            peer: peer.clone(),
        };
        if let Rate::Refused { first } = self.limits.rate_at(&bucket, std::time::Instant::now()) {
            let status = match &decision {
                Ok(_) | Err(Denied { role: Some(_), .. }) => self.limits.rate_status(&actor),
                Err(d) => self.limits.anonymous_rate_status(d.status.message()),
            };
            if decision.is_err() {
                self.metrics.api_denied.inc();
            }
            if first {
                self.audit(entry(AuditOutcome::Denied, status.message()))
                    .await;
            }
            self.metrics
                .timings
                .api_call(action, status.code(), started.elapsed());
            return Err(status);
        }
        match decision {
            Ok(c) => Ok(Caller { started, ..c }),
            Err(d) => {
                self.metrics.api_denied.inc();
                self.audit(entry(AuditOutcome::Denied, d.status.message()))
                    .await;
                self.metrics
                    .timings
                    .api_call(action, d.status.code(), started.elapsed());
                Err(d.status)
            }
        }
    }

    /// The audit record of an allowed call that succeeds by changing state, for the store to
    /// write in the same transaction as the change (then [`Gate::done_recorded`] ends the
    /// call). A change is thus never on disk without the record of who made it.
    pub fn record<R>(
        &self,
        request: &Request<R>,
        caller: &Caller,
        action: &str,
        target: &str,
    ) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: SystemTime::now(),
            actor: caller.actor.clone(),
            role: caller.role.as_str().to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: AuditOutcome::Ok,
            detail: String::new(),
            peer: peer_of(request),
        }
    }

    /// Ends an allowed call whose success may already be audited: `Ok((value, true))` means the
    /// store wrote the call's [`Gate::record`] with the change, so only its timing is recorded;
    /// `Ok((value, false))` (nothing changed, so nothing was written) and a failure are audited
    /// here, as by [`Gate::done`].
    pub async fn done_recorded<T, R>(
        &self,
        request: &Request<R>,
        caller: &Caller,
        action: &str,
        target: &str,
        result: Result<(T, bool), Status>,
    ) -> Result<T, Status> {
        match result {
            Ok((value, true)) => {
                self.metrics
                    .timings
                    .api_call(action, tonic::Code::Ok, caller.started.elapsed());
                Ok(value)
            }
            Ok((value, false)) => self.done(request, caller, action, target, Ok(value)).await,
            Err(status) => {
                self.done::<T, R>(request, caller, action, target, Err(status))
                    .await
            }
        }
    }

    /// Audits the outcome of an allowed call and passes it through.
    pub async fn done<T, R>(
        &self,
        request: &Request<R>,
        caller: &Caller,
        action: &str,
        target: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        self.done_with(
            request,
            caller,
            action,
            target,
            result.map(|r| (r, String::new())),
        )
        .await
    }

    /// Audits the outcome of an allowed call whose success says what it changed (`detail`,
    /// recorded in the audit log), and passes the result through.
    pub async fn done_with<T, R>(
        &self,
        request: &Request<R>,
        caller: &Caller,
        action: &str,
        target: &str,
        result: Result<(T, String), Status>,
    ) -> Result<T, Status> {
        let peer = peer_of(request);
        let (outcome, detail, code) = match &result {
            Ok((_, detail)) => (AuditOutcome::Ok, detail.clone(), tonic::Code::Ok),
            Err(s) => (AuditOutcome::Failed, s.message().to_string(), s.code()),
        };
        self.audit(AuditEntry {
            id: 0,
            at: SystemTime::now(),
            actor: caller.actor.clone(),
            role: caller.role.as_str().to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: outcome,
            detail,
            peer,
        })
        .await;
        self.metrics
            .timings
            .api_call(action, code, caller.started.elapsed());
        result.map(|(r, _)| r)
    }
}

/// The caller's address as audit records show it.
fn peer_of<R>(request: &Request<R>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
