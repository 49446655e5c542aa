package ai.imgfeat

import java.io.File
import java.lang.reflect.InvocationTargetException
import java.net.{URL, URLClassLoader}
import java.nio.file.{Files, Path, Paths}

import org.scalatest.funsuite.AnyFunSuite

/** The native loader: the library comes from the classpath resource `native/linux-x86_64/libimgfeat.so`
  * (the build puts it in the classes folder the jar is made of) and runs the pipeline; without that
  * resource, loading fails with an ImgfeatException that says what is missing. */
class NativeLibSuite extends AnyFunSuite {
  private val root = Paths.get(sys.props.getOrElse("imgfeat.root", ".."))
  private val resource = "native/linux-x86_64/libimgfeat.so"

  private def onLibraryPath: Seq[Path] =
    sys.props("java.library.path").split(File.pathSeparator).toSeq.filter(_.nonEmpty)
      .map(dir => Paths.get(dir, System.mapLibraryName("imgfeat"))).filter(Files.exists(_))

  test("the library loads from the classpath resource and computes a photo's row") {
    assert(getClass.getClassLoader.getResource(resource) != null, s"the build put no $resource among the classes")
    assert(onLibraryPath.isEmpty, s"a libimgfeat.so on java.library.path would be loaded instead: $onLibraryPath")
    NativeLib.ensureLoaded()
    NativeLib.ensureLoaded() // once per JVM: the second call is a no-op, not a second load

    val config = NativeConfig("coco", "efficientnet_lite0", 256, 1, root.resolve("models").toString, "f32").json
    val handle = NativeLib.create(config)
    try {
      assert(NativeLib.threads(handle) == 1)
      val photo = Files.readAllBytes(root.resolve("tests/fixtures/photos/chelsea.jpg"))
      val rows = PackedRows.decode(NativeLib.process(handle, Array(photo, Array[Byte](1, 2, 3), null)))
      assert(rows.size == 3)
      def field[T](row: org.apache.spark.sql.Row, name: String): T = row.getAs[T](PackedRows.schema.fieldIndex(name))
      val cat = rows(0)
      assert(field[String](cat, "error") == null, s"error row: ${field[String](cat, "error")}")
      assert(field[String](cat, "class_name") == "cat" && field[Boolean](cat, "detected"))
      assert(field[Array[Byte]](cat, "code").length == 32 && field[Seq[Float]](cat, "feature").size == 1280)
      assert(!rows(1).isNullAt(12) && !rows(2).isNullAt(12), "undecodable bytes and a null image are error rows")
    } finally NativeLib.close(handle)
  }

  test("a bad configuration is an ImgfeatException carrying Rust's message") {
    NativeLib.ensureLoaded()
    val e = intercept[ImgfeatException](NativeLib.create(NativeConfig("no-such-detector", "efficientnet_lite0", 256, 1,
      root.resolve("models").toString, "f32").json))
    assert(e.getMessage.contains("no-such-detector"), e.getMessage)
  }

  test("without the resource (and nothing on java.library.path), loading fails naming the missing library") {
    // NativeLib and its exception, defined afresh by a loader that sees the classes but not the library.
    val classes = Paths.get(classOf[NativeLib].getProtectionDomain.getCodeSource.getLocation.toURI)
    val loader = new URLClassLoader(Array(classes.toUri.toURL), ClassLoader.getPlatformClassLoader) {
      override def getResource(name: String): URL = if (name.startsWith("native/")) null else super.getResource(name)
    }
    try {
      val isolated = loader.loadClass(classOf[NativeLib].getName)
      assert(isolated.getClassLoader eq loader)
      val thrown = intercept[InvocationTargetException](isolated.getMethod("ensureLoaded").invoke(null)).getCause
      assert(thrown.getClass.getName == classOf[ImgfeatException].getName, thrown)
      assert(thrown.getMessage.contains(resource), thrown.getMessage)
      assert(thrown.getMessage.contains("java.library.path"), thrown.getMessage)
    } finally loader.close()
  }
}
