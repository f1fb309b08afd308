"""A local broker with a TLS + SASL/SCRAM listener, and the certificates it needs.

Owns making a throwaway certificate authority and a broker certificate for 127.0.0.1 with
``openssl`` (:func:`make_certificates`), and :class:`SecuredBroker`: a
:class:`~streamjobs.dev.kafka.LocalBroker` with a second listener, ``SASL_SSL`` with
``SCRAM-SHA-512``, whose users are created when its storage is formatted
(``kafka-storage format --add-scram``), so they exist before the broker first serves a client.
The plaintext listener stays for the broker's own traffic (inter-broker and controller).

Deliberately does not: configure clients (Settings and :mod:`streamjobs.client.config` do:
``security_protocol``, ``sasl_*``, ``ssl_ca_location``), keep secrets anywhere but the files it
is told to write (the broker's JAAS line holds no password: SCRAM credentials live in the
cluster metadata), or run outside development and tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamjobs.dev.kafka import LocalBroker
from streamjobs.dev.kafka_jars import require_tool
from streamjobs.dev.processes import HOST, free_port, tail
from streamjobs.errors import ConfigError

__all__ = ["MECHANISM", "Certificates", "SecuredBroker", "make_certificates"]

MECHANISM = "SCRAM-SHA-512"
_DAYS = "2"
_OPENSSL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Certificates:
    """A CA (``ca_pem``, what clients trust) and the broker's PKCS#12 keystore signed by it."""

    ca_pem: Path
    keystore: Path
    keystore_password: str


def _openssl(*args: str, cwd: Path) -> None:
    openssl = require_tool("openssl", "openssl, to make test certificates")
    done = subprocess.run(
        [openssl, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_OPENSSL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"openssl {args[0]} failed:\n{tail(done.stdout + done.stderr)}")


def make_certificates(directory: Path, keystore_password: str) -> Certificates:
    """A new CA and a broker certificate for ``127.0.0.1`` (and ``localhost``) in ``directory``,
    valid two days: ``ca.pem`` for clients, ``broker.p12`` for the broker."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "san.ext").write_text(
        f"subjectAltName=IP:{HOST},DNS:localhost\n", encoding="ascii"
    )
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", _DAYS, "-subj", "/CN=streamjobs-dev-ca", cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", f"/CN={HOST}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", _DAYS, "-extfile", "san.ext",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{keystore_password}",
        cwd=directory,
    )  # fmt: skip
    return Certificates(directory / "ca.pem", directory / "broker.p12", keystore_password)


class SecuredBroker(LocalBroker):
    """A single-node broker that also listens with ``SASL_SSL`` (SCRAM-SHA-512) on
    :attr:`secure_port`; ``users`` (name to password) are created at format time."""

    def __init__(
        self,
        workdir: Path,
        certificates: Certificates,
        users: Mapping[str, str],
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(workdir, cache_dir=cache_dir)
        self.certificates = certificates
        self._users = dict(users)
        self.secure_port = free_port()
        self.secure_bootstrap = f"{HOST}:{self.secure_port}"

    def _format_extra(self) -> list[str]:
        extra: list[str] = []
        for name, password in self._users.items():
            extra += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return extra

    def _properties(self) -> str:
        plain = f"PLAINTEXT://{HOST}:{self.port}"
        secure = f"SASL_SSL://{HOST}:{self.secure_port}"
        controller = f"CONTROLLER://{HOST}:{self.controller_port}"
        keystore = str(self.certificates.keystore).replace("\\", "\\\\")
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return super()._properties() + (
            "\n# Written by streamjobs.dev.secured: a TLS + SCRAM listener for clients\n"
            f"listeners={plain},{controller},{secure}\n"
            f"advertised.listeners={plain},{controller},{secure}\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_SSL:SASL_SSL\n"
            f"sasl.enabled.mechanisms={MECHANISM}\n"
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={scram}\n"
            "ssl.keystore.type=PKCS12\n"
            f"ssl.keystore.location={keystore}\n"
            f"ssl.keystore.password={self.certificates.keystore_password}\n"
            "ssl.client.auth=none\n"
        )
