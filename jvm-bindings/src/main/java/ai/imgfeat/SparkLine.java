package ai.imgfeat;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/**
 * Refuses to run on a Spark line or Scala binary version other than the ones this jar was built for,
 * with an {@link ImgfeatException} naming both, instead of the {@code NoSuchMethodError} that code
 * compiled for the other line would throw somewhere inside a task (Scala 2.12 and 2.13 are not binary
 * compatible; Spark's APIs move between lines). The transformers call {@link #check()} first thing when
 * they are constructed, on the driver (PySpark's wrappers construct them too).
 *
 * <p>Java, not Scala, so that this class links on either Scala line: its bytecode calls no Scala
 * library method, and reads Spark's and Scala's versions by reflection. The versions the jar was built
 * for are a resource the build writes ({@code ai/imgfeat/build-info.properties}).
 */
public final class SparkLine {
    static final String BUILD_INFO = "build-info.properties";

    /** Why this JVM's Spark or Scala does not fit the jar; null when they do. Found once per class loader. */
    private static final String MISMATCH = mismatch(buildInfo(), sparkVersion(), scalaVersion());

    private SparkLine() {}

    /** Throws {@link ImgfeatException} when the running Spark or Scala is not the jar's line. */
    public static void check() {
        if (MISMATCH != null) {
            // Thrown here rather than from the static initialiser: a failed initialiser would make every
            // later call a NoClassDefFoundError without this message.
            throw new ImgfeatException(MISMATCH);
        }
    }

    /**
     * Why a jar built as {@code built} describes does not run on Spark {@code spark} and Scala
     * {@code scala}, or null when it does: the Spark version must be on the jar's line (its
     * {@code spark.line}, e.g. {@code 4} or {@code 3.5}) and Scala's binary version (major.minor) the
     * jar's. Unknown versions (no build info, Spark or Scala not found) are not refused.
     */
    static String mismatch(Properties built, String spark, String scala) {
        if (built == null || spark == null || scala == null) {
            return null;
        }
        String line = built.getProperty("spark.line");
        String scalaBinary = built.getProperty("scala.binary.version");
        if (line == null || scalaBinary == null) {
            return null;
        }
        String runningScalaBinary = majorMinor(scala);
        if (spark.startsWith(line + ".") && scalaBinary.equals(runningScalaBinary)) {
            return null;
        }
        String[] parts = spark.split("\\.");
        // Spark's lines: 3.5 (minor versions differ), 4 (4.x share one API line, as the artifact says).
        String runningLine = parts.length > 1 && Integer.parseInt(digits(parts[0])) < 4 ? parts[0] + "." + parts[1] : parts[0];
        String version = built.getProperty("version", "");
        return built.getProperty("artifact", "this imgfeat jar") + " was built for Spark "
                + built.getProperty("spark.version", line) + " / Scala " + built.getProperty("scala.version", scalaBinary)
                + ", but runs on Spark " + spark + " / Scala " + scala
                + ": use the imgfeat jar for Spark " + runningLine + " / Scala " + runningScalaBinary
                + " (ai.imgfeat:imgfeat-spark" + runningLine + "_" + runningScalaBinary + (version.isEmpty() ? "" : ":" + version)
                + "; README.md, \"Supported versions\")";
    }

    private static String majorMinor(String version) {
        String[] parts = version.split("\\.");
        return parts.length > 1 ? parts[0] + "." + parts[1] : version;
    }

    private static String digits(String s) {
        String d = s.replaceAll("\\D", "");
        return d.isEmpty() ? "0" : d;
    }

    /** The build's record of its versions; null when the resource is absent (classes run outside the jar). */
    static Properties buildInfo() {
        try (InputStream in = SparkLine.class.getResourceAsStream(BUILD_INFO)) {
            if (in == null) {
                return null;
            }
            Properties properties = new Properties();
            properties.load(in);
            return properties;
        } catch (IOException e) {
            return null;
        }
    }

    /** {@code org.apache.spark.SPARK_VERSION}, read by reflection (a Scala package object's val). */
    static String sparkVersion() {
        try {
            Class<?> module = Class.forName("org.apache.spark.package$");
            Object instance = module.getField("MODULE$").get(null);
            return String.valueOf(module.getMethod("SPARK_VERSION").invoke(instance));
        } catch (ReflectiveOperationException | LinkageError e) {
            return null;
        }
    }

    /** {@code scala.util.Properties.versionNumberString}, e.g. 2.13.18, read by reflection. */
    static String scalaVersion() {
        try {
            Class<?> module = Class.forName("scala.util.Properties$");
            Object instance = module.getField("MODULE$").get(null);
            return String.valueOf(module.getMethod("versionNumberString").invoke(instance));
        } catch (ReflectiveOperationException | LinkageError e) {
            return null;
        }
    }
}
