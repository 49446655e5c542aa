package ai.imgfeat

import java.io.ByteArrayOutputStream
import java.nio.{ByteBuffer, ByteOrder}
import java.nio.charset.StandardCharsets

import org.apache.spark.sql.Row
import org.scalatest.funsuite.AnyFunSuite

/** PackedRows.decode on buffers laid out as `pack_rows` in src/output.rs documents, built here field by
  * field, so the JVM side is checked against the layout itself rather than against the Rust code. */
class PackedRowsSuite extends AnyFunSuite {

  /** A little-endian writer of the layout's pieces. */
  private class Packer {
    private val out = new ByteArrayOutputStream()
    private def le(size: Int)(put: ByteBuffer => Unit): Packer = {
      val b = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN); put(b); out.write(b.array()); this
    }
    def raw(bytes: Array[Byte]): Packer = { out.write(bytes); this }
    def u8(v: Int): Packer = le(1)(_.put(v.toByte))
    def i32(v: Int): Packer = le(4)(_.putInt(v))
    def f32(v: Float): Packer = le(4)(_.putFloat(v))
    def str(s: String): Packer = { val b = s.getBytes(StandardCharsets.UTF_8); i32(b.length).raw(b) }
    def floats(v: Option[Seq[Float]]): Packer = v.fold(i32(-1)) { fs => i32(fs.size); fs.foreach(f32); this }
    def bytes(v: Option[Array[Byte]]): Packer = v.fold(i32(-1))(b => i32(b.length).raw(b))
    def result: Array[Byte] = out.toByteArray
  }

  private def header(rows: Int) = new Packer().raw("IFR3".getBytes(StandardCharsets.US_ASCII)).i32(rows)

  test("decodes a detected row, a row without detection and an error row, in order") {
    val feature = Seq(0.5f, -1.25f, 3.0e-8f)
    val code = Array[Byte](0x0f, 0xf0.toByte, 0x00, 0x7f)
    val packed = header(3)
      // ok, detected: width, height, detected, class_id, class_name, score, box, crop, features and codes
      .u8(0).i32(640).i32(480).u8(1).i32(17).str("cat").f32(0.875f)
      .f32(0.125f).f32(0.25f).f32(0.75f).f32(1.0f)
      .i32(10).i32(20).i32(600).i32(470)
      .floats(Some(feature)).bytes(Some(code)).floats(Some(Seq(1.0f))).bytes(Some(Array[Byte](1)))
      // two insets: rect, feature, code
      .i32(2).i32(1).i32(2).i32(3).i32(4).floats(Some(Seq(0.5f))).bytes(Some(Array[Byte](7)))
      .i32(5).i32(6).i32(7).i32(8).floats(Some(Seq(-0.5f))).bytes(Some(Array[Byte](6)))
      .str("int8 (avx512-vnni)")
      // ok, nothing detected (no class, score or box), object embedding off (null feature and code)
      .u8(0).i32(3).i32(2).u8(0)
      .i32(0).i32(0).i32(3).i32(2)
      .floats(None).bytes(None).floats(Some(Seq(2.0f, 4.0f))).bytes(Some(Array[Byte](9, 8)))
      .i32(0)
      .str("f32 (avx2)")
      // error
      .u8(1).str("cannot decode: ünïcode ✓")
      .result

    val rows = PackedRows.decode(packed)
    assert(rows.size == 3)
    rows.foreach(row => assert(row.length == PackedRows.schema.length))

    val detected = rows(0)
    assert(detected.getInt(0) == 640 && detected.getInt(1) == 480 && detected.getBoolean(2))
    assert(detected.getInt(3) == 17 && detected.getString(4) == "cat" && detected.getFloat(5) == 0.875f)
    assert(detected.getStruct(6) == Row(0.125f, 0.25f, 0.75f, 1.0f))
    assert(detected.getStruct(7) == Row(10, 20, 600, 470))
    assert(detected.getSeq[Float](8) == feature)
    assert(detected.getAs[Array[Byte]](9).sameElements(code))
    assert(detected.getSeq[Float](10) == Seq(1.0f))
    assert(detected.getAs[Array[Byte]](11).sameElements(Array[Byte](1)))
    val insets = detected.getSeq[Row](12)
    assert(insets.map(i => (i.getInt(0), i.getInt(1), i.getInt(2), i.getInt(3), i.getSeq[Float](4))) ==
      Seq((1, 2, 3, 4, Seq(0.5f)), (5, 6, 7, 8, Seq(-0.5f))))
    assert(insets.map(_.getAs[Array[Byte]](5).toSeq) == Seq(Seq[Byte](7), Seq[Byte](6)))
    assert(detected.getString(13) == "int8 (avx512-vnni)")
    assert(detected.isNullAt(14))

    val plain = rows(1)
    assert(plain.getInt(0) == 3 && plain.getInt(1) == 2 && !plain.getBoolean(2))
    assert((3 to 6).forall(plain.isNullAt), "no class, score or box without a detection")
    assert(plain.getStruct(7) == Row(0, 0, 3, 2))
    assert(plain.isNullAt(8) && plain.isNullAt(9))
    assert(plain.getSeq[Float](10) == Seq(2.0f, 4.0f))
    assert(plain.getAs[Array[Byte]](11).sameElements(Array[Byte](9, 8)))
    assert(plain.getSeq[Row](12).isEmpty)
    assert(plain.getString(13) == "f32 (avx2)", "each row says what made it: executors on different CPUs differ")
    assert(plain.isNullAt(14))

    val error = rows(2)
    assert((0 until 14).forall(error.isNullAt))
    assert(error.getString(14) == "cannot decode: ünïcode ✓")
  }

  test("an empty batch is no rows") {
    assert(PackedRows.decode(header(0).result).isEmpty)
  }

  test("a buffer of another layout is refused with ImgfeatException") {
    val e = intercept[ImgfeatException](PackedRows.decode(new Packer().raw("IFR0".getBytes(StandardCharsets.US_ASCII)).i32(0).result))
    assert(e.getMessage.contains("unknown layout"))
  }

  test("the schema has the CLI table's feature columns, in order") {
    assert(PackedRows.schema.fieldNames.toSeq == Seq("width", "height", "detected", "class_id", "class_name", "score",
      "box", "crop", "feature", "code", "whole_feature", "whole_code", "insets", "arithmetic", "error"))
  }
}
