//! The Modbus TCP source: polls holding and input registers of one unit,
//! decodes 16/32/64-bit integers and floats in any word and byte order,
//! scales them, and reconnects with jittered backoff when the peer goes.

mod decode;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use strata_proto::Quality;

pub use decode::{DataType, WordOrder};

use super::frame::{FrameBuilder, FrameSender, SourceStats};

/// Configuration of a Modbus TCP source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Stream name its readings are sent under.
    pub stream: String,
    /// The server, `host:port`.
    pub address: String,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Poll every this many milliseconds.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Send what was polled every this many milliseconds.
    #[serde(default = "default_batch")]
    pub batch_ms: u64,
    /// A request not answered within this many milliseconds fails.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The registers to read, one signal each.
    pub registers: Vec<RegisterConfig>,
}

/// One signal read from one or more consecutive registers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Signal name.
    pub name: String,
    /// Unit of the scaled value.
    #[serde(default)]
    pub unit: String,
    /// Holding (function 3) or input (function 4) registers.
    pub kind: RegisterKind,
    /// Address of the first register (0-based, as on the wire).
    pub address: u16,
    /// How the registers encode the value.
    #[serde(default)]
    pub data_type: DataType,
    /// Which register holds the most significant word of a wide value.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Swap the two bytes inside every register.
    #[serde(default)]
    pub byte_swap: bool,
    /// The reading is `raw * scale + offset`.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
}

/// The Modbus register tables this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Read/write registers, function code 3.
    Holding,
    /// Read-only registers, function code 4.
    Input,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> u64 {
    1000
}
fn default_batch() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    2000
}
fn one() -> f64 {
    1.0
}

/// The most registers one read request may ask for (Modbus spec).
const MAX_READ: u16 = 125;
/// Registers between two wanted ones that may be read needlessly so that
/// one request covers both.
const MAX_GAP: u16 = 8;

/// One read request covering the registers of several signals.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    kind: RegisterKind,
    start: u16,
    count: u16,
    /// (signal index, offset of its first register within this read).
    signals: Vec<(usize, u16)>,
}

impl Read {
    /// One read per signal, covering its own registers only: for a unit
    /// that refuses a read spanning addresses it does not define.
    fn split(&self, config: &ModbusConfig) -> Vec<Read> {
        self.signals
            .iter()
            .map(|&(index, offset)| Read {
                kind: self.kind,
                start: self.start + offset,
                count: config.registers[index].data_type.registers(),
                signals: vec![(index, 0)],
            })
            .collect()
    }
}

impl ModbusConfig {
    /// Checks the configuration; the message names the register.
    pub fn validate(&self) -> Result<(), String> {
        if self.registers.is_empty() {
            return Err(format!("modbus source {:?}: no registers", self.stream));
        }
        if self.poll_ms == 0 || self.batch_ms == 0 || self.timeout_ms == 0 {
            return Err(format!(
                "modbus source {:?}: poll_ms, batch_ms and timeout_ms must be > 0",
                self.stream
            ));
        }
        for (i, r) in self.registers.iter().enumerate() {
            // Two signals of one name: the hub drops the whole batch, and
            // a pipeline takes the second reading as late.
            if self.registers[..i].iter().any(|o| o.name == r.name) {
                return Err(format!(
                    "modbus source {:?}: two registers are named {:?}",
                    self.stream, r.name
                ));
            }
            if u32::from(r.address) + u32::from(r.data_type.registers()) > 65536 {
                return Err(format!(
                    "modbus source {:?}: registers[{i}] ({}) runs past address 65535",
                    self.stream, r.name
                ));
            }
            if !r.scale.is_finite() || !r.offset.is_finite() {
                return Err(format!(
                    "modbus source {:?}: registers[{i}] ({}) scale and offset must be finite",
                    self.stream, r.name
                ));
            }
        }
        Ok(())
    }

    /// Checks the register names the hub would refuse (it drops a whole
    /// batch for one): for a source whose names go to the hub as they are,
    /// with no pipeline to rename them.
    pub fn check_names_for_the_hub(&self) -> Result<(), String> {
        match self
            .registers
            .iter()
            .find(|r| !strata_proto::validate::valid_name(&r.name))
        {
            Some(r) => Err(format!(
                "modbus source {:?}: register name {:?} must be 1 to 128 of A-Z a-z 0-9 _ . : - \
                 (or renamed by a [pipeline])",
                self.stream, r.name
            )),
            None => Ok(()),
        }
    }

    /// Groups the registers into as few read requests as the spec allows.
    fn plan(&self) -> Vec<Read> {
        let mut wanted: Vec<(RegisterKind, u16, u16, usize)> = self
            .registers
            .iter()
            .enumerate()
            .map(|(i, r)| (r.kind, r.address, r.data_type.registers(), i))
            .collect();
        wanted.sort();
        let mut reads: Vec<Read> = Vec::new();
        for (kind, address, len, index) in wanted {
            let end = u32::from(address) + u32::from(len);
            if let Some(last) = reads.last_mut() {
                let last_end = u32::from(last.start) + u32::from(last.count);
                let fits = last.kind == kind
                    && u32::from(address) <= last_end + u32::from(MAX_GAP)
                    && end.max(last_end) - u32::from(last.start) <= u32::from(MAX_READ);
                if fits {
                    last.count = (end.max(last_end) - u32::from(last.start)) as u16;
                    last.signals.push((index, address - last.start));
                    continue;
                }
            }
            reads.push(Read {
                kind,
                start: address,
                count: len,
                signals: vec![(index, 0)],
            });
        }
        reads
    }
}

/// Runs the source until the task is dropped.
pub async fn run(config: ModbusConfig, frames: FrameSender, stats: Arc<SourceStats>) {
    use tokio_modbus::client::{Context, Reader};
    use tokio_modbus::prelude::{Slave, tcp};

    let mut reads = config.plan();
    let mut builder = FrameBuilder::new(
        &config.stream,
        config
            .registers
            .iter()
            .map(|r| (r.name.clone(), r.unit.clone())),
    );
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut backoff =
        crate::uplink::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut poll = tokio::time::interval(Duration::from_millis(config.poll_ms));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flush = tokio::time::interval(Duration::from_millis(config.batch_ms));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctx: Option<Context> = None;
    let mut buf: Vec<u16> = Vec::new();
    // Reads whose exception was logged: counted every poll, logged once.
    let mut exceptions_logged = std::collections::BTreeSet::new();
    // The reads that went unanswered at the last poll while others were
    // answered.
    let mut unanswered_before: Vec<Read> = Vec::new();
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if !builder.send(&frames).await {
                    return;
                }
                continue;
            }
            _ = poll.tick() => {}
        }
        let client = match &mut ctx {
            Some(c) => c,
            None => {
                let connected = async {
                    let addr = tokio::net::lookup_host(&config.address)
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
                    tcp::connect_slave(addr, Slave(config.unit_id)).await
                };
                match tokio::time::timeout(timeout, connected).await {
                    Ok(Ok(c)) => {
                        // The backoff starts again after a read, not here: a
                        // unit that takes connections and closes them at
                        // once (its connection table full) is not hammered.
                        stats.set_connected(true);
                        tracing::info!(stream = %config.stream, address = %config.address, "modbus connected");
                        ctx.insert(c)
                    }
                    Ok(Err(e)) => {
                        retry_later(&config, &stats, &mut backoff, format!("connect: {e}")).await;
                        continue;
                    }
                    Err(_) => {
                        retry_later(&config, &stats, &mut backoff, "connect timed out".into())
                            .await;
                        continue;
                    }
                }
            }
        };
        let ts = crate::now_ns();
        let mut failed = None;
        let mut refused = Vec::new();
        // Reads that got no answer in time, and whether the unit answered
        // any other: many units stay silent on a read that spans registers
        // they do not define, where others answer with an exception.
        let mut timed_out: Vec<usize> = Vec::new();
        let mut answered = false;
        for (i, read) in reads.iter().enumerate() {
            let answer = tokio::time::timeout(timeout, async {
                match read.kind {
                    RegisterKind::Holding => {
                        client.read_holding_registers(read.start, read.count).await
                    }
                    RegisterKind::Input => {
                        client.read_input_registers(read.start, read.count).await
                    }
                }
            })
            .await;
            match answer {
                Ok(Ok(Ok(words))) => {
                    answered = true;
                    buf.clear();
                    buf.extend_from_slice(&words);
                    for &(index, offset) in &read.signals {
                        let r = &config.registers[index];
                        let n = usize::from(r.data_type.registers());
                        let at = usize::from(offset);
                        let Some(words) = buf.get(at..at + n) else {
                            stats.error();
                            continue;
                        };
                        let raw = r.data_type.decode(words, r.word_order, r.byte_swap);
                        let value = raw * r.scale + r.offset;
                        if value.is_finite() {
                            builder.push(index, ts, value, Quality::Good);
                            stats.readings.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // A float register holding NaN: counted, not sent.
                            stats.error();
                        }
                    }
                }
                Ok(Ok(Err(exception))) => {
                    // The unit refused this read (e.g. illegal address); the
                    // other reads still go on. One that spans several
                    // signals refused for its addresses (the registers
                    // between them, which a unit may not define) is split,
                    // from the next poll on; a busy unit or gateway is not.
                    answered = true;
                    stats.error();
                    let addresses = matches!(
                        exception,
                        tokio_modbus::ExceptionCode::IllegalDataAddress
                            | tokio_modbus::ExceptionCode::IllegalDataValue
                    );
                    if addresses && read.signals.len() > 1 {
                        refused.push(i);
                        tracing::warn!(stream = %config.stream, start = read.start, count = read.count, "modbus exception: {exception}; reading these registers signal by signal from now on");
                    } else if exceptions_logged.insert((read.kind, read.start, read.count)) {
                        tracing::warn!(stream = %config.stream, start = read.start, "modbus exception: {exception} (counted; logged once per read)");
                    }
                }
                Ok(Err(e)) => {
                    failed = Some(e.to_string());
                    break;
                }
                // The others are still asked: only if none is answered is
                // the unit (or the link) taken to be gone.
                Err(_) => timed_out.push(i),
            }
        }
        let mut unanswered = Vec::new();
        if failed.is_none() && !timed_out.is_empty() {
            if answered {
                // The unit answers, but not these: each spanning several
                // signals and unanswered at two polls in a row is split,
                // from the next poll on (one late answer is not enough).
                for &i in &timed_out {
                    stats.error();
                    let read = &reads[i];
                    if read.signals.len() > 1 && unanswered_before.contains(read) {
                        refused.push(i);
                        tracing::warn!(stream = %config.stream, start = read.start, count = read.count, "modbus read unanswered while others are answered; reading these registers signal by signal from now on");
                    }
                    unanswered.push(read.clone());
                }
            } else {
                failed = Some("request timed out".into());
            }
        }
        unanswered_before = unanswered;
        if !refused.is_empty() {
            reads = reads
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    if refused.contains(&i) {
                        r.split(&config)
                    } else {
                        vec![r.clone()]
                    }
                })
                .collect();
        }
        match failed {
            Some(reason) => {
                ctx = None;
                stats.set_connected(false);
                retry_later(&config, &stats, &mut backoff, reason).await;
            }
            None => backoff.reset(),
        }
    }
}

async fn retry_later(
    config: &ModbusConfig,
    stats: &SourceStats,
    backoff: &mut crate::uplink::Backoff,
    reason: String,
) {
    stats.error();
    let delay = backoff.next_delay();
    tracing::warn!(stream = %config.stream, address = %config.address, "modbus: {reason}; retrying in {delay:?}");
    tokio::time::sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(
        name: &str,
        kind: RegisterKind,
        address: u16,
        data_type: DataType,
    ) -> RegisterConfig {
        RegisterConfig {
            name: name.into(),
            unit: String::new(),
            kind,
            address,
            data_type,
            word_order: WordOrder::Big,
            byte_swap: false,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// A Modbus TCP unit that answers reads of holding registers all
    /// within `defined` (each register holding its address + 1) and stays
    /// silent on any other, as many meters do.
    async fn silent_unit(listener: tokio::net::TcpListener, defined: &'static [u16]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 12];
                while socket.read_exact(&mut request).await.is_ok() {
                    let start = u16::from_be_bytes([request[8], request[9]]);
                    let count = u16::from_be_bytes([request[10], request[11]]);
                    if !(start..start + count).all(|a| defined.contains(&a)) {
                        continue;
                    }
                    let mut answer = request[..4].to_vec();
                    answer.extend_from_slice(&(3 + 2 * count).to_be_bytes());
                    answer.extend_from_slice(&[request[6], request[7], (2 * count) as u8]);
                    for a in start..start + count {
                        answer.extend_from_slice(&(a + 1).to_be_bytes());
                    }
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_the_unit_leaves_unanswered_is_split_and_the_others_go_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(silent_unit(listener, &[0, 5, 20, 25, 100]));
        // a and b share one read of 0..6, d and e the next, of 20..26,
        // which the unit leaves unanswered (it does not define what lies
        // between them); c is a read of its own.
        let config = ModbusConfig {
            stream: "meter".into(),
            address,
            unit_id: 1,
            poll_ms: 50,
            batch_ms: 50,
            timeout_ms: 300,
            registers: vec![
                register("a", RegisterKind::Holding, 0, DataType::U16),
                register("b", RegisterKind::Holding, 5, DataType::U16),
                register("c", RegisterKind::Holding, 100, DataType::U16),
                register("d", RegisterKind::Holding, 20, DataType::U16),
                register("e", RegisterKind::Holding, 25, DataType::U16),
            ],
        };
        assert_eq!(config.plan().len(), 3);
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let stats = Arc::new(SourceStats::default());
        let task = tokio::spawn(run(config, tx, stats.clone()));
        let mut seen = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 5 {
            let frame = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("readings of every signal within 20 s")
                .expect("the source runs");
            for s in frame.signals.iter().filter(|s| !s.values.is_empty()) {
                seen.insert(s.name.clone(), s.values[0]);
            }
        }
        task.abort();
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [
                ("a".into(), 1.0),
                ("b".into(), 6.0),
                ("c".into(), 101.0),
                ("d".into(), 21.0),
                ("e".into(), 26.0)
            ]
        );
        assert!(stats.errors.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn neighbouring_registers_share_one_read_and_kinds_never_mix() {
        let config = ModbusConfig {
            stream: "plc".into(),
            address: "127.0.0.1:502".into(),
            unit_id: 1,
            poll_ms: 100,
            batch_ms: 1000,
            timeout_ms: 1000,
            registers: vec![
                register("a", RegisterKind::Holding, 8, DataType::F32),
                register("b", RegisterKind::Holding, 0, DataType::U16),
                register("c", RegisterKind::Input, 0, DataType::I16),
                register("d", RegisterKind::Holding, 200, DataType::U64),
                register("e", RegisterKind::Holding, 10, DataType::I32),
            ],
        };
        config.validate().unwrap();
        let plan = config.plan();
        assert_eq!(
            plan,
            vec![
                Read {
                    kind: RegisterKind::Holding,
                    start: 0,
                    count: 12,
                    signals: vec![(1, 0), (0, 8), (4, 10)]
                },
                Read {
                    kind: RegisterKind::Holding,
                    start: 200,
                    count: 4,
                    signals: vec![(3, 0)]
                },
                Read {
                    kind: RegisterKind::Input,
                    start: 0,
                    count: 1,
                    signals: vec![(2, 0)]
                },
            ]
        );
        // Names the hub would drop a whole batch for are refused here.
        let mut twice = config.clone();
        twice.registers[1].name = "a".into();
        let e = twice.validate().unwrap_err();
        assert!(e.contains("two registers are named \"a\""), "{e}");
        let mut spaced = config.clone();
        spaced.registers[0].name = "Motor Temp".into();
        spaced.validate().unwrap();
        let e = spaced.check_names_for_the_hub().unwrap_err();
        assert!(e.contains("\"Motor Temp\""), "{e}");
        config.check_names_for_the_hub().unwrap();
    }

    #[test]
    fn a_refused_read_splits_into_one_per_signal() {
        let config = ModbusConfig {
            stream: "plc".into(),
            address: "x:1".into(),
            unit_id: 1,
            poll_ms: 1,
            batch_ms: 1,
            timeout_ms: 1,
            registers: vec![
                register("a", RegisterKind::Holding, 8, DataType::F32),
                register("b", RegisterKind::Holding, 0, DataType::U16),
            ],
        };
        let plan = config.plan();
        assert_eq!(plan.len(), 1);
        let one = |start, count, index| Read {
            kind: RegisterKind::Holding,
            start,
            count,
            signals: vec![(index, 0)],
        };
        assert_eq!(plan[0].split(&config), [one(0, 1, 1), one(8, 2, 0)]);
    }

    #[test]
    fn one_read_never_exceeds_125_registers() {
        let registers = (0..100)
            .map(|i| {
                register(
                    &format!("r{i}"),
                    RegisterKind::Holding,
                    i * 4,
                    DataType::F64,
                )
            })
            .collect();
        let config = ModbusConfig {
            stream: "plc".into(),
            address: "x:1".into(),
            unit_id: 1,
            poll_ms: 1,
            batch_ms: 1,
            timeout_ms: 1,
            registers,
        };
        let plan = config.plan();
        assert!(plan.iter().all(|r| r.count <= MAX_READ));
        assert_eq!(plan.iter().map(|r| r.signals.len()).sum::<usize>(), 100);
    }

    #[test]
    fn a_register_past_the_last_address_is_refused() {
        let config = ModbusConfig {
            stream: "plc".into(),
            address: "x:1".into(),
            unit_id: 1,
            poll_ms: 1,
            batch_ms: 1,
            timeout_ms: 1,
            registers: vec![register("late", RegisterKind::Input, 65535, DataType::F32)],
        };
        let e = config.validate().unwrap_err();
        assert!(e.contains("registers[0] (late)"), "{e}");
        let mut last = config.clone();
        last.registers[0].address = 65534;
        last.validate().unwrap();
    }
}
