"""A Modbus TCP server (pymodbus, not ours) with known register contents.

Usage: modbus_server.py PORT

Unit 1, holding registers (0-based addresses):
  0      int16  -1234
  1..2   float32 12.5, big word order (ABCD)
  3..4   float32 -3.25, little word order (CDAB)
  5..6   uint32 70000, little word order
  7      uint16 counter, +1 every 50 ms
  20..23 float64 -1234.5, big word order
Input registers:
  0      uint16 500
Unit 2 defines holding registers 0 (42) and 5 (7) only (a sparse block,
addressed as on the wire), and refuses any read that touches another
address.
Prints "ready" once listening.
"""
import asyncio
import logging
import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSparseDataBlock,
)
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import StartAsyncTcpServer


def words(fmt: str, value, little_word_order: bool = False) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    w = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return list(reversed(w)) if little_word_order else w


async def main(port: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    holding = [0] * 100
    holding[0] = -1234 & 0xFFFF
    holding[1:3] = words("f", 12.5)
    holding[3:5] = words("f", -3.25, little_word_order=True)
    holding[5:7] = words("I", 70000, little_word_order=True)
    holding[20:24] = words("d", -1234.5)
    inputs = [0] * 100
    inputs[0] = 500
    # pymodbus data blocks are addressed from 1 on the block, 0 on the wire.
    hr = ModbusSequentialDataBlock(1, holding)
    ir = ModbusSequentialDataBlock(1, inputs)
    device = ModbusDeviceContext(hr=hr, ir=ir)
    sparse = ModbusDeviceContext(hr=ModbusSparseDataBlock({0: 42, 5: 7}))
    context = ModbusServerContext(devices={1: device, 2: sparse}, single=False)

    async def count() -> None:
        # The counter changes the way a PLC's would for an outside reader:
        # written over Modbus by a second client (pymodbus's own).
        await asyncio.sleep(0.2)
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        print("ready", flush=True)
        n = 0
        while True:
            n = (n + 1) & 0xFFFF
            await client.write_register(7, n, device_id=1)
            await asyncio.sleep(0.05)

    counter = asyncio.create_task(count())
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))
    counter.cancel()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
