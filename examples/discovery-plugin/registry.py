#!/usr/bin/env python3
"""An example Flotilla discovery plugin: a tiny self-registration registry.

Instances register themselves with a time to live and renew it by registering again; an
instance whose TTL runs out is marked unhealthy, and removed after three TTLs. Flotilla reads it
through the plugin watch protocol (docs/discovery.md, "Writing a plugin"):

    GET /v1/services?index=N&wait=30s
        -> 200 {"index": M, "services": [{"name", "namespace", "endpoints": [...]}]}
           as soon as the registry's index M is greater than N, or when `wait` runs out.

Registration API of this example (not part of the protocol):

    PUT    /register    {"service", "namespace"?, "address", "port", "ttl"?, "labels"?, "zone"?}
    DELETE /register    {"service", "namespace"?, "address", "port"}
    POST   /drain       {"service", "namespace"?, "address", "port"}   (health: draining)

Run: python3 registry.py --port 9500   then   flotilla-brain --discovery-plugin reg=http://127.0.0.1:9500
Python 3.9+, standard library only.
"""

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

state = {"index": 1, "instances": {}}
changed = threading.Condition()


def bump():
    """Call with `changed` held: a new index wakes every waiting poll."""
    state["index"] += 1
    changed.notify_all()


def key(body):
    return (body.get("namespace", "default"), body["service"], body["address"], int(body["port"]))


def snapshot():
    services = {}
    now = time.monotonic()
    for (ns, name, address, port), inst in sorted(state["instances"].items()):
        endpoint = {"address": address, "port": port, "health": inst["health"]}
        if now > inst["expires"]:
            endpoint["health"] = "unhealthy"
        if inst.get("labels"):
            endpoint["labels"] = inst["labels"]
        if inst.get("zone"):
            endpoint["zone"] = inst["zone"]
        services.setdefault((ns, name), []).append(endpoint)
    return [{"name": n, "namespace": ns, "endpoints": eps} for (ns, n), eps in services.items()]


def expire_loop():
    """Marks instances past their TTL (the snapshot shows them unhealthy), removes them after 3 TTLs."""
    was_expired = set()
    while True:
        time.sleep(0.2)
        with changed:
            now = time.monotonic()
            expired = {k for k, i in state["instances"].items() if now > i["expires"]}
            dead = [k for k, i in state["instances"].items() if now > i["expires"] + 2 * i["ttl"]]
            for k in dead:
                del state["instances"][k]
            if dead or expired != was_expired:
                bump()
            was_expired = expired


def parse_wait(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text or "30s")
    if not m:
        return 30.0
    n, unit = int(m.group(1)), m.group(2) or "s"
    return min(n / 1000 if unit == "ms" else n * 60 if unit == "m" else n, 300.0)


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/v1/services":
            return self.reply(404, {"error": f"no such path {url.path}"})
        q = parse_qs(url.query)
        try:
            index = int(q.get("index", ["0"])[0])
        except ValueError:
            return self.reply(400, {"error": "index must be a whole number"})
        deadline = time.monotonic() + parse_wait(q.get("wait", ["30s"])[0])
        with changed:
            while state["index"] <= index and time.monotonic() < deadline:
                changed.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self.reply(200, {"index": state["index"], "services": snapshot()})

    def body(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        for field in ("service", "address", "port"):
            if field not in body:
                raise ValueError(f"missing field {field!r}")
        return body

    def do_PUT(self):
        if self.path != "/register":
            return self.reply(404, {"error": f"no such path {self.path}"})
        try:
            body = self.body()
        except (ValueError, json.JSONDecodeError) as e:
            return self.reply(400, {"error": str(e)})
        ttl = float(body.get("ttl", 10))
        with changed:
            old = state["instances"].get(key(body))
            inst = {
                "health": old["health"] if old else "healthy",
                "ttl": ttl,
                "expires": time.monotonic() + ttl,
                "labels": body.get("labels") or {},
                "zone": body.get("zone"),
            }
            state["instances"][key(body)] = inst
            if old is None or {k: old[k] for k in ("labels", "zone")} != {k: inst[k] for k in ("labels", "zone")}:
                bump()
        self.reply(200, {"index": state["index"]})

    def do_DELETE(self):
        return self.change(lambda k: state["instances"].pop(k, None))

    def do_POST(self):
        if self.path != "/drain":
            return self.reply(404, {"error": f"no such path {self.path}"})
        return self.change(lambda k: state["instances"].get(k, {}).update(health="draining"), path="/drain")

    def change(self, apply, path="/register"):
        if self.path != path:
            return self.reply(404, {"error": f"no such path {self.path}"})
        try:
            body = self.body()
        except (ValueError, json.JSONDecodeError) as e:
            return self.reply(400, {"error": str(e)})
        with changed:
            apply(key(body))
            bump()
        self.reply(200, {"index": state["index"]})

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9500)
    args = p.parse_args()
    threading.Thread(target=expire_loop, daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"registry listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
