//! The codec's error type: every way a byte stream or a packet value can be
//! rejected, with messages that name the offending field.

/// Why bytes could not be decoded into a packet, or a packet into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The variable-length Remaining Length field used more than four bytes.
    #[error("malformed remaining length: more than 4 bytes of variable-length encoding")]
    MalformedRemainingLength,
    /// A variable byte integer inside the packet (property length, subscription
    /// identifier) was not a valid 1..4 byte encoding.
    #[error("malformed variable byte integer in {0}")]
    MalformedVarInt(&'static str),
    /// The declared packet size is above the configured maximum; detected from
    /// the fixed header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Full size of the packet as declared by its fixed header.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The first byte names a control packet type that does not exist (0), or
    /// one not defined for the negotiated protocol version (AUTH in 3.1.1).
    #[error("invalid control packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed header's reserved flag bits do not have their mandated value.
    #[error("invalid fixed-header flags {flags:#06b} for {packet}")]
    InvalidFlags {
        /// Packet type name.
        packet: &'static str,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// The packet ended before a field it must contain.
    #[error("truncated {0} packet: the remaining length ends before all fields were read")]
    Truncated(&'static str),
    /// Bytes were left over after all fields of the packet were read.
    #[error("{0} packet has trailing bytes after its last field")]
    TrailingBytes(&'static str),
    /// A string field was not valid UTF-8 or contained U+0000.
    #[error("invalid UTF-8 string in {0} (not UTF-8 or contains U+0000)")]
    InvalidString(&'static str),
    /// CONNECT named a protocol other than "MQTT".
    #[error("unsupported protocol name {0:?} (expected \"MQTT\")")]
    UnsupportedProtocolName(String),
    /// CONNECT asked for a protocol level other than 4 (3.1.1) or 5.
    #[error("unsupported protocol level {0} (supported: 4 = MQTT 3.1.1, 5 = MQTT 5)")]
    UnsupportedProtocolLevel(u8),
    /// QoS value 3 was found.
    #[error("invalid QoS 3 in {0}")]
    InvalidQoS(&'static str),
    /// A property identifier that MQTT 5 does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property that may appear once appeared twice.
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// Any other violation of a MUST in the spec, described in words.
    #[error("malformed {packet} packet: {reason}")]
    Malformed {
        /// Packet type name.
        packet: &'static str,
        /// What rule was broken.
        reason: &'static str,
    },
    /// A value cannot be encoded: a string or binary field above 65,535 bytes,
    /// or a packet above the 268,435,455-byte protocol limit.
    #[error("cannot encode {0}: value exceeds the MQTT size limit")]
    TooLongToEncode(&'static str),
    /// A packet value is not valid for the requested protocol version or is
    /// internally inconsistent (for example QoS 1 with packet identifier 0).
    #[error("cannot encode {packet}: {reason}")]
    InvalidForEncoding {
        /// Packet type name.
        packet: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
}

/// Codec result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
