"""Reads images by path (no content column) with ImageFeatureExtractor and prints one JSON line per
row: the transformer's path-reading branch, used by tests/spark/test_spark.py."""
import json
import sys

from pyspark.sql import SparkSession

from imgfeat import ImageFeatureExtractor

spark = SparkSession.builder.appName("imgfeat-path-column").getOrCreate()
paths = spark.createDataFrame([(p,) for p in sys.argv[1:]], ["path"])
for row in ImageFeatureExtractor(threads=1).transform(paths).collect():
    f = row["features"]
    print("ROW " + json.dumps({"path": row["path"], "class_name": f["class_name"], "error": f["error"],
                               "code_bytes": len(f["code"]) if f["code"] is not None else None}))
spark.stop()
