package ai.imgfeat;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The native imgfeat library's entry points. Loading happens once per JVM (per class loader): a
 * {@code libimgfeat.so} on {@code java.library.path} wins, so operators can deploy their own build;
 * otherwise the copy inside this jar is extracted to a fresh temporary file (unique per process, so
 * executors sharing a host never race on one path) and loaded from there.
 */
public final class NativeLib {
    static final String RESOURCE = "/native/linux-x86_64/libimgfeat.so";
    private static volatile boolean loaded;

    /**
     * Where the native library's log lines go (Spark's log4j, through SLF4J); its level is theirs. In a
     * holder class, so that loading {@code NativeLib} itself needs no SLF4J on the class path.
     */
    private static final class NativeLog {
        static final Logger LOG = LoggerFactory.getLogger("ai.imgfeat.native");
    }

    private NativeLib() {}

    /**
     * The level of the {@code ai.imgfeat.native} logger for the native side, read at each {@link #create}: 0 off, 1 error,
     * 2 warn, 3 info, 4 debug, 5 trace. Called by the native library.
     */
    static int logLevel() {
        if (NativeLog.LOG.isTraceEnabled()) return 5;
        if (NativeLog.LOG.isDebugEnabled()) return 4;
        if (NativeLog.LOG.isInfoEnabled()) return 3;
        if (NativeLog.LOG.isWarnEnabled()) return 2;
        return NativeLog.LOG.isErrorEnabled() ? 1 : 0;
    }

    /** One native log line, at a level numbered as {@link #logLevel}'s. Called by the native library. */
    static void log(int level, String message) {
        switch (level) {
            case 1: NativeLog.LOG.error(message); break;
            case 2: NativeLog.LOG.warn(message); break;
            case 3: NativeLog.LOG.info(message); break;
            case 4: NativeLog.LOG.debug(message); break;
            default: NativeLog.LOG.trace(message); break;
        }
    }

    /** Loads the library if that has not happened yet; throws {@link ImgfeatException} naming the cause. */
    public static synchronized void ensureLoaded() {
        if (loaded) {
            return;
        }
        try {
            System.loadLibrary("imgfeat");
        } catch (UnsatisfiedLinkError notOnLibraryPath) {
            loadFromJar();
        }
        loaded = true;
    }

    private static void loadFromJar() {
        String platform = System.getProperty("os.name") + "/" + System.getProperty("os.arch");
        boolean linuxX64 = System.getProperty("os.name").toLowerCase().startsWith("linux")
                && (System.getProperty("os.arch").equals("amd64") || System.getProperty("os.arch").equals("x86_64"));
        if (!linuxX64) {
            throw new ImgfeatException("imgfeat's jar carries a native library for linux/x86_64 only, not for "
                    + platform + "; put a libimgfeat.so built for it on java.library.path");
        }
        Path file = null;
        try (InputStream in = NativeLib.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new ImgfeatException("the jar has no " + RESOURCE + " and no libimgfeat.so is on java.library.path ("
                        + System.getProperty("java.library.path") + ")");
            }
            file = Files.createTempFile("libimgfeat-", ".so");
            Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
            try {
                System.load(file.toAbsolutePath().toString());
            } finally {
                // Loaded (or not), the file is no longer needed: Linux keeps the mapping. Deleting it now
                // rather than at exit leaves nothing behind when an executor is killed.
                Files.deleteIfExists(file);
            }
        } catch (IOException e) {
            throw new ImgfeatException("cannot extract imgfeat's native library to " + file + ": " + e, e);
        } catch (UnsatisfiedLinkError e) {
            throw new ImgfeatException("cannot load imgfeat's native library for " + platform + " from " + file + ": "
                    + e.getMessage() + " (it needs Linux x86-64 with glibc 2.17 or newer)", e);
        }
    }

    /**
     * Loads the models a JSON configuration names; returns a handle for the other calls. A bad
     * configuration is an {@link ImgfeatException}, a null one an {@link IllegalArgumentException}.
     */
    public static native long create(String configJson);

    /**
     * Parses a JSON configuration as {@link #create} would, loading nothing: returns it with every field
     * spelled out, or throws {@link ImgfeatException} with a message naming the bad field.
     */
    public static native String validateConfig(String configJson);

    /**
     * Processes a batch of encoded images; returns every row, packed (see {@code PackedRows}). A closed
     * handle is an {@link IllegalStateException}, a null batch an {@link IllegalArgumentException}.
     */
    public static native byte[] process(long handle, byte[][] images);

    /** Releases a pipeline; calls in progress finish first. */
    public static native void close(long handle);

    /** Compute threads one {@code process} call uses. */
    public static native int threads(long handle);

    /** Panics inside Rust with this message: a test hook for the panic-to-exception path. */
    public static native void panicForTesting(String message);
}
