"""Development PKI on `cryptography`: a CA, a server certificate, client certificates that name
a principal, a role and a scope, and revocation by a CA-signed CRL.

A client certificate carries its identity in two places the server reads:
- subject: CN = the principal (a person or a system), OU = the role;
- subjectAltName URI `urn:peoplesbank:scope:<scope>` when the principal has a scope
  (`branch:preston`, `council:preston`).

Layout of a PKI folder (keys are written 0600, the folder 0700):

    ca.pem ca.key server.pem server.key crl.pem clients/<name>.pem clients/<name>.key
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bank.domain.identity import Principal, Role

SCOPE_URI_PREFIX = "urn:peoplesbank:scope:"
ORGANISATION = "People's Bank (development)"
CA_DAYS = 3650
LEAF_DAYS = 365
CRL_DAYS = 30

# The identities `bank serve` creates on a fresh machine (name -> subject, role, scope).
DEMO_IDENTITIES: dict[str, tuple[str, Role, str]] = {
    "teller": ("tess.teller", Role.TELLER, "branch:preston"),
    "loan-officer": ("lou.officer", Role.LOAN_OFFICER, "branch:preston"),
    "approver": ("amy.approver", Role.APPROVER, "branch:preston"),
    "approver-2": ("abe.approver", Role.APPROVER, "branch:lancaster"),
    "council-preston": ("preston-backoffice", Role.COUNCIL, "council:preston"),
    "council-lancaster": ("lancaster-backoffice", Role.COUNCIL, "council:lancaster"),
    "regulator": ("pra-examiner", Role.REGULATOR, ""),
    "auditor": ("ext-auditor", Role.AUDITOR, ""),
    "operator": ("ops-oncall", Role.OPERATOR, ""),
}


class PkiError(Exception):
    """A PKI operation could not be done (missing CA, unknown certificate...)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    root: Path

    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    def client_paths(self, name: str) -> tuple[Path, Path]:
        return self.root / "clients" / f"{name}.pem", self.root / "clients" / f"{name}.key"

    def exists(self) -> bool:
        return self.ca_cert_path.exists() and (self.root / "ca.key").exists()

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self.exists():
            raise PkiError(f"no CA in {self.root}: run `python ops/pki.py init`")
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def init_ca(self, common_name: str = "People's Bank Development CA") -> None:
        """Create the CA (refuses to overwrite one) and an empty CRL."""
        if self.ca_cert_path.exists() or (self.root / "ca.key").exists():
            raise PkiError(f"a CA already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_now() - dt.timedelta(minutes=5))
                .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(self.root / "ca.key", _key_bytes(key))
        self.ca_cert_path.write_bytes(_pem(cert))
        self.write_crl(set())

    def _issue(self, subject: x509.Name, san: list[x509.GeneralName], usage: x509.ObjectIdentifier,
               days: int, not_before: dt.datetime | None = None
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_cert, ca_key = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - dt.timedelta(minutes=5)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    def issue_server(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> None:
        san: list[x509.GeneralName] = []
        for host in hosts:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                san.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, "ledger-server")])
        cert, key = self._issue(subject, san, ExtendedKeyUsageOID.SERVER_AUTH, LEAF_DAYS)
        _write_private(self.root / "server.key", _key_bytes(key))
        (self.root / "server.pem").write_bytes(_pem(cert))

    def issue_client(self, name: str, principal: Principal, days: int = LEAF_DAYS,
                     not_before: dt.datetime | None = None) -> x509.Certificate:
        """Issue `clients/<name>.pem` for `principal`; returns the certificate."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                                principal.role.value),
                             x509.NameAttribute(NameOID.COMMON_NAME, principal.subject)])
        san: list[x509.GeneralName] = (
            [x509.UniformResourceIdentifier(SCOPE_URI_PREFIX + principal.scope)]
            if principal.scope else [])
        cert, key = self._issue(subject, san, ExtendedKeyUsageOID.CLIENT_AUTH, days, not_before)
        cert_path, key_path = self.client_paths(name)
        _write_private(key_path, _key_bytes(key))
        cert_path.write_bytes(_pem(cert))
        return cert

    def revoked_serials(self) -> set[int]:
        return revoked_serials(self.crl_path.read_bytes(), self.ca_cert_path.read_bytes())

    def revoke(self, name: str) -> int:
        """Add the client certificate `name` to the CRL; returns its serial number."""
        cert_path, _ = self.client_paths(name)
        if not cert_path.exists():
            raise PkiError(f"no client certificate named {name!r} in {self.root / 'clients'}")
        serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
        self.write_crl(self.revoked_serials() | {serial})
        return serial

    def write_crl(self, serials: set[int]) -> None:
        ca_cert, ca_key = self._ca()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(_now()).next_update(_now() + dt.timedelta(days=CRL_DAYS)))
        for serial in sorted(serials):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(_now()).build())
        crl = builder.sign(ca_key, hashes.SHA256())
        self.crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def ensure_demo(self) -> list[str]:
        """Create the CA, server certificate and demo identities that are missing; returns
        the names created."""
        created = []
        if not self.ca_cert_path.exists():
            self.init_ca()
            created.append("ca")
        if not (self.root / "server.pem").exists():
            self.issue_server()
            created.append("server")
        for name, (subject, role, scope) in DEMO_IDENTITIES.items():
            if not self.client_paths(name)[0].exists():
                self.issue_client(name, Principal(subject, role, scope))
                created.append(name)
        return created


def revoked_serials(crl_pem: bytes, ca_pem: bytes) -> set[int]:
    """Serial numbers in a CRL, after checking the CA signed it. Raises `PkiError`."""
    crl = x509.load_pem_x509_crl(crl_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    public_key = ca.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(
            public_key):
        raise PkiError("the CRL is not signed by the CA")
    return {entry.serial_number for entry in crl}


def principal_of(cert_pem: bytes) -> tuple[Principal, int]:
    """The principal a client certificate names, and its serial. Raises `PkiError`."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(common) != 1 or len(units) != 1:
        raise PkiError("the certificate must name exactly one principal (CN) and one role (OU)")
    try:
        role = Role(str(units[0].value))
    except ValueError:
        raise PkiError(f"unknown role {units[0].value!r} in the certificate") from None
    if role is Role.SYSTEM:
        raise PkiError("the system role cannot be held by a client certificate")
    scope = ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        scopes = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                  if u.startswith(SCOPE_URI_PREFIX)]
        if len(scopes) > 1:
            raise PkiError("the certificate names more than one scope")
        scope = scopes[0][len(SCOPE_URI_PREFIX):] if scopes else ""
    except x509.ExtensionNotFound:
        pass
    if len(str(common[0].value)) > 128 or len(scope) > 128:
        raise PkiError("the certificate's principal or scope is longer than 128 characters")
    return Principal(str(common[0].value), role, scope), cert.serial_number
