package ai.imgfeat

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}
import com.fasterxml.jackson.databind.node.ObjectNode
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
  *
  * `config` carries any setting of the native pipeline (the JSON object `imgfeat config` prints: custom
  * detector and embedder models, thresholds, class allow-list, embed mode, limits, ...); the other params
  * override it only where they are set explicitly. `transform` checks the merged settings on the driver
  * with the native parser, so a bad field fails the job before any task, with a message naming it.
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
    "arithmetic of the 1x1 and dense convolutions: auto (bf16 where the CPU has AVX-512 BF16, else f32), f32, bf16, " +
      "or int8 (about twice f32's speed on AVX-512 VNNI, the same rows on every CPU)",
    ParamValidators.inArray(Array("auto", "f32", "bf16", "int8")))
  final val config = new Param[String](this, "config",
    "settings of the native pipeline as a JSON object: any field of imgfeat's configuration (imgfeat config prints " +
      "them all); the other params override it where they are set explicitly",
    (json: String) => NativeConfig.isJsonObject(json))

  setDefault(inputCol -> "content", pathCol -> "path", outputCol -> "features", batchSize -> 32, threads -> 0,
    detector -> "coco", embedder -> "efficientnet_lite0", codeBits -> 256, modelDir -> "", precision -> "auto",
    config -> "{}")

  def getPathCol: String = $(pathCol)
  def getBatchSize: Int = $(batchSize)
  def getThreads: Int = $(threads)
  def getDetector: String = $(detector)
  def getEmbedder: String = $(embedder)
  def getCodeBits: Int = $(codeBits)
  def getModelDir: String = $(modelDir)
  def getPrecision: String = $(precision)
  def getConfig: String = $(config)

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
  def setConfig(value: String): this.type = set(config, value)

  /** The native configuration these params describe, checked by the native parser here on the driver so
    * that a bad field fails the job before any task runs (the model folder is resolved on the executor).
    */
  private def nativeConfig(spark: SparkSession): NativeConfig =
    mergedConfig(spark.conf.get("spark.task.cpus", "1").toInt).validated()

  /** `config` with the params written over it: a param set explicitly always wins; one left at its default
    * fills only a field the config leaves out. Threads default to `taskCpus`, not to the native default of
    * every core, since a task owns only its `spark.task.cpus` cores.
    */
  private[imgfeat] def mergedConfig(taskCpus: Int): NativeConfig =
    NativeConfig.merge($(config), Seq(
      NativeSetting(Seq("detector"), $(detector), isSet(detector)),
      NativeSetting(Seq("embedder"), $(embedder), isSet(embedder)),
      NativeSetting(Seq("codes", "bits"), $(codeBits), isSet(codeBits)),
      NativeSetting(Seq("threads"), if ($(threads) > 0) $(threads) else taskCpus, isSet(threads)),
      NativeSetting(Seq("model_dir"), $(modelDir), isSet(modelDir)),
      NativeSetting(Seq("engine", "precision"), $(precision), isSet(precision))))

  override def transform(dataset: Dataset[_]): DataFrame = {
    val df = dataset.toDF()
    val outSchema = transformSchema(df.schema)
    val settings = nativeConfig(df.sparkSession)
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
      Native.extractPartition(partition, settings.json, size)(readContent).map { case (row, features) =>
        Row.fromSeq(row.toSeq :+ features)
      }
    }
    df.sparkSession.createDataFrame(rows, outSchema)
  }

  /** Diagnostic: the compute threads the native pipeline of each of `tasks` tasks uses (one entry per
    * task), with this extractor's configuration; 1 everywhere when `spark.task.cpus` is 1.
    */
  def nativeThreadsPerTask(spark: SparkSession, tasks: Int): Array[Int] = {
    val settings = nativeConfig(spark)
    spark.sparkContext.parallelize(0 until tasks, tasks)
      .mapPartitions(_ => Iterator(NativeLib.threads(Native.pipeline(settings.json))))
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
      threads: Int = 1, batchSize: Int = 32, modelDir: String = "", precision: String = "auto"): RDD[(K, Row)] = {
    SparkLine.check()
    val settings = NativeConfig(detector, "efficientnet_lite0", codeBits, threads, modelDir, precision).validated()
    images.mapPartitions { partition =>
      Native.extractPartition(partition, settings.json, batchSize)(item => Right(item._2)).map { case ((key, _), row) => (key, row) }
    }
  }
}

/** One field of the native configuration that a param sets: `value` at `path` (`model_dir`: an empty
  * string means the jar's models), written over the config's own field only when `explicit`.
  */
private[imgfeat] case class NativeSetting(path: Seq[String], value: Any, explicit: Boolean)

/** The native configuration JSON the JVM side hands the pipeline, without `model_dir` when the jar's
  * models are meant: those are extracted on the executor, so the folder is resolved there (`json`).
  * Written by Jackson (Spark ships it), so every string is escaped as JSON requires, whatever a path holds.
  */
private[imgfeat] case class NativeConfig(settings: String) {
  /** The configuration for the native pipeline, with the jar's model folder when `settings` names none. */
  def json: String = {
    val root = NativeConfig.parse(settings)
    if (root.has("model_dir")) settings
    else NativeConfig.mapper.writeValueAsString(root.put("model_dir", Native.modelDir("")))
  }

  /** This configuration, once the native parser accepts it (loading no model); else the parser's
    * ImgfeatException, whose message names the bad field. */
  def validated(): NativeConfig = {
    NativeLib.ensureLoaded()
    try NativeLib.validateConfig(settings)
    catch {
      case e: ImgfeatException => throw new ImgfeatException(s"ImageFeatureExtractor's configuration: ${e.getMessage}", e)
    }
    this
  }
}

private[imgfeat] object NativeConfig {
  /** Thread-safe once built; one per JVM rather than one per task. */
  private val mapper = new ObjectMapper()

  /** The configuration of the RDD API's arguments, each one set explicitly. */
  def apply(detector: String, embedder: String, codeBits: Int, threads: Int, modelDir: String,
      precision: String): NativeConfig =
    merge("{}", Seq(
      NativeSetting(Seq("detector"), detector, explicit = true),
      NativeSetting(Seq("embedder"), embedder, explicit = true),
      NativeSetting(Seq("codes", "bits"), codeBits, explicit = true),
      NativeSetting(Seq("threads"), threads, explicit = true),
      NativeSetting(Seq("model_dir"), modelDir, explicit = true),
      NativeSetting(Seq("engine", "precision"), precision, explicit = true)))

  /** `config` (a JSON object) with each setting written over it where it is explicit or where `config`
    * leaves its field out. A field on the way that is not an object is left alone for the native parser
    * to reject by name.
    */
  def merge(config: String, settings: Seq[NativeSetting]): NativeConfig = {
    val root = parse(config)
    for (NativeSetting(path, value, explicit) <- settings) {
      val parent = path.init.foldLeft(Option(root)) { (node, name) =>
        node.flatMap { obj =>
          if (!obj.has(name)) Some(obj.putObject(name))
          else Option(obj.get(name)).collect { case child: ObjectNode => child }
        }
      }
      parent.foreach { obj =>
        val name = path.last
        if (explicit || !obj.has(name)) (name, value) match {
          case ("model_dir", "") => obj.remove(name) // the jar's models, resolved on the executor
          case _ => obj.set[JsonNode](name, mapper.valueToTree[JsonNode](value))
        }
      }
    }
    NativeConfig(mapper.writeValueAsString(root))
  }

  def isJsonObject(json: String): Boolean =
    try mapper.readTree(json).isInstanceOf[ObjectNode] catch { case _: java.io.IOException => false }

  private def parse(json: String): ObjectNode = mapper.readTree(json) match {
    case obj: ObjectNode => obj
    case _ => throw new IllegalArgumentException(s"the configuration must be a JSON object, not $json")
  }
}
