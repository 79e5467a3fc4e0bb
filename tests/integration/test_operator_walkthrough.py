"""The README's operator walkthrough, run for real on PostgreSQL: roles, migrations as the
migrator, the server as the service role with mTLS and metrics, a client call, a metrics
scrape, checkpoint signing, the audit and ledger checks, and a backup.

Role names get a unique suffix (roles are cluster-wide); otherwise the commands are the
README's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_postgres_roles import roles  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
BANK = [sys.executable, "-m", "bank.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


@pytest.mark.timeout(180)
def test_the_operator_walkthrough_runs_on_postgresql(roles, tmp_path):  # noqa: F811
    roles.apply()  # ops/deploy/apply_roles.py, before the first migration
    plain = roles.admin_url.replace("+psycopg", "").rsplit("@", 1)[1]  # host:port/database
    base = {k: v for k, v in os.environ.items() if not k.startswith("BANK_")}
    migrator = {**base, "BANK_DATABASE_URL": f"postgresql://{roles.migrator}@{plain}",
                "BANK_DATABASE_PASSWORD_FILE": str(roles.password_files[1])}
    assert "database at revision" in run([*BANK, "db", "upgrade"], migrator).stdout
    roles.apply()  # and again after every migration
    service = {**base, "BANK_DATABASE_URL": f"postgresql://{roles.app}@{plain}",
               "BANK_DATABASE_PASSWORD_FILE": str(roles.password_files[0]),
               "BANK_PKI_DIR": str(tmp_path / "tls"), "BANK_KEYS_DIR": str(tmp_path / "keys")}
    port, metrics_port = free_port(), free_port()
    server = subprocess.Popen(
        [*BANK, "serve", "--no-migrate", "--port", str(port), "--metrics-port",
         str(metrics_port)], cwd=REPO, env=service, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        client = [*BANK, "--server", f"127.0.0.1:{port}", "--as", "regulator"]
        deadline = time.monotonic() + 60
        while True:
            attempt = subprocess.run([*client, "trial-balance"], cwd=REPO, env=service,
                                     capture_output=True, text=True, timeout=60, check=False)
            if attempt.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert attempt.returncode == 0, attempt.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as response:
            metrics = response.read().decode()
        assert 'bank_rpc_requests_total{code="OK",method="GetTrialBalance"}' in metrics
        assert "bank_audit_tree_size" in metrics
        assert run([*BANK, "audit", "sign"], service).stdout.startswith(
            "peoplesbank.coop/audit/v1\n")
        assert "audit log verified" in run([*BANK, "audit", "verify"], service).stdout
        assert "ledger consistent" in run([*BANK, "check"], service).stdout
        backup = run([*BANK, "backup", "--out", str(tmp_path / "ledger.dump")], service)
        assert (tmp_path / "ledger.dump").stat().st_size > 0, backup.stdout
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "stopped." in output
