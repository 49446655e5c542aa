"""imgfeat inside Spark: the Scala and PySpark examples under spark-submit, in local mode and on a real
standalone cluster on 127.0.0.1 (one master, two 1-core workers), checked against the CLI's output.

Run by scripts/test.sh after `cargo build --release` and the Maven build (`mvn install`, and
`mvn install -Pspark-3.5` for the Spark 3.5 / Scala 2.12 jar, run on pip's pyspark 3.5 in
`.venv-spark35`). Input: the photos of
../shared/data/imagenet-sample and the odd formats of ../shared/data/formats when present (else the
committed fixture photos, with a message saying so).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
JAR = ROOT / "target/jvm/imgfeat-spark.jar"        # mvn install: Spark 4 / Scala 2.13
EXAMPLE_JAR = ROOT / "target/jvm/imgfeat-example.jar"
SPARK35_DIR = ROOT / "target/jvm/spark3.5_2.12"     # mvn install -Pspark-3.5: Spark 3.5 / Scala 2.12
SPARK35_VENV = ROOT / ".venv-spark35"                # pip's pyspark 3.5 (scripts/test.sh makes it)
VERSION = "0.1.0"
PACKAGE = f"ai.imgfeat:imgfeat-spark4_2.13:{VERSION}"
PACKAGE35 = f"ai.imgfeat:imgfeat-spark3.5_2.12:{VERSION}"
CLI = ROOT / "target/release/imgfeat"
CLUSTER = ["--master", "spark://127.0.0.1:7077", "--total-executor-cores", "2", "--executor-cores", "1",
           "--executor-memory", "1g"]
LOCAL = ["--master", "local[2]"]


def spark_env(venv=None):
    """The environment of a spark-submit: this pytest's pyspark, or the one in the virtualenv `venv`
    (its Spark, and its python for PySpark jobs)."""
    if venv is None:
        import pyspark

        spark_home, python = os.path.dirname(pyspark.__file__), sys.executable
    else:
        python = str(venv / "bin/python")
        spark_home = subprocess.run([python, "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
                                    check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ)
    env.update(SPARK_HOME=spark_home, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_CONF_DIR=str(ROOT / "jvm-bindings/spark-conf"), PYSPARK_PYTHON=python,
               PYSPARK_DRIVER_PYTHON=python)
    return env


def spark_submit(master, *args, check=True, venv=None):
    env = spark_env(venv)
    command = [str(Path(env["SPARK_HOME"]) / "bin/spark-submit"), *master, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"spark-submit failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """A folder of real photos plus the odd formats (copied: binaryFile does not follow symlinks)."""
    folder = tmp_path_factory.mktemp("photos")
    sample = SHARED / "imagenet-sample"
    if sample.is_dir():
        shutil.copytree(sample, folder / "imagenet-sample")
    else:
        warnings.warn(f"SKIPPED part: {sample} is absent; using the committed fixture photos")
        shutil.copytree(ROOT / "tests/fixtures/photos", folder / "fixtures")
    if (SHARED / "formats").is_dir():
        shutil.copytree(SHARED / "formats", folder / "formats")
    else:
        warnings.warn(f"SKIPPED part: {SHARED / 'formats'} is absent; no odd formats in the Spark input")
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    return folder, files


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    os.environ.update(spark_env())
    session = (SparkSession.builder.master("local[1]").appName("imgfeat-test-reader")
               .config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()


def rows_by_path(spark, parquet, strip_scheme):
    rows = {}
    for row in spark.read.parquet(str(parquet)).collect():
        path = row["path"][len("file:"):] if strip_scheme and row["path"].startswith("file:") else row["path"]
        assert path not in rows, f"duplicate row for {path}"
        rows[path] = row
    return rows


@pytest.fixture(scope="session")
def cli_table(inputs, tmp_path_factory):
    """The CLI's features table of the inputs."""
    folder, _ = inputs
    out = tmp_path_factory.mktemp("cli") / "features.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "2", "-o", str(out), str(folder)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def cli_rows(cli_table, spark):
    return rows_by_path(spark, cli_table, strip_scheme=False)


@pytest.fixture(scope="session")
def spark_table(inputs, tmp_path_factory):
    """The Scala example job's output for the inputs, in local mode: a directory of part files."""
    folder, _ = inputs
    out = tmp_path_factory.mktemp("spark") / "features"
    result = spark_submit(LOCAL, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                          f"file://{folder}", str(out))
    return out, result.stdout


@pytest.fixture(scope="session")
def cluster():
    script = ROOT / "scripts/spark-cluster.sh"
    subprocess.run([str(script), "start"], check=True, env=spark_env())
    try:
        yield
    finally:
        subprocess.run([str(script), "stop"], env=spark_env())


COLUMNS = ["width", "height", "detected", "class_id", "class_name", "score", "box", "crop",
           "feature", "code", "whole_feature", "whole_code"]


def assert_same_as_cli(spark_rows, cli_rows, files, same_kernels=True):
    """The Spark rows are the CLI's, made in the same arithmetic (`same_kernels`: by the same kernels too)."""
    assert sorted(spark_rows) == files, "exactly one row per input file"
    failed = [p for p, r in spark_rows.items() if r["error"] is not None]
    assert all("corrupt" in p for p in failed), f"unexpected failures: {failed}"
    if any("corrupt" in f for f in files):
        assert failed, "the corrupt JPEG must be an error row"
    for path, row in spark_rows.items():
        cli = cli_rows[path]
        assert row["error"] == cli["error"], path
        for column in COLUMNS:
            assert row[column] == cli[column], f"{path}: {column} differs from the CLI's"
        made_in = (row["arithmetic"], cli["arithmetic"]) if same_kernels else \
            tuple(a and a.split(" ")[0] for a in (row["arithmetic"], cli["arithmetic"]))
        assert made_in[0] == made_in[1], f"{path}: made in {made_in[0]}, the CLI's row in {made_in[1]}"


def summary(stdout):
    match = re.search(r"imgfeat: (\d+) rows, (\d+) ok, (\d+) failed; native threads per task: ([\d,]+)", stdout)
    assert match, stdout[-2000:]
    return [int(match.group(i)) for i in (1, 2, 3)], match.group(4)


def test_scala_example_in_local_mode(inputs, cli_rows, spark, spark_table):
    _, files = inputs
    out, stdout = spark_table
    (total, ok, failed), _ = summary(stdout)
    assert total == len(files) and ok + failed == total
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def test_the_spark_table_has_the_cli_tables_columns(spark, cli_table, spark_table):
    """PackedRows.schema (the JVM side, through the job's output) and the Rust schema (through the CLI's
    table): the same names in the same order, with types Spark reads as the same."""
    out, _ = spark_table
    jvm = spark.read.parquet(str(out)).schema
    rust = spark.read.parquet(str(cli_table)).schema
    assert [f.name for f in jvm] == [f.name for f in rust]
    for a, b in zip(jvm, rust):
        assert a.dataType.simpleString() == b.dataType.simpleString(), (a, b)


def local_paths(text):
    return text.replace("file://", "").replace("file:", "")


def test_the_cli_answers_the_same_on_the_spark_jobs_output_as_on_its_own(inputs, cli_table, spark_table, tmp_path):
    """From the cluster to the laptop: `imgfeat search`, `dedup` and `report` run directly on the Spark
    job's output directory give the hits, groups and page they give on the CLI's table of the same photos."""
    folder, files = inputs
    out, _ = spark_table
    photos = [f for f in files if "corrupt" not in f and f.lower().endswith((".jpg", ".jpeg", ".png"))]
    queries = photos[:: max(1, len(photos) // 5)][:5]

    def cli(*args):
        result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def answers(table, name):
        search = cli("search", "--json", "-k", "10", "--threads", "2", "--index", table, *queries)
        cli("dedup", "-o", tmp_path / f"{name}.csv", table)
        cli("report", "--max-images", "200", "-o", tmp_path / f"{name}.html", table)
        page = (tmp_path / f"{name}.html").read_text().replace(str(table), "TABLE")
        return [local_paths(search), local_paths((tmp_path / f"{name}.csv").read_text()), local_paths(page)]

    from_cli, from_spark = answers(cli_table, "cli"), answers(out, "spark")
    assert len(from_cli[0].splitlines()) == len(queries) and '"hits"' in from_cli[0]
    for what, a, b in zip(["search", "dedup", "report"], from_cli, from_spark):
        assert a == b, f"{what} differs between the CLI's table and the Spark job's output"
    assert from_cli[1].count("\n") >= 1 and "figure" in from_cli[2]


def test_int8_in_spark_gives_the_rows_the_cli_gives_in_int8(spark, tmp_path):
    """`--precision int8` reaches the native pipeline through the JVM params: the rows equal the CLI's
    with `--precision int8`, and differ from f32's (int8 runs on every CPU, on VNNI or portable kernels)."""
    folder = tmp_path / "photos"
    shutil.copytree(ROOT / "tests/fixtures/photos", folder)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    cli_out = tmp_path / "cli.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "1", "--precision", "int8", "-o", str(cli_out), str(folder)],
                   check=True, capture_output=True)
    out = tmp_path / "out"
    spark_submit(LOCAL, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                 "--precision", "int8", f"file://{folder}", str(out))
    cli_rows = rows_by_path(spark, cli_out, strip_scheme=False)
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)
    f32_out = tmp_path / "f32.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "1", "--precision", "f32", "-o", str(f32_out), str(folder)],
                   check=True, capture_output=True)
    f32_rows = rows_by_path(spark, f32_out, strip_scheme=False)
    assert any(f32_rows[f]["whole_feature"] != cli_rows[f]["whole_feature"] for f in files), "int8 rows equal f32's"


def spark35_venv():
    """.venv-spark35 (pip's pyspark 3.5), or a skip that says how to make it."""
    if not (SPARK35_VENV / "bin/python").exists():
        pytest.skip(f"SKIPPED: {SPARK35_VENV} is absent (pyspark 3.5 for the Spark 3.5 / Scala 2.12 jar); "
                    "scripts/test.sh creates it")
    return SPARK35_VENV


def sha256(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def submit_with_package(package, tmp_path, *args, venv=None):
    """spark-submit in local mode with imgfeat as `--packages PACKAGE`: Spark's Ivy chain finds it in the local
    Maven repository (~/.m2) that `mvn install` filled, through a fresh Ivy home (`spark.jars.ivy`) so that no
    earlier resolution is reused. Returns the result and the jar Ivy fetched."""
    ivy = tmp_path / "ivy"
    result = spark_submit(LOCAL, "--conf", f"spark.jars.ivy={ivy}", "--packages", package, *args, venv=venv)
    group, artifact, version = package.split(":")
    assert f"found {group}#{artifact};{version} in local-m2-cache" in result.stdout + result.stderr, result.stderr[-3000:]
    fetched = ivy / "jars" / f"{group}_{artifact}-{version}.jar"
    assert fetched.is_file(), f"Ivy fetched no {fetched.name}: {sorted(p.name for p in (ivy / 'jars').glob('*'))}"
    return result, fetched


def test_scala_example_with_imgfeat_from_maven_packages_in_local_mode(inputs, cli_rows, spark, tmp_path):
    """imgfeat as Spark users get a library: `--packages ai.imgfeat:imgfeat-spark4_2.13:0.1.0`, resolved from the
    local Maven repository (the installed pom is flattened, so it names that artifact and Ivy accepts it). The
    example job gives the CLI's rows."""
    folder, files = inputs
    out = tmp_path / "out"
    result, fetched = submit_with_package(PACKAGE, tmp_path, "--class", "ai.imgfeat.example.ExtractJob", str(EXAMPLE_JAR),
                                          f"file://{folder}", str(out))
    assert sha256(fetched) == sha256(JAR), f"~/.m2 holds another {PACKAGE} than {JAR}: run mvn install"
    (total, _, _), _ = summary(result.stdout)
    assert total == len(files)
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def test_scala_example_on_spark35_scala212_in_local_mode(inputs, cli_rows, spark, tmp_path):
    """The other Spark/Scala pair of the matrix: the jar `mvn install -Pspark-3.5` builds from the same sources
    (`ai.imgfeat:imgfeat-spark3.5_2.12`, as a package) and the example job built with it, on pip's pyspark 3.5,
    give the CLI's rows. (Spark 3.5 it is: the jar refuses any other line, test below.)"""
    venv = spark35_venv()
    folder, files = inputs
    out = tmp_path / "out"
    result, fetched = submit_with_package(PACKAGE35, tmp_path, "--class", "ai.imgfeat.example.ExtractJob",
                                          str(SPARK35_DIR / "imgfeat-example.jar"), f"file://{folder}", str(out), venv=venv)
    assert sha256(fetched) == sha256(SPARK35_DIR / "imgfeat-spark.jar"), f"~/.m2 holds another {PACKAGE35}: run mvn install -Pspark-3.5"
    (total, _, _), _ = summary(result.stdout)
    assert total == len(files)
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def build_info(jar):
    import zipfile

    with zipfile.ZipFile(jar) as z:
        lines = z.read("ai/imgfeat/build-info.properties").decode().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def spark_and_scala(venv):
    """(Spark version, Scala version) of the pyspark in `venv` (None: this pytest's)."""
    home = Path(spark_env(venv)["SPARK_HOME"])
    (spark_core,) = (home / "jars").glob("spark-core_*.jar")
    (scala,) = (home / "jars").glob("scala-library-*.jar")
    return spark_core.stem.rsplit("-", 1)[1], scala.stem.rsplit("-", 1)[1]


@pytest.mark.parametrize("jar_dir, venv", [(SPARK35_DIR, None), (JAR.parent, SPARK35_VENV)],
                         ids=["spark35-jar-on-spark4", "spark4-jar-on-spark35"])
def test_a_jar_on_the_other_line_spark35_or_spark4_fails_naming_both_versions(jar_dir, venv, tmp_path):
    """A jar on the wrong Spark/Scala line fails as the transformer is made (here from PySpark), with an
    ImgfeatException naming the versions it was built for and the running ones, not a NoSuchMethodError."""
    if venv is not None:
        spark35_venv()
    jar = jar_dir / "imgfeat-spark.jar"
    built = build_info(jar)
    running_spark, running_scala = spark_and_scala(venv)
    package = shutil.make_archive(str(tmp_path / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    result = spark_submit(LOCAL, "--jars", str(jar), "--py-files", package, str(ROOT / "tests/spark/path_column_job.py"),
                          f"file://{ROOT / 'tests/fixtures/photos/chelsea.jpg'}", check=False, venv=venv)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    expected = (f"ai.imgfeat.ImgfeatException: {built['artifact']} was built for Spark {built['spark.version']} / Scala "
                f"{built['scala.version']}, but runs on Spark {running_spark} / Scala {running_scala}")
    assert expected in output, output[-3000:]
    assert "NoSuchMethodError" not in output and "ROW " not in result.stdout


def test_the_packages_jars_carry_the_stripped_library_the_models_and_their_spark_line(tmp_path):
    """Both jars of the matrix hold what the build put in the one jar before Maven: the native library without
    its debug info (stored, as are the models), every model with the INDEX listing them, and the versions the
    jar was built for (SparkLine reads them)."""
    import zipfile

    models = sorted(p for p in (ROOT / "models").iterdir() if p.suffix in (".onnx", ".txt", ".safetensors"))
    for jar, line, scala in [(JAR, "4", "2.13"), (SPARK35_DIR / "imgfeat-spark.jar", "3.5", "2.12")]:
        with zipfile.ZipFile(jar) as z:
            library = z.getinfo("native/linux-x86_64/libimgfeat.so")
            copy = tmp_path / "libimgfeat.so"
            copy.write_bytes(z.read(library))
            sections = subprocess.run(["readelf", "-S", "-W", str(copy)], check=True, capture_output=True, text=True).stdout
            assert ".dynsym" in sections and ".debug_" not in sections, f"{jar}: the library keeps its debug info"
            index = z.read("imgfeat/models/INDEX").decode().split()
            assert sorted(index) == [m.name for m in models], jar
            for model in models:
                entry = z.getinfo(f"imgfeat/models/{model.name}")
                assert entry.compress_type == zipfile.ZIP_STORED and z.read(entry) == model.read_bytes(), (jar, model.name)
            assert library.compress_type == zipfile.ZIP_STORED
            assert {"ai/imgfeat/ImageFeatureExtractor.class", "ai/imgfeat/NativeLib.class", "ai/imgfeat/SparkLine.class",
                    "ai/imgfeat/NearDuplicates.class", "ai/imgfeat/PackedRows$.class"} <= set(z.namelist()), jar
        info = build_info(jar)
        assert (info["spark.line"], info["scala.binary.version"]) == (line, scala), (jar, info)
        assert info["artifact"] == f"ai.imgfeat:imgfeat-spark{line}_{scala}:{VERSION}"


def test_a_node_without_avx512_makes_the_same_int8_rows(spark, tmp_path, monkeypatch):
    """IMGFEAT_MAX_ISA=avx2 makes an executor run what a CPU without AVX-512 runs: the AVX2 kernels.
    In int8 its rows are the same bits as the CLI's on this CPU's widest kernels (AVX-512 VNNI where
    it has them), so a cluster of mixed CPUs gives one code per photo."""
    folder = tmp_path / "photos"
    shutil.copytree(ROOT / "tests/fixtures/photos", folder)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    cli_out = tmp_path / "cli.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "1", "--precision", "int8", "-o", str(cli_out), str(folder)],
                   check=True, capture_output=True)
    monkeypatch.setenv("IMGFEAT_MAX_ISA", "avx2")
    out = tmp_path / "out"
    spark_submit(LOCAL, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                 "--precision", "int8", f"file://{folder}", str(out))
    spark_rows = rows_by_path(spark, out, strip_scheme=True)
    assert_same_as_cli(spark_rows, rows_by_path(spark, cli_out, strip_scheme=False), files, same_kernels=False)
    # Each row says which kernels made it, so a mixed cluster's output shows which node made what.
    made_in = {r["arithmetic"] for r in spark_rows.values() if r["error"] is None}
    assert len(made_in) == 1 and next(iter(made_in)).startswith("int8 (avx2-"), made_in


def test_scala_example_on_a_standalone_cluster(inputs, cli_rows, spark, cluster, tmp_path):
    folder, files = inputs
    out = tmp_path / "out"
    result = spark_submit(CLUSTER, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                          f"file://{folder}", str(out))
    (total, _, _), threads = summary(result.stdout)
    assert total == len(files)
    assert threads == "1", "two 1-core workers: each task's native side computes on one thread"
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def test_pyspark_example_on_a_standalone_cluster(inputs, cli_rows, spark, cluster, tmp_path):
    folder, files = inputs
    package = shutil.make_archive(str(tmp_path / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    out = tmp_path / "out"
    result = spark_submit(CLUSTER, "--jars", str(JAR), "--py-files", package, str(ROOT / "python/examples/extract.py"),
                          f"file://{folder}", str(out))
    (total, _, _), threads = summary(result.stdout)
    assert total == len(files) and threads == "1"
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def test_a_rust_panic_fails_the_task_with_our_exception_and_the_executors_survive(cluster, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "not-an-image.txt").write_text("x")
    result = spark_submit(CLUSTER, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                          "--panic-check", "deliberate test panic 42", f"file://{empty}", str(tmp_path / "out"))
    match = re.search(r"imgfeat-panic-check: pids before ([\d,]+); after ([\d,]+); failure: (.*)", result.stdout)
    assert match, result.stdout[-2000:]
    before, after, failure = match.groups()
    assert "ai.imgfeat.ImgfeatException: panic: deliberate test panic 42" in failure, failure
    # Retried (spark.task.maxFailures, 4 by default), then the job fails with our message.
    assert re.search(r"failed [2-9] times", failure), failure
    assert len(before.split(",")) == 2, f"two executors expected, saw pids {before}"
    assert before == after, "the executor JVMs survived the panic"


def test_images_read_by_path_and_unreadable_paths_are_error_rows(tmp_path):
    package = shutil.make_archive(str(tmp_path / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    photos = ROOT / "tests/fixtures/photos"
    paths = [f"file://{photos / 'chelsea.jpg'}", f"file://{photos / 'coffee.jpg'}", f"file://{tmp_path / 'missing.jpg'}"]
    result = spark_submit(LOCAL, "--jars", str(JAR), "--py-files", package,
                          str(ROOT / "tests/spark/path_column_job.py"), *paths)
    rows = [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("ROW ")]
    assert [r["path"] for r in rows] == paths
    assert [(r["class_name"], r["code_bytes"], r["error"]) for r in rows[:2]] == [("cat", 32, None), ("cup", 32, None)]
    assert rows[2]["class_name"] is None and "missing.jpg" in rows[2]["error"], rows[2]


def executor_pids():
    found = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in found.split())


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def busy_executor(ui_port):
    """(executor id, app id) of an executor the driver has registered and given a task, from the driver's
    REST API; None while there is none. Killing an executor before the driver knows it tests nothing: the
    worker just starts another, and the driver never logs a loss."""
    import urllib.request

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/{path}", timeout=5) as response:
            return json.load(response)

    try:
        (app,) = get("applications")
        executors = get(f"applications/{app['id']}/executors")
    except (OSError, ValueError):  # the UI is not up yet, or the app is not registered
        return None
    busy = sorted(e["id"] for e in executors if e["id"] != "driver" and e["activeTasks"] > 0)
    return (busy[0], app["id"]) if busy else None


def executor_pid(executor_id, app_id):
    pattern = f"CoarseGrainedExecutorBackend.*--executor-id {executor_id} .*--app-id {app_id}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert len(found) == 1, f"one process expected for executor {executor_id} of {app_id}, saw {found}"
    return int(found[0])


@pytest.mark.parametrize("run", [1, 2, 3])
def test_a_killed_executor_loses_and_duplicates_no_rows(inputs, cli_rows, spark, cluster, tmp_path, run):
    """An executor JVM killed (SIGKILL) mid-job: Spark reruns its tasks elsewhere and the output is the
    clean run's, row for row (the clean cluster run equals the CLI's, test above), without duplicates.
    Three runs, each killing an executor that is running a task, a different moment into its work."""
    import signal
    import time

    folder, files = inputs
    if len(files) < 500:
        pytest.skip(f"SKIPPED: needs ≥ 500 photos (../shared/data/imagenet-sample), has {len(files)}")
    out = tmp_path / "out"
    # The previous job's executors may still be exiting: killing one of them would test nothing.
    deadline = time.time() + 60
    while executor_pids() and time.time() < deadline:
        time.sleep(0.2)
    assert not executor_pids(), f"executors of an earlier job still running: {executor_pids()}"
    ui_port = free_port()
    command = [str(Path(spark_env()["SPARK_HOME"]) / "bin/spark-submit"), *CLUSTER, "--conf", "spark.task.maxFailures=8",
               "--conf", "spark.ui.enabled=true", "--conf", f"spark.ui.port={ui_port}",
               "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR), f"file://{folder}", str(out)]
    log = open(tmp_path / "driver.log", "w+")
    job = subprocess.Popen(command, env=spark_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        busy = None
        while busy is None and job.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            busy = busy_executor(ui_port)
        assert busy, "no executor of the job ever ran a task"
        time.sleep(2 * (run - 1))  # 0, 2 or 4 s into its task: loading the models, or part-way through photos
        victim = executor_pid(*busy)
        assert job.poll() is None, "the job finished before the executor could be killed"
        os.kill(victim, signal.SIGKILL)
        assert job.wait(timeout=600) == 0, "the job failed after losing an executor"
    finally:
        if job.poll() is None:
            job.kill()
    log.seek(0)
    driver = log.read()
    assert re.search(r"[Ll]ost (an )?executor|ExecutorLost", driver), f"no lost executor in the driver's log:\n{driver[-3000:]}"
    assert victim not in executor_pids(), "the killed executor is gone"
    (total, _, _), _ = summary(driver)
    assert total == len(files)
    assert_same_as_cli(rows_by_path(spark, out, strip_scheme=True), cli_rows, files)


def extract_features(folder, out, bits):
    subprocess.run([str(CLI), "extract", "--threads", "2", "--bits", str(bits), "-o", str(out), str(folder)], check=True,
                   capture_output=True)
    return out


def cli_dedup_groups(features, out, max_distance=None, verify=True):
    """`imgfeat dedup`'s groups (its default distance when max_distance is None; by the codes alone with
    verify False) as {path: representative}."""
    import csv

    distance = [] if max_distance is None else ["--max-distance", str(max_distance)]
    subprocess.run([str(CLI), "dedup", str(features), *distance, *([] if verify else ["--no-verify"]), "-o", str(out)],
                   check=True, capture_output=True)
    with open(out, newline="") as lines:
        return {row["path"]: row["representative"] for row in csv.DictReader(lines)}


def group_sizes(representatives):
    sizes = {}
    for representative in representatives.values():
        sizes[representative] = sizes.get(representative, 0) + 1
    return {path: sizes[representative] for path, representative in representatives.items()}


NEAR_DUPLICATE_DISTANCES = [None, 8, 40]  # codes alone: their default (24), and per band 0 and 2 bits of 16 (16 bands)
VERIFIED_DISTANCES = [None, 128]  # the default rule's distance (47) and one where verification decides alone
SKEWED_ROWS = 10_000


@pytest.fixture(scope="session")
def near_duplicate_runs(spark, tmp_path_factory):
    """One spark-submit of tests/spark/near_duplicates_job.py over every table and setting the near-duplicate
    tests check (each submit costs a JVM start): the fixture photos with mirrored and resized copies (and
    ../shared/data/formats: the same photo in several containers, flipped and rotated copies, a corrupt
    file) extracted by the CLI with 64-, 128- and 256-bit codes, a table of 10,000 rows with one code, and
    runs that must fail. Returns (tables, groups by run label, code pair counts, errors, defaults)."""
    from PIL import Image, ImageOps
    from pyspark.sql import functions as F

    work = tmp_path_factory.mktemp("near-duplicates")
    photos = ROOT / "tests/fixtures/photos"
    folder = work / "photos"
    shutil.copytree(photos, folder)
    for name in ("chelsea.jpg", "coffee.jpg"):
        image = Image.open(photos / name)
        ImageOps.mirror(image).save(folder / f"mirrored-{name}")
        image.resize((image.width // 2, image.height // 2)).save(folder / f"small-{name}", quality=70)
    # The cat at 45 % of its size pasted onto the coffee photo: grouped with its original only through the inset
    # its row carries (tests/cli.rs shows the CLI needs it).
    cat = Image.open(photos / "chelsea.jpg").convert("RGB")
    pasted = Image.open(photos / "coffee.jpg").convert("RGB").resize(cat.size)
    pasted.paste(cat.resize((cat.width * 45 // 100, cat.height * 45 // 100)), (cat.width * 3 // 10, cat.height * 3 // 10))
    pasted.save(folder / "pasted-chelsea.png")
    if (SHARED / "formats").is_dir():
        shutil.copytree(SHARED / "formats", folder / "formats")
    else:
        warnings.warn(f"SKIPPED part: {SHARED / 'formats'} is absent; no odd formats or error rows in the near-duplicate tables")
    tables = {bits: extract_features(folder, work / f"features-{bits}.parquet", bits) for bits in (64, 128, 256)}
    # 10,000 placeholder rows: one real row's codes under distinct paths.
    (row,) = (spark.read.parquet(str(tables[256])).where(F.col("code").isNotNull() & F.col("whole_code").isNotNull())
              .orderBy("path").limit(1).collect())
    skewed = work / "skewed.parquet"
    (spark.range(SKEWED_ROWS).select(F.format_string("placeholder-%05d.jpg", "id").alias("path"),
                                     F.lit(bytes(row["code"])).alias("code"), F.lit(bytes(row["whole_code"])).alias("whole_code"))
     .write.parquet(str(skewed)))
    tables["skewed"] = skewed
    runs = [{"label": f"256@{d}", "features": str(tables[256]), "verify": False, **({} if d is None else {"max_distance": d})}
            for d in NEAR_DUPLICATE_DISTANCES]
    runs += [{"label": f"{bits}@default", "features": str(tables[bits])} for bits in (64, 128)]
    runs += [{"label": f"verified@{d}", "features": str(tables[256]), **({} if d is None else {"max_distance": d})}
             for d in VERIFIED_DISTANCES]
    runs += [{"label": "verified, insets ignored", "features": str(tables[256]), "insets_col": ""}]
    runs += [{"label": "skewed", "features": str(skewed), "verify": False, "code_pairs": True},
             {"label": "no feature columns", "features": str(skewed)},
             {"label": "bands not dividing the bits", "features": str(tables[64]), "bands": 24},
             {"label": "missing id column", "features": str(tables[256]), "id_col": "photo"},
             {"label": "code column not binary", "features": str(tables[256]), "code_cols": ["code", "class_name"]}]
    package = shutil.make_archive(str(work / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    result = spark_submit(LOCAL, "--jars", str(JAR), "--py-files", package, str(ROOT / "tests/spark/near_duplicates_job.py"),
                          json.dumps(runs))

    def lines(kind):
        return [json.loads(line[len(kind) + 1:]) for line in result.stdout.splitlines() if line.startswith(kind + " ")]

    groups = {run["label"]: {} for run in runs}
    for member in lines("GROUP"):
        groups[member["label"]][member["path"]] = (member["representative"], member["group_size"])
    code_pairs = {line["label"]: line["count"] for line in lines("CODE_PAIRS")}
    errors = {line["label"]: line["message"] for line in lines("ERROR")}
    (defaults,) = lines("DEFAULTS")
    return tables, groups, code_pairs, errors, defaults


def test_near_duplicate_groups_on_spark_equal_imgfeat_dedup(near_duplicate_runs, tmp_path):
    """By the codes alone (verify off), NearDuplicates' groups are `imgfeat dedup --no-verify`'s: the same members,
    the same representative (the smallest path) and group sizes, at that rule's default distance (24 on both
    sides), a smaller and a larger one."""
    tables, groups, _, errors, defaults = near_duplicate_runs
    assert defaults["python"] == defaults["jvm"] == ["path", ["code", "whole_code"], 47, 16, True, ["feature", "whole_feature"],
                                                     "insets"], defaults
    for distance in NEAR_DUPLICATE_DISTANCES:
        label = f"256@{distance}"
        assert label not in errors, errors[label]
        cli = cli_dedup_groups(tables[256], tmp_path / f"dedup-{distance}.csv", distance, verify=False)
        found = groups[label]
        assert {p: r for p, (r, _) in found.items()} == cli, label
        assert {p: size for p, (_, size) in found.items()} == group_sizes(cli), label
        if distance is None:
            (mirrored,) = (p for p in found if p.endswith("/mirrored-chelsea.jpg"))
            assert found[mirrored][0].endswith("/chelsea.jpg"), "the mirrored copy groups with its original"


def test_verified_near_duplicate_groups_on_spark_equal_imgfeat_dedup_verify(near_duplicate_runs, tmp_path):
    """By default (verify), NearDuplicates' groups are `imgfeat dedup`'s (one rule: candidates by Hamming
    distance, joined when their features agree by the thresholds of their kinds, rows' insets against whole
    images; without the insets column the photo pasted onto another is not grouped), at the default distance
    and at 128 bits, where the Hamming rule alone would join unrelated photos and verification must not. A
    table without feature columns is refused with the way out."""
    tables, groups, _, errors, _ = near_duplicate_runs
    for distance in VERIFIED_DISTANCES:
        label = f"verified@{distance}"
        assert label not in errors, errors[label]
        cli = cli_dedup_groups(tables[256], tmp_path / f"verified-{distance}.csv", distance)
        assert {p: r for p, (r, _) in groups[label].items()} == cli, label
        assert cli, "the copies verify as near-duplicates of their originals"
        (pasted,) = (p for p in cli if p.endswith("/pasted-chelsea.png"))
        assert cli[pasted].endswith("/chelsea.jpg"), "the pasted copy groups with its original through its inset"
    assert not any(p.endswith("/pasted-chelsea.png") for p in groups["verified, insets ignored"]), \
        "with insetsCol empty, nothing groups the pasted copy"
    hamming_only = cli_dedup_groups(tables[256], tmp_path / "hamming-128.csv", 128, verify=False)
    assert len(set(hamming_only.values())) < len(set(cli.values())) or len(hamming_only) > len(cli), \
        "at 128 bits verification must split what the Hamming rule alone joins"
    message = errors["no feature columns"]
    assert "feature column 'feature' is not in the input" in message and "setVerify(false)" in message, message


def test_near_duplicate_groups_on_spark_equal_an_exhaustive_comparison(near_duplicate_runs, spark):
    """The groups equal those of comparing every pair of rows (every pair of their codes), joined
    transitively: the band join misses nothing at any distance."""
    import itertools

    import numpy as np

    tables, groups, _, _, _ = near_duplicate_runs
    codes = {row["path"]: [np.unpackbits(np.frombuffer(bytes(c), np.uint8)) for c in (row["code"], row["whole_code"]) if c]
             for row in spark.read.parquet(str(tables[256])).collect()}
    paths = sorted(p for p in codes if codes[p])
    distance = {(a, b): min(int(np.sum(x != y)) for x in codes[a] for y in codes[b])
                for a, b in itertools.combinations(paths, 2)}
    for limit in NEAR_DUPLICATE_DISTANCES:
        parent = {p: p for p in paths}

        def root(p):
            while parent[p] != p:
                p = parent[p]
            return p

        for (a, b), d in distance.items():
            if d <= (24 if limit is None else limit):
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)  # the root stays the smallest path
        members = {}
        for p in paths:
            members.setdefault(root(p), []).append(p)
        expected = {p: (min(g), len(g)) for g in members.values() if len(g) > 1 for p in g}
        assert groups[f"256@{limit}"] == expected, limit


def test_near_duplicates_of_64_128_and_256_bit_codes_with_the_default_bands_equal_imgfeat_dedup(near_duplicate_runs, tmp_path):
    """16 bands of 4, 8 and 16 bits: every code length works with the defaults, and gives the CLI's groups."""
    tables, groups, _, errors, _ = near_duplicate_runs
    for bits, label in ((64, "64@default"), (128, "128@default"), (256, "verified@None")):
        assert label not in errors, errors[label]
        cli = cli_dedup_groups(tables[bits], tmp_path / f"dedup-{bits}.csv")
        assert {p: r for p, (r, _) in groups[label].items()} == cli, bits
        assert cli, f"{bits}-bit codes: the copies group with their originals"


def test_near_duplicates_collapse_ten_thousand_identical_codes_before_the_band_join(near_duplicate_runs):
    """10,000 rows with one code are one group of 10,000, found through the distinct codes: the band join
    sees one code (or two: object and whole image), not 10^8 pairs of rows."""
    _, groups, code_pairs, errors, _ = near_duplicate_runs
    assert "skewed" not in errors, errors["skewed"]
    found = groups["skewed"]
    assert len(found) == SKEWED_ROWS
    assert set(found.values()) == {("placeholder-00000.jpg", SKEWED_ROWS)}
    assert code_pairs["skewed"] <= 1, code_pairs


def test_near_duplicates_reject_bad_params_with_clear_messages(near_duplicate_runs):
    _, _, _, errors, _ = near_duplicate_runs
    assert "a 64-bit code does not split into 24 bands" in errors["bands not dividing the bits"]
    assert "idCol column 'photo' is not in the input" in errors["missing id column"]
    assert "code column 'class_name' must be binary" in errors["code column not binary"]


@pytest.fixture(scope="session")
def config_runs(tmp_path_factory):
    """One spark-submit of tests/spark/config_job.py over the fixture photos: a misspelt config, the OIDv4
    detector given as a full specification through `config` (the `detector` object `imgfeat config --detector
    oidv4` prints, model paths relative to the models folder as printed), config and param precedence, and
    pipelines saved on one side and loaded on the other. Returns (photos, their paths, lines by kind)."""
    work = tmp_path_factory.mktemp("config")
    folder = work / "photos"
    shutil.copytree(ROOT / "tests/fixtures/photos", folder)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    printed = subprocess.run([str(CLI), "config", "--detector", "oidv4"], check=True, capture_output=True, text=True).stdout
    detector = json.loads(printed)["detector"]
    assert isinstance(detector, dict) and "/" not in detector["model"], detector
    package = shutil.make_archive(str(work / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    result = spark_submit(LOCAL, "--jars", str(JAR), "--py-files", package, str(ROOT / "tests/spark/config_job.py"),
                          f"file://{folder}", str(work / "out"), json.dumps(detector))
    lines = {}
    for line in result.stdout.splitlines():
        kind, _, fields = line.partition(" ")
        if kind.isupper() and fields.startswith("{"):
            lines.setdefault(kind, []).append(json.loads(fields))
    return folder, files, lines


def test_a_misspelt_config_field_fails_on_the_driver_before_any_task_naming_the_field(config_runs):
    _, _, lines = config_runs
    (typo,) = lines["TYPO"]
    assert typo["message"] and "score_treshold" in typo["message"], typo
    assert "ImgfeatException" in typo["message"], typo["message"][:2000]
    assert typo["jobs"] == 0, "the native parser refused the config before any Spark job started"


def test_a_custom_detector_given_as_a_full_spec_in_config_gives_the_clis_oidv4_rows(config_runs, spark, tmp_path):
    folder, files, lines = config_runs
    (custom,) = lines["CUSTOM"]
    cli_out = tmp_path / "oidv4.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "1", "--detector", "oidv4", "-o", str(cli_out), str(folder)],
                   check=True, capture_output=True)
    cli_rows = rows_by_path(spark, cli_out, strip_scheme=False)
    spark_rows = rows_by_path(spark, custom["output"], strip_scheme=True)
    assert_same_as_cli(spark_rows, cli_rows, files)
    coco_out = tmp_path / "coco.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "1", "-o", str(coco_out), str(folder)], check=True, capture_output=True)
    coco_rows = rows_by_path(spark, coco_out, strip_scheme=False)
    assert any(spark_rows[f]["class_name"] != coco_rows[f]["class_name"] for f in files), "the OIDv4 labels, not COCO's"


def test_a_param_set_explicitly_overrides_the_config(config_runs):
    _, _, lines = config_runs
    bits = {line["label"]: line["code_bytes"] for line in lines["BITS"]}
    assert bits == {"config 128": [16], "config 128 + setCodeBits(64)": [8]}, bits


def test_pipelines_saved_from_python_load_in_scala_and_pipelines_saved_in_scala_load_in_python(config_runs):
    """Pipeline, PipelineModel and single stages holding both transformers: the JVM's reader gets the params
    Python set (explicitly set ones still set, so they keep overriding `config`), and Python's reader turns the
    JVM's saved stages into imgfeat.ImageFeatureExtractor / imgfeat.NearDuplicates with the JVM's params."""
    _, _, lines = config_runs
    config = {"codes": {"bits": 128}, "score_threshold": 0.4}
    (to_scala,) = lines["PYTHON_SAVED_SCALA_LOADED"]
    for stages in (to_scala["pipeline"], to_scala["model"]):
        extractor, near = stages
        assert extractor["class"] == "ai.imgfeat.ImageFeatureExtractor" and near["class"] == "ai.imgfeat.NearDuplicates"
        assert json.loads(extractor.pop("config")) == config and extractor["codeBits"] == 64, extractor
        assert near["maxDistance"] == 10 and near["codeCols"] == ["whole_code"], near
    assert to_scala["extractor"]["codeBits"] == 64
    assert to_scala["code_bytes"] == [8], "the loaded model's explicit codeBits still overrides the config's 128"
    (to_python,) = lines["SCALA_SAVED_PYTHON_LOADED"]
    for stages in (to_python["pipeline"], to_python["model"]):
        extractor, near = stages
        assert extractor["class"] == "imgfeat.ImageFeatureExtractor" and near["class"] == "imgfeat.NearDuplicates"
        assert json.loads(extractor["config"]) == config and extractor["codeBits"] == 64, extractor
        assert near["maxDistance"] == 10 and near["codeCols"] == ["whole_code"], near
    assert to_python["near_duplicates"]["class"] == "imgfeat.NearDuplicates"
    assert to_python["code_bytes"] == [8]
    assert to_python["getters"] == [64, config, 10, ["whole_code"]]


def readme_pyspark_example():
    """The README's PySpark example: the ```python block after its `tests/spark runs this` marker."""
    readme = (ROOT / "README.md").read_text()
    marker = readme.index("<!-- tests/spark runs this block")
    start = readme.index("```python\n", marker) + len("```python\n")
    return readme[start:readme.index("```", start)]


def test_the_readmes_pyspark_example_runs_in_a_fresh_virtualenv_of_jvm_bindings_requirements(tmp_path):
    """docs/spark.md's PySpark set-up, verbatim: a virtualenv with only jvm-bindings/requirements.txt (pip's cache
    makes the install take seconds), imgfeat as the zip of python/imgfeat, and the README's PySpark example run
    by that virtualenv's spark-submit, from a folder holding the fixture photos where the example reads them."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "-r",
                              str(ROOT / "jvm-bindings/requirements.txt")], capture_output=True, text=True, timeout=600)
    if install.returncode != 0 and "No matching distribution" in install.stderr + install.stdout:
        pytest.skip(f"SKIPPED: pip cannot install jvm-bindings/requirements.txt here:\n{install.stderr[-1500:]}")
    assert install.returncode == 0, install.stderr[-3000:]
    imports = subprocess.run([str(venv / "bin/python"), "-c", "import imgfeat; print(imgfeat.__all__)"],
                             cwd=ROOT / "python", capture_output=True, text=True)
    assert imports.returncode == 0, f"import imgfeat fails with only jvm-bindings/requirements.txt:\n{imports.stderr}"
    workdir = tmp_path / "work"
    shutil.copytree(ROOT / "tests/fixtures/photos", workdir / "tests/fixtures/photos")
    job = workdir / "example.py"
    job.write_text(readme_pyspark_example())
    package = shutil.make_archive(str(tmp_path / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    env = spark_env(venv)
    result = subprocess.run([str(venv / "bin/spark-submit"), *LOCAL, "--jars", str(JAR), "--py-files", package, str(job)],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    check = ("from pyspark.sql import SparkSession; s = SparkSession.builder.master('local[1]').getOrCreate(); "
             "rows = s.read.parquet('features').collect(); "
             "print(len(rows), sorted({len(r['code']) for r in rows}), sum(r['error'] is None for r in rows))")
    table = subprocess.run([str(venv / "bin/python"), "-c", check], cwd=workdir, env=env, capture_output=True, text=True,
                           timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    photos = len(list((ROOT / "tests/fixtures/photos").iterdir()))
    assert table.stdout.strip().splitlines()[-1] == f"{photos} [32] {photos}", table.stdout[-2000:]
