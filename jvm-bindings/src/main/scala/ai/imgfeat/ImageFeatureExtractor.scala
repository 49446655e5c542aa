package ai.imgfeat

import com.fasterxml.jackson.databind.ObjectMapper
import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.{Path => HadoopPath}
import org.apache.spark.ml.Transformer
import org.apache.spark.ml.param.{IntParam, Param, ParamMap, ParamValidators}
import org.apache.spark.ml.param.shared.{HasInputCol, HasOutputCol}
import org.apache.spark.ml.util.{DefaultParamsReadable, DefaultParamsWritable, Identifiable}
import org.apache.spark.rdd.RDD
import org.apache.spark.sql.{DataFrame, Dataset, Row, SparkSession}
import org.apache.spark.sql.types.{BinaryType, StringType, StructField, StructType}
import org.apache.spark.util.SerializableConfiguration

/** Adds a struct column of image features (detection, crop, embeddings, binary codes, error) computed
  * by the native pipeline, one row out per row in, in the same partitions.
  *
  * {{{
  * val images = spark.read.format("binaryFile").load("s3a://bucket/photos")
  * val features = new ImageFeatureExtractor().setOutputCol("features").transform(images)
  *   .select(col("path"), col("features.*"))   // the features table, without the photos' bytes
  * features.write.parquet("s3a://bucket/features")
  * }}}
  *
  * The input's columns are kept, `content` (every photo's bytes) among them: select what to keep, or
  * drop `content`, before writing, or the photos are copied into the features table.
  */
class ImageFeatureExtractor(override val uid: String)
    extends Transformer with HasInputCol with HasOutputCol with DefaultParamsWritable {

  // First, before any code compiled against this jar's Spark/Scala pair runs: a jar for another pair
  // fails here, naming both, rather than with a NoSuchMethodError in setDefault below or in a task.
  SparkLine.check()

  def this() = this(Identifiable.randomUID("imgfeat"))

  final val pathCol = new Param[String](this, "pathCol",
    "column of file paths, read when inputCol is absent from the input (any Hadoop path)")
  final val batchSize = new IntParam(this, "batchSize", "images per native call", ParamValidators.gt(0))
  final val threads = new IntParam(this, "threads",
    "native compute threads per task; 0 means spark.task.cpus", ParamValidators.gtEq(0))
  final val detector = new Param[String](this, "detector", "detector preset: coco or oidv4")
  final val embedder = new Param[String](this, "embedder", "embedder preset: efficientnet_lite0")
  final val codeBits = new IntParam(this, "codeBits", "binary code length: 64, 128 or 256",
    ParamValidators.inArray(Array(64, 128, 256)))
  final val modelDir = new Param[String](this, "modelDir",
    "folder with the models on every node; empty means the models inside the jar")
  final val precision = new Param[String](this, "precision",
    "arithmetic of the 1x1 and dense convolutions: f32, or int8 (about twice the speed with AVX-512 VNNI)",
    ParamValidators.inArray(Array("f32", "int8")))

  setDefault(inputCol -> "content", pathCol -> "path", outputCol -> "features", batchSize -> 32, threads -> 0,
    detector -> "coco", embedder -> "efficientnet_lite0", codeBits -> 256, modelDir -> "", precision -> "f32")

  def setInputCol(value: String): this.type = set(inputCol, value)
  def setPathCol(value: String): this.type = set(pathCol, value)
  def setOutputCol(value: String): this.type = set(outputCol, value)
  def setBatchSize(value: Int): this.type = set(batchSize, value)
  def setThreads(value: Int): this.type = set(threads, value)
  def setDetector(value: String): this.type = set(detector, value)
  def setEmbedder(value: String): this.type = set(embedder, value)
  def setCodeBits(value: Int): this.type = set(codeBits, value)
  def setModelDir(value: String): this.type = set(modelDir, value)
  def setPrecision(value: String): this.type = set(precision, value)

  /** The native configuration JSON these params describe (model folder resolved on the executor). */
  private def nativeConfig(spark: SparkSession): NativeConfig = {
    val taskCpus = spark.conf.get("spark.task.cpus", "1").toInt
    NativeConfig($(detector), $(embedder), $(codeBits), if ($(threads) > 0) $(threads) else taskCpus, $(modelDir), $(precision))
  }

  override def transform(dataset: Dataset[_]): DataFrame = {
    val df = dataset.toDF()
    val outSchema = transformSchema(df.schema)
    val config = nativeConfig(df.sparkSession)
    val size = $(batchSize)
    val readContent: Row => Either[String, Array[Byte]] =
      if (df.columns.contains($(inputCol))) {
        val index = df.schema.fieldIndex($(inputCol))
        row => Right(if (row.isNullAt(index)) null else row.getAs[Array[Byte]](index))
      } else {
        val index = df.schema.fieldIndex($(pathCol))
        // The driver's Hadoop configuration (spark.hadoop.*: s3a credentials, endpoints) goes to the executors.
        val hadoopConf = df.sparkSession.sparkContext.broadcast(
          new SerializableConfiguration(df.sparkSession.sparkContext.hadoopConfiguration))
        row =>
          if (row.isNullAt(index)) Left("the path is null")
          else ImageFeatureExtractor.readFile(row.getString(index), hadoopConf.value.value)
      }
    val rows = df.rdd.mapPartitions { partition =>
      Native.extractPartition(partition, config.json, size)(readContent).map { case (row, features) =>
        Row.fromSeq(row.toSeq :+ features)
      }
    }
    df.sparkSession.createDataFrame(rows, outSchema)
  }

  /** Diagnostic: the compute threads the native pipeline of each of `tasks` tasks uses (one entry per
    * task), with this extractor's configuration; 1 everywhere when `spark.task.cpus` is 1.
    */
  def nativeThreadsPerTask(spark: SparkSession, tasks: Int): Array[Int] = {
    val config = nativeConfig(spark)
    spark.sparkContext.parallelize(0 until tasks, tasks)
      .mapPartitions(_ => Iterator(NativeLib.threads(Native.pipeline(config.json))))
      .collect()
  }

  override def transformSchema(schema: StructType): StructType = {
    if (schema.fieldNames.contains($(inputCol))) {
      require(schema($(inputCol)).dataType == BinaryType, s"column ${$(inputCol)} must be binary, not ${schema($(inputCol)).dataType}")
    } else {
      require(schema.fieldNames.contains($(pathCol)),
        s"the input has neither the content column ${$(inputCol)} nor the path column ${$(pathCol)}")
      require(schema($(pathCol)).dataType == StringType, s"column ${$(pathCol)} must be a string")
    }
    require(!schema.fieldNames.contains($(outputCol)), s"column ${$(outputCol)} already exists")
    StructType(schema.fields :+ StructField($(outputCol), PackedRows.schema, nullable = false))
  }

  override def copy(extra: ParamMap): ImageFeatureExtractor = defaultCopy(extra)
}

object ImageFeatureExtractor extends DefaultParamsReadable[ImageFeatureExtractor] {
  /** Reads a whole file through Hadoop's FileSystem (file://, hdfs://, s3a://, ...); a file that cannot
    * be read gives the reason instead.
    */
  private[imgfeat] def readFile(path: String, conf: Configuration): Either[String, Array[Byte]] =
    try {
      val hadoopPath = new HadoopPath(path)
      val in = hadoopPath.getFileSystem(conf).open(hadoopPath)
      try Right(in.readAllBytes()) finally in.close()
    } catch {
      case e: java.io.IOException => Left(s"cannot read $path: $e")
    }

  /** For RDD users: features of `(key, encoded image)` pairs, one output per input, batch by batch.
    * The returned rows follow [[PackedRows.schema]].
    */
  def extract[K](images: RDD[(K, Array[Byte])], detector: String = "coco", codeBits: Int = 256,
      threads: Int = 1, batchSize: Int = 32, modelDir: String = "", precision: String = "f32"): RDD[(K, Row)] = {
    SparkLine.check()
    val config = NativeConfig(detector, "efficientnet_lite0", codeBits, threads, modelDir, precision)
    images.mapPartitions { partition =>
      Native.extractPartition(partition, config.json, batchSize)(item => Right(item._2)).map { case ((key, _), row) => (key, row) }
    }
  }
}

/** The part of the native configuration the JVM side sets; the model folder is resolved where the
  * pipeline is created (on the executor), since a jar's models are extracted there.
  */
private[imgfeat] case class NativeConfig(detector: String, embedder: String, codeBits: Int, threads: Int, modelDir: String,
    precision: String) {
  /** `{"detector", "embedder", "codes": {"bits"}, "threads", "model_dir", "engine": {"precision"}}`, written by
    * Jackson (Spark ships it), so every string is escaped as JSON requires, whatever a path holds.
    */
  def json: String = {
    val root = NativeConfig.mapper.createObjectNode()
    root.put("detector", detector)
    root.put("embedder", embedder)
    root.putObject("codes").put("bits", codeBits)
    root.put("threads", threads)
    root.put("model_dir", Native.modelDir(modelDir))
    root.putObject("engine").put("precision", precision)
    NativeConfig.mapper.writeValueAsString(root)
  }
}

private[imgfeat] object NativeConfig {
  /** Thread-safe once built; one per JVM rather than one per task. */
  private val mapper = new ObjectMapper()
}
