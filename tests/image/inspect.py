#!/usr/bin/env python3
"""Checks `buildah inspect --type image` output and an OCI layout of the same image:

    inspect.py INSPECT_JSON OCI_DIR VERSION REVISION

Checks the user (65532:65532), the entrypoint and the OCI labels; prints
`USER UNCOMPRESSED_BYTES COMPRESSED_BYTES` (the layers' sizes as stored in the OCI layout:
gzip, what a registry serves, and uncompressed, from the image config's diff_ids' tar sizes).
"""

import gzip
import json
import sys
from pathlib import Path

info_path, oci, version, revision = sys.argv[1:5]
info = json.load(open(info_path))
config = info["OCIv1"]["config"]
labels = config.get("Labels") or {}
want = {
    "org.opencontainers.image.source": "https://github.com/herald-dev/herald",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.revision": revision,
    "org.opencontainers.image.licenses": "Apache-2.0",
}
bad = {k: {"expected": v, "actual": labels.get(k)} for k, v in want.items() if labels.get(k) != v}
if bad:
    sys.exit(f"OCI labels: {bad}")
if config.get("Entrypoint") != ["/usr/local/bin/herald"]:
    sys.exit(f"entrypoint: {config.get('Entrypoint')}")
user = config.get("User", "")
if user != "65532:65532":
    sys.exit(f"image user is {user!r}, expected 65532:65532")

blobs = Path(oci) / "blobs" / "sha256"
index = json.load(open(Path(oci) / "index.json"))
manifest = json.load(open(blobs / index["manifests"][0]["digest"].split(":")[1]))
compressed = uncompressed = 0
for layer in manifest["layers"]:
    compressed += layer["size"]
    path = blobs / layer["digest"].split(":")[1]
    with (gzip.open(path) if "gzip" in layer["mediaType"] else open(path, "rb")) as f:
        while chunk := f.read(1 << 20):
            uncompressed += len(chunk)
print(user, uncompressed, compressed)
