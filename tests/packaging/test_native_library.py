"""The native library that ships in the Spark jar loads on real clusters: it is built against glibc 2.17
(manylinux2014: RHEL/CentOS 7 and everything newer, Amazon Linux 2, Debian 9+), so no symbol it imports
may need a newer glibc (or libgcc/libstdc++ than manylinux2014 has) and it may link only the libraries
that policy lists. Read from the library's dynamic section and symbol version table (`readelf`).

Checked: the library `cargo zigbuild` built for the jar, and the copy inside the jar itself.
"""
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZIG_LIBRARY = ROOT / "target/x86_64-unknown-linux-gnu/release/libimgfeat.so"
JAR = ROOT / "target/jvm/imgfeat-spark.jar"
JAR_LIBRARY = "native/linux-x86_64/libimgfeat.so"

# PEP 599 (manylinux2014): the libraries a wheel may link without shipping them, and the newest symbol
# version of each versioned library.
MANYLINUX2014_LIBRARIES = {
    "libgcc_s.so.1", "libstdc++.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libc.so.6", "libnsl.so.1",
    "libutil.so.1", "libpthread.so.0", "libresolv.so.2", "libX11.so.6", "libXext.so.6", "libXrender.so.1",
    "libICE.so.6", "libSM.so.6", "libGL.so.1", "libgobject-2.0.so.0", "libgthread-2.0.so.0",
    "libglib-2.0.so.0", "ld-linux-x86-64.so.2",
}
NEWEST = {"GLIBC": (2, 17), "GLIBCXX": (3, 4, 19), "CXXABI": (1, 3, 7), "GCC": (4, 8, 0)}


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def problems(library):
    """What keeps `library` from loading on a manylinux2014 system, one line each (empty: nothing)."""
    found = []
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", str(library)))
    assert "libc.so.6" in needed, f"not a dynamically linked glibc library? NEEDED {needed}"
    found += [f"links {name}, outside the manylinux2014 set" for name in needed if name not in MANYLINUX2014_LIBRARIES]
    # Versions the library requires of others (.gnu.version_r), e.g. "Name: GLIBC_2.34  Flags: none  Version: 5".
    for family, version in re.findall(r"Name: (GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)", readelf("-V", str(library))):
        numbers = tuple(int(n) for n in version.split("."))
        if numbers > NEWEST[family]:
            users = sorted(set(re.findall(rf"(\S+)@{family}_{re.escape(version)}\b", readelf("--dyn-syms", str(library)))))
            found.append(f"needs {family}_{version} (newest allowed {'.'.join(map(str, NEWEST[family]))}): {', '.join(users[:10])}")
    return found


def test_the_policy_check_catches_a_library_built_against_a_new_glibc():
    """The check can fail: the library `cargo build` makes on this machine (glibc 2.35+) breaks it."""
    native = ROOT / "target/release/libimgfeat.so"
    if not native.exists():
        pytest.skip(f"SKIPPED: {native} is not built")
    glibc = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    if re.search(r"2\.(1[0-7]|[0-9])$", glibc):
        pytest.skip(f"SKIPPED: this machine's own glibc is old ({glibc}); its native build passes the policy")
    assert any("GLIBC_2." in p for p in problems(native)), "the native build of a new-glibc machine should fail the policy"


def test_the_zig_built_library_needs_nothing_newer_than_glibc_2_17():
    assert ZIG_LIBRARY.exists(), f"{ZIG_LIBRARY} is missing: build it with cargo zigbuild --release --lib --target x86_64-unknown-linux-gnu.2.17"
    assert problems(ZIG_LIBRARY) == []


def test_the_jars_library_is_the_glibc_2_17_one(tmp_path):
    assert JAR.exists(), f"{JAR} is missing"
    with zipfile.ZipFile(JAR) as jar:
        (tmp_path / "libimgfeat.so").write_bytes(jar.read(JAR_LIBRARY))
    assert problems(tmp_path / "libimgfeat.so") == []


WHEELS = ROOT / "target/wheels"


def built_wheel():
    wheels = sorted(WHEELS.glob("imgfeat-*.whl"))
    assert wheels, f"no wheel in {WHEELS}: build it with scripts/build-wheel.sh"
    return wheels[-1]


def test_the_wheel_is_manylinux2014_abi3_and_its_module_needs_nothing_newer_than_glibc_2_17(tmp_path):
    wheel = built_wheel()
    assert re.search(r"-cp39-abi3-manylinux2014_x86_64(\.manylinux_2_17_x86_64)?\.whl$", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        modules = [n for n in archive.namelist() if re.fullmatch(r"imgfeat/_native[^/]*\.so", n)]
        assert len(modules) == 1, archive.namelist()
        (tmp_path / "module.so").write_bytes(archive.read(modules[0]))
    assert problems(tmp_path / "module.so") == []


def test_the_wheel_carries_the_spark_jar_byte_for_byte(tmp_path):
    with zipfile.ZipFile(built_wheel()) as archive:
        jars = [n for n in archive.namelist() if n.startswith("imgfeat/jars/")]
        assert jars == ["imgfeat/jars/imgfeat-spark4_2.13-0.1.0.jar"], jars
        assert archive.read(jars[0]) == JAR.read_bytes(), "the wheel's jar is not the one mvn install built"
