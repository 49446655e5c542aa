"""imgfeat where the photos are: HDFS and YARN, as Hadoop's own test clusters (MiniDFSCluster,
MiniYARNCluster from hadoop-client-minicluster) started on 127.0.0.1 by this module and always stopped.

- HDFS: photos uploaded to the cluster; the Scala example job reads them by `binaryFile` and writes its
  Parquet back to HDFS; the PySpark path-column job reads them by `pathCol`; rows identical to the CLI's
  output of the same local photos; a missing path is an error row (pathCol) or a clear job error
  (binaryFile).
- YARN: `spark-submit --master yarn` in client and cluster deploy mode, executors in YARN containers,
  the jar shipped with the job, reading from HDFS; one run kills an executor's container mid-job and
  its output still equals the clean run's.

Run by scripts/test.sh after the jar is built, in its own pytest run (it starts its own Spark session).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/spark"))
from test_spark import (CLI, EXAMPLE_JAR, JAR, LOCAL, SHARED, assert_same_as_cli, rows_by_path,  # noqa: E402
                        spark_env)

JARS = ROOT / "target/hadoop-test-jars"
CLASSES = ROOT / "target/hadoop-test-classes"


def spark_jars_dir():
    return Path(spark_env()["SPARK_HOME"]) / "jars"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The fixture photos, 60 of the shared ImageNet photos and the odd formats (corrupt JPEG included)."""
    folder = tmp_path_factory.mktemp("hadoop-photos") / "photos"
    shutil.copytree(ROOT / "tests/fixtures/photos", folder)
    sample = SHARED / "imagenet-sample"
    if sample.is_dir():
        for path in sorted(sample.iterdir())[:60]:
            shutil.copy(path, folder / path.name)
    else:
        warnings.warn(f"SKIPPED part: {sample} is absent; the fixture photos only")
    if (SHARED / "formats").is_dir():
        shutil.copytree(SHARED / "formats", folder / "formats")
    return folder


@pytest.fixture(scope="module")
def cli_rows(photos, spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("hadoop-cli") / "features.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "2", "-o", str(out), str(photos)], check=True, capture_output=True)
    # The reader's default file system is the HDFS cluster: a local file needs its scheme.
    return {relative(p, photos): row for p, row in rows_by_path(spark, f"file://{out}", strip_scheme=False).items()}


def relative(path, root):
    """A row's path relative to the photos' root, whether local or hdfs://host:port/photos/…"""
    path = re.sub(r"^hdfs://[^/]+", "", path)
    for prefix in (str(root), "/photos"):
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1:]
    raise AssertionError(f"{path} is not under {root} or /photos")


@pytest.fixture(scope="module")
def hadoop(photos, tmp_path_factory):
    """MiniDFSCluster + MiniYARNCluster (2 NodeManagers) with the photos uploaded to /photos; yields
    (hdfs URI, configuration folder). Stopped at the end, also when a test fails."""
    subprocess.run(["mvn", "-q", "-B", "-f", str(ROOT / "tests/hadoop/pom.xml"), "dependency:copy-dependencies",
                    f"-DoutputDirectory={JARS}"], check=True, timeout=900)
    classpath = f"{JARS}/*:{spark_jars_dir()}/*"
    subprocess.run(["javac", "-d", str(CLASSES), "-cp", classpath, str(ROOT / "tests/hadoop/MiniClusters.java")], check=True)
    work = tmp_path_factory.mktemp("hadoop-clusters")
    log = open(work / "clusters.log", "w+")
    process = subprocess.Popen(["java", "-Xmx1g", "-cp", f"{CLASSES}:{classpath}", "MiniClusters", str(work), "--yarn", "2",
                                "--put", str(photos), "/photos"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    ready = []
    reader = threading.Thread(target=lambda: ready.extend(line for line in iter(process.stdout.readline, "") if line.startswith("READY")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.time() + 240
        while not ready and process.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if not ready:
            log.seek(0)
            pytest.fail(f"the Hadoop test clusters did not start:\n{log.read()[-4000:]}")
        yield ready[0].split()[1], work / "conf"
    finally:
        process.stdin.close()  # the launcher stops both clusters when its input closes
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()


def hadoop_env(conf):
    env = spark_env()
    env.update(HADOOP_CONF_DIR=str(conf), YARN_CONF_DIR=str(conf))
    # Spark's default logging (INFO): the YARN client's lines (application id, final status) are checked.
    env.pop("SPARK_CONF_DIR", None)
    return env


def submit(conf, master, *args, check=True, timeout=900):
    command = [str(Path(spark_env()["SPARK_HOME"]) / "bin/spark-submit"), *master, *args]
    result = subprocess.run(command, env=hadoop_env(conf), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"spark-submit failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def spark(hadoop):
    """A local Spark session that reads the HDFS cluster (for checking outputs)."""
    from pyspark.sql import SparkSession

    saved = dict(os.environ)
    os.environ.update(hadoop_env(hadoop[1]))
    session = (SparkSession.builder.master("local[1]").appName("imgfeat-hadoop-test-reader")
               .config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()
    os.environ.clear()
    os.environ.update(saved)  # later modules' jobs must not see this cluster's configuration


def hdfs_rows(spark, uri, photos):
    rows = {}
    for row in spark.read.parquet(uri).collect():
        key = relative(row["path"], photos)
        assert key not in rows, f"two rows for {key}"
        rows[key] = row
    return rows


def assert_rows_equal_the_clis(rows, cli_rows):
    assert_same_as_cli(rows, cli_rows, sorted(cli_rows))


def test_the_example_job_reads_photos_from_hdfs_and_writes_parquet_back(hadoop, photos, spark, cli_rows):
    uri, conf = hadoop
    result = submit(conf, LOCAL, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                    f"{uri}/photos", f"{uri}/features/binaryfile")
    assert f"-> {uri}/features/binaryfile" in result.stdout, result.stdout[-2000:]
    assert_rows_equal_the_clis(hdfs_rows(spark, f"{uri}/features/binaryfile", photos), cli_rows)


def test_paths_on_hdfs_are_read_by_path_column_and_a_missing_one_is_an_error_row(hadoop, tmp_path):
    uri, conf = hadoop
    import json

    package = shutil.make_archive(str(tmp_path / "imgfeat"), "zip", ROOT / "python", "imgfeat")
    paths = [f"{uri}/photos/chelsea.jpg", f"{uri}/photos/coffee.jpg", f"{uri}/photos/missing.jpg"]
    result = submit(conf, LOCAL, "--jars", str(JAR), "--py-files", package, str(ROOT / "tests/spark/path_column_job.py"), *paths)
    rows = [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("ROW ")]
    assert [r["path"] for r in rows] == paths
    assert [(r["class_name"], r["code_bytes"], r["error"]) for r in rows[:2]] == [("cat", 32, None), ("cup", 32, None)]
    assert rows[2]["class_name"] is None and "missing.jpg" in rows[2]["error"], rows[2]


def test_a_missing_hdfs_folder_fails_the_binaryfile_job_with_a_clear_error(hadoop):
    uri, conf = hadoop
    result = submit(conf, LOCAL, "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                    f"{uri}/no-such-folder", f"{uri}/features/none", check=False)
    assert result.returncode != 0
    assert re.search(r"Path does not exist: hdfs://[^ ]+/no-such-folder", result.stdout + result.stderr), result.stderr[-3000:]


def yarn(mode):
    # Spark's own jars are on this (only) node already: local: keeps spark-submit from uploading ~300 MB.
    return ["--master", "yarn", "--deploy-mode", mode, "--num-executors", "2", "--executor-cores", "1",
            "--executor-memory", "1g", "--driver-memory", "1g", "--conf", f"spark.yarn.jars=local:{spark_jars_dir()}/*",
            "--conf", "spark.yarn.am.memory=512m", "--conf", "spark.executor.memoryOverhead=512m"]


@pytest.mark.parametrize("mode", ["client", "cluster"])
def test_the_example_job_runs_on_yarn_reading_from_hdfs(hadoop, photos, spark, cli_rows, mode):
    uri, conf = hadoop
    out = f"{uri}/features/yarn-{mode}"
    result = submit(conf, yarn(mode), "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
                    f"{uri}/photos", out)
    assert re.search(r"application_\d+_\d+", result.stdout + result.stderr), "a YARN application ran"
    if mode == "cluster":
        assert "final status: SUCCEEDED" in result.stdout + result.stderr, result.stderr[-3000:]
    assert_rows_equal_the_clis(hdfs_rows(spark, out, photos), cli_rows)


def yarn_executor_pids(app=None):
    """Executor JVMs in YARN containers (YarnCoarseGrainedExecutorBackend), of `app` when given."""
    pattern = "YarnCoarseGrainedExecutorBackend" + (f".*{app}" if app else "")
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in found.split())


def test_a_killed_yarn_container_loses_and_duplicates_no_rows(hadoop, photos, spark, cli_rows, tmp_path):
    uri, conf = hadoop
    out = f"{uri}/features/yarn-killed"
    command = [str(Path(spark_env()["SPARK_HOME"]) / "bin/spark-submit"), *yarn("client"), "--conf", "spark.task.maxFailures=8",
               "--class", "ai.imgfeat.example.ExtractJob", "--jars", str(JAR), str(EXAMPLE_JAR),
               "--partitions", "8", f"{uri}/photos", out]
    log = open(tmp_path / "driver.log", "w+")
    job = subprocess.Popen(command, env=hadoop_env(conf), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while len(yarn_executor_pids()) < 2 and job.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        pids = yarn_executor_pids()
        assert pids, "no executor container ever started"
        time.sleep(3)  # into its first tasks: models loading or photos being processed
        assert job.poll() is None, "the job finished before a container could be killed"
        os.kill(pids[0], signal.SIGKILL)
        assert job.wait(timeout=600) == 0, "the job failed after losing a container"
    finally:
        if job.poll() is None:
            job.kill()
    log.seek(0)
    driver = log.read()
    assert re.search(r"[Ll]ost (an )?executor|ExecutorLost|exited|Container killed|Container .* exited", driver), driver[-3000:]
    assert_rows_equal_the_clis(hdfs_rows(spark, out, photos), cli_rows)
