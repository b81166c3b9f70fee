//! MQTT 5 properties: the typed [`Properties`] block carried by most v5
//! packets, decoded from and encoded to the property-length-prefixed wire form.
//!
//! The codec does not check which properties a given packet type may carry;
//! that is left to the receiver, which knows what it will act on. It does
//! reject unknown identifiers and repeated single-valued properties.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::wire::{Reader, put_binary, put_string, put_var_int, var_int_len};

/// Property identifiers defined by MQTT 5 (section 2.2.2.2).
pub mod id {
    /// Payload Format Indicator (byte).
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Message Expiry Interval (four-byte integer, seconds).
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// Content Type (UTF-8 string).
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response Topic (UTF-8 string).
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation Data (binary).
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription Identifier (variable byte integer).
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Session Expiry Interval (four-byte integer, seconds).
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned Client Identifier (UTF-8 string).
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Server Keep Alive (two-byte integer, seconds).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (UTF-8 string).
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Authentication Data (binary).
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Request Problem Information (byte).
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Will Delay Interval (four-byte integer, seconds).
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Request Response Information (byte).
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// Response Information (UTF-8 string).
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// Server Reference (UTF-8 string).
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// Reason String (UTF-8 string).
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (two-byte integer).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (two-byte integer).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic Alias (two-byte integer).
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS (byte).
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Retain Available (byte).
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// User Property (UTF-8 string pair).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (four-byte integer).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Wildcard Subscription Available (byte).
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Subscription Identifier Available (byte).
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Shared Subscription Available (byte).
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// All MQTT 5 properties, each `None`/empty when absent. Ignored when a packet
/// is encoded for MQTT 3.1.1 and always empty when decoded from 3.1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01: 0 = unspecified bytes, 1 = UTF-8 payload.
    pub payload_format_indicator: Option<u8>,
    /// 0x02: lifetime of an application message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME-like description of the payload.
    pub content_type: Option<String>,
    /// 0x08: topic for a response message.
    pub response_topic: Option<String>,
    /// 0x09: data to correlate a response with its request.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: identifiers of the subscriptions that matched (PUBLISH) or the
    /// one being created (SUBSCRIBE). May repeat.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds a session outlives its network connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: client identifier the server assigned.
    pub assigned_client_identifier: Option<String>,
    /// 0x13: keep alive the server imposes, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15: extended authentication method name.
    pub authentication_method: Option<String>,
    /// 0x16: extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17: whether reason strings/user properties may be sent on failures.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19: whether the client wants Response Information in CONNACK.
    pub request_response_information: Option<u8>,
    /// 0x1A: basis for response topics.
    pub response_information: Option<String>,
    /// 0x1C: another server the client may use.
    pub server_reference: Option<String>,
    /// 0x1F: human-readable diagnostic.
    pub reason_string: Option<String>,
    /// 0x21: how many unacknowledged QoS 1/2 PUBLISHes the sender accepts.
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias used in this PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<u8>,
    /// 0x25: whether retained messages are supported.
    pub retain_available: Option<u8>,
    /// 0x26: application-defined name/value pairs, order preserved.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: whether subscription identifiers are supported.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: whether shared subscriptions are supported.
    pub shared_subscription_available: Option<u8>,
}

fn set_once<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<()> {
    if slot.is_some() {
        return Err(Error::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads a property block: variable-length length prefix then properties.
    pub(crate) fn read(r: &mut Reader) -> Result<Self> {
        let len = r.var_int()? as usize;
        let mut r = r.sub(len)?;
        let mut p = Properties::default();
        while !r.is_empty() {
            let ident = r.var_int()?;
            let ident = u8::try_from(ident).map_err(|_| Error::UnknownProperty(0xff))?;
            match ident {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    let v = r.u8()?;
                    if v > 1 {
                        return Err(Error::Malformed {
                            packet: r.ctx(),
                            reason: "payload format indicator must be 0 or 1",
                        });
                    }
                    set_once(&mut p.payload_format_indicator, v, ident)?
                }
                id::MESSAGE_EXPIRY_INTERVAL => {
                    set_once(&mut p.message_expiry_interval, r.u32()?, ident)?
                }
                id::CONTENT_TYPE => set_once(&mut p.content_type, r.string()?, ident)?,
                id::RESPONSE_TOPIC => set_once(&mut p.response_topic, r.string()?, ident)?,
                id::CORRELATION_DATA => set_once(&mut p.correlation_data, r.binary()?, ident)?,
                id::SUBSCRIPTION_IDENTIFIER => {
                    let v = r.var_int()?;
                    if v == 0 {
                        return Err(Error::Malformed {
                            packet: r.ctx(),
                            reason: "subscription identifier 0 is not allowed",
                        });
                    }
                    p.subscription_identifiers.push(v);
                }
                id::SESSION_EXPIRY_INTERVAL => {
                    set_once(&mut p.session_expiry_interval, r.u32()?, ident)?
                }
                id::ASSIGNED_CLIENT_IDENTIFIER => {
                    set_once(&mut p.assigned_client_identifier, r.string()?, ident)?
                }
                id::SERVER_KEEP_ALIVE => set_once(&mut p.server_keep_alive, r.u16()?, ident)?,
                id::AUTHENTICATION_METHOD => {
                    set_once(&mut p.authentication_method, r.string()?, ident)?
                }
                id::AUTHENTICATION_DATA => {
                    set_once(&mut p.authentication_data, r.binary()?, ident)?
                }
                id::REQUEST_PROBLEM_INFORMATION => {
                    set_once(&mut p.request_problem_information, r.u8()?, ident)?
                }
                id::WILL_DELAY_INTERVAL => set_once(&mut p.will_delay_interval, r.u32()?, ident)?,
                id::REQUEST_RESPONSE_INFORMATION => {
                    set_once(&mut p.request_response_information, r.u8()?, ident)?
                }
                id::RESPONSE_INFORMATION => {
                    set_once(&mut p.response_information, r.string()?, ident)?
                }
                id::SERVER_REFERENCE => set_once(&mut p.server_reference, r.string()?, ident)?,
                id::REASON_STRING => set_once(&mut p.reason_string, r.string()?, ident)?,
                id::RECEIVE_MAXIMUM => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(Error::Malformed {
                            packet: r.ctx(),
                            reason: "receive maximum 0 is not allowed",
                        });
                    }
                    set_once(&mut p.receive_maximum, v, ident)?
                }
                id::TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, r.u16()?, ident)?,
                id::TOPIC_ALIAS => set_once(&mut p.topic_alias, r.u16()?, ident)?,
                id::MAXIMUM_QOS => set_once(&mut p.maximum_qos, r.u8()?, ident)?,
                id::RETAIN_AVAILABLE => set_once(&mut p.retain_available, r.u8()?, ident)?,
                id::USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(Error::Malformed {
                            packet: r.ctx(),
                            reason: "maximum packet size 0 is not allowed",
                        });
                    }
                    set_once(&mut p.maximum_packet_size, v, ident)?
                }
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    set_once(&mut p.wildcard_subscription_available, r.u8()?, ident)?
                }
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    set_once(&mut p.subscription_identifier_available, r.u8()?, ident)?
                }
                id::SHARED_SUBSCRIPTION_AVAILABLE => {
                    set_once(&mut p.shared_subscription_available, r.u8()?, ident)?
                }
                other => return Err(Error::UnknownProperty(other)),
            }
        }
        Ok(p)
    }

    /// Length of the properties themselves, without the length prefix.
    pub(crate) fn body_len(&self) -> usize {
        let s = |v: &Option<String>| v.as_ref().map_or(0, |s| 3 + s.len());
        let b = |v: &Option<Bytes>| v.as_ref().map_or(0, |s| 3 + s.len());
        let byte = |v: &Option<u8>| v.map_or(0, |_| 2);
        let short = |v: &Option<u16>| v.map_or(0, |_| 3);
        let int = |v: &Option<u32>| v.map_or(0, |_| 5);
        byte(&self.payload_format_indicator)
            + int(&self.message_expiry_interval)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|v| 1 + var_int_len(*v as usize))
                .sum::<usize>()
            + int(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + short(&self.server_keep_alive)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + byte(&self.request_problem_information)
            + int(&self.will_delay_interval)
            + byte(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + short(&self.receive_maximum)
            + short(&self.topic_alias_maximum)
            + short(&self.topic_alias)
            + byte(&self.maximum_qos)
            + byte(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 5 + k.len() + v.len())
                .sum::<usize>()
            + int(&self.maximum_packet_size)
            + byte(&self.wildcard_subscription_available)
            + byte(&self.subscription_identifier_available)
            + byte(&self.shared_subscription_available)
    }

    /// Length on the wire including the variable-length prefix.
    pub(crate) fn wire_len(&self) -> usize {
        let body = self.body_len();
        var_int_len(body) + body
    }

    /// Writes the length prefix and the properties, in identifier order.
    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<()> {
        const WHAT: &str = "properties";
        put_var_int(out, self.body_len(), WHAT)?;
        let put_byte = |out: &mut BytesMut, ident: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(ident);
                out.put_u8(v);
            }
        };
        let put_short = |out: &mut BytesMut, ident: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(ident);
                out.put_u16(v);
            }
        };
        let put_int = |out: &mut BytesMut, ident: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(ident);
                out.put_u32(v);
            }
        };
        let put_str = |out: &mut BytesMut, ident: u8, v: &Option<String>| -> Result<()> {
            if let Some(v) = v {
                out.put_u8(ident);
                put_string(out, v, WHAT)?;
            }
            Ok(())
        };
        let put_bin = |out: &mut BytesMut, ident: u8, v: &Option<Bytes>| -> Result<()> {
            if let Some(v) = v {
                out.put_u8(ident);
                put_binary(out, v, WHAT)?;
            }
            Ok(())
        };
        put_byte(
            out,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        put_int(
            out,
            id::MESSAGE_EXPIRY_INTERVAL,
            self.message_expiry_interval,
        );
        put_str(out, id::CONTENT_TYPE, &self.content_type)?;
        put_str(out, id::RESPONSE_TOPIC, &self.response_topic)?;
        put_bin(out, id::CORRELATION_DATA, &self.correlation_data)?;
        for v in &self.subscription_identifiers {
            out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            put_var_int(out, *v as usize, "subscription identifier")?;
        }
        put_int(
            out,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        put_str(
            out,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        put_short(out, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_str(out, id::AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_bin(out, id::AUTHENTICATION_DATA, &self.authentication_data)?;
        put_byte(
            out,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_int(out, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_byte(
            out,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_str(out, id::RESPONSE_INFORMATION, &self.response_information)?;
        put_str(out, id::SERVER_REFERENCE, &self.server_reference)?;
        put_str(out, id::REASON_STRING, &self.reason_string)?;
        put_short(out, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_short(out, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_short(out, id::TOPIC_ALIAS, self.topic_alias);
        put_byte(out, id::MAXIMUM_QOS, self.maximum_qos);
        put_byte(out, id::RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            out.put_u8(id::USER_PROPERTY);
            put_string(out, k, WHAT)?;
            put_string(out, v, WHAT)?;
        }
        put_int(out, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_byte(
            out,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_byte(
            out,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
        );
        put_byte(
            out,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Properties> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes), "test");
        let p = Properties::read(&mut r)?;
        r.finish()?;
        Ok(p)
    }

    #[test]
    fn decodes_mixed_properties() {
        let bytes = [
            18, // length
            0x11, 0, 0, 0, 60, // session expiry 60
            0x21, 0, 10, // receive maximum 10
            0x26, 0, 1, b'k', 0, 1, b'v', // user property k=v
            0x0B, 0x80, 0x01, // subscription identifier 128
        ];
        let p = decode(&bytes).unwrap();
        assert_eq!(p.session_expiry_interval, Some(60));
        assert_eq!(p.receive_maximum, Some(10));
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.subscription_identifiers, vec![128]);
        let mut out = BytesMut::new();
        p.write(&mut out).unwrap();
        assert_eq!(p.wire_len(), out.len());
        assert_eq!(decode(&out).unwrap(), p);
    }

    #[test]
    fn rejects_duplicates_unknown_and_truncation() {
        assert_eq!(
            decode(&[4, 0x21, 0, 1, 0x21]).unwrap_err(),
            Error::Truncated("test")
        );
        assert_eq!(
            decode(&[6, 0x21, 0, 1, 0x21, 0, 2]).unwrap_err(),
            Error::DuplicateProperty(0x21)
        );
        assert_eq!(
            decode(&[2, 0x7f, 0]).unwrap_err(),
            Error::UnknownProperty(0x7f)
        );
        assert!(decode(&[3, 0x21, 0, 0]).is_err(), "receive maximum 0");
        assert!(decode(&[9]).is_err(), "length past end");
    }
}
