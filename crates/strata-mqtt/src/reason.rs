//! Return and reason codes used by the broker and its clients: 3.1.1 CONNACK
//! return codes and the MQTT 5 reason codes (section 2.4).

/// MQTT 3.1.1 CONNACK return codes.
pub mod v311 {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0x00;
    /// The server does not support the requested protocol level.
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    /// The client identifier is not allowed.
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    /// The MQTT service is unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    /// The user name or password is malformed or wrong.
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    /// The client is not authorized to connect.
    pub const NOT_AUTHORIZED: u8 = 0x05;
    /// SUBACK failure return code.
    pub const SUBACK_FAILURE: u8 = 0x80;
}

/// Success / normal disconnection / granted QoS 0.
pub const SUCCESS: u8 = 0x00;
/// Granted QoS 1.
pub const GRANTED_QOS_1: u8 = 0x01;
/// Disconnect with will message.
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
/// No matching subscribers (PUBACK).
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// No subscription existed (UNSUBACK).
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// Unspecified error.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
/// Malformed packet.
pub const MALFORMED_PACKET: u8 = 0x81;
/// Protocol error.
pub const PROTOCOL_ERROR: u8 = 0x82;
/// Implementation specific error.
pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
/// Unsupported protocol version.
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
/// Client identifier not valid.
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
/// Bad user name or password.
pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
/// Not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;
/// Server unavailable.
pub const SERVER_UNAVAILABLE: u8 = 0x88;
/// Server busy.
pub const SERVER_BUSY: u8 = 0x89;
/// Server shutting down.
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
/// Keep alive timeout.
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
/// Session taken over.
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
/// Topic filter invalid.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// Topic name invalid.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// Packet identifier not found.
pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
/// Receive maximum exceeded.
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
/// Topic alias invalid.
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
/// Packet too large.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// Quota exceeded.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// Administrative action.
pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
/// Payload format invalid.
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
/// QoS not supported.
pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
/// Shared subscriptions not supported.
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
/// Maximum connect time (the server ends a connection it allowed only so long).
pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
