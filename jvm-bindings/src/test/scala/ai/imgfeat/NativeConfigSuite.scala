package ai.imgfeat

import com.fasterxml.jackson.databind.ObjectMapper
import org.scalatest.funsuite.AnyFunSuite

/** The configuration JSON the JVM side hands the native pipeline (ImageFeatureExtractor's params). */
class NativeConfigSuite extends AnyFunSuite {
  private val mapper = new ObjectMapper()

  test("the same fields and values as the hand-built JSON it replaced") {
    val json = NativeConfig("coco", "efficientnet_lite0", 256, 2, "/data/models", "int8").json
    val before = """{"detector": "coco", "embedder": "efficientnet_lite0", "codes": {"bits": 256}, "threads": 2, """ +
      """"model_dir": "/data/models", "engine": {"precision": "int8"}}"""
    assert(mapper.readTree(json) == mapper.readTree(before))
    val names = new java.util.ArrayList[String]()
    mapper.readTree(json).fieldNames().forEachRemaining(name => names.add(name))
    assert(names.toArray.toSeq == Seq("detector", "embedder", "codes", "threads", "model_dir", "engine"))
  }

  test("strings are escaped: quotes, backslashes, control characters and non-ASCII survive") {
    val dir = "/mnt/a \"quoted\" \\ folder\t\u0001/ünï ✓"
    val tree = mapper.readTree(NativeConfig("oid\"v4", "e", 64, 1, dir, "f32").json)
    assert(tree.get("model_dir").asText() == dir)
    assert(tree.get("detector").asText() == "oid\"v4")
    assert(tree.get("codes").get("bits").isInt && tree.get("codes").get("bits").asInt() == 64)
    assert(tree.get("threads").isInt && tree.get("threads").asInt() == 1)
  }

}
