//! Outputs closed-loop rules write to: an OPC UA variable, a Modbus
//! holding register (or several, for wide types), or an MQTT command topic.
//! Each is `type`-tagged in `[[control.outputs]]`; each can say what it
//! holds now (OPC UA and Modbus read the device, MQTT uses `initial`), so
//! the rate limit starts from the machine's real state.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use strata_proto::ControlAction;

/// One output, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputConfig {
    /// A variable on an OPC UA server.
    #[cfg(feature = "opcua")]
    Opcua(OpcuaOutput),
    /// Holding registers of a Modbus TCP unit.
    #[cfg(feature = "modbus")]
    Modbus(ModbusOutput),
    /// A command published on an MQTT broker.
    Mqtt(MqttOutput),
}

/// An OPC UA variable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg(feature = "opcua")]
pub struct OpcuaOutput {
    /// Name rules refer to.
    pub name: String,
    /// The server, `opc.tcp://...`.
    pub endpoint: String,
    /// The variable, e.g. `ns=2;s=Line1.FanSetpoint`.
    pub node: String,
    /// A setpoint is written as `(value - offset) / scale`, in the
    /// variable's own type.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// A write not confirmed within this many milliseconds fails.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

/// Holding registers of a Modbus unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg(feature = "modbus")]
pub struct ModbusOutput {
    /// Name rules refer to.
    pub name: String,
    /// The server, `host:port`.
    pub address: String,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Address of the first holding register (0-based, as on the wire).
    pub register: u16,
    /// How the registers encode the value.
    #[serde(default)]
    pub data_type: crate::sources::modbus::DataType,
    /// Which register holds the most significant word.
    #[serde(default)]
    pub word_order: crate::sources::modbus::WordOrder,
    /// Swap the two bytes inside every register.
    #[serde(default)]
    pub byte_swap: bool,
    /// A setpoint is written as `(value - offset) / scale`.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// A request not answered within this many milliseconds fails.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

/// An MQTT command topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOutput {
    /// Name rules refer to.
    pub name: String,
    /// The broker, `host:port`.
    pub broker: std::net::SocketAddr,
    /// The topic; the payload is
    /// `{"setpoint": v, "rule": ..., "action": ..., "ts_ns": ...}`.
    pub topic: String,
    /// What the receiver holds before this agent's first write (MQTT
    /// cannot be read back); a rule with `max_rate` on this output needs
    /// it. After that, the last setpoint the receiver acknowledged is
    /// kept in the data directory and counts instead, across restarts.
    #[serde(default)]
    pub initial: Option<f64>,
    /// A publish not acknowledged (QoS 1) within this many milliseconds
    /// fails.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

#[cfg(any(feature = "opcua", feature = "modbus"))]
fn one() -> f64 {
    1.0
}
#[cfg(feature = "modbus")]
fn default_unit() -> u8 {
    1
}
fn default_timeout() -> u64 {
    2000
}

impl OutputConfig {
    /// The name rules refer to.
    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "opcua")]
            OutputConfig::Opcua(o) => &o.name,
            #[cfg(feature = "modbus")]
            OutputConfig::Modbus(o) => &o.name,
            OutputConfig::Mqtt(o) => &o.name,
        }
    }

    /// Whether the current value is known at start (read back or
    /// configured).
    pub fn knows_current_value(&self) -> bool {
        match self {
            OutputConfig::Mqtt(o) => o.initial.is_some(),
            #[allow(unreachable_patterns)]
            _ => true,
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        #[cfg_attr(
            not(any(feature = "opcua", feature = "modbus")),
            allow(unused_variables)
        )]
        let scale_ok = |scale: f64, offset: f64| {
            if scale.is_finite() && scale != 0.0 && offset.is_finite() {
                Ok(())
            } else {
                Err(format!(
                    "output {name:?}: `scale` must be finite and not 0, `offset` finite"
                ))
            }
        };
        match self {
            #[cfg(feature = "opcua")]
            OutputConfig::Opcua(o) => {
                if !o.endpoint.starts_with("opc.tcp://") {
                    return Err(format!(
                        "output {name:?}: endpoint must start with opc.tcp://"
                    ));
                }
                <opcua::types::NodeId as std::str::FromStr>::from_str(&o.node)
                    .map_err(|_| format!("output {name:?}: {:?} is not a node id", o.node))?;
                scale_ok(o.scale, o.offset)
            }
            #[cfg(feature = "modbus")]
            OutputConfig::Modbus(o) => {
                if u32::from(o.register) + u32::from(o.data_type.registers()) > 65536 {
                    return Err(format!("output {name:?}: registers run past address 65535"));
                }
                scale_ok(o.scale, o.offset)
            }
            OutputConfig::Mqtt(o) => {
                if o.topic.is_empty() || o.topic.contains(['+', '#']) {
                    return Err(format!(
                        "output {name:?}: `topic` must be a topic name without wildcards"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A connected (or connecting) output.
pub enum Writer {
    /// See [`OpcuaOutput`].
    #[cfg(feature = "opcua")]
    Opcua(opcua_out::OpcuaWriter),
    /// See [`ModbusOutput`].
    #[cfg(feature = "modbus")]
    Modbus(modbus_out::ModbusWriter),
    /// See [`MqttOutput`].
    Mqtt(mqtt_out::MqttWriter),
}

impl Writer {
    /// Sets up the output; connections are made (and remade) on use.
    /// `data_dir` holds the OPC UA client's certificate store and the
    /// last setpoint of each MQTT output.
    pub fn new(config: &OutputConfig, data_dir: &Path) -> Result<Writer, String> {
        Ok(match config {
            #[cfg(feature = "opcua")]
            OutputConfig::Opcua(o) => {
                Writer::Opcua(opcua_out::OpcuaWriter::new(o, data_dir.join("opcua-pki"))?)
            }
            #[cfg(feature = "modbus")]
            OutputConfig::Modbus(o) => Writer::Modbus(modbus_out::ModbusWriter::new(o)),
            OutputConfig::Mqtt(o) => Writer::Mqtt(mqtt_out::MqttWriter::new(o, data_dir)),
        })
    }

    /// What the output holds, when known without reading it (an MQTT
    /// output's last acknowledged setpoint, or its `initial`).
    pub fn known(&self) -> Option<f64> {
        match self {
            Writer::Mqtt(w) => w.current().ok(),
            #[cfg(any(feature = "opcua", feature = "modbus"))]
            _ => None,
        }
    }

    /// What the output holds now, in setpoint units.
    pub async fn current(&mut self) -> Result<f64, String> {
        match self {
            #[cfg(feature = "opcua")]
            Writer::Opcua(w) => w.current().await,
            #[cfg(feature = "modbus")]
            Writer::Modbus(w) => w.current().await,
            Writer::Mqtt(w) => w.current(),
        }
    }

    /// Writes `action.value`, never outside `bounds` (its rule's `[min,
    /// max]`) once the device's own grain is applied ([`raw_setpoint`]);
    /// once the device confirmed it, returns what it holds now, in
    /// setpoint units.
    pub async fn write(
        &mut self,
        action: &ControlAction,
        bounds: (f64, f64),
    ) -> Result<f64, String> {
        let Some(value) = action.value else {
            return Err("nothing to write".into());
        };
        match self {
            #[cfg(feature = "opcua")]
            Writer::Opcua(w) => w.write(value, bounds).await,
            #[cfg(feature = "modbus")]
            Writer::Modbus(w) => w.write(value, bounds).await,
            Writer::Mqtt(w) => {
                // The receiver takes the number as sent: in bounds already.
                let _ = bounds;
                w.write(value, action).await.map(|()| value)
            }
        }
    }
}

/// How finely a device holds a value.
#[cfg_attr(not(any(feature = "opcua", feature = "modbus")), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grain {
    /// Whole numbers (integer registers and variables).
    Whole,
    /// IEEE 754 single precision.
    Single,
    /// IEEE 754 double precision.
    Double,
}

/// The raw value to send a device for the setpoint `value`: `(value -
/// offset) / scale`, to the nearest the device holds. Where the device
/// would then hold something outside the rule's `[min, max]` (a register
/// of whole numbers turns a clamped 99.6 into 100; a single-precision 0.1
/// is a little above 0.1), the next value inward is taken instead: the
/// bounds are the plant's safety limits, so they hold after rounding too.
/// An error when no value the device holds lies within them. Returns the
/// raw value and what the device holds, in setpoint units.
#[cfg_attr(not(any(feature = "opcua", feature = "modbus")), allow(dead_code))]
pub(crate) fn raw_setpoint(
    value: f64,
    scale: f64,
    offset: f64,
    (min, max): (f64, f64),
    grain: Grain,
) -> Result<(f64, f64), String> {
    let nearest = |r: f64| match grain {
        Grain::Whole => r.round(),
        Grain::Single => f64::from(r as f32),
        Grain::Double => r,
    };
    let step = |r: f64, up: bool| match grain {
        Grain::Whole if up => r + 1.0,
        Grain::Whole => r - 1.0,
        Grain::Single if up => f64::from((r as f32).next_up()),
        Grain::Single => f64::from((r as f32).next_down()),
        Grain::Double if up => r.next_up(),
        Grain::Double => r.next_down(),
    };
    let mut raw = nearest((value - offset) / scale);
    // One step inward mends rounding to the nearest; a few more cover the
    // rounding of `raw * scale + offset` itself.
    for _ in 0..4 {
        let held = raw * scale + offset;
        if held >= min && held <= max {
            return Ok((raw, held));
        }
        if !held.is_finite() {
            break;
        }
        // Inward: a smaller raw value lowers what is held when the scale
        // is positive.
        raw = step(raw, (held < min) == (scale > 0.0));
    }
    Err(format!(
        "the output cannot hold {value} or anything near it within [{min}, {max}]"
    ))
}

/// Runs `f` with a timeout; the error says what timed out.
async fn within<T>(
    ms: u64,
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .map_err(|_| format!("{what} timed out after {ms} ms"))?
}

#[cfg(feature = "opcua")]
mod opcua_out {
    use std::path::PathBuf;
    use std::str::FromStr;
    use std::sync::Arc;

    use opcua::client::Session;
    use opcua::types::{
        AttributeId, DataValue, NodeId, NumericRange, ReadValueId, TimestampsToReturn, Variant,
        VariantScalarTypeId, WriteValue,
    };

    use super::{Grain, OpcuaOutput, raw_setpoint, within};
    use crate::AbortOnDrop;

    /// The whole number `raw` as a variant of integer type `t`, exactly,
    /// or `None` when `t` cannot hold it (or is no integer type). Not
    /// `Variant::cast`, which rounds a double by `trunc(v + 0.5)`: -18
    /// would go out as -17, one step past a limit of -18.
    pub(super) fn whole_variant(raw: f64, t: VariantScalarTypeId) -> Option<Variant> {
        fn fits<T: TryFrom<i128>>(raw: f64) -> Option<T> {
            // Whole and within ±2^100: exact as an i128.
            (raw.fract() == 0.0 && raw.abs() < 1e30)
                .then(|| T::try_from(raw as i128).ok())
                .flatten()
        }
        Some(match t {
            VariantScalarTypeId::SByte => Variant::SByte(fits(raw)?),
            VariantScalarTypeId::Byte => Variant::Byte(fits(raw)?),
            VariantScalarTypeId::Int16 => Variant::Int16(fits(raw)?),
            VariantScalarTypeId::UInt16 => Variant::UInt16(fits(raw)?),
            VariantScalarTypeId::Int32 => Variant::Int32(fits(raw)?),
            VariantScalarTypeId::UInt32 => Variant::UInt32(fits(raw)?),
            VariantScalarTypeId::Int64 => Variant::Int64(fits(raw)?),
            VariantScalarTypeId::UInt64 => Variant::UInt64(fits(raw)?),
            VariantScalarTypeId::Boolean if raw == 0.0 || raw == 1.0 => {
                Variant::Boolean(raw == 1.0)
            }
            _ => return None,
        })
    }

    pub struct OpcuaWriter {
        config: OpcuaOutput,
        node: NodeId,
        session: Arc<Session>,
        /// The variable's type, learnt from the first read.
        scalar: Option<VariantScalarTypeId>,
        _events: AbortOnDrop,
    }

    impl OpcuaWriter {
        pub fn new(config: &OpcuaOutput, pki: PathBuf) -> Result<Self, String> {
            let node = NodeId::from_str(&config.node)
                .map_err(|_| format!("{:?} is not a node id", config.node))?;
            let (session, event_loop) = crate::sources::opcua::connect(&config.endpoint, pki)?;
            let name = config.name.clone();
            let events = tokio::spawn(async move {
                use futures_util::StreamExt;
                let events = event_loop.enter();
                tokio::pin!(events);
                while let Some(e) = events.next().await {
                    if let Err(code) = e {
                        tracing::error!(output = %name, "opcua session ended: {code}");
                        return;
                    }
                }
            });
            Ok(OpcuaWriter {
                config: config.clone(),
                node,
                session,
                scalar: None,
                _events: AbortOnDrop(events),
            })
        }

        async fn connected(&self) -> Result<(), String> {
            if self.session.wait_for_connection().await {
                Ok(())
            } else {
                Err("opcua session gave up connecting".into())
            }
        }

        pub async fn current(&mut self) -> Result<f64, String> {
            let ms = self.config.timeout_ms;
            within(ms, "opcua read", async {
                self.connected().await?;
                let read = ReadValueId {
                    node_id: self.node.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                };
                let values = self
                    .session
                    .read(&[read], TimestampsToReturn::Neither, 0.0)
                    .await
                    .map_err(|e| format!("opcua read {}: {e}", self.config.node))?;
                let value = values
                    .into_iter()
                    .next()
                    .and_then(|v| v.value)
                    .ok_or_else(|| format!("opcua read {}: no value", self.config.node))?;
                self.scalar = value.scalar_type_id();
                let raw = value
                    .as_f64()
                    .ok_or_else(|| format!("opcua {} does not hold a number", self.config.node))?;
                Ok(raw * self.config.scale + self.config.offset)
            })
            .await
        }

        pub async fn write(&mut self, value: f64, bounds: (f64, f64)) -> Result<f64, String> {
            if self.scalar.is_none() {
                self.current().await?;
            }
            let grain = match self.scalar {
                Some(VariantScalarTypeId::Double) | None => Grain::Double,
                Some(VariantScalarTypeId::Float) => Grain::Single,
                Some(_) => Grain::Whole,
            };
            let c = &self.config;
            let (raw, held) = raw_setpoint(value, c.scale, c.offset, bounds, grain)?;
            let variant = match self.scalar {
                Some(VariantScalarTypeId::Double) | None => Variant::Double(raw),
                Some(VariantScalarTypeId::Float) => Variant::Float(raw as f32),
                Some(t) => whole_variant(raw, t)
                    .ok_or_else(|| format!("{raw} cannot be written as {t:?}"))?,
            };
            let ms = self.config.timeout_ms;
            within(ms, "opcua write", async {
                self.connected().await?;
                let write = WriteValue {
                    node_id: self.node.clone(),
                    attribute_id: AttributeId::Value as u32,
                    index_range: NumericRange::None,
                    value: DataValue::value_only(variant),
                };
                let status = self
                    .session
                    .write(&[write])
                    .await
                    .map_err(|e| format!("opcua write {}: {e}", self.config.node))?;
                match status.first() {
                    Some(s) if s.is_good() => Ok(held),
                    Some(s) => Err(format!("opcua write {}: {s}", self.config.node)),
                    None => Err(format!("opcua write {}: no status", self.config.node)),
                }
            })
            .await
        }
    }
}

#[cfg(feature = "modbus")]
mod modbus_out {
    use tokio_modbus::client::{Context, Reader, Writer as _};
    use tokio_modbus::prelude::{Slave, tcp};

    use super::{Grain, ModbusOutput, raw_setpoint, within};
    use crate::sources::modbus::DataType;

    pub struct ModbusWriter {
        config: ModbusOutput,
        ctx: Option<Context>,
    }

    impl ModbusWriter {
        pub fn new(config: &ModbusOutput) -> Self {
            ModbusWriter {
                config: config.clone(),
                ctx: None,
            }
        }

        async fn client(&mut self) -> Result<&mut Context, String> {
            if self.ctx.is_none() {
                let addr = tokio::net::lookup_host(&self.config.address)
                    .await
                    .map_err(|e| format!("modbus {}: {e}", self.config.address))?
                    .next()
                    .ok_or_else(|| {
                        format!("modbus {}: resolves to nothing", self.config.address)
                    })?;
                let c = tcp::connect_slave(addr, Slave(self.config.unit_id))
                    .await
                    .map_err(|e| format!("modbus connect {}: {e}", self.config.address))?;
                self.ctx = Some(c);
            }
            Ok(self.ctx.as_mut().expect("just set"))
        }

        /// Runs one request; a failed connection is dropped so the next
        /// request reconnects.
        async fn request(&mut self, op: Op) -> Result<Vec<u16>, String> {
            let ms = self.config.timeout_ms;
            let register = self.config.register;
            let n = self.config.data_type.registers();
            let what = match op {
                Op::Read => "modbus read",
                Op::Write(_) => "modbus write",
            };
            let result = within(ms, what, async {
                let ctx = self.client().await?;
                let answer = match op {
                    Op::Read => ctx.read_holding_registers(register, n).await,
                    // A single register goes with function 6, which every
                    // device supports; wide values with function 16.
                    Op::Write(words) => match words[..] {
                        [w] => ctx.write_single_register(register, w).await,
                        _ => ctx.write_multiple_registers(register, &words).await,
                    }
                    .map(|r| r.map(|()| Vec::new())),
                };
                match answer {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(code)) => Err(format!("{what} {register}: exception {code:?}")),
                    Err(e) => Err(format!("{what} {register}: {e}")),
                }
            })
            .await;
            if result.is_err() {
                self.ctx = None;
            }
            result
        }

        pub async fn current(&mut self) -> Result<f64, String> {
            let words = self.request(Op::Read).await?;
            let c = &self.config;
            Ok(c.data_type.decode(&words, c.word_order, c.byte_swap) * c.scale + c.offset)
        }

        pub async fn write(&mut self, value: f64, bounds: (f64, f64)) -> Result<f64, String> {
            let c = &self.config;
            let grain = match c.data_type {
                DataType::F32 => Grain::Single,
                DataType::F64 => Grain::Double,
                _ => Grain::Whole,
            };
            let (raw, held) = raw_setpoint(value, c.scale, c.offset, bounds, grain)?;
            let words = c.data_type.encode(raw, c.word_order, c.byte_swap)?;
            self.request(Op::Write(words)).await.map(|_| held)
        }
    }

    /// One request to the unit.
    enum Op {
        Read,
        Write(Vec<u16>),
    }
}

mod mqtt_out {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use strata_proto::ControlAction;
    use tokio::sync::mpsc;

    use super::{MqttOutput, within};
    use crate::AbortOnDrop;

    pub struct MqttWriter {
        config: MqttOutput,
        link: Link,
        /// The last setpoint the receiver acknowledged, kept in `kept`.
        last: Option<f64>,
        kept: PathBuf,
    }

    /// One connection to the broker.
    struct Link {
        client: AsyncClient,
        acks: mpsc::UnboundedReceiver<()>,
        _events: AbortOnDrop,
    }

    impl Link {
        fn new(config: &MqttOutput) -> Link {
            let id = format!("strata-control-{}", config.name);
            let mut options =
                MqttOptions::new(id, config.broker.ip().to_string(), config.broker.port());
            options.set_keep_alive(Duration::from_secs(15));
            let (client, mut events) = AsyncClient::new(options, 16);
            let (tx, acks) = mpsc::unbounded_channel();
            let name = config.name.clone();
            let task = tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            let _ = tx.send(());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(output = %name, "mqtt output: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            });
            Link {
                client,
                acks,
                _events: AbortOnDrop(task),
            }
        }
    }

    impl MqttWriter {
        pub fn new(config: &MqttOutput, data_dir: &Path) -> Self {
            let kept = data_dir.join(format!("control-output-{}.last", config.name));
            let last = std::fs::read_to_string(&kept)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite());
            MqttWriter {
                config: config.clone(),
                link: Link::new(config),
                last,
                kept,
            }
        }

        /// The last acknowledged setpoint, else `initial`.
        pub fn current(&self) -> Result<f64, String> {
            self.last
                .or(self.config.initial)
                .ok_or_else(|| "an MQTT output cannot be read back and has no `initial`".into())
        }

        pub async fn write(&mut self, value: f64, action: &ControlAction) -> Result<(), String> {
            while self.link.acks.try_recv().is_ok() {}
            let payload = serde_json::json!({
                "setpoint": value,
                "rule": action.rule,
                "action": action.action,
                "ts_ns": action.ts_ns,
            });
            let topic = self.config.topic.clone();
            let link = &mut self.link;
            let result = within(self.config.timeout_ms, "mqtt publish", async {
                link.client
                    .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                    .await
                    .map_err(|e| format!("mqtt publish: {e}"))?;
                link.acks
                    .recv()
                    .await
                    .ok_or_else(|| "mqtt connection task ended".to_string())
            })
            .await;
            match &result {
                Ok(()) => {
                    self.last = Some(value);
                    if let Err(e) = keep(&self.kept, value) {
                        tracing::warn!(output = %self.config.name, "cannot keep the last setpoint: {e}");
                    }
                }
                // A new connection: what the old one still queued must
                // not go out later, in a burst, past the cooldown.
                Err(_) => self.link = Link::new(&self.config),
            }
            result
        }
    }

    /// Writes `value` to `path` whole (a new file renamed over the old).
    /// Synced before it takes the file's name, and the name synced: after
    /// a power loss the file holds this value or the one before, never
    /// nothing.
    fn keep(path: &Path, value: f64) -> std::io::Result<()> {
        crate::write_atomic(path, value.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "opcua")]
    #[test]
    fn opcua_integer_setpoints_go_out_exactly() {
        use opcua::types::{Variant, VariantScalarTypeId as T};
        let whole = opcua_out::whole_variant;
        // Negative values stay where they are (the library's cast moves
        // them a step towards zero).
        assert_eq!(whole(-18.0, T::Int16), Some(Variant::Int16(-18)));
        assert_eq!(whole(-1.0, T::Int32), Some(Variant::Int32(-1)));
        assert_eq!(whole(-128.0, T::SByte), Some(Variant::SByte(-128)));
        assert_eq!(whole(65_535.0, T::UInt16), Some(Variant::UInt16(65_535)));
        assert_eq!(
            whole(-9.0e15, T::Int64),
            Some(Variant::Int64(-9_000_000_000_000_000))
        );
        assert_eq!(whole(1.0, T::Boolean), Some(Variant::Boolean(true)));
        // Out of the type's range, not whole, or not an integer type.
        assert_eq!(whole(-129.0, T::SByte), None);
        assert_eq!(whole(-1.0, T::UInt32), None);
        assert_eq!(whole(70_000.0, T::Int16), None);
        assert_eq!(whole(2.5, T::Int32), None);
        assert_eq!(whole(f64::NAN, T::Int32), None);
        assert_eq!(whole(1e300, T::UInt64), None);
        assert_eq!(whole(2.0, T::Boolean), None);
        assert_eq!(whole(3.0, T::String), None);
    }

    #[test]
    fn a_setpoint_is_rounded_inward_where_the_nearest_would_leave_the_bounds() {
        let whole = |v: f64, scale: f64, bounds| raw_setpoint(v, scale, 0.0, bounds, Grain::Whole);
        // Clamped to a max of 99.6: the nearest whole number, 100, is past it.
        assert_eq!(whole(99.6, 1.0, (0.0, 99.6)), Ok((99.0, 99.0)));
        assert_eq!(whole(99.4, 1.0, (0.0, 99.6)), Ok((99.0, 99.0)));
        assert_eq!(whole(0.4, 1.0, (0.4, 10.0)), Ok((1.0, 1.0)));
        assert_eq!(whole(60.5, 1.0, (0.0, 60.5)), Ok((60.0, 60.0)));
        // A negative scale: a larger raw value holds a smaller setpoint.
        assert_eq!(whole(10.3, -0.5, (0.0, 10.3)), Ok((-20.0, 10.0)));
        assert_eq!(whole(0.1, -0.5, (0.1, 5.0)), Ok((-1.0, 0.5)));
        // An offset: raw = (value - offset) / scale.
        assert_eq!(
            raw_setpoint(21.96, 0.1, 20.0, (20.0, 21.96), Grain::Whole).map(|r| r.0),
            Ok(19.0)
        );
        // No whole number within.
        assert!(whole(0.5, 1.0, (0.2, 0.8)).is_err());
        assert!(whole(f64::NAN, 1.0, (0.0, f64::INFINITY)).is_err());
        // Single precision: 0.1 as an f32 is above 0.1.
        let (raw, held) = raw_setpoint(0.1, 1.0, 0.0, (0.0, 0.1), Grain::Single).unwrap();
        assert!(held <= 0.1 && raw == f64::from(raw as f32), "{raw}");
        assert_eq!(raw as f32, 0.1f32.next_down());
        // Double precision: the scale's own rounding.
        for (v, scale, offset) in [(0.3, 0.1, 0.1), (21.7, 0.01, -3.3), (1e-3, 3.0, 7.0)] {
            let (raw, held) = raw_setpoint(v, scale, offset, (f64::MIN, v), Grain::Double).unwrap();
            assert!(held <= v && raw * scale + offset == held);
            assert!(v - held < 1e-12, "{v} {held}");
        }
    }
    use std::io::BufRead as _;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A Mosquitto broker (Debian's) on `port`, anonymous clients allowed.
    fn mosquitto(dir: &Path, port: u16) -> Child {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser root\n"),
        )
        .unwrap();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary).arg("-c").arg(&conf).spawn().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn action() -> ControlAction {
        serde_json::from_value(serde_json::json!({
            "seq": 0, "ts_ns": 0, "rule": "cool", "output": "fan", "action": "cool-1",
            "outcome": "written", "reason": ""
        }))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_mqtt_output_keeps_its_last_setpoint_and_never_sends_a_failed_one_later() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = mosquitto(dir.path(), port);
        let config = MqttOutput {
            name: "fan".into(),
            broker: format!("127.0.0.1:{port}").parse().unwrap(),
            topic: "plant/fan/set".into(),
            initial: Some(20.0),
            timeout_ms: 500,
        };
        let mut w = mqtt_out::MqttWriter::new(&config, dir.path());
        assert_eq!(w.current(), Ok(20.0));
        w.write(30.0, &action()).await.unwrap();
        assert_eq!(w.current(), Ok(30.0));
        // After a restart the last acknowledged setpoint counts, not `initial`.
        drop(w);
        let mut w = mqtt_out::MqttWriter::new(&config, dir.path());
        assert_eq!(w.current(), Ok(30.0));

        // The broker goes away: the write fails, and the value stays 30.
        broker.kill().unwrap();
        broker.wait().unwrap();
        assert!(w.write(90.0, &action()).await.is_err());
        assert_eq!(w.current(), Ok(30.0));
        // Back: the failed setpoint is not delivered late; the next one is
        // the first the receiver sees.
        let mut broker = mosquitto(dir.path(), port);
        let mut sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "plant/#",
                "-C",
                "1",
                "-W",
                "20",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Room for the subscription to be made (an old connection still
        // around would be back within half a second, and resend).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let until = Instant::now() + Duration::from_secs(15);
        while w.write(35.0, &action()).await.is_err() {
            assert!(Instant::now() < until, "the output never reconnected");
        }
        let mut line = String::new();
        std::io::BufReader::new(sub.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let first: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(first["setpoint"], 35.0, "{line}");
        let _ = sub.wait();
        broker.kill().unwrap();
        broker.wait().unwrap();
    }
}
