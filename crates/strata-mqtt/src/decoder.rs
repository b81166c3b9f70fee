//! Streaming decoder: pulls whole packets off the front of a read buffer,
//! refusing oversized packets from the fixed header alone so a peer cannot
//! make the reader buffer an arbitrarily large body.

use bytes::BytesMut;

use crate::error::{Error, Result};
use crate::packet::{Packet, ProtocolVersion};
use crate::wire::MAX_VAR_INT;

/// Default maximum packet size: 1 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024;

/// Decodes packets from a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_packet_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

/// Result of parsing a fixed header: first byte, header length, body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (high nibble) and flags (low nibble).
    pub first: u8,
    /// Bytes taken by the first byte plus the remaining-length field.
    pub header_len: usize,
    /// Value of the remaining-length field.
    pub remaining: usize,
}

impl FixedHeader {
    /// Whole packet size on the wire.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parses the fixed header at the start of `buf`: `Ok(None)` if more bytes are
/// needed, an error if the remaining length is malformed or the type is 0.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 == 0 {
        return Err(Error::InvalidPacketType(0));
    }
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                first,
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(Error::MalformedRemainingLength)
}

impl Decoder {
    /// A decoder that rejects packets larger than `max_packet_size` bytes
    /// (fixed header included), capped at the protocol limit.
    pub fn new(max_packet_size: usize) -> Self {
        Self {
            max_packet_size: max_packet_size.min(MAX_VAR_INT as usize + 5),
        }
    }

    /// The configured maximum packet size.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Takes one packet off the front of `buf`. `version` is the version
    /// negotiated by CONNECT (CONNECT itself is decoded whatever it is).
    /// Returns `Ok(None)` and leaves `buf` untouched if the packet is not
    /// complete yet. After an error the connection must be closed: the buffer
    /// is no longer aligned on a packet boundary.
    pub fn decode(&self, buf: &mut BytesMut, version: ProtocolVersion) -> Result<Option<Packet>> {
        let Some(header) = parse_fixed_header(buf)? else {
            return Ok(None);
        };
        let size = header.packet_len();
        if size > self.max_packet_size {
            return Err(Error::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            buf.reserve(size - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(size).freeze();
        let body = frame.split_off(header.header_len);
        Packet::read(header.first, body, version).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_header_and_body_need_more() {
        let d = Decoder::default();
        let v = ProtocolVersion::V311;
        let mut buf = BytesMut::from(&[0x30u8][..]);
        assert_eq!(d.decode(&mut buf, v), Ok(None));
        let mut buf = BytesMut::from(&[0x30u8, 0x80][..]);
        assert_eq!(d.decode(&mut buf, v), Ok(None));
        let mut buf = BytesMut::from(&[0x30u8, 5, 0, 1, b'a'][..]);
        assert_eq!(d.decode(&mut buf, v), Ok(None));
        assert_eq!(buf.len(), 5, "buffer untouched while incomplete");
    }

    #[test]
    fn oversized_is_refused_from_header_alone() {
        let d = Decoder::new(100);
        // PUBLISH declaring 200 bytes of body, none of which is present.
        let mut buf = BytesMut::from(&[0x30u8, 0xc8, 0x01][..]);
        assert_eq!(
            d.decode(&mut buf, ProtocolVersion::V5),
            Err(Error::PacketTooLarge {
                size: 203,
                max: 100
            })
        );
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let d = Decoder::new(usize::MAX);
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert_eq!(
            d.decode(&mut buf, ProtocolVersion::V311),
            Err(Error::MalformedRemainingLength)
        );
    }

    #[test]
    fn decodes_back_to_back_packets() {
        let d = Decoder::default();
        let mut buf = BytesMut::from(&[0xc0u8, 0, 0xd0, 0, 0xc0][..]);
        let v = ProtocolVersion::V311;
        assert_eq!(d.decode(&mut buf, v), Ok(Some(Packet::PingReq)));
        assert_eq!(d.decode(&mut buf, v), Ok(Some(Packet::PingResp)));
        assert_eq!(d.decode(&mut buf, v), Ok(None));
        assert_eq!(&buf[..], &[0xc0]);
    }
}
