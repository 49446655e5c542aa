//! The JNI exports driven from a real JVM started inside the test process: handle lifecycle, error
//! and panic mapping (`ai.imgfeat.ImgfeatException`; `IllegalArgumentException` for a null argument,
//! `IllegalStateException` for a closed or unknown handle), per-row errors, and one handle used from
//! several threads at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use imgfeat::jni::{
    Java_ai_imgfeat_NativeLib_close as close, Java_ai_imgfeat_NativeLib_create as create,
    Java_ai_imgfeat_NativeLib_panicForTesting as panic_for_testing, Java_ai_imgfeat_NativeLib_process as process,
    Java_ai_imgfeat_NativeLib_threads as threads, Java_ai_imgfeat_NativeLib_validateConfig as validate_config,
};
use jni::objects::{JByteArray, JClass, JObjectArray, JString};
use jni::sys::jlong;
use jni::vm::{InitArgsBuilder, JavaVM};
use jni::{jni_str, Env, EnvUnowned, JNIVersion};

/// The exception class compiled from the JVM bindings' source, so the JVM finds the real thing.
fn exception_classes() -> PathBuf {
    let out = std::env::temp_dir().join(format!("imgfeat-jni-test-classes-{}", std::process::id()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("jvm-bindings/src/main/java/ai/imgfeat/ImgfeatException.java");
    let status = Command::new("javac").arg("-d").arg(&out).arg(&source).status().expect("javac runs (JDK 17 needed)");
    assert!(status.success(), "javac failed on {}", source.display());
    out
}

fn jvm() -> &'static JavaVM {
    static JVM: OnceLock<JavaVM> = OnceLock::new();
    JVM.get_or_init(|| {
        let class_path = format!("-Djava.class.path={}", exception_classes().display());
        let args = InitArgsBuilder::new().version(JNIVersion::V1_8).option(class_path).option("-Xcheck:jni").build().unwrap();
        JavaVM::new(args).expect("start a JVM (set JAVA_HOME if it is not found)")
    })
}

/// Runs `f` with a JNI environment on this thread.
fn with_env<T>(f: impl FnOnce(&mut Env) -> T) -> T {
    jvm().attach_current_thread(|env| -> jni::errors::Result<T> { Ok(f(env)) }).unwrap()
}

fn unowned(env: &mut Env) -> EnvUnowned<'static> {
    unsafe { EnvUnowned::from_raw(env.get_raw()) }
}

/// The pending exception's message, cleared, and whether it is an `ImgfeatException`; panics if none
/// is pending.
fn take_exception(env: &mut Env) -> (bool, String) {
    let (class, message) = take_exception_class(env);
    (class == "ImgfeatException", message)
}

/// The pending exception's class (`ImgfeatException`, `IllegalArgumentException`,
/// `IllegalStateException` or `other`) and message, cleared; panics if none is pending.
fn take_exception_class(env: &mut Env) -> (&'static str, String) {
    assert!(env.exception_check(), "an exception was expected");
    let exception = env.exception_occurred().unwrap();
    env.exception_clear();
    let class = if env.is_instance_of(&exception, jni_str!("ai/imgfeat/ImgfeatException")).unwrap() {
        "ImgfeatException"
    } else if env.is_instance_of(&exception, jni_str!("java/lang/IllegalArgumentException")).unwrap() {
        "IllegalArgumentException"
    } else if env.is_instance_of(&exception, jni_str!("java/lang/IllegalStateException")).unwrap() {
        "IllegalStateException"
    } else {
        "other"
    };
    let message = exception.get_message(env).unwrap().to_string();
    (class, message)
}

fn create_pipeline(env: &mut Env, json: &str) -> jlong {
    let config = env.new_string(json).unwrap();
    create(unowned(env), JClass::null(), config)
}

fn byte_arrays<'local>(env: &mut Env<'local>, items: &[Option<&[u8]>]) -> JObjectArray<'local, JByteArray<'local>> {
    let array = JObjectArray::<JByteArray>::new(env, items.len(), JByteArray::null()).unwrap();
    for (i, item) in items.iter().enumerate() {
        if let Some(bytes) = item {
            let element = env.byte_array_from_slice(bytes).unwrap();
            array.set_element(env, i, &element).unwrap();
        }
    }
    array
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos").join(name)).unwrap()
}

/// Row statuses (0 ok, 1 error) read from a packed buffer, walking the documented layout.
fn statuses(packed: &[u8]) -> Vec<u8> {
    let i32_at = |at: usize| i32::from_le_bytes(packed[at..at + 4].try_into().unwrap());
    assert_eq!(&packed[..4], b"IFR3");
    let rows = i32_at(4) as usize;
    let mut at = 8;
    let mut out = Vec::new();
    for _ in 0..rows {
        let status = packed[at];
        out.push(status);
        at += 1;
        if status == 1 {
            at += 4 + i32_at(at) as usize;
            continue;
        }
        let detected = packed[at + 8] == 1;
        at += 9;
        if detected {
            at += 4;
            at += 4 + i32_at(at) as usize + 20;
        }
        at += 16;
        let skip = |at: &mut usize, element_size: usize| {
            let n = i32_at(*at);
            *at += 4 + if n > 0 { n as usize * element_size } else { 0 };
        };
        for element_size in [4, 1, 4, 1] {
            skip(&mut at, element_size);
        }
        let insets = i32_at(at);
        at += 4;
        for _ in 0..insets {
            at += 16;
            skip(&mut at, 4);
            skip(&mut at, 1);
        }
        skip(&mut at, 1); // arithmetic
    }
    assert_eq!(at, packed.len(), "the buffer ends where the last row does");
    out
}

#[test]
fn errors_become_imgfeat_exceptions_with_the_message() {
    with_env(|env| {
        assert_eq!(create_pipeline(env, "{not json"), 0);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains("invalid configuration JSON"), "{message}");

        assert_eq!(create_pipeline(env, r#"{"model_dir": "/nonexistent/models"}"#), 0);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains("/nonexistent/models/codes_itq_256.safetensors"), "{message}");

        assert_eq!(create(unowned(env), JClass::null(), JString::null()), 0);
        let (class, message) = take_exception_class(env);
        assert!(class == "IllegalArgumentException" && message.contains("configJson must not be null"), "{class}: {message}");
    });
}

/// The driver's check: the native parser reads the configuration and loads nothing; a typo is an
/// exception naming the field.
#[test]
fn validate_config_spells_out_a_good_configuration_and_names_a_bad_field() {
    with_env(|env| {
        let good = env.new_string(r#"{"score_threshold": 0.5, "detector": "oidv4", "model_dir": "/not/loaded"}"#).unwrap();
        let spelled = validate_config(unowned(env), JClass::null(), good);
        assert!(!env.exception_check());
        let json: serde_json::Value = serde_json::from_str(&spelled.try_to_string(env).unwrap()).unwrap();
        assert_eq!(json["score_threshold"], 0.5);
        assert_eq!(json["detector"]["name"], "ssd_mobilenetv2_oidv4", "the preset spelled out");
        assert_eq!(json["codes"]["bits"], 256, "defaults filled in: {json}");

        let typo = env.new_string(r#"{"score_treshold": 0.5}"#).unwrap();
        validate_config(unowned(env), JClass::null(), typo);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains("score_treshold"), "{message}");
        let out_of_range = env.new_string(r#"{"codes": {"bits": 100}}"#).unwrap();
        validate_config(unowned(env), JClass::null(), out_of_range);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains("bits"), "{message}");
    });
}

#[test]
fn panics_become_imgfeat_exceptions_with_the_formatted_message() {
    with_env(|env| {
        let message = env.new_string(format!("boom {}", 6 * 7)).unwrap();
        panic_for_testing(unowned(env), JClass::null(), message);
        let (ours, message) = take_exception(env);
        assert!(ours, "not an ImgfeatException: {message}");
        assert_eq!(message, "panic: boom 42");
    });
}

#[test]
fn handle_lifecycle_and_per_row_errors() {
    with_env(|env| {
        let handle = create_pipeline(env, r#"{"threads": 1}"#);
        assert!(handle > 0 && !env.exception_check());
        assert_eq!(threads(unowned(env), JClass::null(), handle), 1);

        let chelsea = photo("chelsea.jpg");
        let images = byte_arrays(env, &[Some(&chelsea), Some(b"garbage"), None]);
        let packed = process(unowned(env), JClass::null(), handle, images);
        assert!(!env.exception_check());
        let packed = env.convert_byte_array(&packed).unwrap();
        assert_eq!(statuses(&packed), vec![0, 1, 1]);

        let null_batch = process(unowned(env), JClass::null(), handle, JObjectArray::<JByteArray>::null());
        assert!(null_batch.is_null());
        let (class, message) = take_exception_class(env);
        assert!(class == "IllegalArgumentException" && message.contains("images must not be null"), "{class}: {message}");

        close(unowned(env), JClass::null(), handle);
        assert!(!env.exception_check());
        for call in ["close", "process", "threads"] {
            let images = byte_arrays(env, &[]);
            match call {
                "close" => close(unowned(env), JClass::null(), handle),
                "process" => drop(process(unowned(env), JClass::null(), handle, images)),
                _ => drop(threads(unowned(env), JClass::null(), handle)),
            }
            let (class, message) = take_exception_class(env);
            assert!(class == "IllegalStateException" && message.contains(&format!("no open pipeline has handle {handle}")), "{call}: {class}: {message}");
        }
        // A handle nobody created.
        threads(unowned(env), JClass::null(), 987_654_321);
        let (class, message) = take_exception_class(env);
        assert!(class == "IllegalStateException" && message.contains("987654321"), "{class}: {message}");
    });
}

#[test]
fn one_handle_serves_several_threads_at_once() {
    let handle = with_env(|env| create_pipeline(env, r#"{"threads": 1}"#));
    assert!(handle > 0);
    let coffee = photo("coffee.jpg");
    let expected = with_env(|env| {
        let images = byte_arrays(env, &[Some(&coffee)]);
        let packed = process(unowned(env), JClass::null(), handle, images);
        env.convert_byte_array(&packed).unwrap()
    });
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..3 {
                    let packed = with_env(|env| {
                        let images = byte_arrays(env, &[Some(&coffee)]);
                        let packed = process(unowned(env), JClass::null(), handle, images);
                        assert!(!env.exception_check());
                        env.convert_byte_array(&packed).unwrap()
                    });
                    assert_eq!(packed, expected, "same image, same row, whatever the thread");
                }
            });
        }
    });
    with_env(|env| close(unowned(env), JClass::null(), handle));
}

#[test]
fn empty_batches_and_corrupt_models() {
    with_env(|env| {
        let handle = create_pipeline(env, r#"{"threads": 1}"#);
        let packed = process(unowned(env), JClass::null(), handle, byte_arrays(env, &[]));
        assert!(!env.exception_check());
        assert_eq!(statuses(&env.convert_byte_array(&packed).unwrap()), Vec::<u8>::new(), "no rows for no images");
        close(unowned(env), JClass::null(), handle);

        // A model folder whose detector file is garbage: an exception at creation naming the file.
        let dir = std::env::temp_dir().join(format!("imgfeat-corrupt-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for entry in std::fs::read_dir(&models).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let detector = dir.join("ssd_mobilenetv2_coco_float.onnx");
        std::fs::write(&detector, b"this is not an ONNX protobuf").unwrap();
        let json = format!(r#"{{"model_dir": "{}"}}"#, dir.display());
        assert_eq!(create_pipeline(env, &json), 0);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains(&detector.display().to_string()), "{message}");
        // Truncated rather than garbage: the same.
        let real = std::fs::read(models.join("ssd_mobilenetv2_coco_float.onnx")).unwrap();
        std::fs::write(&detector, &real[..real.len() / 3]).unwrap();
        assert_eq!(create_pipeline(env, &json), 0);
        let (ours, message) = take_exception(env);
        assert!(ours && message.contains(&detector.display().to_string()), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Sixteen threads hammer one handle with good and bad inputs while another thread opens and closes
/// handles of its own; then the shared handle is closed while calls are still arriving. Every call
/// returns rows or, once the handle is closed, raises IllegalStateException; the JVM never crashes.
#[test]
fn stress_one_handle_from_many_threads_and_close_it_under_load() {
    let handle = with_env(|env| create_pipeline(env, r#"{"threads": 1}"#));
    assert!(handle > 0);
    let (coffee, rocket) = (photo("coffee.jpg"), photo("rocket.jpg"));
    let truncated = coffee[..coffee.len() / 2].to_vec();
    let closed = std::sync::atomic::AtomicBool::new(false);
    let (succeeded, refused) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (coffee, rocket, truncated) = (&coffee, &rocket, &truncated);
            let (closed, succeeded, refused) = (&closed, &succeeded, &refused);
            scope.spawn(move || {
                for i in 0..6 {
                    with_env(|env| {
                        let batch: Vec<Option<&[u8]>> = match (t + i) % 3 {
                            0 => vec![Some(coffee), None, Some(truncated)],
                            1 => vec![Some(rocket), Some(b"")],
                            _ => vec![],
                        };
                        let was_closed = closed.load(std::sync::atomic::Ordering::SeqCst);
                        let images = byte_arrays(env, &batch);
                        let packed = process(unowned(env), JClass::null(), handle, images);
                        if env.exception_check() {
                            // A call after close: the JNI edge's exception for a closed handle.
                            let (class, message) = take_exception_class(env);
                            assert!(class == "IllegalStateException" && message.contains("no open pipeline"), "{class}: {message}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        } else {
                            assert!(!was_closed, "a call after close returned rows");
                            let statuses = statuses(&env.convert_byte_array(&packed).unwrap());
                            assert_eq!(statuses.len(), batch.len());
                            succeeded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..3 {
                with_env(|env| {
                    let own = create_pipeline(env, r#"{"threads": 1}"#);
                    assert!(own > 0);
                    close(unowned(env), JClass::null(), own);
                    assert!(!env.exception_check());
                });
            }
            with_env(|env| close(unowned(env), JClass::null(), handle));
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
    let (succeeded, refused) = (succeeded.into_inner(), refused.into_inner());
    assert_eq!(succeeded + refused, 16 * 6);
    assert!(succeeded > 0, "some calls ran before the close");
    eprintln!("stress: {succeeded} calls returned rows, {refused} were refused after the close");
}
