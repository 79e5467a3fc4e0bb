"""The server under test: a fresh database, the real `bank serve` as a subprocess, and what
the kernel says about its memory and CPU."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0


# The source tree the server (and the `bank` CLI commands the benchmarks run) comes from:
# None is this checkout; a folder (e.g. `git archive REV` unpacked) goes first on PYTHONPATH.
SERVER_TREE: list[Path] = []


def bank_command() -> list[str]:
    return [python(), "-m", "bank.cli"]


def bank_env() -> dict[str, str]:
    env = dict(os.environ)
    if SERVER_TREE:
        env["PYTHONPATH"] = os.pathsep.join([str(SERVER_TREE[0]),
                                             *filter(None, [env.get("PYTHONPATH")])])
    return env


def export_tree(rev: str, into: Path) -> Path:
    """Unpack `git archive rev` into a folder (read-only for the repository)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev}: {archive.stderr.decode(errors='replace')[:200]}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


class BenchError(Exception):
    """The harness could not set something up; the message says what."""


# -- /proc readings -------------------------------------------------------------------------------
def status_kb(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), or 0 if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0, same user)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def backends_cpu_s(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (by its process title)."""
    found: dict[int, float] = {}
    if not database:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres:") and f" {database} ".encode() in title:
            found[int(entry.name)] = cpu_s(int(entry.name))
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return float(total - idle), float(total)


@dataclass
class Meter:
    """CPU used by the server and by the whole machine over an interval."""

    pid: int
    database: str = ""  # PostgreSQL: also measure the backends serving this database
    server0: float = 0.0
    backends0: dict[int, float] = field(default_factory=dict)
    busy0: float = 0.0
    total0: float = 0.0
    wall0: float = 0.0

    def start(self) -> Meter:
        self.server0 = cpu_s(self.pid)
        self.backends0 = backends_cpu_s(self.database)
        self.busy0, self.total0 = machine_busy()
        self.wall0 = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall0
        busy, total = machine_busy()
        backends = backends_cpu_s(self.database)
        cores = os.cpu_count() or 1
        return {
            "wall_s": wall,
            "server_cpu_s": cpu_s(self.pid) - self.server0,
            "postgres_cpu_s": sum(v - self.backends0.get(k, 0.0) for k, v in backends.items()),
            # Fraction of all cores that were busy (anything: server, client, PostgreSQL, others).
            "machine_busy": (busy - self.busy0) / max(total - self.total0, 1.0),
            "cores": float(cores),
        }


# -- databases ------------------------------------------------------------------------------------
@dataclass
class Database:
    kind: str  # "sqlite" | "postgresql"
    url: str
    name: str = ""

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def fresh_database(kind: str, workdir: Path) -> Database:
    if kind == "sqlite":
        return Database(kind, f"sqlite:///{workdir / 'ledger.db'}")
    if kind != "postgresql":
        raise BenchError(f"unknown database {kind!r}")
    import psycopg

    name = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        raise BenchError(f"PostgreSQL on 127.0.0.1:5432 (user postgres, trust) is not "
                         f"answering: {str(error).splitlines()[0]} (try ops/ensure-postgres)"
                         ) from None
    return Database(kind, f"postgresql://postgres@127.0.0.1:5432/{name}", name)


def free_port() -> int:
    """A loopback port free right now (for the server's metrics page, which takes no 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- the server -----------------------------------------------------------------------------------
@dataclass
class Server:
    """`bank serve` in development plaintext on loopback (callers named by header), audit on
    as always, its logs (JSON, INFO: one access line per call, as in production) in a file."""

    db: Database
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    metrics_url: str = ""
    log_path: Path = field(default_factory=Path)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    def start(self) -> Server:
        self.log_path = self.workdir / "server.log"
        out = self.workdir / "server.out"
        env = {**bank_env(),
               "BANK_LOG_LEVEL": os.environ.get("BENCH_SERVER_LOG_LEVEL", "INFO")}
        env.pop("BANK_CONFIG", None)
        command = [*bank_command(), "--database-url", self.db.url, "--plaintext-dev", "serve",
                   "--host", "127.0.0.1", "--port", "0", "--metrics-port", str(free_port()),
                   "--keys-dir", str(self.keys_dir), "--log-format", "json"]
        with out.open("wb") as stdout, self.log_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env,
                                            cwd=self.workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            printed = out.read_text(errors="replace")
            match = re.search(r"serving on 127\.0\.0\.1:(\d+)", printed)
            metrics = re.search(r"Prometheus metrics on (http://\S+/metrics)", printed)
            if match:
                self.port = int(match.group(1))
                self.metrics_url = metrics.group(1) if metrics else ""
                break
            if self.process.poll() is not None:
                raise BenchError(f"the server exited with {self.process.returncode}: "
                                 + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        else:
            self.stop()
            raise BenchError(f"the server did not start within {START_TIMEOUT_S:.0f} s")
        self._wait_serving(deadline)
        return self

    def _wait_serving(self, deadline: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise BenchError("the server never reported SERVING")

    def group_commits(self) -> tuple[float, float] | None:
        """(groups committed, CreateTransfers requests in them) so far, from the server's own
        `bank_group_commit_requests` histogram; None if the metrics page cannot be read."""
        import urllib.request

        if not self.metrics_url:
            return None
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        found = dict(re.findall(r"^bank_group_commit_requests_(count|sum) (\S+)$", text, re.M))
        return float(found.get("count", 0)), float(found.get("sum", 0))

    def peak_mb(self) -> float:
        return status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return status_kb(self.pid, "VmRSS") / 1024

    def reset_peak(self) -> None:
        reset_peak(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_measured(command: list[str], cwd: Path) -> tuple[int, float, float, str]:
    """Run a command to completion; (exit code, wall seconds, peak RSS MB, output tail)."""
    started = time.perf_counter()
    log = cwd / f"cmd-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                   env=bank_env())
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return process.returncode, wall, usage.ru_maxrss / 1024, log.read_text(errors="replace")[-800:]


def python() -> str:
    return str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable


def grpc_options() -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024)]
