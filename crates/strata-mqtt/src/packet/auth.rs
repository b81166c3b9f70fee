//! AUTH (MQTT 5 only): extended authentication exchange.

use bytes::{BufMut, BytesMut};

use super::kind;
use crate::Properties;
use crate::error::Result;
use crate::wire::{Reader, put_fixed_header};

const NAME: &str = "AUTH";

/// AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason_code: u8,
    /// Properties (authentication method and data, reason string).
    pub properties: Properties,
}

impl Auth {
    pub(crate) fn read(mut r: Reader) -> Result<Self> {
        let mut a = Self::default();
        if !r.is_empty() {
            a.reason_code = r.u8()?;
        }
        if !r.is_empty() {
            a.properties = Properties::read(&mut r)?;
        }
        r.finish()?;
        Ok(a)
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let with_props = !self.properties.is_empty();
        let with_reason = self.reason_code != 0 || with_props;
        let len = usize::from(with_reason)
            + if with_props {
                self.properties.wire_len()
            } else {
                0
            };
        put_fixed_header(out, kind::AUTH << 4, len, NAME)?;
        if with_reason {
            out.put_u8(self.reason_code);
        }
        if with_props {
            self.properties.write(out)?;
        }
        Ok(())
    }
}
