//! The procguard v1 wire protocol.
//!
//! `v1` is generated at build time from `proto/procguard/v1/*.proto` by protox (no `protoc`
//! needed). [`convert`] is the single place where protobuf messages become domain types from
//! `procguard-core` and back; nothing else in the workspace translates between them.

#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("procguard.v1");
}

pub mod convert;

pub use convert::ConvertError;
