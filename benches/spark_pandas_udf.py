"""The Spark baseline for imgfeat's transformer: a PySpark job doing the same work with a pandas_udf
around onnxruntime (benches/python_pipeline.py's per-image code, models loaded once per Python worker),
writing the same kind of Parquet.

    spark-submit --py-files benches/python_pipeline.py benches/spark_pandas_udf.py INPUT OUTPUT
"""
import sys
import time

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql.functions import col, pandas_udf
from pyspark.sql.types import ArrayType, BinaryType, BooleanType, FloatType, StringType, StructField, StructType

import python_pipeline

SCHEMA = StructType([
    StructField("detected", BooleanType()), StructField("feature", ArrayType(FloatType())),
    StructField("code", BinaryType()), StructField("whole_feature", ArrayType(FloatType())),
    StructField("whole_code", BinaryType()), StructField("error", StringType())])


@pandas_udf(SCHEMA)
def features(contents: pd.Series) -> pd.DataFrame:
    rows = [python_pipeline.extract_bytes(bytes(c)) for c in contents]
    return pd.DataFrame({
        "detected": [r.get("detected") for r in rows],
        "feature": [r["feature"].tolist() if "feature" in r else None for r in rows],
        "code": [r.get("code") for r in rows],
        "whole_feature": [r["whole_feature"].tolist() if "whole_feature" in r else None for r in rows],
        "whole_code": [r.get("whole_code") for r in rows],
        "error": [r.get("error") for r in rows]})


def main():
    source, output = sys.argv[1:3]
    spark = SparkSession.builder.appName("pandas-udf-onnxruntime").getOrCreate()
    started = time.perf_counter()
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(source).select("path", "content")
    partitions = 2 * spark.sparkContext.defaultParallelism
    # As imgfeat's ExtractJob: merge binaryFile's partitions rather than shuffle every photo's bytes.
    spread = files.coalesce(partitions) if files.rdd.getNumPartitions() >= partitions else files.repartition(partitions, col("path"))
    out = spread.select("path", features("content").alias("f")).select("path", "f.*")
    out.write.mode("overwrite").parquet(output)
    rows = spark.read.parquet(output).count()
    print(f"pandas_udf: {rows} rows in {time.perf_counter() - started:.1f} s -> {output}")
    spark.stop()


if __name__ == "__main__":
    main()
