//! SUBSCRIBE: a list of topic filters with their subscription options
//! (QoS only in 3.1.1; plus No Local, Retain As Published and Retain Handling
//! in v5).

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, QoS, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header, put_string};

const NAME: &str = "SUBSCRIBE";

/// When retained messages are sent for a new subscription (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    OnNewSubscription = 1,
    /// 2: never send retained messages for this subscription.
    Never = 2,
}

/// Options attached to one filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS requested.
    pub qos: QoS,
    /// v5: do not deliver the client's own publications back to it.
    pub no_local: bool,
    /// v5: keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// v5: retained-message behaviour on subscribe.
    pub retain_handling: RetainHandling,
}

/// One topic filter and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter, possibly with wildcards or a `$share/` prefix.
    pub filter: String,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// v5 properties (subscription identifier, user properties).
    pub properties: Properties,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
}

impl Subscribe {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let malformed = |reason| Error::Malformed {
            packet: NAME,
            reason,
        };
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(malformed("packet identifier 0"));
        }
        let properties = super::read_props(&mut r, version)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let opts = r.u8()?;
            let qos = QoS::from_u8(opts & 0x03).ok_or(Error::InvalidQoS(NAME))?;
            let options = if version.is_v5() {
                if opts & 0xc0 != 0 {
                    return Err(malformed("reserved subscription option bits are set"));
                }
                let retain_handling = match (opts >> 4) & 0x03 {
                    0 => RetainHandling::OnSubscribe,
                    1 => RetainHandling::OnNewSubscription,
                    2 => RetainHandling::Never,
                    _ => return Err(malformed("retain handling 3 is not allowed")),
                };
                SubscriptionOptions {
                    qos,
                    no_local: opts & 0x04 != 0,
                    retain_as_published: opts & 0x08 != 0,
                    retain_handling,
                }
            } else {
                if opts & 0xfc != 0 {
                    return Err(malformed("reserved bits of the requested QoS byte are set"));
                }
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            };
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(malformed("no topic filter"));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        if self.packet_id == 0 || self.filters.is_empty() {
            return Err(Error::InvalidForEncoding {
                packet: NAME,
                reason: "needs a non-zero packet identifier and at least one filter",
            });
        }
        let len = 2
            + super::props_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|f| 3 + f.filter.len())
                .sum::<usize>();
        put_fixed_header(out, kind::SUBSCRIBE << 4 | 0b0010, len, NAME)?;
        out.put_u16(self.packet_id);
        super::write_props(&self.properties, version, out)?;
        for f in &self.filters {
            put_string(out, &f.filter, "topic filter")?;
            let o = f.options;
            let mut byte = o.qos as u8;
            if version.is_v5() {
                if o.no_local {
                    byte |= 0x04;
                }
                if o.retain_as_published {
                    byte |= 0x08;
                }
                byte |= (o.retain_handling as u8) << 4;
            }
            out.put_u8(byte);
        }
        Ok(())
    }
}
