//! The procguard v1 wire protocol.
//!
//! `v1` is generated at build time from `proto/procguard/v1/*.proto` by protox (no `protoc`
//! needed). [`convert`] is the single place where protobuf messages become domain types from
//! `procguard-core` and back; nothing else in the workspace translates between them.

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("procguard.v1");
}

/// Servers whose SIEM stream sends [`Encoded`] records: the same services as [`v1`] (same
/// names, paths and messages on the wire), generated with `StreamRecord` replaced by
/// [`Encoded`]. Clients use [`v1`] and decode ordinary `StreamRecord`s.
#[allow(clippy::all)]
pub mod encoded {
    include!(concat!(env!("OUT_DIR"), "/encoded/procguard.v1.rs"));
}

pub mod convert;

/// A message already encoded to protobuf bytes. Encoding it again copies the bytes, so one
/// record sent to many subscribers is encoded once and the bytes are shared (cloning is a
/// reference count). It is send-only: decoding into it skips every field.
#[derive(Clone, Default, PartialEq)]
pub struct Encoded(pub bytes::Bytes);

impl Encoded {
    /// Encodes `m` once.
    pub fn of(m: &impl prost::Message) -> Self {
        Self(m.encode_to_vec().into())
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Send-only: nothing decodes into it (the servers never receive one), and if anything
        // did, it would get an empty message rather than bytes it did not check.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = bytes::Bytes::new();
    }
}

pub use convert::ConvertError;
