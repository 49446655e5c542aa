"""imgfeat on S3: the Scala example job reads photos from `s3a://` and writes its features table back,
against a local S3-compatible server (moto's server mode) on 127.0.0.1 that this module starts and
always stops. The job gets hadoop-aws (of pyspark's Hadoop version) and the AWS SDK with `--jars`, as a
cluster without them would; rows identical to the CLI's output of the same local photos.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/spark"))
from test_spark import CLI, EXAMPLE_JAR, JAR, LOCAL, assert_same_as_cli, rows_by_path, spark_submit  # noqa: E402

S3_JARS = ROOT / "target/s3-jars"
BUCKET = "photos-bucket"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_jars():
    subprocess.run(["mvn", "-q", "-B", "-f", str(ROOT / "tests/hadoop/pom-s3.xml"), "dependency:copy-dependencies",
                    f"-DoutputDirectory={S3_JARS}", "-DincludeScope=runtime"], check=True, timeout=900)
    return sorted(str(p) for p in S3_JARS.glob("*.jar"))


def s3a_conf(endpoint):
    settings = {
        "fs.s3a.endpoint": endpoint, "fs.s3a.endpoint.region": "us-east-1", "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false", "fs.s3a.access.key": "testing", "fs.s3a.secret.key": "testing",
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }
    return [arg for key, value in settings.items() for arg in ("--conf", f"spark.hadoop.{key}={value}")]


def test_the_example_job_reads_photos_from_s3_and_writes_features_back(s3_server, s3_jars, tmp_path):
    import boto3

    photos = ROOT / "tests/fixtures/photos"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    for photo in sorted(photos.iterdir()):
        s3.upload_file(str(photo), BUCKET, f"photos/{photo.name}")
    s3.put_object(Bucket=BUCKET, Key="photos/corrupt.txt", Body=b"not an image")  # an error row

    result = spark_submit(LOCAL, *s3a_conf(s3_server), "--class", "ai.imgfeat.example.ExtractJob",
                          "--jars", ",".join([str(JAR), *s3_jars]), str(EXAMPLE_JAR),
                          f"s3a://{BUCKET}/photos", f"s3a://{BUCKET}/features")
    assert "imgfeat: 5 rows, 4 ok, 1 failed" in result.stdout, result.stdout[-2000:]

    # The features table as the job left it in the bucket, read here.
    table = tmp_path / "features"
    table.mkdir()
    written = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="features/")["Contents"]]
    assert "features/_SUCCESS" in written, written
    for key in written:
        if key.endswith(".parquet"):
            s3.download_file(BUCKET, key, str(table / Path(key).name))

    local = tmp_path / "photos"
    shutil.copytree(photos, local)
    (local / "corrupt.txt").write_bytes(b"not an image")
    cli_table = tmp_path / "cli.parquet"
    subprocess.run([str(CLI), "extract", "--threads", "2", "-o", str(cli_table), str(local)], check=True, capture_output=True)

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master("local[1]").appName("imgfeat-s3-reader").config("spark.ui.enabled", "false").getOrCreate()
    try:
        cli_rows = {Path(p).name: row for p, row in rows_by_path(spark, f"file://{cli_table}", strip_scheme=False).items()}
        s3_rows = {}
        for path, row in rows_by_path(spark, f"file://{table}", strip_scheme=False).items():
            assert path.startswith(f"s3a://{BUCKET}/photos/"), path
            s3_rows[Path(path).name] = row
    finally:
        spark.stop()
    assert_same_as_cli(s3_rows, cli_rows, sorted(cli_rows))
