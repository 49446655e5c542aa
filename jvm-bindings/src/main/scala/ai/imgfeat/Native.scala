package ai.imgfeat

import java.nio.file.Path
import java.util.concurrent.ConcurrentHashMap

import org.apache.spark.sql.Row

/** What an executor JVM shares between its tasks: the loaded library, the models extracted from the
  * jar, and one native pipeline per configuration. Pipelines are created on first use and kept for
  * the JVM's lifetime, so models load once per executor, not once per partition.
  */
object Native {
  private val pipelines = new ConcurrentHashMap[String, java.lang.Long]()
  @volatile private var jarModels: Path = _

  /** The pipeline for this configuration JSON, created once per JVM. */
  def pipeline(configJson: String): Long = {
    NativeLib.ensureLoaded()
    pipelines.computeIfAbsent(configJson, json => java.lang.Long.valueOf(NativeLib.create(json))).longValue()
  }

  /** One row of [[PackedRows.schema]] per image, in order; a null image is an error row. */
  def process(handle: Long, images: Array[Array[Byte]]): IndexedSeq[Row] =
    PackedRows.decode(NativeLib.process(handle, images))

  /** Features of a partition's items, batch by batch, in order. `content` gives an item's encoded image
    * or why there is none (that item gets an error row); the pipeline is this JVM's for `configJson`.
    */
  def extractPartition[T](items: Iterator[T], configJson: String, batchSize: Int)(
      content: T => Either[String, Array[Byte]]): Iterator[(T, Row)] = {
    val handle = pipeline(configJson)
    items.grouped(batchSize).flatMap { batch =>
      val contents = batch.map(content)
      val rows = process(handle, contents.map(_.getOrElse(null)).toArray)
      batch.iterator.zip(contents.iterator.zip(rows.iterator).map {
        case (Left(why), _) => PackedRows.errorRow(why)
        case (Right(_), row) => row
      })
    }
  }

  /** The models folder to use: `modelDir` when given, else the models inside the jar, extracted once per
    * host and checked ([[ModelCache]]); looked up once per JVM.
    */
  def modelDir(modelDir: String): String =
    if (modelDir != null && modelDir.nonEmpty) modelDir else extractJarModels().toString

  private def extractJarModels(): Path = synchronized {
    if (jarModels == null) jarModels = ModelCache.extract()
    jarModels
  }
}
