"""The Helm streamjobs validates its chart with: version and the Go build of its binary.

Owns the Helm version and building the ``helm`` binary once into a cache directory outside the
repository (:func:`ensure_binary`): ``go install helm.sh/helm/v3/cmd/helm@<version>`` from the Go
module proxy with ``GOBIN`` in the cache, under a lock so concurrent callers build it once.
Several minutes on two cores the first time (client-go is large), instant once built.
``tests/integration/test_helm_chart.py`` and ``make helm-build`` (part of ``make test``) call it.

Deliberately does not: run Helm (the tests do), talk to a Kubernetes cluster, or change the
chart. Go inherits our environment (``HOME``, ``PATH``, ``GOPROXY``); ``GOFLAGS=-mod=mod``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from streamjobs.dev.processes import locked, tail
from streamjobs.errors import ConfigError

logger = logging.getLogger(__name__)

HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.21.4"
_BUILD_TIMEOUT_S = 1800.0


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "streamjobs"


def binary_path(cache_dir: Path | None = None) -> Path:
    """Where the built ``helm`` lives: ``<cache>/helm-<version>/bin/helm``."""
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return base.resolve() / f"helm-{HELM_VERSION}" / "bin" / "helm"


def ensure_binary(cache_dir: Path | None = None) -> Path:
    """Return the cached ``helm`` binary, building it with ``go install`` the first time.

    Raises :class:`ConfigError` if ``go`` is missing or the build fails.
    """
    target = binary_path(cache_dir)
    if target.is_file():
        return target
    with locked(target.parent.parent / ".lock"):
        if not target.is_file():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise ConfigError("`go` is not on PATH; building Helm needs Go 1.24+")
    env = {**os.environ, "GOBIN": str(target.parent), "GOFLAGS": "-mod=mod"}
    command = [go, "install", f"{HELM_MODULE}@{HELM_VERSION}"]
    logger.info("building Helm %s with go install (minutes the first time)", HELM_VERSION)
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"building Helm took over {_BUILD_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0 or not target.is_file():
        raise ConfigError(
            f"go install {HELM_MODULE}@{HELM_VERSION} failed (exit {done.returncode}):\n"
            + tail(done.stdout + done.stderr)
        )


if __name__ == "__main__":  # `make helm-build`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_binary())
