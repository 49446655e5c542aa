package ai.imgfeat.example

import ai.imgfeat.{ImageFeatureExtractor, NativeLib, SparkLine}
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.{col, count, lit}

import scala.util.Try

/** Extracts image features from every file under a Hadoop path into Parquet.
  *
  * {{{
  * spark-submit --class ai.imgfeat.example.ExtractJob --jars imgfeat-spark.jar imgfeat-example.jar \
  *   INPUT OUTPUT [--partitions N] [--batch-size N] [--detector coco|oidv4] [--bits 256] [--model-dir DIR]
  *   [--precision auto|f32|bf16|int8] [--config JSON]
  * }}}
  *
  * INPUT is any path Spark's `binaryFile` source reads (file://, hdfs://, s3a://), walked recursively.
  * OUTPUT gets one Parquet row per input file: `path` plus the feature fields, one file per partition.
  * `--partitions` (default: 2 × the default parallelism) is the number of tasks the files are
  * spread over; photos are a few hundred KB, so this keeps every core busy without tiny tasks.
  * `--config` is any native configuration as a JSON object (`imgfeat config` prints every field); the
  * other options override its fields.
  */
object ExtractJob {
  def main(args: Array[String]): Unit = {
    // Before this job's own Scala code: built for another Spark/Scala pair, it would fail in `parse` with a
    // NoSuchMethodError; this names the jar's versions and the running ones.
    SparkLine.check()
    val (positional, options) = parse(args.toList)
    require(positional.size == 2,
      "usage: ExtractJob INPUT OUTPUT [--partitions N] [--batch-size N] [--detector NAME] [--bits N] [--model-dir DIR] [--precision auto|f32|bf16|int8] [--config JSON]")
    val Seq(input, output) = positional
    val spark = SparkSession.builder().appName("imgfeat-extract").getOrCreate()

    // Test hook (tests/spark): a Rust panic fails its task with our exception and the executors live on.
    options.get("panic-check").foreach(message => panicCheck(spark, message))

    val started = System.nanoTime()
    val files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(input).select("path", "content")
    val partitions = options.get("partitions").map(_.toInt).getOrElse(2 * spark.sparkContext.defaultParallelism)
    // Only the options given are set: a param set explicitly overrides the same field of --config.
    val extractor = new ImageFeatureExtractor().setOutputCol("features")
    options.get("batch-size").foreach(size => extractor.setBatchSize(size.toInt))
    options.get("detector").foreach(extractor.setDetector)
    options.get("bits").foreach(bits => extractor.setCodeBits(bits.toInt))
    options.get("model-dir").foreach(extractor.setModelDir)
    options.get("precision").foreach(extractor.setPrecision)
    options.get("config").foreach(extractor.setConfig)
    // binaryFile lists the files into partitions of balanced size; merging them into fewer tasks reads
    // each photo where its task runs, where repartition would shuffle every photo's bytes (a quarter
    // of a 2800-photo job's time, BENCHMARKS.md). Too few of them, and the files are spread out.
    val spread =
      if (files.rdd.getNumPartitions >= partitions) files.coalesce(partitions) else files.repartition(partitions, col("path"))
    val features = extractor.transform(spread)
      .select(col("path"), col("features.*"))
    features.write.mode("overwrite").parquet(output)

    // Both counts in one pass over what was written (count of a column skips its nulls).
    val counts = spark.read.parquet(output).agg(count(lit(1)), count(col("error"))).head()
    val (total, failed) = (counts.getLong(0), counts.getLong(1))
    // The compute threads each task's native pipeline uses, so a test can check nothing is oversubscribed.
    val threads = extractor.nativeThreadsPerTask(spark, spark.sparkContext.defaultParallelism).distinct.sorted.toSeq
    val seconds = (System.nanoTime() - started) / 1e9
    println(f"imgfeat: $total rows, ${total - failed} ok, $failed failed; native threads per task: ${threads.mkString(",")} -> $output ($seconds%.1f s)")
    spark.stop()
  }

  /** Runs one task that panics inside Rust, then prints the failure and the executor pids before and
    * after, for the test to compare.
    */
  private def panicCheck(spark: SparkSession, message: String): Unit = {
    val sc = spark.sparkContext
    // The test's cluster has two workers: wait (up to a minute) until both executors have registered,
    // or the first could take every sampling task and the pids would name one executor.
    val deadline = System.nanoTime() + 60L * 1000 * 1000 * 1000
    while (sc.statusTracker.getExecutorInfos.length - 1 < 2 && System.nanoTime() < deadline) Thread.sleep(200)
    def executorPids(): Seq[Long] =
      sc.parallelize(0 until 40, 40).map(_ => ProcessHandle.current().pid()).collect().distinct.sorted.toSeq
    val before = executorPids()
    val failure = Try(sc.parallelize(Seq(1), 1).foreach { _ => NativeLib.ensureLoaded(); NativeLib.panicForTesting(message) })
    val after = executorPids()
    val reason = failure.failed.map(_.getMessage.linesIterator.take(3).mkString(" | ")).getOrElse("no failure")
    println(s"imgfeat-panic-check: pids before ${before.mkString(",")}; after ${after.mkString(",")}; failure: $reason")
  }

  private def parse(args: List[String]): (Seq[String], Map[String, String]) = args match {
    case Nil => (Nil, Map.empty)
    case flag :: value :: rest if flag.startsWith("--") =>
      val (p, o) = parse(rest); (p, o + (flag.stripPrefix("--") -> value))
    case arg :: rest =>
      val (p, o) = parse(rest); (arg +: p, o)
  }
}
