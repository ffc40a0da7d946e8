#!/usr/bin/env python3
"""Copies the .proto files that describe Envoy's discovery services and the resources Flotilla
serves from the `envoy-types` crate (the version in Cargo.lock) into edge/proto/vendor/, so that
edge/build.rs can compile them with protox into the descriptor set gRPC reflection serves; and
copies the crate's whole descriptor set (every Envoy v3 message, extensions included), gzipped,
to brain/src/raw_envoy/envoy-descriptors.bin.gz for the escape hatch (`envoy` blocks).

Run it after bumping envoy-types:  python3 scripts/vendor-envoy-protos.py
Only the import closure of ROOTS is copied; google/protobuf/* comes with protox itself.
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

# What reflection describes: the six discovery services and every resource type Flotilla sends.
ROOTS = [
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/listener/v3/lds.proto",
    "envoy/service/cluster/v3/cds.proto",
    "envoy/service/route/v3/rds.proto",
    "envoy/service/endpoint/v3/eds.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
]
# Where envoy-types keeps each upstream repository's protos.
SEARCH = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis", "cel-spec/proto",
          "client_model", "opentelemetry-proto"]
HERE = os.path.dirname(os.path.abspath(__file__))
DEST = os.path.join(HERE, "..", "edge", "proto", "vendor")
DESCRIPTORS = os.path.join(HERE, "..", "brain", "src", "raw_envoy", "envoy-descriptors.bin.gz")


def envoy_types_dir():
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=os.path.join(HERE, "..")))
    pkg = next(p for p in meta["packages"] if p["name"] == "envoy-types")
    return os.path.dirname(pkg["manifest_path"]), pkg["version"]


def main():
    src, version = envoy_types_dir()
    proto = os.path.join(src, "proto")
    found, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in found or name.startswith("google/protobuf/"):
            continue
        path = next((os.path.join(proto, r, name) for r in SEARCH
                     if os.path.exists(os.path.join(proto, r, name))), None)
        if path is None:
            sys.exit(f"{name}: not found under {proto}")
        found[name] = path
        text = open(path, encoding="utf-8").read()
        todo += re.findall(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)"', text, re.M)
    readme = open(os.path.join(DEST, "README.md"), encoding="utf-8").read()
    shutil.rmtree(DEST, ignore_errors=True)
    os.makedirs(DEST)
    with open(os.path.join(DEST, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)
    for name, path in sorted(found.items()):
        os.makedirs(os.path.join(DEST, os.path.dirname(name)), exist_ok=True)
        shutil.copyfile(path, os.path.join(DEST, name))
    with open(os.path.join(DEST, "VERSION"), "w", encoding="utf-8") as f:
        f.write(f"envoy-types {version}\n")
    print(f"copied {len(found)} files from envoy-types {version} into {os.path.relpath(DEST)}")
    with open(os.path.join(src, "src", "generated", "types.bin"), "rb") as f:
        packed = gzip.compress(f.read(), compresslevel=9, mtime=0)
    with open(DESCRIPTORS, "wb") as f:
        f.write(packed)
    print(f"wrote the descriptor set of envoy-types {version} to {os.path.relpath(DESCRIPTORS)}")


if __name__ == "__main__":
    main()
