package ai.imgfeat

import org.apache.spark.sql.types._
import org.scalatest.funsuite.AnyFunSuite

/** The transformers' params: defaults (the CLI's), validation at `set`, and the input checks of
  * `transformSchema`, which run on the driver before any task. No Spark session is needed. */
class ParamsSuite extends AnyFunSuite {
  private val images = StructType(Seq(StructField("path", StringType), StructField("content", BinaryType)))

  test("ImageFeatureExtractor: defaults") {
    val e = new ImageFeatureExtractor()
    assert(e.getInputCol == "content" && e.getOutputCol == "features")
    assert(e.getOrDefault(e.pathCol) == "path" && e.getOrDefault(e.batchSize) == 32 && e.getOrDefault(e.threads) == 0)
    assert(e.getOrDefault(e.detector) == "coco" && e.getOrDefault(e.embedder) == "efficientnet_lite0")
    assert(e.getOrDefault(e.codeBits) == 256 && e.getOrDefault(e.modelDir) == "" && e.getOrDefault(e.precision) == "auto")
    assert(e.getOrDefault(e.config) == "{}")
    assert((e.getPathCol, e.getBatchSize, e.getThreads, e.getDetector, e.getEmbedder, e.getCodeBits, e.getModelDir,
      e.getPrecision, e.getConfig) == ("path", 32, 0, "coco", "efficientnet_lite0", 256, "", "auto", "{}"))
  }

  test("ImageFeatureExtractor: setters set, copy keeps them") {
    val e = new ImageFeatureExtractor().setBatchSize(8).setThreads(2).setDetector("oidv4").setCodeBits(64)
      .setModelDir("/models").setPrecision("int8").setPathCol("uri").setInputCol("bytes").setOutputCol("f")
      .setConfig("""{"embed": "whole"}""")
    val c = e.copy(org.apache.spark.ml.param.ParamMap.empty)
    for (x <- Seq(e, c)) {
      assert(x.getOrDefault(x.batchSize) == 8 && x.getOrDefault(x.threads) == 2 && x.getOrDefault(x.detector) == "oidv4")
      assert(x.getOrDefault(x.codeBits) == 64 && x.getOrDefault(x.modelDir) == "/models" && x.getOrDefault(x.precision) == "int8")
      assert(x.getOrDefault(x.pathCol) == "uri" && x.getInputCol == "bytes" && x.getOutputCol == "f")
      assert(x.getConfig == """{"embed": "whole"}""" && x.isSet(x.config) && !x.isSet(x.embedder))
    }
    assert(c.uid == e.uid)
  }

  test("ImageFeatureExtractor: invalid values are refused when set") {
    val e = new ImageFeatureExtractor()
    for (bits <- Seq(0, 32, 100, 512)) intercept[IllegalArgumentException](e.setCodeBits(bits))
    for (size <- Seq(0, -1)) intercept[IllegalArgumentException](e.setBatchSize(size))
    intercept[IllegalArgumentException](e.setThreads(-1))
    for (p <- Seq("fp16", "F32", "")) intercept[IllegalArgumentException](e.setPrecision(p))
    e.setThreads(0).setCodeBits(128).setPrecision("int8") // the edges that are allowed
  }

  test("ImageFeatureExtractor: the output schema appends the features struct") {
    val out = new ImageFeatureExtractor().transformSchema(images)
    assert(out.fieldNames.toSeq == Seq("path", "content", "features"))
    assert(out("features").dataType == PackedRows.schema && !out("features").nullable)
    // Without a content column, the path column is read instead.
    assert(new ImageFeatureExtractor().transformSchema(StructType(Seq(images("path")))).fieldNames.last == "features")
  }

  test("ImageFeatureExtractor: bad inputs fail with a message naming the column") {
    def message(schema: StructType, e: ImageFeatureExtractor = new ImageFeatureExtractor()) =
      intercept[IllegalArgumentException](e.transformSchema(schema)).getMessage
    assert(message(StructType(Seq(StructField("content", StringType)))).contains("column content must be binary"))
    assert(message(StructType(Seq(StructField("name", StringType)))).contains(
      "neither the content column content nor the path column path"))
    assert(message(StructType(Seq(StructField("path", IntegerType)))).contains("column path must be a string"))
    assert(message(images, new ImageFeatureExtractor().setOutputCol("path")).contains("column path already exists"))
  }

  private val features = StructType(Seq(StructField("path", StringType), StructField("code", BinaryType),
    StructField("whole_code", BinaryType), StructField("class_name", StringType)))

  test("NearDuplicates: defaults are imgfeat dedup's") {
    val d = new NearDuplicates()
    assert(d.getIdCol == "path" && d.getCodeCols.toSeq == Seq("code", "whole_code"))
    assert(d.getMaxDistance == 47 && d.getBands == 16)
    assert(d.getVerify && d.getFeatureCols.toSeq == Seq("feature", "whole_feature"))
  }

  test("NearDuplicates: verify needs a numeric array feature column per code column") {
    val withFeatures = StructType(features.fields ++ Seq(StructField("feature", ArrayType(FloatType)),
      StructField("whole_feature", ArrayType(FloatType))))
    new NearDuplicates().transformSchema(withFeatures)
    new NearDuplicates().setVerify(false).transformSchema(features)
    def message(d: NearDuplicates, schema: StructType) = intercept[IllegalArgumentException](d.transformSchema(schema)).getMessage
    assert(message(new NearDuplicates(), features).contains("feature column 'feature' is not in the input") &&
      message(new NearDuplicates(), features).contains("setVerify(false)"))
    assert(message(new NearDuplicates().setVerify(true).setFeatureCols(Array("feature")), withFeatures).contains(
      "verify needs one feature column per code column"))
    assert(message(new NearDuplicates().setVerify(true).setFeatureCols(Array("feature", "class_name")), withFeatures).contains(
      "feature column 'class_name' must be an array of numbers"))
  }

  test("NearDuplicates: verification thresholds by the kinds of the two codes, as the CLI's") {
    def unit(cosine: Double): Seq[Float] = Seq(cosine.toFloat, math.sqrt(1 - cosine * cosine).toFloat)
    val x = Seq(1f, 0f)
    assert(NearDuplicates.verified(x, true, unit(0.70), true) && !NearDuplicates.verified(x, true, unit(0.62), true))
    assert(NearDuplicates.verified(x, false, unit(0.96), false) && !NearDuplicates.verified(x, false, unit(0.85), false))
    assert(NearDuplicates.verified(x, true, unit(0.80), false) && !NearDuplicates.verified(x, false, unit(0.72), true))
    intercept[IllegalArgumentException](NearDuplicates.verified(x, true, null, true))
  }

  test("NearDuplicates: invalid values are refused when set") {
    val d = new NearDuplicates()
    intercept[IllegalArgumentException](d.setMaxDistance(-1))
    intercept[IllegalArgumentException](d.setBands(0))
    intercept[IllegalArgumentException](d.setCodeCols(Array.empty[String]))
    d.setMaxDistance(0).setBands(1).setCodeCols(Array("code"))
  }

  test("NearDuplicates: the output schema and bad inputs") {
    def codesOnly() = new NearDuplicates().setVerify(false) // `features` has no feature columns
    val out = codesOnly().transformSchema(features)
    assert(out.fieldNames.toSeq == Seq("path", "representative", "group_size"))
    assert(out.map(_.dataType) == Seq(StringType, StringType, IntegerType))
    def message(d: NearDuplicates) = intercept[IllegalArgumentException](d.transformSchema(features)).getMessage
    assert(message(codesOnly().setIdCol("photo")).contains("idCol column 'photo' is not in the input"))
    assert(message(codesOnly().setCodeCols(Array("code", "class_name"))).contains(
      "code column 'class_name' must be binary"))
    assert(message(codesOnly().setCodeCols(Array("nope"))).contains("code column 'nope' is not in the input"))
    val byNumber = StructType(Seq(StructField("id", LongType), StructField("code", BinaryType), StructField("whole_code", BinaryType)))
    assert(codesOnly().setIdCol("id").transformSchema(byNumber)("representative").dataType == LongType)
  }

  test("NearDuplicates: band keys, probes and Hamming distance") {
    val code = Array[Byte](0xa5.toByte, 0x0f) // 1010 0101 0000 1111
    assert(NearDuplicates.bandKey(code, 0, 4) == 0xa && NearDuplicates.bandKey(code, 1, 4) == 0x5)
    assert(NearDuplicates.bandKey(code, 3, 4) == 0xf && NearDuplicates.bandKey(code, 0, 16) == 0xa50f)
    intercept[IllegalArgumentException](NearDuplicates.bandKey(code, 4, 4))
    assert(NearDuplicates.keysWithin(0, 4, 0).toSeq == Seq(0L))
    assert(NearDuplicates.keysWithin(0, 4, 1).sorted.toSeq == Seq(0L, 1L, 2L, 4L, 8L))
    assert(NearDuplicates.keysWithin(0, 4, 2).distinct.length == 1 + 4 + 6)
    assert(BandLayout(16, 16, 1).probesPerKey == 17 && BandLayout(16, 16, 2).probesPerKey == 1 + 16 + 120)
    assert(NearDuplicates.hamming(code, Array[Byte](0x5a, 0x0f)) == 8)
    assert(NearDuplicates.hamming(code, code) == 0)
    intercept[IllegalArgumentException](NearDuplicates.hamming(code, Array[Byte](1)))
  }
}
