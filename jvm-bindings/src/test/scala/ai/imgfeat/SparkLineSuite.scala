package ai.imgfeat

import java.util.Properties

import org.scalatest.funsuite.AnyFunSuite

/** A jar refuses a Spark line or Scala binary version it was not built for, naming both. */
class SparkLineSuite extends AnyFunSuite {
  private def built(line: String, spark: String, scala: String): Properties = {
    val p = new Properties()
    val binary = scala.split('.').take(2).mkString(".")
    p.setProperty("artifact", s"ai.imgfeat:imgfeat-spark${line}_$binary:0.1.0")
    p.setProperty("version", "0.1.0")
    p.setProperty("spark.version", spark)
    p.setProperty("spark.line", line)
    p.setProperty("scala.version", scala)
    p.setProperty("scala.binary.version", binary)
    p
  }
  private val spark35 = built("3.5", "3.5.9", "2.12.18")
  private val spark4 = built("4", "4.2.0", "2.13.18")

  test("the build recorded its versions, and this JVM (the build's Spark and Scala) passes") {
    val info = SparkLine.buildInfo()
    assert(info != null, s"no ${SparkLine.BUILD_INFO} among the classes")
    assert(SparkLine.sparkVersion() == info.getProperty("spark.version"))
    assert(SparkLine.scalaVersion() == info.getProperty("scala.version"))
    assert(info.getProperty("artifact") ==
      s"ai.imgfeat:imgfeat-spark${info.getProperty("spark.line")}_${info.getProperty("scala.binary.version")}:0.1.0")
    SparkLine.check()
  }

  test("the same line at another patch or minor version runs") {
    assert(SparkLine.mismatch(spark4, "4.3.0", "2.13.18") == null)
    assert(SparkLine.mismatch(spark4, "4.0.1", "2.13.12") == null)
    assert(SparkLine.mismatch(spark35, "3.5.0", "2.12.17") == null)
  }

  test("the Spark 3.5 / Scala 2.12 jar on Spark 4 is refused, naming both versions and the jar to use") {
    val why = SparkLine.mismatch(spark35, "4.3.0", "2.13.18")
    assert(why != null)
    assert(why.contains("ai.imgfeat:imgfeat-spark3.5_2.12:0.1.0 was built for Spark 3.5.9 / Scala 2.12.18"), why)
    assert(why.contains("runs on Spark 4.3.0 / Scala 2.13.18"), why)
    assert(why.contains("ai.imgfeat:imgfeat-spark4_2.13:0.1.0"), why)
  }

  test("the Spark 4 jar on Spark 3.5, or on another Spark 3 or Scala line, is refused") {
    assert(SparkLine.mismatch(spark4, "3.5.9", "2.12.18").contains("ai.imgfeat:imgfeat-spark3.5_2.12:0.1.0"))
    assert(SparkLine.mismatch(spark35, "3.4.1", "2.12.17").contains("Spark 3.4 / Scala 2.12"))
    assert(SparkLine.mismatch(spark35, "3.5.9", "2.13.8").contains("imgfeat-spark3.5_2.13"))
    assert(SparkLine.mismatch(spark35, "3.50.0", "2.12.18") != null, "3.50 is not on the 3.5 line")
    assert(SparkLine.mismatch(spark4, "40.0.0", "2.13.18") != null, "40 is not on the 4 line")
  }

  test("unknown versions are not refused") {
    assert(SparkLine.mismatch(null, "4.3.0", "2.13.18") == null)
    assert(SparkLine.mismatch(spark4, null, "2.13.18") == null)
    assert(SparkLine.mismatch(spark4, "4.3.0", null) == null)
  }
}
