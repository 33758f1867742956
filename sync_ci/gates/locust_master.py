"""The Locust master: gather the workers, deal them the job, start them together, collect.

Only the `python -m sync_ci.gates.locust_engine master` subprocess imports this module, after
locust has monkey-patched it with gevent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.rpc.protocol import Message
from locust.runners import MasterRunner

from sync_ci.errors import ExitCode, SyncCIError, UsageError
from sync_ci.gates.locust_plan import (
    ARM_BOUND_S,
    EngineJob,
    Msg,
    deal,
    write_document,
)
from sync_ci.gates.locust_user import setup_logging, user_class


class GateMaster(MasterRunner):
    """Locust's master, closed to workers that arrive once the run has been planned."""

    closed = False

    def handle_message(self, client_id: str, msg: Message) -> None:
        """Turn away late workers instead of rebalancing users mid-burst."""
        if self.closed and msg.type == "client_ready" and client_id not in self.clients:
            self.server.send_to_client(Message("quit", None, client_id))  # type: ignore[no-untyped-call]
            return
        super().handle_message(client_id, msg)


class Refusal(SyncCIError):
    """The master cannot run the gate as planned; carries the exit code."""

    def __init__(self, message: str, exit_code: int = ExitCode.UNMEASURED) -> None:
        super().__init__(message)
        self.code = int(exit_code)


class Coordinator:
    """The master's side of the protocol: gather workers, deal the scenario, start, collect."""

    def __init__(self, job: EngineJob, runner: GateMaster, expect_workers: int) -> None:
        self.job, self.runner, self.expect = job, runner, expect_workers
        self.hellos: dict[str, dict[str, Any]] = {}
        self.ready: dict[str, int] = {}
        self.armed: set[str] = set()
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: list[tuple[str, dict[str, Any]]] = []
        for kind, handler in (
            (Msg.HELLO, self._hello),
            (Msg.READY, self._ready),
            (Msg.ARMED, self._armed),
            (Msg.RESULT, self._result),
            (Msg.FAILED, self._failed),
        ):
            runner.register_message(kind, handler)
        self.workers: list[str] = []

    def _hello(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.hellos[msg.node_id] = dict(msg.data or {})

    def _ready(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.ready[msg.node_id] = int((msg.data or {}).get("planned", 0))

    def _armed(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.armed.add(msg.node_id)

    def _result(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.results[msg.node_id] = dict(msg.data or {})

    def _failed(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.failures.append((msg.node_id, dict(msg.data or {})))

    def _label(self, worker: str) -> str:
        hello = self.hellos.get(worker, {})
        return f"{hello.get('host', '?')} pid {hello.get('pid', '?')}"

    def _wait(self, done: Callable[[], bool], bound_s: float, what: str) -> None:
        deadline = time.monotonic() + bound_s
        while not done():
            if self.failures:
                worker, data = self.failures[0]
                raise Refusal(
                    f"Locust worker {self._label(worker)}: {data.get('error', 'failed')}",
                    int(data.get("exit", ExitCode.UNMEASURED)),
                )
            lost = [w for w in self.workers if w not in self.runner.clients]
            if lost:
                raise Refusal(f"Locust worker {self._label(lost[0])} was lost {what}")
            if time.monotonic() > deadline:
                raise Refusal(f"Locust workers did not finish {what} within {bound_s:g} s")
            gevent.sleep(0.02)

    def gather(self, wait_s: float) -> None:
        """Wait for the expected workers; refuse to run short-handed."""
        deadline = time.monotonic() + wait_s

        def present() -> list[str]:
            return sorted(w for w in self.hellos if w in self.runner.clients)

        while len(present()) < self.expect:
            if time.monotonic() > deadline:
                raise Refusal(
                    f"expected {self.expect} Locust workers but {len(present())} connected within "
                    f"{wait_s:g} s; refusing to run the {self.job.gate} gate short-handed"
                )
            gevent.sleep(0.05)
        self.runner.closed = True
        self.workers = present()
        wrong = [w for w in self.workers if self.hellos[w].get("gate") != self.job.gate]
        if wrong:
            raise Refusal(
                f"Locust worker {self._label(wrong[0])} runs the "
                f"{self.hellos[wrong[0]].get('gate')} gate, this master the {self.job.gate} gate",
                ExitCode.USAGE,
            )

    def run(self, wait_s: float) -> dict[str, Any]:
        """Run the whole protocol and return the master's output document."""
        self.gather(wait_s)
        job, parts = self.job, len(self.workers)
        tags = {w: str(self.hellos[w].get("region", "")) for w in self.workers}
        try:
            shares, uncovered = deal(job, self.workers, tags)
        except UsageError as exc:
            raise Refusal(str(exc), ExitCode.USAGE) from None
        users = shares[self.workers[0]].users
        for worker in self.workers:
            self.runner.send_message(
                Msg.JOB, {"job": job.to_json(), **shares[worker].to_json()}, client_id=worker
            )
        self._wait(lambda: all(w in self.ready for w in self.workers), ARM_BOUND_S, "planning")
        gevent.spawn(self.runner.start, users * parts, users * parts)
        self._wait(lambda: all(w in self.armed for w in self.workers), ARM_BOUND_S, "spawning")
        for worker in self.workers:
            self.runner.send_message(Msg.GO, {}, client_id=worker)
        self._wait(
            lambda: all(w in self.results for w in self.workers), job.run_bound_s(), "the run"
        )
        here = socket.gethostname()
        return {
            "ok": True,
            "gate": job.gate,
            "same_clock": all(self.hellos[w].get("host") == here for w in self.workers),
            "uncovered": uncovered,
            "workers": [
                {
                    "id": worker,
                    "host": self.hellos[worker].get("host", ""),
                    "region": self.hellos[worker].get("region", ""),
                    "samples": int(self.results[worker].get("samples", 0)),
                    "result": self.results[worker].get("result", {}),
                }
                for worker in self.workers
            ],
        }

    def abort(self, why: str) -> None:
        """Tell every connected worker why the run stopped."""
        for worker in list(self.runner.clients):
            self.runner.send_message(Msg.ABORT, {"error": why}, client_id=worker)


def master_main(
    job: EngineJob,
    *,
    out: Path,
    ready: Path,
    expect_workers: int,
    wait_s: float,
    bind_host: str,
    bind_port: int,
    debug: bool = False,
) -> int:
    """Run the Locust master for one gate; write the measured outcome (or the refusal) to `out`."""
    setup_logging(debug)
    environment = Environment(user_classes=[user_class(job.gate, None)], host=job.base_url)
    try:
        runner = GateMaster(environment, bind_host, bind_port)
    except Exception as exc:  # zmq bind errors: the port is taken or the host is not ours
        write_document(out, {"ok": False, "exit": 3, "error": f"Locust master: {exc}"})
        return int(ExitCode.UNMEASURED)
    environment.runner = runner
    coordinator = Coordinator(job, runner, expect_workers)
    write_document(ready, {"port": runner.server.port, "pid": os.getpid()})
    try:
        document = coordinator.run(wait_s)
        code = 0
    except Refusal as exc:
        coordinator.abort(str(exc))
        document, code = {"ok": False, "exit": exc.code, "error": str(exc)}, exc.code
    finally:
        runner.quit()
    write_document(out, document)
    return code
