package ai.imgfeat

import java.net.URLClassLoader
import java.nio.charset.StandardCharsets
import java.nio.file.{Files, Path}
import java.nio.file.attribute.PosixFilePermissions
import java.util.concurrent.TimeUnit

import org.scalatest.funsuite.AnyFunSuite

/** A child JVM's entry point: extracts the models under `args(0)` (a folder laid out like the jar's
  * resources) into the cache under `args(1)` and prints the folder. The suite runs several at once and
  * kills some, as executors starting and dying on one host do. */
object ModelCacheProbe {
  def main(args: Array[String]): Unit = {
    val loader = new URLClassLoader(Array(Path.of(args(0)).toUri.toURL), null)
    println("MODELS " + ModelCache.extract(loader, Path.of(args(1))))
  }
}

class ModelCacheSuite extends AnyFunSuite {
  private val user = System.getProperty("user.name")

  /** A folder of resources like the jar's: an INDEX and models of a few MB (so extraction takes long
    * enough to be killed part-way). */
  private def fakeJar(): (Path, Map[String, Array[Byte]]) = {
    val root = Files.createTempDirectory("imgfeat-fake-jar-")
    val models = root.resolve("imgfeat/models")
    Files.createDirectories(models)
    val random = new java.util.Random(7)
    val files = (1 to 3).map { i =>
      val bytes = new Array[Byte](4 << 20)
      random.nextBytes(bytes)
      s"model$i.onnx" -> bytes
    }.toMap
    files.foreach { case (name, bytes) => Files.write(models.resolve(name), bytes) }
    Files.write(models.resolve("INDEX"), files.keys.toSeq.sorted.mkString("\n").getBytes(StandardCharsets.UTF_8))
    (root, files)
  }

  private def loaderOf(jar: Path) = new URLClassLoader(Array(jar.toUri.toURL), null)

  private def assertHolds(dir: Path, files: Map[String, Array[Byte]]): Unit =
    files.foreach { case (name, bytes) => assert(java.util.Arrays.equals(Files.readAllBytes(dir.resolve(name)), bytes), name) }

  private def child(jar: Path, base: Path): Process =
    new ProcessBuilder(System.getProperty("java.home") + "/bin/java", "-cp", System.getProperty("java.class.path"),
      "ai.imgfeat.ModelCacheProbe", jar.toString, base.toString).redirectErrorStream(true).start()

  private def output(process: Process): String = {
    val text = new String(process.getInputStream.readAllBytes(), StandardCharsets.UTF_8)
    assert(process.waitFor(120, TimeUnit.SECONDS), "the probe JVM did not finish")
    text
  }

  test("extracts once into a private, content-addressed folder and reuses it") {
    val (jar, files) = fakeJar()
    val base = Files.createTempDirectory("imgfeat-cache-")
    val dir = ModelCache.extract(loaderOf(jar), base)
    assert(dir.getParent == base.resolve(s"imgfeat-models-$user"))
    assert(dir.getFileName.toString.matches("[0-9a-f]{64}"))
    assertHolds(dir, files)
    assert(PosixFilePermissions.toString(Files.getPosixFilePermissions(dir.getParent)) == "rwx------")
    val modified = Files.getLastModifiedTime(dir.resolve("model1.onnx"))
    assert(ModelCache.extract(loaderOf(jar), base) == dir)
    assert(Files.getLastModifiedTime(dir.resolve("model1.onnx")) == modified, "reused, not extracted again")
  }

  test("two JVMs starting at once share one extraction") {
    val (jar, files) = fakeJar()
    val base = Files.createTempDirectory("imgfeat-cache-")
    val (a, b) = (child(jar, base), child(jar, base))
    val (outA, outB) = (output(a), output(b))
    assert(a.exitValue() == 0 && b.exitValue() == 0, outA + outB)
    val dirs = Seq(outA, outB).map(_.linesIterator.find(_.startsWith("MODELS ")).get.stripPrefix("MODELS "))
    assert(dirs.distinct.size == 1, dirs)
    assertHolds(Path.of(dirs.head), files)
    val entries = Files.list(base.resolve(s"imgfeat-models-$user")).toArray.map(_.toString.split('/').last).sorted.toSeq
    assert(entries.count(_.matches("[0-9a-f]{64}")) == 1 && !entries.exists(_.contains(".tmp-")), entries)
  }

  test("a JVM killed while extracting leaves nothing that a later one uses") {
    val (jar, files) = fakeJar()
    val base = Files.createTempDirectory("imgfeat-cache-")
    val random = new java.util.Random()
    for (_ <- 1 to 3) {
      val victim = child(jar, base)
      Thread.sleep(random.nextInt(400).toLong)
      victim.destroyForcibly().waitFor()
      val next = child(jar, base)
      val out = output(next)
      assert(next.exitValue() == 0, out)
      assertHolds(Path.of(out.linesIterator.find(_.startsWith("MODELS ")).get.stripPrefix("MODELS ")), files)
    }
    // What a JVM killed mid-copy leaves: a half-written temporary folder; the next extraction removes it.
    val root = base.resolve(s"imgfeat-models-$user")
    val key = Files.list(root).toArray.map(_.asInstanceOf[Path]).find(_.getFileName.toString.matches("[0-9a-f]{64}")).get
    ModelCache.extract(loaderOf(jar), base) // present and valid
    val stale = Files.createDirectory(root.resolve(s".${key.getFileName}.tmp-1-x"))
    Files.write(stale.resolve("model1.onnx"), Array[Byte](1, 2))
    Files.write(key.resolve("model2.onnx"), Array[Byte](1, 2)) // and a damaged model: re-extracted
    assertHolds(ModelCache.extract(loaderOf(jar), base), files)
    assert(!Files.exists(stale))
  }

  test("files planted in the cache are never used") {
    val (jar, files) = fakeJar()
    val base = Files.createTempDirectory("imgfeat-cache-")
    val dir = ModelCache.extract(loaderOf(jar), base)
    Files.write(dir.resolve("model3.onnx"), "planted".getBytes(StandardCharsets.UTF_8))
    assertHolds(ModelCache.extract(loaderOf(jar), base), files)
    // A symlink in place of a model (to a file of someone else's choosing) is replaced too.
    val elsewhere = Files.write(Files.createTempFile("elsewhere-", ".onnx"), files("model1.onnx"))
    Files.delete(dir.resolve("model1.onnx"))
    Files.createSymbolicLink(dir.resolve("model1.onnx"), elsewhere)
    val again = ModelCache.extract(loaderOf(jar), base)
    assert(!Files.isSymbolicLink(again.resolve("model1.onnx")))
    assertHolds(again, files)
  }

  test("a cache folder open to others, or owned by another user, is passed over") {
    val (jar, files) = fakeJar()
    val base = Files.createTempDirectory("imgfeat-cache-")
    val root = Files.createDirectory(base.resolve(s"imgfeat-models-$user"))
    Files.setPosixFilePermissions(root, PosixFilePermissions.fromString("rwxrwxrwx"))
    val dir = ModelCache.extract(loaderOf(jar), base)
    assert(!dir.startsWith(root), s"used $dir inside a world-writable folder")
    assertHolds(dir, files)

    val base2 = Files.createTempDirectory("imgfeat-cache-")
    val root2 = Files.createDirectory(base2.resolve(s"imgfeat-models-$user"),
      PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")))
    val nobody = base2.getFileSystem.getUserPrincipalLookupService.lookupPrincipalByName("nobody")
    val chowned = try { Files.setOwner(root2, nobody); true } catch { case _: java.io.IOException => false }
    assume(chowned, s"SKIPPED part: changing a folder's owner needs root (running as $user)")
    val dir2 = ModelCache.extract(loaderOf(jar), base2)
    assert(!dir2.startsWith(root2), s"used $dir2 inside a folder owned by nobody")
    assertHolds(dir2, files)
  }
}
