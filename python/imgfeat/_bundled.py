"""What the wheel carries besides code: the Spark jar, and the models inside it, unpacked once per
machine for the local API (one copy of the models in the wheel, not two)."""
import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Optional

JARS = Path(__file__).parent / "jars"
_MODELS_IN_JAR = "imgfeat/models/"


def jar(spark_line: str = "spark4_2.13") -> Optional[Path]:
    """The bundled jar for a Spark/Scala line, or None where this install has none (a source checkout)."""
    found = sorted(JARS.glob(f"imgfeat-{spark_line}-*.jar"))
    return found[-1] if found else None


def _cache_root() -> Path:
    base = os.environ.get("IMGFEAT_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgfeat"


def model_dir() -> Optional[Path]:
    """A folder with the jar's models, unpacked on first use into ``$IMGFEAT_CACHE`` (default
    ``~/.cache/imgfeat``) under a name made from the entries' checksums, so a newer wheel never reads an
    older one's models; None when no jar is bundled."""
    bundled = jar()
    if bundled is None:
        return None
    with zipfile.ZipFile(bundled) as archive:
        entries = [e for e in archive.infolist() if e.filename.startswith(_MODELS_IN_JAR) and not e.is_dir()]
        digest = hashlib.sha256("".join(f"{e.filename}:{e.CRC}:{e.file_size}\n" for e in entries).encode()).hexdigest()
        target = _cache_root() / f"models-{digest[:16]}"
        if all((target / e.filename[len(_MODELS_IN_JAR):]).is_file() for e in entries):
            return target
        # Unpacked aside and renamed in one step: a reader never sees half a folder, and two processes
        # unpacking at once both end with the same complete folder.
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        for entry in entries:
            destination = staging / entry.filename[len(_MODELS_IN_JAR):]
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as source, open(destination, "wb") as sink:  # checks the CRC
                shutil.copyfileobj(source, sink, 1 << 20)
    try:
        os.rename(staging, target)
    except OSError:  # another process got there first (or a half folder from an older crash): replace it
        if not all((target / e.filename[len(_MODELS_IN_JAR):]).is_file() for e in entries):
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return target
