"""Burst benchmark: the gate's client beside hey, ab, wrk and the C floor against ONE fixed server.

The server is a small C program (compiled here with the system's cc) that answers every request
exactly `--latency-ms` after its last byte arrived, on one epoll loop with a timer, so it is never
the bottleneck (wrk's own p50 against it shows that). Each client fires the gate's burst, 1,000
GET /install + 100 POST /_push of 10 KB (and 10x that), as two concurrent streams where it cannot
mix methods; the table shows latency added over the fixed delay, p95, start spread, and each
figure as a ratio to ab's in the same run, against the targets (<= 2x ab, spread < 50 ms).
The stub answers a push with a fixed body, so push answers are not checked here, only timed.

The "C floor" rows are the platform's limit for what the gate's client does, measured in the same
run: a small C client (also compiled here) that sends the gate's own pre-encoded request bytes, in
the gate's send order, over connections all opened before the start, one write per connection in
one tight loop, P processes forked before connecting and released at one CLOCK_MONOTONIC instant.
Its spread is the gate's: first to last request write, across every process. The gate's spread is
shown as a ratio to the floor with the same number of processes.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sync_ci.contract import ROOT_HEADER
from sync_ci.gates import burst_wire, histogram, load
from sync_ci.gates.http import push_policy
from sync_ci.gates.scenario import PUSH, LoadScenario, plan_burst, push_request

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


FLOOR_C = r"""
/* The platform's floor for the burst: what the gate's client does, in C, at its physical limit.
   usage: floor PORT PROCESSES WIRES OUT MODE   (MODE: write | send)
   WIRES holds every request pre-encoded, in send order: u32 count, then per request u8 kind
   (0 install, 1 push), u32 length, bytes. Process p (of P, forked before connecting) owns requests
   p, p+P, ...: it opens all its connections (nonblocking, every one established before the
   start), waits for the shared start deadline (CLOCK_MONOTONIC, sent by the parent once every
   process is ready), then writes each request on its own socket in one tight loop, taking the
   time just before each write (as the gate does), and then collects every answer, timed (as the
   gate times it) by the kernel's receive time of its last byte (SO_TIMESTAMPNS).
   OUT.p gets: "first_ns last_ns partial_writes unanswered pass_cpu_ns", then per request
   "kind latency_us" (-1 when it failed). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct req { unsigned char kind; uint32_t len; char *data; int fd; size_t off; long long sent, done;
             char *in; size_t got, cap; long need; int failed; };

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) { perror(what); exit(3); }

/* Return 1 when r->in holds one whole answer (headers and the content-length body). */
static int complete(struct req *r) {
    if (r->need < 0) {
        r->in[r->got] = 0;
        char *end = strstr(r->in, "\r\n\r\n");
        if (!end) return 0;
        char *cl = strcasestr(r->in, "\r\ncontent-length:");
        r->need = (long)(end - r->in) + 4 + (cl && cl < end ? strtol(cl + 17, NULL, 10) : 0);
    }
    return (long)r->got >= r->need;
}

static int child(struct req *reqs, size_t n, int port, int ready, int start_fd, const char *out,
                 int use_send) {
    int ep = epoll_create1(0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    for (size_t i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) die("socket");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio sets it */
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one); /* as the gate stamps */
        if (connect(fd, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) die("connect");
        reqs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct epoll_event evs[1024];
    size_t open = 0;
    long long give_up = now_ns() + 60000000000LL;
    while (open < n) {
        int k = epoll_wait(ep, evs, 1024, 1000);
        for (int j = 0; j < k; j++) {
            struct req *r = &reqs[evs[j].data.u64];
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) r->failed = 1;
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
            epoll_ctl(ep, EPOLL_CTL_MOD, r->fd, &ev);
            open++;
        }
        if (now_ns() > give_up) { fprintf(stderr, "floor: connections not open in 60 s\n"); return 3; }
    }
    if (write(ready, "r", 1) != 1) die("ready");
    long long start;
    if (read(start_fd, &start, sizeof start) != sizeof start) die("start");
    struct timespec at = {start / 1000000000LL, start % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR) {}
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    long long offset = (real.tv_sec - mono.tv_sec) * 1000000000LL + real.tv_nsec - mono.tv_nsec;
    int partial = 0;
    struct timespec cpu0, cpu1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    for (size_t i = 0; i < n; i++) {
        struct req *r = &reqs[i];
        if (r->failed) continue;
        r->sent = now_ns();
        ssize_t w = use_send ? send(r->fd, r->data, r->len, MSG_DONTWAIT | MSG_NOSIGNAL)
                             : write(r->fd, r->data, r->len);
        if (w < 0 && errno != EAGAIN) { r->failed = 1; continue; }
        r->off = w < 0 ? 0 : (size_t)w;
        if (r->off < r->len) {
            partial++;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = i};
            epoll_ctl(ep, EPOLL_CTL_MOD, r->fd, &ev);
        }
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    long long pass_cpu = (cpu1.tv_sec - cpu0.tv_sec) * 1000000000LL + cpu1.tv_nsec - cpu0.tv_nsec;
    long long first = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        if (!reqs[i].sent) continue;
        if (!first || reqs[i].sent < first) first = reqs[i].sent;
        if (reqs[i].sent > last) last = reqs[i].sent;
    }
    size_t waiting = 0;
    for (size_t i = 0; i < n; i++) waiting += !reqs[i].failed;
    give_up = now_ns() + 60000000000LL;
    char chunk[65536];
    while (waiting) {
        int k = epoll_wait(ep, evs, 1024, 1000);
        long long t = now_ns();
        for (int j = 0; j < k; j++) {
            struct req *r = &reqs[evs[j].data.u64];
            if (r->done || r->failed) continue;
            if ((evs[j].events & EPOLLOUT) && r->off < r->len) {
                ssize_t w = send(r->fd, r->data + r->off, r->len - r->off, MSG_NOSIGNAL);
                if (w > 0) r->off += (size_t)w;
                if (r->off == r->len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
                    epoll_ctl(ep, EPOLL_CTL_MOD, r->fd, &ev);
                }
            }
            if (!(evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            char control[CMSG_SPACE(sizeof(struct timespec))];
            struct iovec iov = {chunk, sizeof chunk};
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                                 .msg_controllen = sizeof control};
            ssize_t got = recvmsg(r->fd, &msg, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                r->failed = 1;
                waiting--;
                continue;
            }
            if (r->got + (size_t)got + 1 > r->cap) {
                r->cap = (r->got + (size_t)got + 1) * 2;
                r->in = realloc(r->in, r->cap);
            }
            memcpy(r->in + r->got, chunk, (size_t)got);
            r->got += (size_t)got;
            if (complete(r)) {
                /* the kernel's receive time of these bytes, as the gate reads it */
                r->done = t;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(c), sizeof ts);
                        r->done = ts.tv_sec * 1000000000LL + ts.tv_nsec - offset;
                    }
                }
                waiting--;
            }
        }
        if (t > give_up) break;
    }
    FILE *f = fopen(out, "w");
    if (!f) die(out);
    fprintf(f, "%lld %lld %d %zu %lld\n", first, last, partial, waiting, pass_cpu);
    for (size_t i = 0; i < n; i++) {
        struct req *r = &reqs[i];
        fprintf(f, "%d %lld\n", r->kind, r->done && !r->failed ? (r->done - r->sent) / 1000 : -1LL);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: floor PORT PROCESSES WIRES OUT write|send\n"); return 2; }
    int port = atoi(argv[1]), procs = atoi(argv[2]), use_send = strcmp(argv[5], "send") == 0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    FILE *f = fopen(argv[3], "rb");
    if (!f) die(argv[3]);
    uint32_t count;
    if (fread(&count, 4, 1, f) != 1) die("wires");
    struct req *all = calloc(count, sizeof *all);
    for (uint32_t i = 0; i < count; i++) {
        all[i].need = -1;
        if (fread(&all[i].kind, 1, 1, f) != 1 || fread(&all[i].len, 4, 1, f) != 1) die("wires");
        all[i].data = malloc(all[i].len);
        if (fread(all[i].data, 1, all[i].len, f) != all[i].len) die("wires");
    }
    fclose(f);
    if (procs < 1 || procs > 256) { fprintf(stderr, "floor: PROCESSES must be 1..256\n"); return 2; }
    pid_t parent = getpid();
    int ready[2], start[2];
    if (pipe(ready) || pipe(start)) die("pipe");
    for (int p = 0; p < procs; p++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            size_t n = 0;
            for (uint32_t i = (uint32_t)p; i < count; i += (uint32_t)procs) all[n++] = all[i];
            char out[4096];
            snprintf(out, sizeof out, "%s.%d", argv[4], p);
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the bench that started it */
            if (getppid() != parent) _exit(3);
            _exit(child(all, n, port, ready[1], start[0], out, use_send));
        }
    }
    for (int p = 0; p < procs; p++) {
        char c;
        if (read(ready[0], &c, 1) != 1) { fprintf(stderr, "floor: a process never got ready\n"); return 3; }
    }
    long long at = now_ns() + 5000000LL; /* every process sleeps to the same instant */
    long long deadlines[256];
    for (int p = 0; p < procs; p++) deadlines[p] = at;
    if (write(start[1], deadlines, sizeof(long long) * (size_t)procs) < 0) die("go");
    int worst = 0;
    for (int p = 0; p < procs; p++) {
        int status;
        wait(&status);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) worst = 3;
    }
    return worst;
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


def compile_c(workdir: Path, name: str, source: str) -> Path | str:
    """Compile one C program with the system's cc; return the binary or why it cannot be built."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "cc not installed (apt-get install -y gcc)"
    code, binary = workdir / f"{name}.c", workdir / name
    code.write_text(source, encoding="utf-8")
    built = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(code)], capture_output=True, text=True, check=False
    )
    if built.returncode:
        return f"{name}.c did not compile: {built.stderr[-300:]}"
    return binary


def start_server(workdir: Path, latency_ms: int) -> tuple[subprocess.Popen[str], str] | str:
    """Compile and start the fixed-latency server; return (process, url) or why it cannot run."""
    binary = compile_c(workdir, "fixed_latency", SERVER_C)
    if isinstance(binary, str):
        return f"could not measure anything: {binary}"
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


def write_wires(url: str, size: int, path: Path) -> None:
    """Write the gate's burst as the gate puts it on the wire (encoded and policy-checked by
    `burst_wire.encode_request`, in `burst_wire.send_order`) for the C floor: u32 count, then per request
    u8 kind (1 push), u32 length, bytes."""
    plan = plan_burst(scenario(size), SIGNING)
    policy = push_policy(f"{CI_ROOT}{secrets.token_hex(4)}/")
    origin = burst_wire.parse_origin(url)
    out = bytearray(struct.pack("=I", len(plan)))
    for index in burst_wire.send_order(plan):
        wire = burst_wire.encode_request(plan[index], origin, policy)
        out += struct.pack("=BI", plan[index].operation == PUSH, len(wire)) + wire
    path.write_bytes(out)


def run_floor(binary: Path, url: str, size: int, processes: int, workdir: Path, mode: str) -> Run:
    """The C floor: the gate's bytes, written at the platform's limit by `processes` processes."""
    wires, out = workdir / f"wires-{size}", workdir / "floor-out"
    if not wires.exists():
        write_wires(url, size, wires)
    port = url.rsplit(":", 1)[1]
    done = subprocess.run(
        [str(binary), port, str(processes), str(wires), str(out), mode],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    if done.returncode:
        print(f"C floor failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    firsts, lasts, bad = [], [], 0
    latency: dict[int, list[int]] = {0: [], 1: []}
    for part in range(processes):
        path = out.with_name(f"{out.name}.{part}")
        if not path.exists():
            bad += (1100 * size) // processes
            continue
        head, *rows = path.read_text(encoding="utf-8").splitlines()
        first, last, _, _, _ = (int(v) for v in head.split())
        firsts.append(first)
        lasts.append(last)
        for row in rows:
            kind, micros = (int(v) for v in row.split())
            if micros < 0:
                bad += 1
            else:
                latency[kind].append(micros)
        path.unlink()
    spread = (max(lasts) - min(firsts)) / 1e6 if firsts else math.inf
    return _run(latency[0], latency[1], spread, bad)


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
    parser.add_argument(
        "--rates", default="500,1000,2000,4000", help="open-model steps (/s); '' skips them"
    )
    parser.add_argument(
        "--floor-write",
        choices=("write", "send"),
        default="write",
        help="the C floor's call: write(2), or send(2) with MSG_DONTWAIT",
    )
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
        floor = compile_c(Path(tmp), "floor", FLOOR_C)
        if isinstance(floor, str):
            print(f"could not measure the C floor: {floor}")
        try:
            for size in sizes:
                work = Path(tmp)
                clients: dict[str, Callable[[], Run]] = {
                    "sync-ci": partial(run_sync_ci, url, size, 1),
                    f"sync-ci --processes {args.processes}": partial(
                        run_sync_ci, url, size, args.processes
                    ),
                }
                if not isinstance(floor, str):
                    for count in (1, args.processes):
                        clients[floor_name(count)] = partial(
                            run_floor, floor, url, size, count, work, args.floor_write
                        )
                if tools["hey"]:
                    clients["hey (2 processes)"] = partial(run_hey, tools["hey"], url, size, work)
                if tools["ab"]:
                    clients["ab (2 processes)"] = partial(run_ab, tools["ab"], url, size, work)
                if tools["wrk"]:
                    clients["wrk (connect excluded)"] = partial(
                        run_wrk, tools["wrk"], url, size, work, args.wrk_seconds
                    )
                runs: dict[str, list[Run]] = {name: [] for name in clients}
                load_before = _load_average()
                run_sync_ci(url, size, 1)  # warm imports and the server's pages
                for _ in range(args.runs):
                    for name, client in clients.items():
                        runs[name].append(client())
                failures += _print_table(size, args, runs, tools)
                print(f"load average (1 min): {load_before} before, {_load_average()} after")
            if args.rates:
                open_model_ceiling(url, [float(r) for r in args.rates.split(",")], 1.0)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 1 if failures else 0


def _load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text(encoding="utf-8").split()[0]
    except OSError:
        return "unknown"


def floor_name(processes: int) -> str:
    """The C floor's row name with `processes` processes."""
    return f"C floor ({processes} process{'es' if processes > 1 else ''})"


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
        "spread / C floor",
        "failed",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ab = runs.get("ab (2 processes)")
    ab_p50 = _median(ab, "install_p50") - fixed if ab else math.nan
    ab_p95 = _median(ab, "install_p95") - fixed if ab else math.nan
    failed = 0
    floors = {
        "sync-ci": floor_name(1),
        f"sync-ci --processes {args.processes}": floor_name(args.processes),
    }
    for name, measured in runs.items():
        c_floor = runs.get(floors.get(name, ""))
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
            _ratio(_median(measured, "spread_ms"), _median(c_floor, "spread_ms"))
            if c_floor
            else "-",
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
        c_floor = runs.get(floors[name])
        if c_floor:
            least = _median(c_floor, "spread_ms")
            print(
                f"{name}: spread {spread:.0f} ms, {spread - least:+.0f} ms over the platform's "
                f"floor ({floors[name]}: {least:.0f} ms)"
            )
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
