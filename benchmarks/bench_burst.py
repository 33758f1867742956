"""Burst benchmark: the gate's client beside hey, ab and wrk against ONE fixed-latency server.

The server is a small C program (compiled here with the system's cc) that answers every request
exactly `--latency-ms` after its last byte arrived, on one epoll loop with a timer, so it is never
the bottleneck (wrk's own p50 against it shows that). Each client fires the gate's burst, 1,000
GET /install + 100 POST /_push of 10 KB (and 10x that), as two concurrent streams where it cannot
mix methods; the table shows latency added over the fixed delay, p95, start spread, and each
figure as a ratio to ab's in the same run, against the targets (<= 2x ab, spread < 50 ms).
The stub answers a push with a fixed body, so push answers are not checked here, only timed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sync_ci.contract import ROOT_HEADER
from sync_ci.gates import histogram, load
from sync_ci.gates.http import push_policy
from sync_ci.gates.scenario import LoadScenario, push_request

HANG_S = 300
SIGNING = "bench-tenant-signing"  # the stub checks no token
CI_ROOT = "snappy-os-ci/"
TARGET_RATIO = 2.0
TARGET_SPREAD_MS = 50.0
SERVER_C = r"""
/* A fixed-latency HTTP/1.1 stub: every request is answered DELAY ms after its last byte came. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define QSIZE (1 << 20)
struct conn { char *buf; size_t len, cap; int queued, dead, close_after, post; };
static struct conn conns[MAXFD];
static int qfd[QSIZE];
static long long qdue[QSIZE];
static size_t qhead, qtail;
static long long delay_ns;
static int ep, tfd;
static char rget[512], rpost[512];
static int nget, npost;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void arm(long long due) {
    struct itimerspec it = {{0, 0}, {due / 1000000000LL, due % 1000000000LL}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL);
}

static void drop(int fd) {
    struct conn *c = &conns[fd];
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
}

static void try_parse(int fd) {
    struct conn *c = &conns[fd];
    if (c->queued || c->len == 0) return;
    c->buf[c->len] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return;
    *end = 0;
    size_t body = 0;
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (cl) body = strtoul(cl + 17, NULL, 10);
    c->close_after = strcasestr(c->buf, "\r\nconnection: close") != NULL ||
                     (strstr(c->buf, "HTTP/1.0") && !strcasestr(c->buf, "keep-alive"));
    c->post = strncmp(c->buf, "POST", 4) == 0;
    *end = '\r';
    size_t total = (size_t)(end - c->buf) + 4 + body;
    if (c->len < total) return;
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    c->queued = 1;
    long long due = now_ns() + delay_ns;
    int was_empty = qhead == qtail;
    qfd[qtail % QSIZE] = fd;
    qdue[qtail % QSIZE] = due;
    qtail++;
    if (was_empty) arm(due);
}

static void fire(void) {
    long long now = now_ns();
    while (qhead != qtail && qdue[qhead % QSIZE] <= now) {
        int fd = qfd[qhead % QSIZE];
        qhead++;
        struct conn *c = &conns[fd];
        if (!c->dead) {
            const char *r = c->post ? rpost : rget;
            int n = c->post ? npost : nget;
            if (send(fd, r, n, MSG_NOSIGNAL) != n) c->dead = 1;
        }
        c->queued = 0;
        if (c->dead || c->close_after) drop(fd);
        else try_parse(fd);
    }
    if (qhead != qtail) arm(qdue[qhead % QSIZE]);
}

int main(int argc, char **argv) {
    delay_ns = (argc > 1 ? atoll(argv[1]) : 50) * 1000000LL;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max > MAXFD ? MAXFD : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    const char *get = "{\"schema\":1,\"generation\":1,\"entries\":{},\"object_base\":\"/o/\"}";
    const char *post = "{\"key\":\"stub\",\"sha256\":\"stub\"}";
    nget = snprintf(rget, sizeof rget, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    "content-length: %zu\r\ncf-ray: 0000000000000000-STB\r\n\r\n%s", strlen(get), get);
    npost = snprintf(rpost, sizeof rpost, "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                     "content-length: %zu\r\ncf-ray: 0000000000000000-STB\r\n\r\n%s", strlen(post), post);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 65535)) { perror("listen"); return 1; }
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int cfd;
                while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= MAXFD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
                }
            } else if (fd == tfd) {
                unsigned long long x;
                if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN) return 1;
                fire();
            } else {
                struct conn *c = &conns[fd];
                for (;;) {
                    if (c->cap - c->len < 4097) {
                        c->cap = c->cap ? c->cap * 2 : 16384;
                        c->buf = realloc(c->buf, c->cap + 1);
                    }
                    ssize_t r = recv(fd, c->buf + c->len, c->cap - c->len, 0);
                    if (r > 0) { c->len += (size_t)r; continue; }
                    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                        if (c->queued) { c->dead = 1; epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); }
                        else drop(fd);
                    }
                    break;
                }
                if (!c->dead && c->buf) try_parse(fd);
            }
        }
    }
}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One burst as one client saw it (latencies in ms, spread NaN where the client cannot tell)."""

    install_p50: float
    install_p95: float
    push_p50: float
    spread_ms: float
    failures: int


def _summary(values_us: Sequence[int]) -> histogram.LatencySummary:
    hist = histogram.new()
    for value in values_us:
        histogram.record_us(hist, value)
    return histogram.summarize(hist)


def _run(install_us: Sequence[int], push_us: Sequence[int], spread_ms: float, bad: int) -> Run:
    install, push = _summary(install_us), _summary(push_us)
    return Run(
        install_p50=install.p50_ms,
        install_p95=install.p95_ms,
        push_p50=push.p50_ms,
        spread_ms=spread_ms,
        failures=bad,
    )


def start_server(workdir: Path, latency_ms: int) -> tuple[subprocess.Popen[str], str] | str:
    """Compile and start the fixed-latency server; return (process, url) or why it cannot run."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "could not measure anything: cc not installed (apt-get install -y gcc)"
    source, binary = workdir / "fixed_latency.c", workdir / "fixed_latency"
    source.write_text(SERVER_C, encoding="utf-8")
    built = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True, check=False
    )
    if built.returncode:
        return f"could not measure anything: the server did not compile: {built.stderr[-300:]}"
    server = subprocess.Popen(
        [str(binary), str(latency_ms)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    return server, f"http://127.0.0.1:{port}"


def scenario(size: int) -> LoadScenario:
    """The gate's burst times `size`."""
    return LoadScenario(installs=1000 * size, pushes=100 * size, tenants=100)


def run_sync_ci(url: str, size: int, processes: int) -> Run:
    """The gate's own client, in this process or forked over `processes`."""
    policy = push_policy(f"{CI_ROOT}{secrets.token_hex(4)}/")
    job = load.plan_job(scenario(size), url, SIGNING, policy=policy, timeout_s=60)
    (phase,) = load.run_load(job, processes=processes)
    install, push = phase.ops["install"], phase.ops["push"]
    # The stub's push answer is fixed (not this push's key and digest): count it as timed only.
    bad = sum(op.network + op.status_5xx + op.status_4xx + op.other for op in (install, push))
    summary = {
        name: histogram.summarize(histogram.decode(op.histogram)) for name, op in phase.ops.items()
    }
    return Run(
        install_p50=summary["install"].p50_ms,
        install_p95=summary["install"].p95_ms,
        push_p50=summary["push"].p50_ms,
        spread_ms=phase.start_spread_ms,
        failures=bad,
    )


def _push_files(workdir: Path) -> tuple[Path, dict[str, str]]:
    push = push_request("gate-000", SIGNING, LoadScenario().body_bytes, "bench")
    body = workdir / "push.json"
    body.write_bytes(push.body)
    headers = {**push.headers, ROOT_HEADER: f"{CI_ROOT}{secrets.token_hex(4)}/"}
    headers.pop("content-type", None)
    return body, headers


def _together(commands: Sequence[Sequence[str]]) -> list[str]:
    """Start the commands at once and return their stdout (each bounded by HANG_S)."""
    processes = [
        subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for c in commands
    ]
    try:
        return [p.communicate(timeout=HANG_S)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_hey(hey: str, url: str, size: int, workdir: Path) -> Run:
    """hey as two processes (installs, pushes); its CSV gives every request's offset."""
    body, headers = _push_files(workdir)
    n_install, n_push = 1000 * size, 100 * size
    flags = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
    out = _together(
        [
            [
                hey,
                "-n",
                str(n_install),
                "-c",
                str(n_install),
                "-t",
                "60",
                "-o",
                "csv",
                f"{url}/install",
            ],
            [
                hey,
                "-n",
                str(n_push),
                "-c",
                str(n_push),
                "-t",
                "60",
                "-o",
                "csv",
                "-m",
                "POST",
                "-T",
                "application/json",
                "-D",
                str(body),
                *flags,
                f"{url}/_push",
            ],
        ]
    )
    parsed = []
    for text in out:
        rows = list(csv.DictReader(io.StringIO(text)))
        parsed.append(
            (
                [round(float(r["response-time"]) * 1e6) for r in rows],
                [float(r["offset"]) for r in rows],
                sum(1 for r in rows if not r["status-code"].startswith("2")),
            )
        )
    (install, i_off, i_bad), (push, p_off, p_bad) = parsed
    offsets = i_off + p_off
    spread = (max(offsets) - min(offsets)) * 1000 if offsets else math.inf
    missing = n_install - len(install) + n_push - len(push)
    return _run(install, push, spread, i_bad + p_bad + missing)


def run_ab(ab: str, url: str, size: int, workdir: Path) -> Run:
    """ab as two processes (installs, pushes); `-g` gives every request's total time in ms."""
    body, headers = _push_files(workdir)
    n_install, n_push = 1000 * size, 100 * size
    flags = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
    tsv = [workdir / "ab-install.tsv", workdir / "ab-push.tsv"]
    _together(
        [
            [
                ab,
                "-q",
                "-s",
                "60",
                "-n",
                str(n_install),
                "-c",
                str(n_install),
                "-g",
                str(tsv[0]),
                f"{url}/install",
            ],
            [
                ab,
                "-q",
                "-s",
                "60",
                "-n",
                str(n_push),
                "-c",
                str(n_push),
                "-g",
                str(tsv[1]),
                "-p",
                str(body),
                "-T",
                "application/json",
                *flags,
                f"{url}/_push",
            ],
        ]
    )
    times: list[list[int]] = []
    for path in tsv:
        rows = path.read_text(encoding="utf-8").splitlines()[1:] if path.exists() else []
        times.append([int(r.split("\t")[4]) * 1000 for r in rows if r.count("\t") >= 5])
    missing = n_install - len(times[0]) + n_push - len(times[1])
    # ab's start times are whole seconds: it cannot tell its own spread.
    return _run(times[0], times[1], math.nan, missing)


WRK_PUSH = """
wrk.method = "POST"
wrk.body = io.open("{body}", "rb"):read("*a")
wrk.headers["content-type"] = "application/json"
{headers}
"""
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SYNC_CI %d %d %d\\n", latency:percentile(50), latency:percentile(95),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(wrk: str, url: str, size: int, workdir: Path, seconds: float) -> Run:
    """wrk closed-loop with the burst's connections (opened before timing, so connect excluded)."""
    body, headers = _push_files(workdir)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    install_lua, push_lua = workdir / "install.lua", workdir / "push.lua"
    install_lua.write_text(WRK_DONE, encoding="utf-8")
    push_lua.write_text(WRK_PUSH.format(body=body, headers=lines) + WRK_DONE, encoding="utf-8")
    out = _together(
        [
            [
                wrk,
                "-t2",
                f"-c{1000 * size}",
                f"-d{seconds:g}s",
                "-s",
                str(install_lua),
                f"{url}/install",
            ],
            [wrk, "-t1", f"-c{100 * size}", f"-d{seconds:g}s", "-s", str(push_lua), f"{url}/_push"],
        ]
    )
    found = [
        next((ln.split() for ln in o.splitlines() if ln.startswith("SYNC_CI ")), None) for o in out
    ]
    if None in found:
        return Run(
            install_p50=math.inf,
            install_p95=math.inf,
            push_p50=math.inf,
            spread_ms=math.nan,
            failures=1,
        )
    (_, i50, i95, i_bad), (_, p50, _, p_bad) = found  # type: ignore[misc]
    return Run(
        install_p50=int(i50) / 1000,
        install_p95=int(i95) / 1000,
        push_p50=int(p50) / 1000,
        spread_ms=math.nan,
        failures=int(i_bad) + int(p_bad),
    )


def open_model_ceiling(url: str, rates: Sequence[float], seconds: float) -> None:
    """Step the open model's offered rate; print what the client really sent and its send lag."""
    import asyncio

    from sync_ci.gates.burst_verdict import SEND_LAG_LIMIT_MS, generator_limit
    from sync_ci.gates.http import read_only_policy
    from sync_ci.gates.thresholds import resolve

    print(f"\nopen model (GET /install, {seconds:g} s a step): the highest rate this client offers")
    print("| offered /s | sent /s | send lag p95 | verdict |")
    print("|---|---|---|---|")
    best = 0.0
    for rate in rates:
        phase = asyncio.run(
            load.run_open_model(
                LoadScenario(installs=1000, pushes=0, tenants=1),
                "",
                url,
                policy=read_only_policy(),
                rate=rate,
                duration_s=seconds,
                timeout_s=60,
            )
        )
        lag = histogram.summarize(histogram.decode(phase.lag)).p95_ms
        bound = generator_limit(phase, resolve())
        if not bound:
            best = max(best, phase.sent_rate)
        verdict = "kept up" if not bound else "could not measure (exit 3)"
        print(f"| {rate:g} | {phase.sent_rate:.0f} | {lag:.1f} ms | {verdict} |")
    print(
        f"highest rate offered within the {SEND_LAG_LIMIT_MS:g} ms send-lag bound: {best:.0f}/s "
        "(past it the gate says could not measure, never a server breach)"
    )


def _median(runs: Sequence[Run], name: str) -> float:
    values = [getattr(r, name) for r in runs if not math.isnan(getattr(r, name))]
    return statistics.median(values) if values else math.nan


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _ratio(ours: float, reference: float) -> str:
    if math.isnan(ours) or math.isnan(reference) or reference <= 0:
        return "-"
    return f"{ours / reference:.2f}x"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every client `--runs` times, interleaved, at 1x and 10x the burst; print one table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_burst")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--sizes", default="1,10", help="burst multiples (1 = 1,100 requests)")
    parser.add_argument("--processes", type=int, default=2, help="the spread client's processes")
    parser.add_argument("--wrk-seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="500,1000,2000,4000", help="open-model steps (/s)")
    args = parser.parse_args([] if argv is None else argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    load.ensure_descriptors(1200 * max(sizes) + load.DESCRIPTOR_MARGIN)
    tools = {name: shutil.which(name) for name in ("hey", "ab", "wrk")}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        started = start_server(Path(tmp), args.latency_ms)
        if isinstance(started, str):
            print(started)
            return 3
        server, url = started
        try:
            for size in sizes:
                clients: dict[str, Callable[[], Run]] = {
                    "sync-ci": partial(run_sync_ci, url, size, 1),
                    f"sync-ci --processes {args.processes}": partial(
                        run_sync_ci, url, size, args.processes
                    ),
                }
                work = Path(tmp)
                if tools["hey"]:
                    clients["hey (2 processes)"] = partial(run_hey, tools["hey"], url, size, work)
                if tools["ab"]:
                    clients["ab (2 processes)"] = partial(run_ab, tools["ab"], url, size, work)
                if tools["wrk"]:
                    clients["wrk (connect excluded)"] = partial(
                        run_wrk, tools["wrk"], url, size, work, args.wrk_seconds
                    )
                runs: dict[str, list[Run]] = {name: [] for name in clients}
                run_sync_ci(url, size, 1)  # warm imports and the server's pages
                for _ in range(args.runs):
                    for name, client in clients.items():
                        runs[name].append(client())
                failures += _print_table(size, args, runs, tools)
            open_model_ceiling(url, [float(r) for r in args.rates.split(",")], 1.0)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 1 if failures else 0


def _print_table(
    size: int, args: argparse.Namespace, runs: dict[str, list[Run]], tools: dict[str, str | None]
) -> int:
    fixed = float(args.latency_ms)
    print(
        f"\nburst x{size}: {1000 * size:,} GET /install + {100 * size:,} POST /_push (10 KB) against "
        f"one server answering in a fixed {args.latency_ms} ms; median of {args.runs} runs each"
    )
    for name, tool in tools.items():
        if tool is None:
            print(f"could not measure {name}: not installed")
    header = (
        "client",
        "install p50 added",
        "install p95",
        "push p50 added",
        "start spread",
        "p50 added / ab",
        "p95 added / ab",
        "failed",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ab = runs.get("ab (2 processes)")
    ab_p50 = _median(ab, "install_p50") - fixed if ab else math.nan
    ab_p95 = _median(ab, "install_p95") - fixed if ab else math.nan
    failed = 0
    for name, measured in runs.items():
        p50 = _median(measured, "install_p50") - fixed
        p95 = _median(measured, "install_p95")
        bad = sum(r.failures for r in measured)
        failed += bad
        cells = (
            name,
            f"+{_cell(p50)} ms",
            f"{_cell(p95)} ms",
            f"+{_cell(_median(measured, 'push_p50') - fixed)} ms",
            f"{_cell(_median(measured, 'spread_ms'))} ms"
            if measured[0].spread_ms == measured[0].spread_ms
            else "-",
            _ratio(p50, ab_p50),
            _ratio(p95 - fixed, ab_p95),
            str(bad),
        )
        print("| " + " | ".join(cells) + " |")
    wrk = runs.get("wrk (connect excluded)")
    if wrk:
        floor = _median(wrk, "install_p50")
        verdict = (
            "near it: the server is not the bottleneck"
            if floor <= 1.5 * fixed
            else "well above it: at this size the server (or the machine) limits every client, "
            "so the ratios compare clients under the same limit"
        )
        print(
            f"server check: wrk's install p50 {floor:.1f} ms against the fixed "
            f"{args.latency_ms} ms ({verdict})"
        )
    for name in ("sync-ci", f"sync-ci --processes {args.processes}"):
        if name not in runs or ab is None:
            continue
        p50 = _median(runs[name], "install_p50") - fixed
        p95 = _median(runs[name], "install_p95") - fixed
        spread = _median(runs[name], "spread_ms")
        verdicts = [
            ("added p50 <= 2x ab", p50 <= TARGET_RATIO * ab_p50),
            ("added p95 <= 2x ab", p95 <= TARGET_RATIO * ab_p95),
            (f"spread < {TARGET_SPREAD_MS:g} ms", spread < TARGET_SPREAD_MS),
        ]
        print(
            f"targets for {name}: "
            + ", ".join(f"{what}: {'met' if ok else 'MISSED'}" for what, ok in verdicts)
        )
    return failed


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
