//! MQTT 3.1.1 and 5 packet codec for Strata: every control packet decoded
//! from and encoded to bytes, for both the server and the client side, with
//! typed MQTT 5 properties, a streaming [`Decoder`] over `BytesMut`, and topic
//! validation and matching helpers. No I/O and no async runtime.

mod decoder;
mod error;
pub mod packet;
mod properties;
pub mod reason;
pub mod topic;
mod wire;

pub use decoder::{DEFAULT_MAX_PACKET_SIZE, Decoder, FixedHeader, parse_fixed_header};
pub use error::{Error, Result};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolVersion, PubAck, Publish,
    PublishHeader, QoS, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
    UnsubAck, Unsubscribe, encode_publish,
};
pub use properties::{Properties, id as property_id};
pub use wire::MAX_VAR_INT;
