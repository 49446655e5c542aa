package ai.imgfeat

import com.fasterxml.jackson.databind.ObjectMapper
import org.scalatest.funsuite.AnyFunSuite

/** The configuration JSON the JVM side hands the native pipeline: ImageFeatureExtractor's params written over
  * its `config` (a param set explicitly wins, one left at its default fills only a field the config leaves
  * out), and the driver-side check by the native parser. */
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

  private def settings(e: ImageFeatureExtractor, taskCpus: Int = 2) = mapper.readTree(e.mergedConfig(taskCpus).settings)

  test("without a config, the params' values; threads from spark.task.cpus; no model_dir (the jar's, on the executor)") {
    val expected = """{"detector": "coco", "embedder": "efficientnet_lite0", "codes": {"bits": 256}, "threads": 3, """ +
      """"engine": {"precision": "auto"}}"""
    assert(settings(new ImageFeatureExtractor(), taskCpus = 3) == mapper.readTree(expected))
  }

  test("the config's own fields are kept where no param is set explicitly, and its other fields pass through") {
    val config = """{"detector": {"name": "custom", "model": "d.onnx"}, "codes": {"bits": 128, "projection": "p.safetensors"},
      "threads": 0, "model_dir": "/data/models", "score_threshold": 0.5, "class_allow_list": ["cat", 17],
      "engine": {"executor": "tract"}}"""
    val tree = settings(new ImageFeatureExtractor().setConfig(config))
    assert(tree.get("detector") == mapper.readTree("""{"name": "custom", "model": "d.onnx"}"""))
    assert(tree.get("codes") == mapper.readTree("""{"bits": 128, "projection": "p.safetensors"}"""))
    assert(tree.get("threads").asInt() == 0, "the config's threads (0: every core) win over spark.task.cpus")
    assert(tree.get("model_dir").asText() == "/data/models")
    assert(tree.get("score_threshold").asDouble() == 0.5 && tree.get("class_allow_list").size() == 2)
    assert(tree.get("engine") == mapper.readTree("""{"executor": "tract", "precision": "auto"}"""))
    assert(tree.get("embedder").asText() == "efficientnet_lite0", "a field the config leaves out takes the param's default")
  }

  test("params set explicitly override the config, even when set to their default value") {
    val config = """{"detector": {"name": "custom"}, "codes": {"bits": 128, "projection": "p.safetensors"}, "threads": 4,
      "model_dir": "/data/models", "engine": {"precision": "int8"}}"""
    val e = new ImageFeatureExtractor().setConfig(config).setCodeBits(64).setDetector("coco").setPrecision("f32")
      .setModelDir("").setThreads(0)
    val tree = settings(e, taskCpus = 1)
    assert(tree.get("codes") == mapper.readTree("""{"bits": 64, "projection": "p.safetensors"}"""))
    assert(tree.get("detector").asText() == "coco" && tree.get("engine").get("precision").asText() == "f32")
    assert(!tree.has("model_dir"), "modelDir set to empty: the jar's models, resolved on the executor")
    assert(tree.get("threads").asInt() == 1, "threads set to 0: spark.task.cpus")
    assert(settings(new ImageFeatureExtractor().setConfig(config).setModelDir("/other")).get("model_dir").asText() == "/other")
  }

  test("a config that is not a JSON object is refused when set") {
    for (bad <- Seq("", "[1]", "\"coco\"", "{\"threads\": ", "null"))
      intercept[IllegalArgumentException](new ImageFeatureExtractor().setConfig(bad))
  }

  test("the native parser checks the merged configuration on the driver, naming a bad field") {
    val typo = intercept[ImgfeatException](
      new ImageFeatureExtractor().setConfig("""{"score_treshold": 0.5}""").mergedConfig(1).validated())
    assert(typo.getMessage.contains("score_treshold"), typo.getMessage)
    val range = intercept[ImgfeatException](
      new ImageFeatureExtractor().setConfig("""{"crop_margin": 99}""").mergedConfig(1).validated())
    assert(range.getMessage.contains("crop_margin"), range.getMessage)
    new ImageFeatureExtractor().setConfig("""{"embed": "whole", "class_allow_list": ["cat"]}""").mergedConfig(1).validated()
  }
}
