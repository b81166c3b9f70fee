"""A plant for closed-loop tests: an OPC UA server (asyncua) and a Modbus
TCP server (pymodbus), neither ours, that log every setpoint written.

Usage: control_plant.py UA_PORT MODBUS_PORT TEMPERATURE_FILE LOG_FILE

OPC UA, namespace "urn:strata:test" (index 2), under Objects/Line1:
  Temperature (Double)  the number in TEMPERATURE_FILE (20 without one),
                        plus 0.001 every other 100 ms so it keeps changing
  FanSetpoint (Double)  writable, starts at 20
Modbus unit 1, holding registers (0-based, uint16), all writable:
  10 load, starts at 10;  11 spare, starts at 0;  12 valve, starts at 0

Every write is appended to LOG_FILE as a JSON line:
  {"t": seconds, "output": "fan" | "modbus", "address": a, "value": v}
(OPC UA writes are seen by polling the variable every 10 ms; Modbus writes
as the server receives them.) Prints "ready" once both listen.
"""
import asyncio
import json
import logging
import sys
import time

from asyncua import Server, ua
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer


def log(path: str, **entry) -> None:
    entry["t"] = time.time()
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def log_modbus_writes(path: str) -> None:
    """Logs each register write the server carries out. pymodbus (3.16)
    serves every request through its SimCore, so the hook goes there."""
    from pymodbus.simulator import simcore

    original = simcore.SimCore.async_setValues

    async def logged(self, device_id, func_code, address, values):
        result = await original(self, device_id, func_code, address, values)
        if result is None:
            for i, v in enumerate(values):
                log(path, output="modbus", address=address + i, value=v)
        return result

    simcore.SimCore.async_setValues = logged


async def main(ua_port: int, mb_port: int, temperature_file: str, log_file: str) -> None:
    logging.basicConfig(level=logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{ua_port}/strata/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:strata:test")
    line = await server.nodes.objects.add_object(ua.NodeId("Line1", idx), "Line1")
    temperature = await line.add_variable(ua.NodeId("Line1.Temperature", idx), "Temperature", 20.0, ua.VariantType.Double)
    fan = await line.add_variable(ua.NodeId("Line1.FanSetpoint", idx), "FanSetpoint", 20.0, ua.VariantType.Double)
    await fan.set_writable()

    holding = [0] * 100
    holding[10] = 10
    block = ModbusSequentialDataBlock(1, holding)
    context = ModbusServerContext(devices={1: ModbusDeviceContext(hr=block)}, single=False)
    log_modbus_writes(log_file)
    modbus = asyncio.create_task(StartAsyncTcpServer(context=context, address=("127.0.0.1", mb_port)))

    async with server:
        await asyncio.sleep(0.3)
        print("ready", flush=True)
        k = 0
        last_fan = 20.0
        while True:
            if k % 10 == 0:
                try:
                    base = float(open(temperature_file).read().strip())
                except (OSError, ValueError):
                    base = 20.0
                await temperature.write_value(base + 0.001 * ((k // 10) % 2), ua.VariantType.Double)
            value = await fan.read_value()
            if value != last_fan:
                log(log_file, output="fan", address=0, value=value)
                last_fan = value
            k += 1
            await asyncio.sleep(0.01)
    modbus.cancel()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
