package ai.imgfeat;

/**
 * Thrown by the native side when a pipeline cannot be created or called (bad configuration, missing
 * model, closed handle) and when Rust code panics; the message is Rust's own. Failures of single
 * images are not exceptions: they come back as rows with an error.
 */
public class ImgfeatException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public ImgfeatException(String message) {
        super(message);
    }

    public ImgfeatException(String message, Throwable cause) {
        super(message, cause);
    }
}
