"""imgfeat on Spark from Python: the jar inside this package, a session that loads it, and
``extract``, which runs on any session, Spark Connect included (no py4j: ``mapInArrow`` with the native
module on the Python workers).

    from imgfeat import spark as imgfeat_spark
    session = imgfeat_spark.session()                  # local, or under spark-submit; the jar added
    images = session.read.format("binaryFile").load("photos/")
    features = imgfeat_spark.extract(images)           # + a `features` struct column, as the JVM transformer adds

On Spark Connect (``SparkSession.builder.remote("sc://host:15002")``) the server's Python workers need
this package installed; the JVM classes (``imgfeat.ImageFeatureExtractor``) need py4j and so a classic
session.
"""
import json
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Union

from . import _bundled

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["jar_path", "configure", "session", "extract", "features_type"]


def _spark_line() -> str:
    import pyspark

    major, minor = (int(x) for x in pyspark.__version__.split(".")[:2])
    return "spark4_2.13" if major >= 4 else f"spark{major}.{minor}_2.12"


def jar_path() -> str:
    """The path of the imgfeat jar (JVM classes, native library, models) for the installed pyspark."""
    line = _spark_line()
    found = _bundled.jar(line)
    if found is None:
        raise FileNotFoundError(
            f"this imgfeat package holds no jar for {line}; it carries the Spark 4 / Scala 2.13 jar. For Spark 3.5 "
            f"use the Maven artifact ai.imgfeat:imgfeat-{line} (built by `mvn install -Pspark-3.5`)")
    return str(found)


def configure(builder: Any, **conf: str) -> Any:
    """``builder`` (a ``SparkSession.Builder``) with the imgfeat jar on ``spark.jars`` and ``conf`` set; a
    ``spark.jars`` given in ``conf`` is kept, the jar appended."""
    jars = ",".join(j for j in (conf.pop("spark.jars", ""), jar_path()) if j)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.config("spark.jars", jars)


def session(app_name: str = "imgfeat", master: Optional[str] = None, **conf: str) -> "SparkSession":
    """A Spark session with the imgfeat jar loaded, as ``sparknlp.start()`` makes one: ``master`` when given
    (else spark-submit's, or local), ``conf`` as Spark settings (``**{"spark.executor.memory": "8g"}``)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    return configure(builder, **conf).getOrCreate()


def features_type() -> Any:
    """The Spark type of the ``features`` struct column: the JVM transformer's (``PackedRows.schema``)."""
    from pyspark.sql.types import (ArrayType, BinaryType, BooleanType, FloatType, IntegerType, StringType,
                                   StructField, StructType)

    def fixed(names: str, kind: Any) -> StructType:
        return StructType([StructField(n, kind, nullable=False) for n in names.split()])

    return StructType([
        StructField("width", IntegerType()), StructField("height", IntegerType()),
        StructField("detected", BooleanType()), StructField("class_id", IntegerType()),
        StructField("class_name", StringType()), StructField("score", FloatType()),
        StructField("box", fixed("xmin ymin xmax ymax", FloatType())),
        StructField("crop", fixed("left top right bottom", IntegerType())),
        StructField("feature", ArrayType(FloatType(), containsNull=False)), StructField("code", BinaryType()),
        StructField("whole_feature", ArrayType(FloatType(), containsNull=False)),
        StructField("whole_code", BinaryType()),
        StructField("insets", ArrayType(StructType(fixed("left top right bottom", IntegerType()).fields + [
            StructField("feature", ArrayType(FloatType(), containsNull=False)), StructField("code", BinaryType()),
        ]), containsNull=False)),
        StructField("arithmetic", StringType()),
        StructField("error", StringType()),
    ])


def extract(df: "DataFrame", *, input_col: str = "content", output_col: str = "features",
            config: Union[None, str, Dict[str, Any]] = None, threads: int = 0, batch_size: int = 32) -> "DataFrame":
    """``df`` with a struct column ``output_col`` of image features for the encoded images in ``input_col``
    (``binaryFile``'s ``content``): the same values as ``ImageFeatureExtractor`` and the CLI, one row per
    input, a bad photo a row with ``error`` set. Works on classic and Spark Connect sessions.

    ``config``: any field of the native configuration (a dict or JSON object), checked here before any task
    runs. ``threads``: compute threads per task; 0 for the config's ``threads``, else ``spark.task.cpus``. Models load once per Python
    worker process (Spark reuses workers across tasks)."""
    from . import _local, _native

    # Checked as given: the models are found on each worker (the package's own, unless the config names
    # a folder present on every node).
    config_json = _local._user_config_json(config)
    _native.validate_config(config_json)
    if threads < 0 or batch_size < 1:
        raise ValueError("threads must be ≥ 0 and batch_size ≥ 1")
    if input_col not in df.columns:
        raise ValueError(f"no column {input_col!r} in the input (columns: {', '.join(df.columns)})")
    from pyspark.sql.types import StructField, StructType

    schema = StructType(df.schema.fields + [StructField(output_col, features_type())])
    settings = (input_col, output_col, config_json, threads, batch_size)
    return df.mapInArrow(lambda batches: _features_batches(batches, *settings), schema)


_WORKER_PIPELINES: Dict[str, Any] = {}


def _worker_pipeline(config_json: str, threads: int) -> Any:
    """The pipeline of this Python worker for a configuration, loaded on its first task."""
    from . import _local

    if threads == 0:  # as the JVM transformer: the config's threads, else spark.task.cpus
        threads = json.loads(config_json).get("threads") or 0
    if threads == 0:
        from pyspark import TaskContext

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 1
    key = f"{threads}:{config_json}"
    if key not in _WORKER_PIPELINES:
        _WORKER_PIPELINES[key] = _local.Pipeline(json.loads(config_json), threads=threads)
    return _WORKER_PIPELINES[key]


def _features_batches(batches: Iterator["pa.RecordBatch"], input_col: str, output_col: str, config_json: str,
                      threads: int, batch_size: int) -> Iterator["pa.RecordBatch"]:
    import pyarrow as pa

    pipeline = _worker_pipeline(config_json, threads)
    for batch in batches:
        for start in range(0, batch.num_rows, batch_size):
            part = batch.slice(start, batch_size)
            images = part.column(input_col).to_pylist()
            rows = pipeline._native.process(images, [""] * len(images))
            yield pa.RecordBatch.from_arrays(
                part.columns + [_features_struct(rows)], names=part.schema.names + [output_col])


def _features_struct(rows: "pa.RecordBatch") -> "pa.StructArray":
    """A batch of the features schema → the ``features`` struct column (no ``path``), in the Arrow types
    Spark maps to ``features_type()``: codes as plain binary, list items not null."""
    import pyarrow as pa

    floats = pa.list_(pa.field("element", pa.float32(), nullable=False))
    corners = [pa.field(n, pa.int32(), nullable=False) for n in ("left", "top", "right", "bottom")]
    insets = pa.list_(pa.field("element", pa.struct(corners + [pa.field("feature", floats), pa.field("code", pa.binary())]),
                               nullable=False))
    names = [n for n in rows.schema.names if n != "path"]
    columns = []
    for name in names:
        column = rows.column(name)
        if name == "insets":
            column = column.cast(insets)
        elif pa.types.is_fixed_size_binary(column.type):
            column = column.cast(pa.binary())
        elif pa.types.is_list(column.type):
            column = column.cast(floats)
        columns.append(column)
    return pa.StructArray.from_arrays(columns, names=names)
