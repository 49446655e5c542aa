"""Shared set-up of the Python package's tests: the wheel scripts/build-wheel.sh built, installed into
fresh virtualenvs as a user installs it (binary only: nothing compiles), the photos, and the CLI's own
answers to compare with."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
CLI = ROOT / "target/release/imgfeat"
PYSPARK = "pyspark==4.3.0"


def wheel_file():
    wheels = sorted((ROOT / "target/wheels").glob("imgfeat-*.whl"))
    assert wheels, "no wheel in target/wheels: build it with scripts/build-wheel.sh"
    return wheels[-1]


def make_venv(path, *requirements, wheels_only=True):
    """A fresh virtualenv with `requirements` installed (pip's cache keeps it quick): from wheels only, so
    nothing compiles, unless `wheels_only` is False (pyspark is published as a source archive)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    binary = ["--only-binary", ":all:"] if wheels_only else ["--prefer-binary"]
    result = subprocess.run([str(path / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", *binary,
                             *requirements], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"pip install {' '.join(requirements)} failed:\n{result.stderr[-3000:]}"
    return path


def run_python(venv, code, *, cwd=None, env=None, timeout=600, check=True):
    """Runs `code` with the virtualenv's python; its last stdout line, parsed as JSON, is the result."""
    result = subprocess.run([str(venv / "bin/python"), "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if not check:
        return result
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Where the package unpacks the jar's models: a fresh folder, so the unpacking is tested too."""
    return tmp_path_factory.mktemp("imgfeat-cache")


@pytest.fixture(scope="session")
def local_venv(tmp_path_factory):
    """A fresh virtualenv with the wheel alone (and what it requires): no pyspark, no Rust."""
    return make_venv(tmp_path_factory.mktemp("venv-local") / "venv", str(wheel_file()))


@pytest.fixture(scope="session")
def local(local_venv, cache_dir):
    """Runs Python code in the wheel's virtualenv (see run_python)."""
    def run(code, **kwargs):
        env = {"IMGFEAT_CACHE": str(cache_dir), **kwargs.pop("env", {})}
        return run_python(local_venv, code, env=env, **kwargs)
    return run


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Real photos (40 of the shared ImageNet sample), the odd formats and the corrupt JPEG; the committed
    fixture photos where ../shared is absent."""
    folder = tmp_path_factory.mktemp("photos")
    sample = SHARED / "imagenet-sample"
    if sample.is_dir():
        (folder / "imagenet").mkdir()
        for photo in sorted(sample.iterdir())[:40]:
            shutil.copy(photo, folder / "imagenet" / photo.name)
    else:
        warnings.warn(f"SKIPPED part: {sample} is absent; using the committed fixture photos")
        shutil.copytree(ROOT / "tests/fixtures/photos", folder / "fixtures")
    if (SHARED / "formats").is_dir():
        shutil.copytree(SHARED / "formats", folder / "formats")
    else:
        warnings.warn(f"SKIPPED part: {SHARED / 'formats'} is absent; no odd formats")
    (folder / "not-an-image.jpg").write_bytes(b"this is text, not a JPEG")
    return folder


@pytest.fixture(scope="session")
def cli_table(photos, tmp_path_factory):
    """`imgfeat extract` of the photos."""
    out = tmp_path_factory.mktemp("cli") / "features.parquet"
    subprocess.run([str(CLI), "extract", "-o", str(out), str(photos)], check=True, capture_output=True, timeout=900)
    return out


def readme_block(marker, language, page="README.md"):
    """The ```language block that follows the comment `marker` starts, in `page` (the README, or a user
    guide page such as docs/python.md)."""
    text = (ROOT / page).read_text()
    start = text.index(f"```{language}\n", text.index(f"<!-- {marker}")) + len(f"```{language}\n")
    return text[start:text.index("```", start)]


@pytest.fixture
def readme_workdir(tmp_path):
    """A folder laid out as the README's and docs/'s examples expect: the fixture photos, and the checkout's
    target/."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "tests/fixtures/photos", work / "tests/fixtures/photos")
    (work / "target").symlink_to(ROOT / "target")
    return work
