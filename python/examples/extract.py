"""The PySpark twin of scala-example's ExtractJob: every file under INPUT → one Parquet row in OUTPUT.

    spark-submit --jars imgfeat-spark.jar --py-files imgfeat.zip python/examples/extract.py INPUT OUTPUT
"""
import argparse

from pyspark.sql import SparkSession
from pyspark.sql.functions import col

from imgfeat import ImageFeatureExtractor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--partitions", type=int, help="default: 2 × the default parallelism")
    # Left out, an option keeps the param's default (or --config's field); given, it overrides --config.
    parser.add_argument("--batch-size", type=int, help="default: 32")
    parser.add_argument("--detector", help="default: coco")
    parser.add_argument("--bits", type=int, help="default: 256")
    parser.add_argument("--model-dir", help="default: the jar's models")
    parser.add_argument("--precision", choices=["auto", "f32", "bf16", "int8"], help="default: auto")
    parser.add_argument("--config", help="any native configuration as a JSON object (imgfeat config prints every field)")
    args = parser.parse_args()

    spark = SparkSession.builder.appName("imgfeat-extract-py").getOrCreate()
    files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(args.input)
             .select("path", "content"))
    partitions = args.partitions or 2 * spark.sparkContext.defaultParallelism
    given = {"batchSize": args.batch_size, "detector": args.detector, "codeBits": args.bits, "modelDir": args.model_dir,
             "precision": args.precision, "config": args.config}
    extractor = ImageFeatureExtractor(outputCol="features", **{k: v for k, v in given.items() if v is not None})
    # As ExtractJob: merge binaryFile's partitions rather than shuffle every photo's bytes.
    spread = files.coalesce(partitions) if files.rdd.getNumPartitions() >= partitions else files.repartition(partitions, col("path"))
    features = extractor.transform(spread).select("path", "features.*")
    features.write.mode("overwrite").parquet(args.output)

    written = spark.read.parquet(args.output)
    total = written.count()
    failed = written.filter(col("error").isNotNull()).count()
    threads = sorted(set(extractor.nativeThreadsPerTask(spark.sparkContext.defaultParallelism)))
    print(f"imgfeat: {total} rows, {total - failed} ok, {failed} failed; "
          f"native threads per task: {','.join(map(str, threads))} -> {args.output}")
    spark.stop()


if __name__ == "__main__":
    main()
