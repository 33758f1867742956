"""Cleanup benchmark: planning 1k/10k/100k listed objects, then 50 prefixes x 200 objects (30 old)
vs `aws s3 rm --recursive` per old prefix.

Planning is pure (no I/O): a listing is built in memory and planned with every safety check. Then
it starts its own moto server, seeds the same objects into two buckets, runs `run_cleanup` on one
and the aws CLI on the other, and prints requests by type, wall times and the ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sync_ci import cleanup, guards
from sync_ci.sandbox.store_server import StoreProcess, start_moto
from sync_ci.store import Store, StoreEndpoint, VersionInfo, count_requests, open_store

CI_ROOT = "snappy-os-ci/"
OLDER_THAN = timedelta(days=7)
BODY = b"sync-ci bench 16"
AWS_TIMEOUT_S = 120
# Timestamps have one-second resolution on some stores; keep the young writes clearly later.
AGE_GAP_S = 2.2
PLAN_SIZES = (1_000, 10_000, 100_000)
PLAN_TARGET_S = 1.0  # planning 100,000 listed objects, every safety check included
PLAN_OBJECTS_PER_PREFIX = 200


def _endpoint(server: StoreProcess, bucket: str) -> StoreEndpoint:
    return StoreEndpoint(
        bucket=bucket,
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )


def _put_all(stores: Sequence[Store], keys: Sequence[str]) -> None:
    jobs = [(store, key) for store in stores for key in keys]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda job: job[0].put(job[1], BODY), jobs))


def _aws_binary() -> str:
    for candidate in ("/usr/bin/aws", shutil.which("aws") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return ""


def _aws_env(server: StoreProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key_id,
        AWS_SECRET_ACCESS_KEY=server.secret_access_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_PAGER="",
    )
    return env


def _aws_rm(aws: str, server: StoreProcess, bucket: str, shas: Sequence[str]) -> tuple[float, int]:
    """Run `aws s3 rm --recursive` once per prefix; return wall seconds and single DELETEs sent."""
    env = _aws_env(server)
    deletes = 0
    started = time.perf_counter()
    for sha in shas:
        answer = subprocess.run(
            [
                aws,
                "s3",
                "rm",
                f"s3://{bucket}/{CI_ROOT}{sha}/",
                "--recursive",
                "--endpoint-url",
                server.endpoint_url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=AWS_TIMEOUT_S,
            check=False,
        )
        if answer.returncode != 0:
            raise RuntimeError(f"aws s3 rm failed ({answer.returncode}): {answer.stderr.strip()}")
        deletes += sum(1 for line in answer.stdout.splitlines() if line.startswith("delete:"))
    return time.perf_counter() - started, deletes


def synthetic_listing(count: int, now: datetime) -> cleanup.Listing:
    """`count` objects in prefixes of 200, three in five of them older than the retention."""
    versions = []
    for index in range(count):
        prefix = index // PLAN_OBJECTS_PER_PREFIX
        age = OLDER_THAN * 2 if prefix % 5 < 3 else timedelta(hours=1)
        versions.append(
            VersionInfo(
                key=f"{CI_ROOT}{prefix:040x}/obj {index:06d}+é.bin",
                version_id="",
                size=16,
                last_modified=now - age,
            )
        )
    return cleanup.Listing(versions=tuple(versions))


def measure_planning(count: int) -> tuple[float, float, int]:
    """Plan a synthetic listing as a run does (plan, safety check, batches).

    Returns wall seconds, CPU seconds and the keys to delete. Planning is one thread of pure
    Python, so on a shared machine its CPU time is the figure that does not move with the load.
    """
    now = datetime(2026, 1, 1, tzinfo=UTC)
    listing = synthetic_listing(count, now)
    started, cpu = time.perf_counter(), time.process_time()
    plan = cleanup.plan_cleanup(listing, now, OLDER_THAN, CI_ROOT)
    cleanup.assert_plan_safe(plan)
    batches = cleanup.make_batches(plan)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, sum(len(batch) for batch in batches)


def report_planning() -> bool:
    """Print planning time per size; True when 100k objects plan within the target."""
    ok = True
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"planning (load average {load} on {os.cpu_count()} cores)")
    for count in PLAN_SIZES:
        elapsed, cpu, doomed = measure_planning(count)
        print(
            f"plan {count:>7} objects: {elapsed:.3f} s wall, {cpu:.3f} s CPU "
            f"({cpu / count * 1e6:.1f} us/object), {doomed} to delete"
        )
        if count == max(PLAN_SIZES):
            within = cpu < PLAN_TARGET_S
            ok = ok and within
            print(
                f"planning {count} objects: {cpu:.3f} s CPU, target < {PLAN_TARGET_S:g} s "
                f"(ratio {cpu / PLAN_TARGET_S:.2f} of the target): {'met' if within else 'MISSED'}"
            )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, seed, run both deletions, print the figures; exit 1 if a check or a target fails."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cleanup")
    parser.add_argument("--prefixes", type=int, default=50)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--old", type=int, default=30)
    parser.add_argument("--plan-only", action="store_true", help="only the planning figures")
    args = parser.parse_args([] if argv is None else argv)
    planned_ok = report_planning()
    if args.plan_only:
        return 0 if planned_ok else 1
    aws = _aws_binary()
    server = start_moto()
    try:
        ours_ep = _endpoint(server, f"bench-ours-{secrets.token_hex(4)}")
        aws_ep = _endpoint(server, f"bench-aws-{secrets.token_hex(4)}")
        admins = [open_store(ep, guards.sandbox_admin_policy()) for ep in (ours_ep, aws_ep)]
        for admin in admins:
            admin.ensure_bucket()
        shas = [secrets.token_hex(20) for _ in range(args.prefixes)]
        old, young = shas[: args.old], shas[args.old :]

        def keys(group: Sequence[str]) -> list[str]:
            return [
                f"{CI_ROOT}{sha}/obj {i:04d}+é.bin" for sha in group for i in range(args.objects)
            ]

        seeding = time.perf_counter()
        _put_all(admins, keys(old))
        cutoff = max(item.last_modified for a in admins for item in a.list(CI_ROOT))
        while datetime.now(UTC) < cutoff + timedelta(seconds=AGE_GAP_S):
            time.sleep(0.05)
        _put_all(admins, keys(young))
        seeding = time.perf_counter() - seeding
        total = args.prefixes * args.objects
        deleted_expected = args.old * args.objects
        print(
            f"seeded 2 x {total} objects ({args.prefixes} prefixes, {args.old} old) "
            f"in {seeding:.1f} s on moto {server.endpoint_url}"
        )

        store = open_store(
            ours_ep, guards.cleanup_policy(ours_ep.bucket, CI_ROOT), fast_timestamps=True
        )
        requests = count_requests(store)
        started = time.perf_counter()
        run = cleanup.run_cleanup(
            store,
            ci_root=CI_ROOT,
            now=cutoff + OLDER_THAN + timedelta(seconds=1),
            older_than=OLDER_THAN,
            live_root="snappy-os/",
        )
        ours_s = time.perf_counter() - started
        left = sum(1 for _ in admins[0].list(CI_ROOT))
        budget = math.ceil(total / 1000) + math.ceil(deleted_expected / 1000)
        sent = sum(requests.values())
        pages = requests["ListObjectsV2"] + requests["ListObjectVersions"]
        batches = requests["DeleteObjects"]
        fixed = sent - pages - batches
        print(
            f"sync-ci cleanup: {ours_s:.3f} s wall, {sent} requests: "
            + ", ".join(f"{name} {count}" for name, count in sorted(requests.items()))
        )
        print(
            f"  deleted {run.outcome.deleted if run.outcome else 0} keys, {left} left "
            f"(expected {deleted_expected} and {total - deleted_expected})"
        )
        print(
            f"  budget ceil({total}/1000) lists + ceil({deleted_expected}/1000) deletes = {budget}; "
            f"sent {pages} list pages + {batches} DeleteObjects = {pages + batches} "
            f"(within one page: {pages + batches <= budget + 1}), plus {fixed} fixed bucket-level "
            "requests (GetBucketVersioning, ListMultipartUploads)"
        )
        ok = (
            run.outcome is not None
            and run.outcome.deleted == deleted_expected
            and not run.outcome.failures
            and left == total - deleted_expected
            and pages + batches <= budget + 1
            and fixed <= 2
        )
        if not aws:
            print("aws CLI not found (apt-get install -y awscli); reference skipped")
            return 0 if ok and planned_ok else 1
        version = subprocess.run([aws, "--version"], capture_output=True, text=True, check=False)
        aws_s, aws_deletes = _aws_rm(aws, server, aws_ep.bucket, old)
        aws_left = sum(1 for _ in admins[1].list(CI_ROOT))
        print(
            f"aws s3 rm --recursive x {len(old)} prefixes ({version.stdout.strip().split()[0]}): "
            f"{aws_s:.3f} s wall, {aws_deletes} single DeleteObject requests "
            f"(+ at least one ListObjectsV2 per prefix), {aws_left} left"
        )
        ratio = aws_s / ours_s if ours_s > 0 else float("inf")
        print(f"ratio aws / sync-ci: {ratio:.1f}x (target >= 10x)")
        ok = ok and planned_ok and aws_left == total - deleted_expected and ratio >= 10
        return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
