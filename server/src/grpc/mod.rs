//! The gRPC adapter: the only module that serves tonic services, one file per service.
//!
//! - [`baseline`], `BaselineService`, the review API;
//! - [`audit`], `AuditService`;
//! - [`incident`], `IncidentService`;
//! - [`subscription`], `SubscriptionService`, the SIEM stream;
//! - [`sensor`], `SensorService.Session`, the sensor stream.
//!
//! Requests become domain values at this edge (bad input is `INVALID_ARGUMENT` naming the
//! field, through `procguard_proto::convert`); every API call passes the gate
//! ([`crate::auth::Gate`]); storage is reached only through [`crate::store::SharedStorage`].

pub mod audit;
pub mod baseline;
pub mod incident;
pub mod sensor;
pub mod subscription;
