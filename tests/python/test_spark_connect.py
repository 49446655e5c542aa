"""imgfeat on Spark from Python with the wheel alone: the jar inside it loads in a classic session made by
`imgfeat.spark.session()`, and `imgfeat.spark.extract` runs on a Spark Connect client (no py4j) against a
real Spark Connect server started here from pyspark's own jars on 127.0.0.1. Both give the CLI's rows."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from conftest import PYSPARK, ROOT, make_venv, readme_block, run_python, wheel_file

FEATURE_COLUMNS = ["width", "height", "detected", "class_id", "class_name", "score", "box", "crop", "feature",
                   "code", "whole_feature", "whole_code", "insets", "arithmetic", "error"]


@pytest.fixture(scope="session")
def spark_venv(tmp_path_factory):
    """A fresh virtualenv with the wheel and its `connect` extra (pyspark with the Connect client)."""
    return make_venv(tmp_path_factory.mktemp("venv-connect") / "venv", f"{wheel_file()}[connect]", PYSPARK,
                     wheels_only=False)


def spark_env(venv, cache_dir):
    spark_home = run_python(venv, "import json, os, pyspark; print(json.dumps(os.path.dirname(pyspark.__file__)))")
    return {"SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(venv / "bin/python"),
            "PYSPARK_DRIVER_PYTHON": str(venv / "bin/python"), "IMGFEAT_CACHE": str(cache_dir),
            "SPARK_CONF_DIR": str(ROOT / "jvm-bindings/spark-conf")}


EXAMPLE_CONNECT = "sc://127.0.0.1:15002"


def server_port():
    """Spark Connect's default port, 15002, which docs/spark.md's example uses, when it is free."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 15002)) != 0:
            return 15002
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def connect_server(spark_venv, cache_dir, tmp_path_factory):
    """A Spark Connect server (local[2]) from the virtualenv's pyspark jars, on 127.0.0.1; stopped after."""
    env = {**os.environ, **spark_env(spark_venv, cache_dir)}
    port = server_port()
    # The server's working folder: relative paths in a Connect client's reads and writes are the server's.
    workdir = tmp_path_factory.mktemp("connect")
    log = workdir / "server.log"
    command = [str(spark_venv / "bin/spark-submit"), "--master", "local[2]",
               "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
               "--conf", f"spark.connect.grpc.binding.port={port}",
               "--conf", "spark.connect.grpc.binding.address=127.0.0.1", "--conf", "spark.ui.enabled=false",
               "spark-internal"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"the Spark Connect server exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"the Spark Connect server did not listen:\n{log.read_text()[-4000:]}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}", workdir
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def rows_by_path(table_path):
    rows = {}
    for row in pq.read_table(table_path).to_pylist():
        path = row["path"][len("file:"):] if row["path"].startswith("file:") else row["path"]
        assert path not in rows, f"two rows for {path}"
        rows[path] = {c: row[c] for c in FEATURE_COLUMNS}
    return rows


def assert_same_rows(found, cli_table, photos):
    cli = rows_by_path(cli_table)
    files = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    assert sorted(found) == files, "exactly one row per input file"
    assert found[str(photos / "not-an-image.jpg")]["error"], "a file that is not an image is an error row"
    for path, row in found.items():
        assert row == cli[path], f"{path} differs from the CLI's row"


def test_extract_on_a_spark_connect_client_gives_the_clis_rows(spark_venv, connect_server, photos, cli_table, tmp_path):
    url, _ = connect_server
    out = tmp_path / "features"
    found = run_python(spark_venv, f"""
        import json
        from pyspark.sql import SparkSession
        import imgfeat.spark
        spark = SparkSession.builder.remote({url!r}).getOrCreate()
        images = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load({str(photos)!r})
        features = imgfeat.spark.extract(images, batch_size=8)
        features.select("path", "features.*").write.parquet({str(out)!r})
        try:
            imgfeat.spark.extract(images, config={{"scor_threshold": 0.4}})
            typo = None
        except ValueError as error:
            typo = str(error)
        print(json.dumps({{"session": type(spark).__module__, "typo": typo,
                           "schema": features.schema["features"].dataType.simpleString(),
                           "declared": imgfeat.spark.features_type().simpleString()}}))
    """, env={"SPARK_LOCAL_IP": "127.0.0.1"})
    assert found["session"].startswith("pyspark.sql.connect"), found
    assert "scor_threshold" in found["typo"], "a misspelt field fails on the client, naming it"
    assert found["schema"] == found["declared"]
    assert_same_rows(rows_by_path(out), cli_table, photos)


def test_the_jar_inside_the_wheel_runs_the_jvm_transformer_with_the_same_schema_and_rows(
        spark_venv, cache_dir, photos, cli_table, tmp_path):
    """`imgfeat.spark.session()` adds the wheel's jar: no separate download, no --jars. The JVM transformer's
    struct type is the one `imgfeat.spark.extract` declares."""
    out = tmp_path / "features"
    found = run_python(spark_venv, f"""
        import json
        import imgfeat.spark
        from imgfeat import ImageFeatureExtractor
        spark = imgfeat.spark.session(master="local[2]", **{{"spark.ui.enabled": "false"}})
        images = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load({str(photos)!r})
        features = ImageFeatureExtractor().setBatchSize(8).transform(images)
        features.select("path", "features.*").write.parquet({str(out)!r})
        print(json.dumps({{"jvm": features.schema["features"].dataType.simpleString(),
                           "declared": imgfeat.spark.features_type().simpleString(),
                           "jars": spark.conf.get("spark.jars"), "jar": imgfeat.spark.jar_path()}}))
        spark.stop()
    """, env=spark_env(spark_venv, cache_dir))
    assert found["jvm"] == found["declared"]
    assert found["jars"] == found["jar"] and "/site-packages/imgfeat/jars/" in found["jar"]
    assert_same_rows(rows_by_path(out), cli_table, photos)


def test_the_readmes_spark_connect_example_runs_verbatim(spark_venv, connect_server):
    """docs/spark.md's Spark Connect example, its paths the server's: the fixture photos in the server's working
    folder."""
    url, server_dir = connect_server
    assert url == EXAMPLE_CONNECT, "port 15002 was busy: docs/spark.md's example needs it"
    shutil.copytree(ROOT / "tests/fixtures/photos", server_dir / "tests/fixtures/photos")
    example = server_dir / "example.py"
    example.write_text(readme_block("tests/python runs this block against a Spark Connect", "python", page="docs/spark.md"))
    result = subprocess.run([str(spark_venv / "bin/python"), str(example)], cwd=server_dir, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = pq.read_table(server_dir / "features").to_pylist()
    assert len(rows) == 4 and all(r["error"] is None and len(r["code"]) == 32 for r in rows)
