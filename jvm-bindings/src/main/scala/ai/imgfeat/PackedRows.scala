package ai.imgfeat

import java.nio.{ByteBuffer, ByteOrder}
import java.nio.charset.StandardCharsets

import org.apache.spark.sql.Row
import org.apache.spark.sql.types._

/** Decodes the packed row buffer that `NativeLib.process` returns (layout: `pack_rows` in
  * `src/output.rs`) into Spark rows of [[PackedRows.schema]]: the same fields as the CLI's Parquet.
  */
object PackedRows {
  private val boxType = StructType(Seq("xmin", "ymin", "xmax", "ymax").map(StructField(_, FloatType, nullable = false)))
  private val cropType = StructType(Seq("left", "top", "right", "bottom").map(StructField(_, IntegerType, nullable = false)))
  /** A photo found pasted into the image: where it is (as `crop`), its feature and code. */
  private val insetType = StructType(Seq("left", "top", "right", "bottom").map(StructField(_, IntegerType, nullable = false)) ++ Seq(
    StructField("feature", ArrayType(FloatType, containsNull = false)),
    StructField("code", BinaryType)))

  /** The features of one image; `error` is set (and the rest null) when it has none. */
  val schema: StructType = StructType(Seq(
    StructField("width", IntegerType),
    StructField("height", IntegerType),
    StructField("detected", BooleanType),
    StructField("class_id", IntegerType),
    StructField("class_name", StringType),
    StructField("score", FloatType),
    StructField("box", boxType),
    StructField("crop", cropType),
    StructField("feature", ArrayType(FloatType, containsNull = false)),
    StructField("code", BinaryType),
    StructField("whole_feature", ArrayType(FloatType, containsNull = false)),
    StructField("whole_code", BinaryType),
    StructField("insets", ArrayType(insetType, containsNull = false)),
    StructField("arithmetic", StringType),
    StructField("error", StringType)))

  /** The row of an image that has no features, and why. */
  def errorRow(message: String): Row = Row(null, null, null, null, null, null, null, null, null, null, null, null, null, null, message)

  def decode(packed: Array[Byte]): IndexedSeq[Row] = {
    val in = ByteBuffer.wrap(packed).order(ByteOrder.LITTLE_ENDIAN)
    val magic = new Array[Byte](4)
    in.get(magic)
    if (new String(magic, StandardCharsets.US_ASCII) != "IFR3")
      throw new ImgfeatException("native rows have an unknown layout (jar and library from different builds?)")
    val rows = in.getInt()

    def string(): String = {
      val bytes = new Array[Byte](in.getInt())
      in.get(bytes)
      new String(bytes, StandardCharsets.UTF_8)
    }
    def floats(): Seq[Float] = in.getInt() match {
      case -1 => null
      case n => val a = new Array[Float](n); in.asFloatBuffer().get(a); in.position(in.position() + 4 * n); a.toSeq
    }
    def bytes(): Array[Byte] = in.getInt() match {
      case -1 => null
      case n => val a = new Array[Byte](n); in.get(a); a
    }

    (0 until rows).map { _ =>
      if (in.get() == 1) {
        errorRow(string())
      } else {
        val width = in.getInt()
        val height = in.getInt()
        val detected = in.get() == 1
        val (classId, className, score, box) =
          if (detected) {
            val id = in.getInt()
            val name = string()
            val s = in.getFloat()
            (id, name, s, Row(in.getFloat(), in.getFloat(), in.getFloat(), in.getFloat()))
          } else (null, null, null, null)
        val crop = Row(in.getInt(), in.getInt(), in.getInt(), in.getInt())
        val (feature, code, wholeFeature, wholeCode) = (floats(), bytes(), floats(), bytes())
        val insets = Seq.fill(in.getInt())(Row(in.getInt(), in.getInt(), in.getInt(), in.getInt(), floats(), bytes()))
        Row(width, height, detected, classId, className, score, box, crop, feature, code, wholeFeature, wholeCode, insets, string(), null)
      }
    }
  }
}
