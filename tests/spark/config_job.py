"""ImageFeatureExtractor's `config` param and the persistence of both transformers, several checks in one
application (a spark-submit costs a JVM start). Usage:

    spark-submit --jars imgfeat-spark.jar --py-files imgfeat.zip config_job.py PHOTOS WORK DETECTOR_JSON

PHOTOS is a folder of photos (a file: URI), WORK an empty local folder, DETECTOR_JSON a full `detector` object
(what `imgfeat config` prints). Prints JSON lines the test reads:

- "TYPO {message, jobs}": a config with a misspelt field fails, and how many Spark jobs it started;
- "CUSTOM {output}": the rows made with DETECTOR_JSON given through `config`, written as a features table;
- "BITS {label, code_bytes}": the code lengths the config and an explicit codeBits give;
- "PYTHON_SAVED_SCALA_LOADED {...}" and "SCALA_SAVED_PYTHON_LOADED {...}": Pipeline/PipelineModel saved on
  one side and loaded on the other (the JVM's own reader and writer, called through py4j), with the
  stages' classes, params, and the code lengths the loaded model gives.
"""
import json
import sys

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.wrapper import JavaWrapper
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col, length

from imgfeat import ImageFeatureExtractor, NearDuplicates

photos, work, detector = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spark = SparkSession.builder.appName("imgfeat-config").getOrCreate()
sc = spark.sparkContext
jvm = sc._jvm
images = spark.read.format("binaryFile").load(photos).select("path", "content").cache()
images.count()


def emit(kind, **fields):
    print(f"{kind} " + json.dumps(fields), flush=True)


def code_bytes(extractor):
    return sorted({row[0] for row in extractor.transform(images).select(length(col("features.code"))).collect()})


# A misspelt field: refused on the driver by the native parser, before any Spark job of its group starts.
sc.setJobGroup("typo", "a config with a misspelt field")
try:
    ImageFeatureExtractor().setConfig({"score_treshold": 0.5}).transform(images).collect()
    message = None
except Exception as error:  # the message is what the test checks
    message = str(error)[:3000]
emit("TYPO", message=message, jobs=len(sc.statusTracker().getJobIdsForGroup("typo")))
sc.setJobGroup("rest", "the other checks")

# A custom model as a full specification, not a preset.
custom = ImageFeatureExtractor().setConfig({"detector": detector})
custom.transform(images).select("path", "features.*").write.parquet(f"{work}/custom")
emit("CUSTOM", output=f"{work}/custom")

# The config's settings apply where no param is set; an explicit param wins.
emit("BITS", label="config 128", code_bytes=code_bytes(ImageFeatureExtractor(config={"codes": {"bits": 128}})))
emit("BITS", label="config 128 + setCodeBits(64)",
     code_bytes=code_bytes(ImageFeatureExtractor().setConfig('{"codes": {"bits": 128}}').setCodeBits(64)))


def jvm_params(stage):
    """The params a JVM stage holds: class name, then each explicitly set param's value."""
    fields = {"class": stage.getClass().getName()}
    for param in stage.params():
        if stage.isSet(param):
            value = stage.getOrDefault(param)
            fields[param.name()] = list(value) if param.name() == "codeCols" else value
    return fields


def python_params(stage):
    return {"class": f"{type(stage).__module__}.{type(stage).__name__}",
            **{param.name: stage.getOrDefault(param) for param in stage.params if stage.isSet(param)}}


# Saved from Python, loaded by the JVM (Scala's DefaultParamsReader).
extractor = ImageFeatureExtractor().setConfig({"codes": {"bits": 128}, "score_threshold": 0.4}).setCodeBits(64)
near = NearDuplicates().setMaxDistance(10).setCodeCols(["whole_code"])
Pipeline(stages=[extractor, near]).save(f"{work}/python-pipeline")
PipelineModel([extractor, near]).save(f"{work}/python-model")
extractor.save(f"{work}/python-extractor")
loaded_pipeline = jvm.org.apache.spark.ml.Pipeline.load(f"{work}/python-pipeline")
loaded_model = jvm.org.apache.spark.ml.PipelineModel.load(f"{work}/python-model")
loaded_extractor = jvm.ai.imgfeat.ImageFeatureExtractor.load(f"{work}/python-extractor")
jvm_out = DataFrame(loaded_model.stages()[0].transform(images._jdf), spark).select(length(col("features.code"))).collect()
emit("PYTHON_SAVED_SCALA_LOADED",
     pipeline=[jvm_params(s) for s in loaded_pipeline.getStages()],
     model=[jvm_params(s) for s in loaded_model.stages()],
     extractor=jvm_params(loaded_extractor),
     code_bytes=sorted({row[0] for row in jvm_out}))

# Saved by the JVM (Scala's DefaultParamsWriter), loaded in Python.
jvm_extractor = jvm.ai.imgfeat.ImageFeatureExtractor().setConfig('{"codes": {"bits": 128}, "score_threshold": 0.4}') \
    .setCodeBits(64)
jvm_near = jvm.ai.imgfeat.NearDuplicates().setMaxDistance(10).setCodeCols(
    JavaWrapper._new_java_array(["whole_code"], sc._gateway.jvm.java.lang.String))
stages = JavaWrapper._new_java_array([jvm_extractor, jvm_near], jvm.org.apache.spark.ml.PipelineStage)
jvm.org.apache.spark.ml.Pipeline().setStages(stages).save(f"{work}/scala-pipeline")
transformers = JavaWrapper._new_java_array([jvm_extractor, jvm_near], jvm.org.apache.spark.ml.Transformer)
JavaWrapper._new_java_obj("org.apache.spark.ml.PipelineModel", "scala-model", transformers).save(f"{work}/scala-model")
jvm_near.save(f"{work}/scala-near-duplicates")
pipeline = Pipeline.load(f"{work}/scala-pipeline")
model = PipelineModel.load(f"{work}/scala-model")
loaded_near = NearDuplicates.load(f"{work}/scala-near-duplicates")
emit("SCALA_SAVED_PYTHON_LOADED",
     pipeline=[python_params(s) for s in pipeline.getStages()],
     model=[python_params(s) for s in model.stages],
     near_duplicates=python_params(loaded_near),
     code_bytes=code_bytes(model.stages[0]),
     getters=[model.stages[0].getCodeBits(), json.loads(model.stages[0].getConfig()), model.stages[1].getMaxDistance(),
              model.stages[1].getCodeCols()])
spark.stop()
