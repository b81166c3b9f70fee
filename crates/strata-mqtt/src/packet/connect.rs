//! CONNECT: the first packet of every connection; carries the protocol
//! version, session flags, keep alive, credentials and the last will.

use bytes::{BufMut, Bytes, BytesMut};

use super::{ProtocolVersion, QoS, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_binary, put_fixed_header, put_string};

const NAME: &str = "CONNECT";

/// The will message a client registers at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the will publication.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// v5 will properties (will delay, message expiry, content type, ...).
    pub properties: Properties,
}

/// CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested by the client (from the protocol level byte).
    pub protocol: ProtocolVersion,
    /// 3.1.1 Clean Session / 5 Clean Start flag.
    pub clean_start: bool,
    /// Keep alive in seconds, 0 = disabled.
    pub keep_alive: u16,
    /// v5 CONNECT properties.
    pub properties: Properties,
    /// Client identifier, possibly empty.
    pub client_id: String,
    /// Last will, if the will flag is set.
    pub will: Option<LastWill>,
    /// User name, if present.
    pub username: Option<String>,
    /// Password, if present.
    pub password: Option<Bytes>,
}

impl Connect {
    pub(crate) fn read(mut r: Reader) -> Result<Self> {
        let name = r.binary()?;
        if &name[..] != b"MQTT" {
            return Err(Error::UnsupportedProtocolName(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        let protocol = match r.u8()? {
            4 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            other => return Err(Error::UnsupportedProtocolLevel(other)),
        };
        let flags = r.u8()?;
        let malformed = |reason| Error::Malformed {
            packet: NAME,
            reason,
        };
        if flags & 0x01 != 0 {
            return Err(malformed("reserved connect flag bit 0 is set"));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(Error::InvalidQoS(NAME))?;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(malformed("will QoS/retain set without the will flag"));
        }
        if protocol == ProtocolVersion::V311 && has_password && !has_username {
            return Err(malformed("password flag set without user name flag"));
        }
        let keep_alive = r.u16()?;
        let properties = super::read_props(&mut r, protocol)?;
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = super::read_props(&mut r, protocol)?;
            let topic = r.string()?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let v = self.protocol;
        if v == ProtocolVersion::V311 && self.password.is_some() && self.username.is_none() {
            return Err(Error::InvalidForEncoding {
                packet: NAME,
                reason: "MQTT 3.1.1 does not allow a password without a user name",
            });
        }
        let mut len = 6 + 1 + 1 + 2 + super::props_len(&self.properties, v);
        len += 2 + self.client_id.len();
        if let Some(w) = &self.will {
            len += super::props_len(&w.properties, v) + 2 + w.topic.len() + 2 + w.payload.len();
        }
        len += self.username.as_ref().map_or(0, |u| 2 + u.len());
        len += self.password.as_ref().map_or(0, |p| 2 + p.len());
        put_fixed_header(out, kind::CONNECT << 4, len, NAME)?;
        put_string(out, "MQTT", NAME)?;
        out.put_u8(v.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        super::write_props(&self.properties, v, out)?;
        put_string(out, &self.client_id, "client identifier")?;
        if let Some(w) = &self.will {
            super::write_props(&w.properties, v, out)?;
            put_string(out, &w.topic, "will topic")?;
            put_binary(out, &w.payload, "will payload")?;
        }
        if let Some(u) = &self.username {
            put_string(out, u, "user name")?;
        }
        if let Some(p) = &self.password {
            put_binary(out, p, "password")?;
        }
        Ok(())
    }
}
