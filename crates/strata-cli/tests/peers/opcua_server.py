"""An OPC UA server (asyncua, not ours) with variables that change.

Usage: opcua_server.py PORT

Namespace "urn:strata:test" (index 2) holds, under Objects/Line1:
  Temperature (Double)  20.0 + 0.25 * k
  Pressure    (Int32)   1000 + k
  Running     (Boolean) k % 2 == 0
  Steady      (Double)  7.5, written once (a subscription reports it once)
  Late        (Double)  2000 + k, added only 5 s after "ready" (a node a
                        client asks for too early is refused)
where k counts up every 50 ms from a start value given by the clock, so a
restarted server goes on with larger values. Prints "ready" once listening.
"""
import asyncio
import logging
import sys
import time

from asyncua import Server, ua


async def main(port: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/strata/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:strata:test")
    line = await server.nodes.objects.add_object(ua.NodeId("Line1", idx), "Line1")
    temperature = await line.add_variable(ua.NodeId("Line1.Temperature", idx), "Temperature", 0.0, ua.VariantType.Double)
    pressure = await line.add_variable(ua.NodeId("Line1.Pressure", idx), "Pressure", 0, ua.VariantType.Int32)
    running = await line.add_variable(ua.NodeId("Line1.Running", idx), "Running", False, ua.VariantType.Boolean)
    await line.add_variable(ua.NodeId("Line1.Steady", idx), "Steady", 7.5, ua.VariantType.Double)
    async with server:
        print("ready", flush=True)
        started = time.monotonic()
        late = None
        k = int(time.time() * 20) % 100000
        while True:
            await temperature.write_value(20.0 + 0.25 * k, ua.VariantType.Double)
            await pressure.write_value(1000 + k, ua.VariantType.Int32)
            await running.write_value(k % 2 == 0, ua.VariantType.Boolean)
            if late is None and time.monotonic() - started >= 5.0:
                late = await line.add_variable(ua.NodeId("Line1.Late", idx), "Late", 0.0, ua.VariantType.Double)
            if late is not None:
                await late.write_value(2000.0 + k, ua.VariantType.Double)
            k += 1
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
