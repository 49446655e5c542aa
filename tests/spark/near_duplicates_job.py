"""NearDuplicates on features Parquet tables, several runs in one application (a spark-submit costs a JVM
start). Usage:

    spark-submit --jars imgfeat-spark.jar --py-files imgfeat.zip near_duplicates_job.py RUNS_JSON

RUNS_JSON is a list of {"label", "features", and optionally "max_distance", "bands", "id_col", "code_cols", "verify",
"insets_col" (params; left out, the defaults) and "code_pairs" (true: also count codePairs)}. Prints one JSON line per
group member, "GROUP {label, path, representative, group_size}" ("path" is the id, whatever idCol names),
"CODE_PAIRS {label, count}" when asked, "ERROR {label, message}" for a run that fails, and first
"DEFAULTS {python, jvm}": the params' defaults on both sides.
"""
import json
import sys

from pyspark.sql import SparkSession

from imgfeat import NearDuplicates

spark = SparkSession.builder.appName("imgfeat-near-duplicates").getOrCreate()
defaults = NearDuplicates()
print("DEFAULTS " + json.dumps({
    "python": [defaults.getIdCol(), defaults.getCodeCols(), defaults.getMaxDistance(), defaults.getBands(),
               defaults.getVerify(), defaults.getFeatureCols(), defaults.getInsetsCol()],
    "jvm": [defaults._java_obj.getIdCol(), list(defaults._java_obj.getCodeCols()), defaults._java_obj.getMaxDistance(),
            defaults._java_obj.getBands(), defaults._java_obj.getVerify(), list(defaults._java_obj.getFeatureCols()),
            defaults._java_obj.getInsetsCol()]}))
PARAMS = {"max_distance": "maxDistance", "bands": "bands", "id_col": "idCol", "code_cols": "codeCols", "verify": "verify",
          "insets_col": "insetsCol"}
for run in json.loads(sys.argv[1]):
    features = spark.read.parquet(run["features"])
    near_duplicates = NearDuplicates(**{param: run[key] for key, param in PARAMS.items() if key in run})
    try:
        groups = near_duplicates.transform(features).orderBy(near_duplicates.getIdCol()).collect()
        pairs = near_duplicates.codePairs(features).count() if run.get("code_pairs") else None
    except Exception as error:  # the message is what the test checks
        print("ERROR " + json.dumps({"label": run["label"], "message": str(error)[:2000]}))
        continue
    for row in groups:
        print("GROUP " + json.dumps({"label": run["label"], "path": row[0], "representative": row["representative"],
                                     "group_size": row["group_size"]}))
    if pairs is not None:
        print("CODE_PAIRS " + json.dumps({"label": run["label"], "count": pairs}))
spark.stop()
