package ai.imgfeat

import java.io.{IOException, InputStream}
import java.nio.channels.FileChannel
import java.nio.charset.StandardCharsets
import java.nio.file.{AtomicMoveNotSupportedException, FileAlreadyExistsException, Files, LinkOption, Path, Paths,
  StandardCopyOption, StandardOpenOption}
import java.nio.file.attribute.PosixFilePermissions
import java.security.{MessageDigest, SecureRandom}

/** The jar's models (~63 MB) on an executor's disk, extracted once per host and reused by every executor
  * JVM of the same user there, now and later, instead of once per JVM into a temp folder that a killed
  * executor leaves behind.
  *
  * Layout: `BASE/imgfeat-models-USER/SHA256/` holds the files, named by the hash of their names and
  * contents, so a jar with other models gets another folder and two jars never mix. BASE is the system
  * property `imgfeat.models.cache`, else Spark's local directory (`SPARK_LOCAL_DIRS`, or YARN's
  * `LOCAL_DIRS`), else `java.io.tmpdir`.
  *
  * Executors starting at once on one host: the first to take the folder's lock extracts into a private
  * temporary folder beside it, checks every file and renames it into place in one step; the others wait
  * for the lock, then find it done. A JVM killed while extracting leaves a temporary folder that the next
  * extraction removes; never a half-written folder under the final name.
  *
  * Shared hosts (YARN runs other users' containers beside ours): `imgfeat-models-USER` must be a real
  * directory owned by this user and closed to everyone else (mode 700), which it is created as; and every
  * file is checked against the hash the jar gives (computed from the jar's own copy) before a pipeline
  * loads it. A folder that fails either test is never used: a file that does not match is extracted
  * again, a folder someone else owns or can write to is passed over for a fresh private temporary one,
  * with a warning. The native library itself is not cached: it loads from a private temporary file
  * ([[NativeLib]]).
  */
private[imgfeat] object ModelCache {
  private val Index = "imgfeat/models/INDEX"
  private val ownerOnly = PosixFilePermissions.fromString("rwx------")

  /** One model file of the jar and the SHA-256 of its bytes. */
  private final case class Entry(name: String, sha256: String)

  /** The folder with the jar's models, extracted and checked; see the object's documentation. */
  def extract(): Path = extract(getClass.getClassLoader, baseDir())

  /** The folder with the models `loader` carries, under `base`. Synchronized: one extraction at a time
    * in a JVM (the file lock orders JVMs; it cannot be taken twice by one). */
  def extract(loader: ClassLoader, base: Path): Path = synchronized {
    val entries = jarEntries(loader)
    val key = sha256Hex(entries.map(e => s"${e.name} ${e.sha256}\n").mkString.getBytes(StandardCharsets.UTF_8))
    val root = privateRoot(base.resolve(s"imgfeat-models-${sanitise(System.getProperty("user.name"))}"))
    val target = root.resolve(key)
    if (valid(target, entries)) return target
    withLock(root.resolve(s"$key.lock")) {
      if (!valid(target, entries)) {
        removeStaleTemporaries(root, key)
        if (Files.exists(target, LinkOption.NOFOLLOW_LINKS)) deleteTree(target) // damaged or planted: replaced
        val scratch = Files.createDirectory(root.resolve(s".$key.tmp-${ProcessHandle.current().pid()}-${randomSuffix()}"))
        entries.foreach(e => copyResource(loader, s"imgfeat/models/${e.name}", scratch.resolve(e.name)))
        if (!valid(scratch, entries)) throw new ImgfeatException(s"the models extracted to $scratch do not match the jar's")
        moveAtomically(scratch, target)
      }
    }
    target
  }

  /** The base folder for the cache (see the object's documentation). */
  private def baseDir(): Path = {
    val configured = Option(System.getProperty("imgfeat.models.cache")).filter(_.nonEmpty)
    val sparkLocal = Seq("SPARK_LOCAL_DIRS", "LOCAL_DIRS").flatMap(v => Option(System.getenv(v)))
      .flatMap(_.split(",").map(_.trim).filter(_.nonEmpty).headOption)
    Paths.get(configured.orElse(sparkLocal.headOption).getOrElse(System.getProperty("java.io.tmpdir")))
  }

  /** `dir` when it is, or can be made, a real directory owned by this user with mode 700; else a new
    * private temporary folder (someone else made or opened `dir`: nothing in it is trusted). */
  private def privateRoot(dir: Path): Path =
    try {
      try Files.createDirectories(dir.getParent) catch { case _: IOException => }
      try Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(ownerOnly))
      catch { case _: FileAlreadyExistsException => }
      if (trusted(dir)) dir else untrusted(dir)
    } catch {
      case _: IOException | _: SecurityException | _: UnsupportedOperationException => untrusted(dir)
    }

  private def trusted(dir: Path): Boolean = {
    val me = System.getProperty("user.name")
    Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS) &&
      Files.getOwner(dir, LinkOption.NOFOLLOW_LINKS).getName == me &&
      ownerOnly.containsAll(Files.getPosixFilePermissions(dir, LinkOption.NOFOLLOW_LINKS))
  }

  private def untrusted(dir: Path): Path = {
    val fresh = Files.createTempDirectory("imgfeat-models-", PosixFilePermissions.asFileAttribute(ownerOnly))
    System.err.println(s"imgfeat: warning: $dir is not a directory private to ${System.getProperty("user.name")} " +
      s"(owned by someone else, open to others, or not a directory): not used; models extracted to $fresh instead")
    fresh
  }

  /** Whether `dir` holds exactly the files `entries` names, each a regular file with the expected bytes. */
  private def valid(dir: Path, entries: Seq[Entry]): Boolean =
    Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS) && entries.forall { e =>
      val file = dir.resolve(e.name)
      Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS) && {
        val in = Files.newInputStream(file, LinkOption.NOFOLLOW_LINKS)
        try sha256Hex(in) == e.sha256 finally in.close()
      }
    }

  /** The jar's model files with the hashes of their bytes in the jar. */
  private def jarEntries(loader: ClassLoader): Seq[Entry] = {
    val index = resource(loader, Index)
    val names = try new String(index.readAllBytes(), StandardCharsets.UTF_8).split("\n").map(_.trim).filter(_.nonEmpty).toSeq
    finally index.close()
    names.map { name =>
      require(!name.contains('/') && !name.startsWith("."), s"unexpected model name in the jar's index: $name")
      val in = resource(loader, s"imgfeat/models/$name")
      try Entry(name, sha256Hex(in)) finally in.close()
    }
  }

  private def withLock[T](lockFile: Path)(body: => T): T = {
    val channel = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.WRITE)
    try {
      val lock = channel.lock() // released by the OS if this JVM dies holding it
      try body finally lock.release()
    } finally channel.close()
  }

  private def removeStaleTemporaries(root: Path, key: String): Unit =
    children(root).filter(_.getFileName.toString.startsWith(s".$key.tmp-")).foreach(deleteTree)

  private def children(dir: Path): Seq[Path] = {
    val stream = Files.list(dir)
    try {
      val found = Seq.newBuilder[Path]
      val it = stream.iterator()
      while (it.hasNext) found += it.next()
      found.result()
    } finally stream.close()
  }

  private def moveAtomically(from: Path, to: Path): Unit =
    try Files.move(from, to, StandardCopyOption.ATOMIC_MOVE)
    catch { case _: AtomicMoveNotSupportedException => Files.move(from, to) }

  private def deleteTree(path: Path): Unit = {
    if (Files.isDirectory(path, LinkOption.NOFOLLOW_LINKS)) children(path).foreach(deleteTree)
    Files.deleteIfExists(path)
  }

  private def copyResource(loader: ClassLoader, name: String, to: Path): Unit = {
    val in = resource(loader, name)
    try Files.copy(in, to) finally in.close()
  }

  private def resource(loader: ClassLoader, name: String): InputStream = {
    val in = loader.getResourceAsStream(name)
    if (in == null) throw new ImgfeatException(s"the imgfeat jar has no $name; set modelDir to a folder with the models")
    in
  }

  private def sha256Hex(in: InputStream): String = {
    val digest = MessageDigest.getInstance("SHA-256")
    val buffer = new Array[Byte](1 << 16)
    var n = in.read(buffer)
    while (n >= 0) {
      digest.update(buffer, 0, n)
      n = in.read(buffer)
    }
    digest.digest().map(b => f"${b & 0xff}%02x").mkString
  }

  private def sha256Hex(bytes: Array[Byte]): String =
    MessageDigest.getInstance("SHA-256").digest(bytes).map(b => f"${b & 0xff}%02x").mkString

  private def randomSuffix(): String = java.lang.Long.toUnsignedString(new SecureRandom().nextLong(), 36)

  private def sanitise(user: String): String = user.map(c => if (c.isLetterOrDigit || c == '-' || c == '_') c else '_')
}
