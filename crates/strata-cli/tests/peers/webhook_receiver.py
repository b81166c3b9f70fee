"""A webhook receiver (Python's http.server and hmac, not ours) that checks
each delivery's signature the way a ticketing system would.

Usage: webhook_receiver.py PORT SECRET_FILE FAIL_FIRST OUT_FILE [CERT KEY]

The signature is HMAC-SHA256 over "{X-Strata-Timestamp}.{body}" with the
secret file's text, sent as "X-Strata-Signature: sha256=<hex>". The first
FAIL_FIRST requests are answered 503 (a receiver that is up but failing).
Every request is appended to OUT_FILE as one JSON line: delivery id, event, whether the
signature verified, the status answered, and the body. Valid deliveries are
answered 200 with {"id": "WO-<request number>"} (a work order, as a
maintenance system would create); bad signatures 401. Prints "ready" once listening.
With CERT and KEY (PEM files), it serves HTTPS with Python's ssl module.
"""
import hashlib
import hmac
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = int(sys.argv[1])
with open(sys.argv[2]) as f:
    SECRET = f.read().strip().encode()
FAIL_FIRST = int(sys.argv[3])
OUT_FILE = sys.argv[4]
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        seen += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ts = self.headers.get("X-Strata-Timestamp", "")
        expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, self.headers.get("X-Strata-Signature", ""))
        status = 503 if seen <= FAIL_FIRST else (200 if valid else 401)
        line = json.dumps({
            "delivery": self.headers.get("X-Strata-Delivery"),
            "event": self.headers.get("X-Strata-Event"),
            "valid": valid,
            "status": status,
            "body": json.loads(body or b"null"),
        })
        with open(OUT_FILE, "a") as out:
            out.write(line + "\n")
        answer = json.dumps({"id": "WO-%d" % seen}).encode() if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 6:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
