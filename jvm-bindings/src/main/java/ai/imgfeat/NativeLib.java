package ai.imgfeat;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The native imgfeat library's entry points. Loading happens once per JVM (per class loader): a
 * {@code libimgfeat.so} on {@code java.library.path} wins, so operators can deploy their own build;
 * otherwise the copy inside this jar is extracted to a fresh temporary file (unique per process, so
 * executors sharing a host never race on one path) and loaded from there.
 */
public final class NativeLib {
    static final String RESOURCE = "/native/linux-x86_64/libimgfeat.so";
    private static volatile boolean loaded;

    private NativeLib() {}

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

    /** Loads the models a JSON configuration names; returns a handle for the other calls. */
    public static native long create(String configJson);

    /**
     * Parses a JSON configuration as {@link #create} would, loading nothing: returns it with every field
     * spelled out, or throws {@link ImgfeatException} with a message naming the bad field.
     */
    public static native String validateConfig(String configJson);

    /** Processes a batch of encoded images; returns every row, packed (see {@code PackedRows}). */
    public static native byte[] process(long handle, byte[][] images);

    /** Releases a pipeline; calls in progress finish first. */
    public static native void close(long handle);

    /** Compute threads one {@code process} call uses. */
    public static native int threads(long handle);

    /** Panics inside Rust with this message: a test hook for the panic-to-exception path. */
    public static native void panicForTesting(String message);
}
