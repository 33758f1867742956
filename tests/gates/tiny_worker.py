"""A tiny stand-in Worker for gate tests: real sockets on 127.0.0.1, fixed latencies, injected faults.

Run: python tiny_worker.py --secret S [--latency-ms N] [--5xx-every N] [--wrong-install]
     [--wrong-push] [--region NAME:COLO:MISS_MS[:ANSWER]]...
--wrong-install answers /install with 200 and an error body; --wrong-push answers 201 without the
contract's {"key", "sha256"}.
Prints one JSON line {"url": ..., "regions": {name: url}} once every listener is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import secrets
import sys

from aiohttp import web


def make_app(
    args: argparse.Namespace, colo: str, miss_ms: float, answer_colo: str
) -> web.Application:
    seen: set[str] = set()
    counter = {"n": 0}

    def ray() -> dict[str, str]:
        return {"cf-ray": f"{secrets.token_hex(8)}-{answer_colo or colo}"}

    async def fault() -> web.Response | None:
        counter["n"] += 1
        if args.latency_ms:
            await asyncio.sleep(args.latency_ms / 1000)
        if args.every_5xx and counter["n"] % args.every_5xx == 0:
            return web.json_response({"error": "injected"}, status=503, headers=ray())
        return None

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": "tiny", "root": "r/"}, headers=ray())

    async def install(_: web.Request) -> web.Response:
        if args.wrong_install:
            return web.json_response({"error": "catalog unavailable"}, headers=ray())
        manifest = {"schema": 1, "generation": 1, "entries": {}, "object_base": "/o/"}
        return await fault() or web.json_response(manifest, headers=ray())

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        failed = await fault()
        if failed:
            return failed
        tenant = request.headers.get("x-sync-tenant", "")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        expected = hmac.new(args.secret.encode(), tenant.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(token, expected):
            return web.json_response({"error": "bad token"}, status=401, headers=ray())
        json.loads(body)
        if args.wrong_push:
            return web.json_response({"stored": len(body)}, status=201, headers=ray())
        root = request.headers.get("x-sync-ci-root", "r/")
        answer = {
            "key": f"{root}tenants/{tenant}/state.json",
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        return web.json_response(answer, status=201, headers=ray())

    async def probe(request: web.Request) -> web.Response:
        nonce = request.match_info["nonce"]
        if nonce in seen:
            return web.json_response({"error": "key reused"}, status=409, headers=ray())
        seen.add(nonce)
        await asyncio.sleep(miss_ms / 1000)
        return web.json_response(
            {"hit": False, "kv_ms": miss_ms}, headers={**ray(), "x-cache": "miss"}
        )

    app = web.Application()
    app.router.add_get("/_health", health)
    app.router.add_get("/install", install)
    app.router.add_post("/_push", push)
    app.router.add_get("/_probe/kv/{nonce}", probe)
    return app


async def serve(args: argparse.Namespace) -> None:
    runners = []
    urls: dict[str, str] = {}
    specs = [("main", "SJC", 0.0, "")] + [
        (p[0], p[1], float(p[2]), p[3] if len(p) > 3 else "")
        for p in (r.split(":") for r in args.region)
    ]
    for name, colo, miss_ms, answer in specs:
        runner = web.AppRunner(make_app(args, colo, miss_ms, answer), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        urls[name] = f"http://127.0.0.1:{port}"
        runners.append(runner)
    print(json.dumps({"url": urls.pop("main"), "regions": urls}), flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--5xx-every", dest="every_5xx", type=int, default=0)
    parser.add_argument("--region", action="append", default=[])
    parser.add_argument("--wrong-install", action="store_true")
    parser.add_argument("--wrong-push", action="store_true")
    try:
        asyncio.run(serve(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
