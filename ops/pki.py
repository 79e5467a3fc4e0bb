"""Development PKI: create a CA, a server certificate and client certificates; revoke them.

    python ops/pki.py --dir var/pki init                 # CA + empty CRL + server certificate
    python ops/pki.py --dir var/pki issue alice --subject alice.smith --role teller \
        --scope branch:preston                           # clients/alice.pem + .key
    python ops/pki.py --dir var/pki revoke alice         # add to the CA-signed CRL
    python ops/pki.py --dir var/pki demo                 # the demo identities `bank serve` uses
    python ops/pki.py --dir var/pki list

A running server re-reads the CRL when it changes: revocation takes effect on the next call.
For production, issue certificates from the bank's real CA with the same subject layout
(CN = principal, OU = role, SAN URI urn:peoplesbank:scope:<scope>).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509

from bank.adapters.pki import Pki, PkiError, principal_of
from bank.domain.identity import Principal, Role


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="var/pki", help="PKI folder (default var/pki)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the CA, its CRL and the server certificate")
    issue = sub.add_parser("issue", help="issue a client certificate")
    issue.add_argument("name", help="file name under clients/")
    issue.add_argument("--subject", required=True, help="the principal, e.g. alice.smith")
    issue.add_argument("--role", required=True,
                       choices=[r.value for r in Role if r is not Role.SYSTEM])
    issue.add_argument("--scope", default="", help="e.g. branch:preston or council:preston")
    issue.add_argument("--days", type=int, default=365)
    revoke = sub.add_parser("revoke", help="revoke a client certificate")
    revoke.add_argument("name")
    sub.add_parser("demo", help="create whatever of the demo identities is missing")
    sub.add_parser("list", help="list client certificates and their state")
    args = parser.parse_args(argv)
    pki = Pki(Path(args.dir))
    try:
        if args.command == "init":
            pki.init_ca()
            pki.issue_server()
            print(f"created CA, CRL and server certificate in {pki.root}")
        elif args.command == "issue":
            cert = pki.issue_client(args.name, Principal(args.subject, Role(args.role),
                                                         args.scope), days=args.days)
            print(f"issued {pki.client_paths(args.name)[0]} (serial {cert.serial_number:x})")
        elif args.command == "revoke":
            print(f"revoked {args.name} (serial {pki.revoke(args.name):x})")
        elif args.command == "demo":
            created = pki.ensure_demo()
            print(f"created: {', '.join(created) if created else 'nothing (all present)'}")
        else:
            revoked = pki.revoked_serials()
            for path in sorted((pki.root / "clients").glob("*.pem")):
                principal, serial = principal_of(path.read_bytes())
                expires = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
                state = "REVOKED" if serial in revoked else f"valid until {expires:%Y-%m-%d}"
                print(f"{path.stem:20} {principal.subject:22} {principal.role.value:13} "
                      f"{principal.scope or '-':20} {state}")
    except PkiError as error:
        print(f"pki: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
