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

/// Clients whose sensor stream sends [`Encoded`] messages: the same services as [`v1`],
/// generated with `SensorMessage` replaced by [`Encoded`], so a sensor sends the events its
/// spool holds as they are stored ([`Encoded::event_batch`]). Servers use [`v1`] and decode
/// ordinary `SensorMessage`s.
#[allow(clippy::all, missing_docs, rust_2018_idioms, dead_code)]
pub mod encoded_client {
    include!(concat!(env!("OUT_DIR"), "/encoded_client/procguard.v1.rs"));
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

    /// A `SensorMessage` whose body is an `EventBatch` of `events`, each already an encoded
    /// `SensorEvent`: the bytes are placed as they are, the same bytes
    /// `SensorMessage { body: Batch(EventBatch { events }) }` encodes to.
    pub fn event_batch<'a>(events: impl IntoIterator<Item = &'a [u8]> + Clone) -> Self {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
        // `EventBatch.events` is field 1 and `SensorMessage.batch` field 2, both messages.
        let batch_len: usize = events
            .clone()
            .into_iter()
            .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
            .sum();
        let mut buf = bytes::BytesMut::with_capacity(1 + 10 + batch_len);
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(batch_len as u64, &mut buf);
        for e in events {
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(e.len() as u64, &mut buf);
            buf.extend_from_slice(e);
        }
        Self(buf.freeze())
    }

    /// Bytes one encoded event adds to [`Encoded::event_batch`]'s message.
    pub fn event_batch_cost(event_len: usize) -> usize {
        1 + prost::encoding::encoded_len_varint(event_len as u64) + event_len
    }

    /// Bytes of [`Encoded::event_batch`]'s message for events that cost `cost` in all.
    pub fn event_batch_len(cost: usize) -> usize {
        1 + prost::encoding::encoded_len_varint(cost as u64) + cost
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn an_event_batch_of_stored_bytes_is_the_message_encoded_whole() {
        let events: Vec<v1::SensorEvent> = (1..=3)
            .map(|i| v1::SensorEvent {
                event_id: format!("id-{i}"),
                sequence: i,
                kind: v1::EventKind::Observation as i32,
                process: Some(v1::ProcessEvent {
                    argv: vec!["x".repeat(200 * i as usize)],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let stored: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
        let whole = v1::SensorMessage {
            body: Some(v1::sensor_message::Body::Batch(v1::EventBatch { events })),
        }
        .encode_to_vec();
        let raw = Encoded::event_batch(stored.iter().map(Vec::as_slice));
        assert_eq!(raw.0.as_ref(), whole.as_slice());
        let cost: usize = stored
            .iter()
            .map(|e| Encoded::event_batch_cost(e.len()))
            .sum();
        assert_eq!(Encoded::event_batch_len(cost), whole.len());
        let empty = Encoded::event_batch(std::iter::empty::<&[u8]>());
        assert_eq!(
            v1::SensorMessage::decode(empty.0.clone()).unwrap(),
            v1::SensorMessage {
                body: Some(v1::sensor_message::Body::Batch(v1::EventBatch::default()))
            }
        );
    }
}
