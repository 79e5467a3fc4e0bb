"""Export and offline verification run in memory that does not grow with the log (issue 7: at
most 300 MB whatever the size; "stream; never load a whole log or statement").

The same ledger is exported and the bundle verified at N and at 4N audit leaves, each leaf
recording a batch of entries between two accounts (so the two statements grow too), each run in
a fresh process whose peak resident memory (VmHWM) is compared. N is large enough to fill every
fetch buffer (entries are read 1,000 at a time, statement lines 2,000). Before streaming, both
grew by about 2.5 kB per leaf plus about 1 kB per entry: ~25 MB here from N to 4N.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bank.app.transfers import create_transfers
from bank.demo import seed
from bank.domain.accounts import Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import Principal, Role

TELLER = Principal("tess", Role.TELLER, "branch:preston")
LEAVES = 250  # N: the second measurement is at 4N
ENTRIES_PER_LEAF = 10
# What may be added from N to 4N: a bitmap of positions (one bit per entry) and allocator noise.
GROWTH_LIMIT_KB = 6_000

RUN = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from bank.adapters.clock import FixedClock
from bank.adapters.sql import SqlUnitOfWork, make_engine
from bank.app.export import ExportSpec, export_bundle
from bank.offline.note import Signer
from bank.offline.verify import verify_bundle

what, url, out, key, now = sys.argv[1:]
signer = Signer("bank-key", Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key)))
out = Path(out)
if what == "export":
    engine = make_engine(url)
    handles = {}
    for path, chunk in export_bundle(SqlUnitOfWork(engine), FixedClock(int(now)), signer,
                                     ExportSpec(previous_size=1)):
        if path not in handles:
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            handles[path] = (out / path).open("wb")
        handles[path].write(chunk)
    for handle in handles.values():
        handle.close()
    engine.dispose()
    print((out / "leaves.jsonl").read_bytes().count(b"\\n"))
else:
    import bank.offline.verify as verify
    verify.SMALL_STATEMENT = 0  # stream every statement, as a long one would be
    print(verify_bundle(out, [signer.verifier]))
status = Path("/proc/self/status").read_text()
print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def add_leaves(uow, clock, count: int, start: int) -> None:
    for n in range(start, start + count):
        clock.advance(1)
        a, b = ("m-0002-deposit", "m-0003-deposit") if n % 2 else ("m-0003-deposit",
                                                                     "m-0002-deposit")
        create_transfers(uow, clock, TELLER, f"mem-{n}", [TransferSpec(
            f"mem-{n}-{i}", TransferKind.POSTED,
            (PostingLine(a, Side.DEBIT, 1 + i, "GBP"), PostingLine(b, Side.CREDIT, 1 + i, "GBP")),
            description=f"memory test {n}/{i}") for i in range(ENTRIES_PER_LEAF)])


def run(what: str, url: str, out: Path, key: str, now: int) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", RUN, what, url, str(out), key, str(now)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result, peak_kb = done.stdout.strip().splitlines()[-2:]
    return result, int(peak_kb)


def test_export_and_offline_verification_do_not_grow_with_the_log(uow, clock, tmp_path):
    key = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    url = uow.engine.url.render_as_string(hide_password=False)
    seed(uow, clock, say=lambda _line: None)
    peaks: dict[str, list[int]] = {"export": [], "verify": []}
    sizes = []
    for step, count in enumerate((LEAVES, 3 * LEAVES)):
        add_leaves(uow, clock, count, start=step * LEAVES)
        clock.advance(1)
        out = tmp_path / f"bundle-{step}"
        leaves, peak = run("export", url, out, key, clock.now_ns())
        sizes.append(int(leaves))
        peaks["export"].append(peak)
        summary, peak = run("verify", url, out, key, clock.now_ns())
        assert summary.startswith("bundle verified"), summary
        peaks["verify"].append(peak)
    assert sizes[1] > 3.5 * sizes[0] > 3.5 * LEAVES
    for what, (small, large) in peaks.items():
        assert large - small < GROWTH_LIMIT_KB, (
            f"{what}: peak {small / 1e3:.0f} MB at {sizes[0]} leaves, {large / 1e3:.0f} MB at "
            f"{sizes[1]}: it grows with the log")
