package ai.imgfeat

import java.io.File
import java.lang.reflect.InvocationTargetException
import java.net.{URL, URLClassLoader}
import java.nio.file.{Files, Path, Paths}

import org.apache.logging.log4j.Level
import org.apache.logging.log4j.core.{LogEvent, LoggerContext}
import org.apache.logging.log4j.core.appender.AbstractAppender
import org.apache.logging.log4j.core.config.{Configurator, Property}
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
      val error = PackedRows.schema.fieldIndex("error")
      assert(!rows(1).isNullAt(error) && !rows(2).isNullAt(error), "undecodable bytes and a null image are error rows")
      assert(field[Seq[_]](cat, "insets").isEmpty, "a photo with nothing pasted into it has no insets")
      assert(field[String](cat, "arithmetic").matches("f32 \\((avx512|avx2|baseline)\\)"), field[String](cat, "arithmetic"))
      assert(rows(1).isNullAt(PackedRows.schema.fieldIndex("arithmetic")), "an error row was made by nothing")
    } finally NativeLib.close(handle)
  }

  test("a bad configuration is an ImgfeatException carrying Rust's message") {
    NativeLib.ensureLoaded()
    val e = intercept[ImgfeatException](NativeLib.create(NativeConfig("no-such-detector", "efficientnet_lite0", 256, 1,
      root.resolve("models").toString, "f32").json))
    assert(e.getMessage.contains("no-such-detector"), e.getMessage)
  }

  test("misuse is the exception a JVM developer expects: null arguments, a closed handle") {
    NativeLib.ensureLoaded()
    intercept[IllegalArgumentException](NativeLib.create(null))
    val handle = NativeLib.create(NativeConfig("coco", "efficientnet_lite0", 256, 1, root.resolve("models").toString, "f32").json)
    intercept[IllegalArgumentException](NativeLib.process(handle, null))
    NativeLib.close(handle)
    val closed = intercept[IllegalStateException](NativeLib.process(handle, Array(Array[Byte](1))))
    assert(closed.getMessage.contains(s"no open pipeline has handle $handle"), closed.getMessage)
    intercept[IllegalStateException](NativeLib.close(handle))
  }

  test("native log lines reach the ai.imgfeat.native logger, at that logger's level") {
    NativeLib.ensureLoaded()
    val lines = new java.util.concurrent.ConcurrentLinkedQueue[String]()
    val capture = new AbstractAppender("imgfeat-capture", null, null, true, Property.EMPTY_ARRAY) {
      override def append(event: LogEvent): Unit = lines.add(s"${event.getLevel} ${event.getMessage.getFormattedMessage}")
    }
    capture.start()
    val context = LoggerContext.getContext(false)
    def createAndClose(level: Level): Unit = {
      Configurator.setLevel("ai.imgfeat.native", level)
      val logger = context.getConfiguration.getLoggerConfig("ai.imgfeat.native")
      logger.removeAppender(capture.getName)
      logger.addAppender(capture, level, null)
      context.updateLoggers()
      val config = NativeConfig("coco", "efficientnet_lite0", 256, 1, root.resolve("models").toString, "f32").json
      NativeLib.close(NativeLib.create(config))
    }
    try {
      createAndClose(Level.DEBUG)
      // Each model says which executor runs it, at info level; tract's thousands of debug lines about
      // rewriting the graph stay out.
      val atDebug = lines.toArray.map(_.toString)
      assert(atDebug.count(_.matches("INFO .*runs on the native executor.*")) == 2, atDebug.mkString("\n"))
      assert(atDebug.length < 20, atDebug.mkString("\n"))
      lines.clear()
      createAndClose(Level.WARN)
      assert(!lines.toArray.exists(l => l.toString.startsWith("INFO") || l.toString.startsWith("DEBUG")), lines)
    } finally {
      context.getConfiguration.getLoggerConfig("ai.imgfeat.native").removeAppender(capture.getName)
      Configurator.setLevel("ai.imgfeat.native", Level.WARN)
      capture.stop()
    }
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
