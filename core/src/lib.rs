//! procguard's pure core.
//!
//! Everything here is plain data and plain functions: who a process belongs to
//! ([`identity`]), what the sensor saw ([`process`]), and what a workload is allowed to run
//! ([`baseline`]), what an exec's content was judged to be ([`content`]), and how deviations
//! become incidents ([`incident`]), what the record log and the audit log hold ([`record`],
//! [`audit`]), and what a reviewer is shown beside baselines ([`review`]: history, diffs,
//! dry runs, import changes). Nothing in this crate
//! touches the kernel, the network, a disk or a clock: callers pass the time in. That keeps the rules that decide what is a deviation testable
//! without a kernel, and identical on the sensor and the server.

pub mod audit;
pub mod baseline;
pub mod content;
pub mod element;
pub mod identity;
pub mod incident;
pub mod ingest;
pub mod policy;
pub mod process;
pub mod record;
pub mod review;
pub mod rfc3339;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod text;

pub use baseline::{Baseline, BaselineState, Element, ElementKey, ElementStatus, Matcher};
pub use content::{ContentCheck, ContentVerdict};
pub use identity::{WorkloadIdentity, WorkloadKind};
pub use process::{
    Completeness, ContainerInfo, ContainerRuntime, ExecContext, Origin, ProcessEvent, QosClass,
};
