package ai.imgfeat

import org.apache.spark.ml.Transformer
import org.apache.spark.ml.param.{IntParam, Param, ParamMap, ParamValidators, StringArrayParam}
import org.apache.spark.ml.util.{DefaultParamsReadable, DefaultParamsWritable, Identifiable}
import org.apache.spark.sql.{DataFrame, Dataset}
import org.apache.spark.sql.functions.{array, col, explode, min, posexplode, udf}
import org.apache.spark.sql.types.{IntegerType, StructField, StructType}

/** Pairs of near-duplicate rows of a features table, found without comparing every pair: each code is
  * cut into `bands` bands, rows sharing a band's exact value are joined (a self-join on band keys, so it
  * spreads over the cluster like any join), and the candidates are kept when their Hamming distance is
  * at most `maxDistance`. Every code column is used (by default the object's and the whole image's,
  * best pair wins), as `imgfeat dedup` does on one machine.
  *
  * Two codes within distance d agree exactly on at least one of the bands when bands > d (pigeonhole),
  * so every pair up to `bands - 1` bits is found; beyond that pairs are found with high but not certain
  * probability. The default, 16 bands of 16 bits for 256-bit codes, is exact up to 15 bits.
  *
  * {{{
  * val pairs = new NearDuplicates().setIdCol("path").setMaxDistance(15).transform(features)
  * // id_a, id_b (id_a < id_b), distance
  * }}}
  */
class NearDuplicates(override val uid: String) extends Transformer with DefaultParamsWritable {

  def this() = this(Identifiable.randomUID("imgfeat-dups"))

  final val idCol = new Param[String](this, "idCol", "column identifying a row (a string or number)")
  final val codeCols = new StringArrayParam(this, "codeCols", "binary code columns compared pairwise")
  final val maxDistance = new IntParam(this, "maxDistance", "largest Hamming distance of a pair", ParamValidators.gtEq(0))
  final val bands = new IntParam(this, "bands", "bands each code is cut into; pairs within bands - 1 bits are all found",
    ParamValidators.gt(0))

  setDefault(idCol -> "path", codeCols -> Array("code", "whole_code"), maxDistance -> 15, bands -> 16)

  def setIdCol(value: String): this.type = set(idCol, value)
  def setCodeCols(value: Array[String]): this.type = set(codeCols, value)
  def setMaxDistance(value: Int): this.type = set(maxDistance, value)
  def setBands(value: Int): this.type = set(bands, value)

  override def transform(dataset: Dataset[_]): DataFrame = {
    val bandCount = $(bands)
    val codes = dataset
      .select(col($(idCol)).as("id"), explode(array($(codeCols).map(c => col(c)).toIndexedSeq: _*)).as("code"))
      .where(col("code").isNotNull)
    // Each band's bytes as one key; a band spans whole bytes (codes are 64, 128 or 256 bits).
    val bandKeys = udf { (code: Array[Byte]) =>
      require(code.length % bandCount == 0, s"a ${code.length * 8}-bit code does not split into $bandCount bands of whole bytes")
      val width = code.length / bandCount
      code.grouped(width).map(_.foldLeft(0L)((key, b) => (key << 8) | (b & 0xffL))).toSeq
    }
    val hamming = udf { (a: Array[Byte], b: Array[Byte]) =>
      a.indices.map(i => Integer.bitCount((a(i) ^ b(i)) & 0xff)).sum
    }
    val keyed = codes.select(col("id"), col("code"), posexplode(bandKeys(col("code"))).as(Seq("band", "key")))
    val (left, right) = (keyed.as("a"), keyed.as("b"))
    left
      .join(right, col("a.band") === col("b.band") && col("a.key") === col("b.key") && col("a.id") < col("b.id"))
      .select(col("a.id").as("id_a"), col("b.id").as("id_b"), hamming(col("a.code"), col("b.code")).as("distance"))
      .where(col("distance") <= $(maxDistance))
      .groupBy("id_a", "id_b")
      .agg(min("distance").as("distance"))
  }

  override def transformSchema(schema: StructType): StructType = {
    val id = schema($(idCol))
    StructType(Seq(StructField("id_a", id.dataType, id.nullable), StructField("id_b", id.dataType, id.nullable),
      StructField("distance", IntegerType, nullable = false)))
  }

  override def copy(extra: ParamMap): NearDuplicates = defaultCopy(extra)
}

object NearDuplicates extends DefaultParamsReadable[NearDuplicates]
