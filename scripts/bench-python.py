"""The Python package's costs, each against its baseline in the same run (BENCHMARKS.md, "Python"):

1. the local API, `imgfeat.extract(folder)` + `pyarrow.parquet.write_table`, vs the CLI's
   `imgfeat extract` on the same photos and threads (the binding's cost: Python, the C-data hand-over,
   the progress bar), alternating runs, the fastest of each;
2. Spark Connect (`imgfeat.spark.extract` by mapInArrow on the server's Python workers) vs the JVM
   transformer (`ImageFeatureExtractor` in a classic session), same photos, both local[2] on this machine,
   each job run twice in its session and the second (models loaded) timed.

Run after scripts/test.sh (it needs target/release/imgfeat and the wheel): .venv/bin/python
scripts/bench-python.py [PHOTOS] [--runs N]. It makes target/bench-python/venv (the wheel and pyspark).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "target/bench-python"


def venv():
    path = WORK / "venv"
    if not (path / "bin/python").exists():
        wheel = sorted((ROOT / "target/wheels").glob("imgfeat-*.whl"))[-1]
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin/pip"), "install", "-q", f"{wheel}[connect]", "pyspark==4.3.0"], check=True)
    return path


def python(env_python, code, env=None):
    out = subprocess.run([str(env_python), "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu():
    model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    return f"{model}, {os.cpu_count()} cores"


def local_api_vs_cli(py, photos, runs, threads):
    out = WORK / "out.parquet"
    cli, api = [], []
    for _ in range(runs):
        shutil.rmtree(str(out) + ".parts", ignore_errors=True)
        out.unlink(missing_ok=True)
        started = time.perf_counter()
        subprocess.run([str(ROOT / "target/release/imgfeat"), "extract", "--threads", str(threads), "-o", str(out), str(photos)],
                       check=True, capture_output=True)
        cli.append(time.perf_counter() - started)
        api.append(python(py, f"""
            import json, time
            started = time.perf_counter()
            import imgfeat, pyarrow.parquet as pq
            pq.write_table(imgfeat.extract({str(photos)!r}, threads={threads}, progress=False), {str(WORK / 'api.parquet')!r})
            print(json.dumps(time.perf_counter() - started))
        """, env={"IMGFEAT_CACHE": str(WORK / "cache")}))
    return min(cli), min(api)


def spark_env(py):
    home = python(py, "import json, os, pyspark; print(json.dumps(os.path.dirname(pyspark.__file__)))")
    return {"SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(py), "PYSPARK_DRIVER_PYTHON": str(py),
            "IMGFEAT_CACHE": str(WORK / "cache"), "SPARK_CONF_DIR": str(ROOT / "jvm-bindings/spark-conf")}


JOB = """
    import json, time
    images = spark.read.format("binaryFile").load({photos!r})
    times = []
    for run in range(2):
        started = time.perf_counter()
        {extract}.select("path", "features.*").write.mode("overwrite").parquet({out!r})
        times.append(time.perf_counter() - started)
    print(json.dumps(times))
"""


def jvm_vs_connect(venv_path, photos):
    py = venv_path / "bin/python"
    env = spark_env(py)
    jvm = python(py, "import imgfeat.spark\nfrom imgfeat import ImageFeatureExtractor\n"
                 "spark = imgfeat.spark.session(master='local[2]', **{'spark.ui.enabled': 'false'})\n"
                 + textwrap.dedent(JOB).format(photos=str(photos), out=str(WORK / "jvm"),
                                               extract="ImageFeatureExtractor().transform(images)"), env=env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(venv_path / "bin/spark-submit"), "--master", "local[2]", "--class",
                               "org.apache.spark.sql.connect.service.SparkConnectServer",
                               "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false",
                               "spark-internal"], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(180):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        connect = python(py, "import imgfeat.spark\nfrom pyspark.sql import SparkSession\n"
                         f"spark = SparkSession.builder.remote('sc://127.0.0.1:{port}').getOrCreate()\n"
                         + textwrap.dedent(JOB).format(photos=str(photos), out=str(WORK / "connect"),
                                                       extract="imgfeat.spark.extract(images)"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    return jvm, connect


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="?", default=str(ROOT.parent / "shared/data/imagenet-sample"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    photos = Path(args.photos).resolve()
    count = sum(1 for p in photos.iterdir() if p.is_file())
    venv_path = venv()
    cli, api = local_api_vs_cli(venv_path / "bin/python", photos, args.runs, threads=2)
    print(f"CPU: {cpu()}; {count} photos from {photos}")
    print(f"local API vs CLI (2 threads, fastest of {args.runs}, model loading and Parquet included): "
          f"CLI {cli:.2f} s ({count / cli:.1f} images/s), Python {api:.2f} s ({count / api:.1f} images/s): "
          f"the binding costs {100 * (api / cli - 1):+.1f} %")
    jvm, connect = jvm_vs_connect(venv_path, photos)
    print(f"Spark local[2], second run of each job: JVM transformer {jvm[1]:.2f} s ({count / jvm[1]:.1f} images/s; "
          f"first {jvm[0]:.2f} s), Spark Connect mapInArrow {connect[1]:.2f} s ({count / connect[1]:.1f} images/s; "
          f"first {connect[0]:.2f} s): Connect/JVM time {connect[1] / jvm[1]:.2f}×")


if __name__ == "__main__":
    main()
