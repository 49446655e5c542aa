"""NearDuplicates on a features Parquet (written by `imgfeat extract`): prints each pair as a JSON line
"PAIR {...}". Usage: spark-submit --jars imgfeat-spark.jar --py-files imgfeat.zip near_duplicates_job.py
FEATURES.parquet MAX_DISTANCE"""
import json
import sys

from pyspark.sql import SparkSession

from imgfeat import NearDuplicates

features, max_distance = sys.argv[1], int(sys.argv[2])
spark = SparkSession.builder.appName("imgfeat-near-duplicates").getOrCreate()
pairs = NearDuplicates(idCol="path", maxDistance=max_distance).transform(spark.read.parquet(features))
for row in pairs.orderBy("id_a", "id_b").collect():
    print("PAIR " + json.dumps({"a": row["id_a"], "b": row["id_b"], "distance": row["distance"]}))
spark.stop()
