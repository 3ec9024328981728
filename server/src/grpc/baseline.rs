//! `BaselineService`: the review API for baselines.
//!
//! Every call goes through the gate ([`crate::auth::Gate`]): authenticated, rate-limited,
//! authorised, and audited, allowed or denied, before its result is returned. This file is
//! one service and longer than most for it: thirteen methods, each a few lines of conversion
//! around one storage call. Requests are converted to domain values at this edge;
//! anything malformed becomes `INVALID_ARGUMENT` with a message that names the field.

use crate::auth::{Gate, Role};
use crate::hub::Hub;
use crate::limits::Limits;
use crate::store::{BaselineFilter, ChangeBy, SharedStorage, StoreError, MAX_DRY_RUN_DAYS};
use procguard_core::baseline::APPROVED_SHA256_CAP;
use procguard_core::review::{dry_run, ImportChange, VersionSummary, VersionsDiff};
use procguard_core::Origin;
use procguard_core::{Baseline, ElementKey, ElementStatus, WorkloadIdentity};
use procguard_proto::convert::review::{
    dry_run_to_pb, history_to_pb, import_to_pb, versions_diff_to_pb,
};
use procguard_proto::convert::{
    self, baseline_to_pb, baselines_page_to_pb, bulk_to_pb, element_content, element_key, identity,
    state_from_pb,
};
use procguard_proto::v1 as pb;
use std::collections::BTreeSet;
use std::time::SystemTime;
use tonic::{Request, Response, Status};

/// `BaselineService`: review, change, history, dry runs, export and import of baselines.
#[derive(Debug, Clone)]
pub struct BaselineApi {
    gate: Gate,
    store: SharedStorage,
    hub: Hub,
    limits: Limits,
}

pub(super) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::not_found(format!(
            "no baseline for workload '{m}'; list them with 'procguardctl baselines list'"
        )),
        StoreError::NoVersion { workload, version } => Status::not_found(format!(
            "baseline '{workload}' has no version {version}; 'procguardctl baselines history {workload}' lists the versions it has"
        )),
        StoreError::Rejected(m) => Status::failed_precondition(m),
        e @ StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

pub(super) fn invalid(e: convert::ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

impl BaselineApi {
    /// Builds the service over a storage; every call goes through `gate`, and changed
    /// baselines go to the sensors through `hub`.
    pub fn new(gate: Gate, store: SharedStorage, hub: Hub, limits: Limits) -> Self {
        Self {
            gate,
            store,
            hub,
            limits,
        }
    }

    /// Changes one baseline as a new version, with `by.audit` (the call's [`Gate::record`])
    /// written in the same transaction; publishes the new version to the sensors.
    pub(crate) async fn change_one(
        &self,
        id: &WorkloadIdentity,
        by: ChangeBy<'_>,
        create: bool,
        change: impl Fn(&mut Baseline) -> Result<(), String> + Send + Sync,
    ) -> Result<pb::Baseline, Status> {
        let (actor, action) = (by.actor.to_string(), by.action.to_string());
        let b = self
            .store
            .change(id, by, create, &change)
            .await
            .map_err(store_status)?;
        tracing::info!(message = "Baseline changed.", workload = %id, action, actor, version = b.version);
        let out = baseline_to_pb(&b, true);
        self.hub.publish(b);
        Ok(out)
    }
}

fn keys(refs: &[pb::ElementRef]) -> Result<Vec<ElementKey>, Status> {
    refs.iter()
        .map(|r| element_key(r).map_err(invalid))
        .collect()
}

fn target_of(w: Option<&pb::WorkloadIdentity>) -> String {
    w.and_then(|w| WorkloadIdentity::try_from(w).ok())
        .map(|w| w.to_string())
        .unwrap_or_default()
}

fn filter_of(sel: Option<&pb::BaselineSelector>) -> Result<BaselineFilter, Status> {
    let Some(s) = sel else {
        return Ok(BaselineFilter::default());
    };
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    Ok(BaselineFilter {
        cluster: some(&s.cluster),
        namespace: some(&s.namespace),
        workload_name: some(&s.workload_name),
        kind: if s.kind == 0 {
            None
        } else {
            Some(convert::kind_from_pb(s.kind).map_err(invalid)?)
        },
        state: state_from_pb(s.state),
        labels: procguard_core::policy::LabelSelector::parse(&s.label_selector)
            .map_err(Status::invalid_argument)?,
    })
}

pub(super) fn page_size(n: u32) -> usize {
    match n {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

#[tonic::async_trait]
impl pb::baseline_service_server::BaselineService for BaselineApi {
    async fn list_baselines(
        &self,
        request: Request<pb::ListBaselinesRequest>,
    ) -> Result<Response<pb::ListBaselinesResponse>, Status> {
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "ListBaselines", "")
            .await?;
        let r = request.get_ref();
        let result = (|| {
            let filter = filter_of(r.selector.as_ref())?;
            let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
            let (list, next) = self
                .store
                .baselines(&filter, after, page_size(r.page_size))
                .map_err(store_status)?;
            Ok(baselines_page_to_pb(&list, next))
        })();
        self.gate
            .done(&request, &caller, "ListBaselines", "", result)
            .await
            .map(Response::new)
    }

    async fn get_baseline(
        &self,
        request: Request<pb::GetBaselineRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "GetBaseline", &target)
            .await?;
        let r = request.get_ref();
        let result = identity(r.workload.as_ref())
            .map_err(invalid)
            .and_then(|id| self.store.baseline(&id, r.version).map_err(store_status))
            .map(|b| baseline_to_pb(&b, true));
        self.gate
            .done(&request, &caller, "GetBaseline", &target, result)
            .await
            .map(Response::new)
    }

    async fn approve_baseline(
        &self,
        request: Request<pb::ApproveBaselineRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Approver, "ApproveBaseline", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let only = keys(&r.elements)?;
            let expected = r.expected_version;
            let audit = self.gate.record(&request, &caller, "ApproveBaseline", &target);
            self.change_one(&id, ChangeBy { actor: &caller.actor, action: "approved", reason: &r.reason, audit: Some(audit) }, false, |b| {
                if expected != 0 && b.version != expected {
                    return Err(format!(
                        "baseline is at version {}, you reviewed version {expected}; review it again",
                        b.version
                    ));
                }
                for k in &only {
                    if !b.elements.contains_key(k) {
                        return Err(format!("element '{k}' is not in the baseline; add it with AddElements"));
                    }
                }
                b.approve((!only.is_empty()).then_some(only.as_slice()), SystemTime::now());
                Ok(())
            })
            .await
        }
        .await;
        self.gate
            .done_recorded(
                &request,
                &caller,
                "ApproveBaseline",
                &target,
                result.map(|b| (b, true)),
            )
            .await
            .map(Response::new)
    }

    async fn reject_elements(
        &self,
        request: Request<pb::RejectElementsRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Approver, "RejectElements", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let only = keys(&r.elements)?;
            if only.is_empty() {
                return Err(Status::invalid_argument(
                    "name at least one element to reject",
                ));
            }
            let audit = self
                .gate
                .record(&request, &caller, "RejectElements", &target);
            self.change_one(
                &id,
                ChangeBy {
                    actor: &caller.actor,
                    action: "rejected",
                    reason: &r.reason,
                    audit: Some(audit),
                },
                false,
                |b| {
                    for k in &only {
                        let el = b
                            .elements
                            .get_mut(k)
                            .ok_or_else(|| format!("element '{k}' is not in the baseline"))?;
                        el.status = ElementStatus::Rejected;
                    }
                    Ok(())
                },
            )
            .await
        }
        .await;
        self.gate
            .done_recorded(
                &request,
                &caller,
                "RejectElements",
                &target,
                result.map(|b| (b, true)),
            )
            .await
            .map(Response::new)
    }

    async fn add_elements(
        &self,
        request: Request<pb::AddElementsRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Approver, "AddElements", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            // Each element with the contents to approve for it (none: added by name).
            let mut add: std::collections::BTreeMap<ElementKey, Vec<String>> = Default::default();
            for e in &r.elements {
                let (k, sha) = element_content(e).map_err(invalid)?;
                let contents = add.entry(k).or_default();
                contents.extend(sha.filter(|h| !contents.contains(h)));
            }
            if add.is_empty() {
                return Err(Status::invalid_argument("name at least one element to add"));
            }
            for (k, contents) in &add {
                if contents.len() > APPROVED_SHA256_CAP {
                    return Err(Status::invalid_argument(format!(
                        "element '{k}': at most {APPROVED_SHA256_CAP} contents (sha256) per element, got {}",
                        contents.len()
                    )));
                }
            }
            for k in add.keys() {
                if !k.exe_path.starts_with('/') && !k.exe_path.starts_with("memfd:") {
                    return Err(Status::invalid_argument(format!(
                        "element '{k}': exe_path must be absolute (start with '/')"
                    )));
                }
            }
            if let Ok(current) = self.store.baseline(&id, 0) {
                let new = add
                    .keys()
                    .filter(|k| !current.elements.contains_key(*k))
                    .count();
                self.limits.check_elements(current.elements.len() + new)?;
            } else {
                self.limits.check_elements(add.len())?;
            }
            let mut audit = self.gate.record(&request, &caller, "AddElements", &target);
            audit.detail = format!("added {}", added_detail(&add));
            let b = self.change_one(&id, ChangeBy { actor: &caller.actor, action: "added", reason: &r.reason, audit: Some(audit) }, true, |b| {
                    let now = SystemTime::now();
                    for (k, contents) in &add {
                        let el =
                            b.elements
                                .entry(k.clone())
                                .or_insert_with(|| procguard_core::Element {
                                    status: ElementStatus::Approved,
                                    review_reasons: vec![],
                                    provenance: procguard_core::baseline::Provenance::new(now),
                                    manual: true,
                                    // Added by name: matched by name alone (see
                                    // docs/ARCHITECTURE.md), unless contents are given;
                                    // and from no drift origin (allow an incident, or
                                    // import, for one that runs from outside the image).
                                    approved_sha256: Vec::new(),
                                    origins: BTreeSet::new(),
                                });
                        el.status = ElementStatus::Approved;
                        // Exactly the contents named, and only for this element.
                        for h in contents {
                            el.approve_content(h);
                        }
                    }
                    Ok(())
                })
                .await?;
            Ok((b, true))
        }
        .await;
        self.gate
            .done_recorded(&request, &caller, "AddElements", &target, result)
            .await
            .map(Response::new)
    }

    async fn remove_elements(
        &self,
        request: Request<pb::RemoveElementsRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Approver, "RemoveElements", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let remove = keys(&r.elements)?;
            let audit = self
                .gate
                .record(&request, &caller, "RemoveElements", &target);
            self.change_one(
                &id,
                ChangeBy {
                    actor: &caller.actor,
                    action: "removed",
                    reason: &r.reason,
                    audit: Some(audit),
                },
                false,
                |b| {
                    for k in &remove {
                        b.elements
                            .remove(k)
                            .ok_or_else(|| format!("element '{k}' is not in the baseline"))?;
                    }
                    Ok(())
                },
            )
            .await
        }
        .await;
        self.gate
            .done_recorded(
                &request,
                &caller,
                "RemoveElements",
                &target,
                result.map(|b| (b, true)),
            )
            .await
            .map(Response::new)
    }

    async fn reset_baseline(
        &self,
        request: Request<pb::ResetBaselineRequest>,
    ) -> Result<Response<pb::Baseline>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Approver, "ResetBaseline", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let audit = self
                .gate
                .record(&request, &caller, "ResetBaseline", &target);
            self.change_one(
                &id,
                ChangeBy {
                    actor: &caller.actor,
                    action: "reset",
                    reason: &r.reason,
                    audit: Some(audit),
                },
                false,
                |b| {
                    b.reset(SystemTime::now());
                    Ok(())
                },
            )
            .await
        }
        .await;
        self.gate
            .done_recorded(
                &request,
                &caller,
                "ResetBaseline",
                &target,
                result.map(|b| (b, true)),
            )
            .await
            .map(Response::new)
    }

    async fn bulk_approve(
        &self,
        request: Request<pb::BulkRequest>,
    ) -> Result<Response<pb::BulkResponse>, Status> {
        self.bulk(request, "BulkApprove", "approved", |b| {
            b.approve(None, SystemTime::now());
        })
        .await
    }

    async fn bulk_reset(
        &self,
        request: Request<pb::BulkRequest>,
    ) -> Result<Response<pb::BulkResponse>, Status> {
        self.bulk(request, "BulkReset", "reset", |b| {
            b.reset(SystemTime::now())
        })
        .await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "GetHistory", &target)
            .await?;
        let result = identity(request.get_ref().workload.as_ref())
            .map_err(invalid)
            .and_then(|id| self.store.history(&id).map_err(store_status))
            .map(|h| {
                let versions: Vec<VersionSummary> = h
                    .iter()
                    .map(|v| {
                        VersionSummary::of(
                            v.version,
                            &v.actor,
                            v.at,
                            &v.action,
                            &v.reason,
                            &v.snapshot,
                        )
                    })
                    .collect();
                history_to_pb(&versions)
            });
        self.gate
            .done(&request, &caller, "GetHistory", &target, result)
            .await
            .map(Response::new)
    }

    async fn diff_versions(
        &self,
        request: Request<pb::DiffVersionsRequest>,
    ) -> Result<Response<pb::DiffVersionsResponse>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "DiffVersions", &target)
            .await?;
        let r = request.get_ref();
        let result = (|| {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let a = self
                .store
                .baseline(&id, r.from_version)
                .map_err(store_status)?;
            let b = self
                .store
                .baseline(&id, r.to_version)
                .map_err(store_status)?;
            Ok(versions_diff_to_pb(&VersionsDiff::of(&a, &b)))
        })();
        self.gate
            .done(&request, &caller, "DiffVersions", &target, result)
            .await
            .map(Response::new)
    }

    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let target = target_of(request.get_ref().workload.as_ref());
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "DryRun", &target)
            .await?;
        let r = request.get_ref();
        let result = (|| {
            let id = identity(r.workload.as_ref()).map_err(invalid)?;
            let days = match r.days {
                0 => 7,
                d if d > MAX_DRY_RUN_DAYS => {
                    return Err(Status::invalid_argument(format!(
                        "days must be at most {MAX_DRY_RUN_DAYS} (activity is kept that long)"
                    )))
                }
                d => d,
            };
            // Each candidate element with the origins it may run from: the current baseline's
            // (an element named in the request takes its current origins, if it exists).
            let current = match self.store.baseline(&id, 0) {
                Ok(b) => Some(b),
                Err(StoreError::NotFound(_)) if !r.candidate.is_empty() => None,
                Err(e) => return Err(store_status(e)),
            };
            let element = |k: &ElementKey| current.as_ref().and_then(|b| b.elements.get(k));
            let candidate: std::collections::HashMap<ElementKey, BTreeSet<Origin>> =
                if r.candidate.is_empty() {
                    current
                        .iter()
                        .flat_map(|b| b.elements.iter())
                        .filter(|(_, e)| e.status.allowed())
                        .map(|(k, e)| (k.clone(), e.origins.clone()))
                        .collect()
                } else {
                    keys(&r.candidate)?
                        .into_iter()
                        .map(|k| {
                            let origins = element(&k).map(|e| e.origins.clone());
                            (k, origins.unwrap_or_default())
                        })
                        .collect()
                };
            let from = crate::store::day_of(SystemTime::now()).saturating_sub(days - 1);
            let activity = self.store.activity(&id, from).map_err(store_status)?;
            let run = dry_run(&candidate, activity.iter().map(|(_, k, rec)| (k, rec)));
            Ok(dry_run_to_pb(&run))
        })();
        self.gate
            .done(&request, &caller, "DryRun", &target, result)
            .await
            .map(Response::new)
    }

    async fn export_baselines(
        &self,
        request: Request<pb::ExportBaselinesRequest>,
    ) -> Result<Response<pb::ExportBaselinesResponse>, Status> {
        let caller = self
            .gate
            .allow(&request, Role::Viewer, "ExportBaselines", "")
            .await?;
        let result = filter_of(request.get_ref().selector.as_ref()).and_then(|f| {
            let (list, _) = self
                .store
                .baselines(&f, None, usize::MAX)
                .map_err(store_status)?;
            Ok(pb::ExportBaselinesResponse {
                yaml: crate::gitops::export(&list),
            })
        });
        self.gate
            .done(&request, &caller, "ExportBaselines", "", result)
            .await
            .map(Response::new)
    }

    async fn import_baselines(
        &self,
        request: Request<pb::ImportBaselinesRequest>,
    ) -> Result<Response<pb::ImportBaselinesResponse>, Status> {
        let caller = self
            .gate
            .allow(&request, Role::Admin, "ImportBaselines", "")
            .await?;
        let r = request.get_ref();
        let result = async {
            let items = crate::gitops::parse(&r.yaml, SystemTime::now()).map_err(|errs| {
                Status::invalid_argument(format!(
                    "import refused, nothing was changed:\n  {}",
                    errs.join("\n  ")
                ))
            })?;
            let mut changes = Vec::new();
            for b in &items {
                let old = match self.store.baseline(&b.workload, 0) {
                    Ok(old) => Some(old),
                    Err(StoreError::NotFound(_)) => None,
                    Err(e) => return Err(store_status(e)),
                };
                changes.push(ImportChange::of(old.as_ref(), b));
            }
            if !r.dry_run {
                // The store names in the record how many it changed and left as they were.
                let audit = self.gate.record(&request, &caller, "ImportBaselines", "");
                let applied = self
                    .store
                    .import(items, &caller.actor, &r.reason, audit)
                    .await
                    .map_err(store_status)?;
                for b in applied {
                    self.hub.publish(b);
                }
            }
            Ok((import_to_pb(&changes, r.dry_run), !r.dry_run))
        }
        .await;
        self.gate
            .done_recorded(&request, &caller, "ImportBaselines", "", result)
            .await
            .map(Response::new)
    }
}

impl BaselineApi {
    async fn bulk(
        &self,
        request: Request<pb::BulkRequest>,
        method: &str,
        action: &str,
        apply: impl Fn(&mut Baseline) + Copy + Send + Sync,
    ) -> Result<Response<pb::BulkResponse>, Status> {
        let caller = self
            .gate
            .allow(&request, Role::Approver, method, "")
            .await?;
        let r = request.get_ref();
        let result = async {
            let filter = filter_of(r.selector.as_ref())?;
            let (list, _) = self
                .store
                .baselines(&filter, None, usize::MAX)
                .map_err(store_status)?;
            let mut changed = Vec::new();
            for b in list {
                // One audit record per baseline changed, each with its change.
                let audit = self
                    .gate
                    .record(&request, &caller, method, &b.workload.to_string());
                self.change_one(
                    &b.workload,
                    ChangeBy {
                        actor: &caller.actor,
                        action,
                        reason: &r.reason,
                        audit: Some(audit),
                    },
                    false,
                    |b| {
                        apply(b);
                        Ok(())
                    },
                )
                .await?;
                changed.push(b.workload);
            }
            let recorded = !changed.is_empty();
            Ok((bulk_to_pb(&changed), recorded))
        }
        .await;
        self.gate
            .done_recorded(&request, &caller, method, "", result)
            .await
            .map(Response::new)
    }
}

/// What an AddElements call adds, for its audit record: each element with the contents it is
/// pinned to, or "by name".
fn added_detail(add: &std::collections::BTreeMap<ElementKey, Vec<String>>) -> String {
    add.iter()
        .map(|(k, contents)| {
            if contents.is_empty() {
                format!("{k} (by name)")
            } else {
                format!("{k} (content sha256 {})", contents.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
