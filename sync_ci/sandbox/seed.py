"""Deterministic fixture content for the sandbox's "live" root: blobs first, then the catalog."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from sync_ci import contract

if TYPE_CHECKING:
    from sync_ci.store import Store

UNICODE_NAME = "docs/résumé-東京.txt"


def _stream(label: str, size: int) -> bytes:
    """Return `size` pseudo-random but reproducible bytes derived from `label`."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _text(label: str, lines: int) -> bytes:
    return "".join(f"{label} line {n:04d}: the quick brown fox\n" for n in range(lines)).encode()


def seed_files(generation: int = 1) -> dict[str, bytes]:
    """Return the named files of the canonical root (a few bytes up to 200 KB, all distinct)."""
    manifest = {"name": "snappy-os", "generation": generation, "channel": "stable"}
    return {
        "VERSION": f"{generation}\n".encode(),
        "README.md": b"# snappy-os\n\nFixture content seeded by sync-ci's sandbox.\n",
        "manifest.json": json.dumps(manifest, sort_keys=True).encode(),
        "bin/snappy": b"\x7fELF" + _stream("bin/snappy", 200 * 1024 - 4),
        "lib/libsnap.so": _stream("lib/libsnap.so", 64 * 1024),
        "share/icons/logo.png": b"\x89PNG\r\n\x1a\n" + _stream("logo", 30 * 1024),
        "share/data/table.csv": "".join(f"{n},{n * n},{n % 7}\n" for n in range(1200)).encode(),
        "etc/snappy.conf": b"[sync]\ninterval = 6h\nroot = snappy-os/\n",
        "docs/guide.txt": _text("guide", 300),
        UNICODE_NAME: "Grüße aus Tōkyō — 東京からこんにちは\n".encode(),
        "var/lib/state.marker": b"ok\n",
        "share/fonts/mono.bin": _stream("mono", 17 * 1024 + 3),
    }


def seed_root(store: Store, root: str, generation: int = 1) -> contract.Catalog:
    """Write `root/objects/<sha256>` for every seed file, then `root/catalog.json`; return it."""
    catalog, blobs = contract.build_catalog(seed_files(generation), generation)
    for digest, data in sorted(blobs.items()):
        store.put(contract.object_key(root, digest), data)
    body = json.dumps(catalog.to_json(), sort_keys=True, ensure_ascii=False).encode()
    store.put(contract.catalog_key(root), body, content_type="application/json")
    return catalog
