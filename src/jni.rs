//! The JNI edge for Spark executors: a handful of exports of `ai.imgfeat.NativeLib` over the plain Rust
//! API, and the only place where Rust errors and panics become Java exceptions (as DataFusion Comet
//! does it: every export runs inside `with_env`, which catches panics, and one policy throws): a bad
//! argument is an `IllegalArgumentException`, a closed handle an `IllegalStateException`, anything
//! else an `ImgfeatException`, each with the Rust message. The library's log records go to the JVM's
//! logger (`log_bridge`), at the level the executor's logger has.
//!
//! Pipelines live in a registry keyed by an opaque handle, so a closed, stale or made-up handle is an
//! `ImgfeatException`, never a dangling pointer; and one pipeline serves every task thread of an
//! executor at once (`Pipeline::process` takes `&self`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use jni::errors::ErrorPolicy;
use jni::objects::{JByteArray, JClass, JObjectArray, JString};
use jni::strings::{JNIStr, JNIString};
use jni::sys::{jint, jlong};
use jni::{jni_str, Env, EnvUnowned};

use crate::error::panic_message;
use crate::output::pack_rows;
use crate::{Config, Pipeline};

mod log_bridge;

/// Why an export failed; its message becomes the Java exception's, its kind the exception's class.
#[derive(Debug, thiserror::Error)]
pub enum JniError {
    #[error(transparent)]
    Jni(#[from] jni::errors::Error),
    #[error(transparent)]
    Imgfeat(#[from] crate::Error),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no open pipeline has handle {0} (closed, or not created by NativeLib.create)")]
    UnknownHandle(jlong),
}

static PIPELINES: LazyLock<Mutex<HashMap<jlong, Arc<Pipeline>>>> = LazyLock::new(Default::default);
static NEXT_HANDLE: AtomicI64 = AtomicI64::new(1);

/// Registers a pipeline and returns its handle (never 0).
pub fn open(pipeline: Pipeline) -> jlong {
    let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    registry().insert(handle, Arc::new(pipeline));
    handle
}

/// The pipeline behind `handle`, kept alive for the caller even if another thread closes it meanwhile.
pub fn lookup(handle: jlong) -> Result<Arc<Pipeline>, JniError> {
    registry().get(&handle).cloned().ok_or(JniError::UnknownHandle(handle))
}

/// Forgets `handle`; the pipeline is freed once no call is using it.
pub fn close(handle: jlong) -> Result<(), JniError> {
    registry().remove(&handle).map(drop).ok_or(JniError::UnknownHandle(handle))
}

fn registry() -> std::sync::MutexGuard<'static, HashMap<jlong, Arc<Pipeline>>> {
    // A panic while holding the lock cannot leave the map half-updated (insert/remove are atomic).
    PIPELINES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Throws the Java exception [`JniError::exception_class`] names, with the whole message: for errors,
/// the error's text; for panics (an `ImgfeatException`), `panic: ` and the payload, `String` or `&str`
/// (jni's stock policy drops formatted ones).
pub struct ThrowJavaException;

const EXCEPTION_CLASS: &JNIStr = jni_str!("ai/imgfeat/ImgfeatException");

impl JniError {
    /// The exception a JVM developer expects for this error.
    fn exception_class(&self) -> &'static JNIStr {
        match self {
            JniError::InvalidArgument(_) => jni_str!("java/lang/IllegalArgumentException"),
            JniError::UnknownHandle(_) => jni_str!("java/lang/IllegalStateException"),
            JniError::Jni(_) | JniError::Imgfeat(_) => EXCEPTION_CLASS,
        }
    }
}

fn throw(env: &mut Env<'_>, class: &JNIStr, message: &str) {
    if env.exception_check() {
        return; // a Java exception is already on its way; keep it
    }
    let message = JNIString::new(message);
    let _ = env.throw_new(class, &message);
    if !env.exception_check() {
        // Our class is not on this class loader's path (a bare JVM): still say what went wrong.
        let _ = env.throw_new(jni_str!("java/lang/RuntimeException"), &message);
    }
}

impl<T: Default> ErrorPolicy<T, JniError> for ThrowJavaException {
    type Captures<'unowned_env_local: 'native_method, 'native_method> = ();

    fn on_error<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _captures: &mut (),
        error: JniError,
    ) -> jni::errors::Result<T> {
        throw(env, error.exception_class(), &error.to_string());
        Ok(T::default())
    }

    fn on_panic<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _captures: &mut (),
        payload: Box<dyn std::any::Any + Send + 'static>,
    ) -> jni::errors::Result<T> {
        let message = panic_message(&*payload);
        // Dropping a payload can itself panic; never let that unwind into the JVM.
        if let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
        throw(env, EXCEPTION_CLASS, &format!("panic: {message}"));
        Ok(T::default())
    }
}

/// `long create(String configJson)`: loads the models once and returns a handle.
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_create<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    config_json: JString<'local>,
) -> jlong {
    unowned_env
        .with_env(|env| -> Result<jlong, JniError> {
            log_bridge::install(env);
            let created = (|| {
                if config_json.is_null() {
                    return Err(JniError::InvalidArgument("configJson must not be null".into()));
                }
                let config = Config::from_json(&config_json.try_to_string(env)?)?;
                Ok(open(Pipeline::new(config)?))
            })();
            log_bridge::forward(env);
            created
        })
        .resolve::<ThrowJavaException>()
}

/// `String validateConfig(String configJson)`: the configuration as the native parser reads it, every
/// field spelled out, or an exception whose message names the bad field. Spark calls it on the driver,
/// so that a typo fails the job before any task runs; nothing is loaded.
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_validateConfig<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    config_json: JString<'local>,
) -> JString<'local> {
    unowned_env
        .with_env(|env| -> Result<JString<'local>, JniError> {
            if config_json.is_null() {
                return Err(JniError::InvalidArgument("configJson must not be null".into()));
            }
            let config = Config::from_json(&config_json.try_to_string(env)?)?;
            Ok(JString::from_str(env, config.to_json())?)
        })
        .resolve::<ThrowJavaException>()
}

/// `byte[] process(long handle, byte[][] images)`: all rows of the batch, packed as
/// [`pack_rows`] describes. A bad image is an error row, not an exception; a null element is an error
/// row too.
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_process<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    images: JObjectArray<'local, JByteArray<'local>>,
) -> JByteArray<'local> {
    unowned_env
        .with_env(|env| -> Result<JByteArray<'local>, JniError> {
            let pipeline = lookup(handle)?;
            if images.is_null() {
                return Err(JniError::InvalidArgument("images must not be null".into()));
            }
            // Copy the batch out of the JVM first: decoding and inference must not hold JNI references
            // or pin Java arrays while they run.
            let count = images.len(env)?;
            let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(count);
            for i in 0..count {
                let array: JByteArray = images.get_element(env, i)?;
                contents.push(if array.is_null() { None } else { Some(env.convert_byte_array(&array)?) });
                env.delete_local_ref(array);
            }
            let present: Vec<&[u8]> = contents.iter().flatten().map(Vec::as_slice).collect();
            // Whatever the batch logs reaches the JVM when this call returns (or with the next call).
            let mut processed = pipeline.process(&present).into_iter();
            let results: Vec<_> = contents
                .iter()
                .map(|c| match c {
                    Some(_) => processed.next().expect("one result per present image"),
                    None => Err(crate::ImageError::Unreadable("the image's byte array is null".into())),
                })
                .collect();
            let packed = env.byte_array_from_slice(&pack_rows(&results))?;
            log_bridge::forward(env);
            Ok(packed)
        })
        .resolve::<ThrowJavaException>()
}

/// `void close(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_close<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    unowned_env.with_env(|_env| -> Result<(), JniError> { close(handle) }).resolve::<ThrowJavaException>()
}

/// `int threads(long handle)`: the compute threads one `process` call uses (a diagnostic that lets a
/// Spark test prove a one-core task computes on one thread).
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_threads<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jint {
    unowned_env
        .with_env(|_env| -> Result<jint, JniError> { Ok(lookup(handle)?.threads() as jint) })
        .resolve::<ThrowJavaException>()
}

/// `void panicForTesting(String message)`: panics with `message`, so tests can prove a Rust panic in
/// a Spark task fails that task with our exception and leaves the executor alive.
#[unsafe(no_mangle)]
pub extern "system" fn Java_ai_imgfeat_NativeLib_panicForTesting<'local>(
    mut unowned_env: EnvUnowned<'local>,
    _class: JClass<'local>,
    message: JString<'local>,
) {
    unowned_env
        .with_env(|env| -> Result<(), JniError> {
            let message = if message.is_null() { "test panic".to_string() } else { message.try_to_string(env)? };
            panic!("{message}");
        })
        .resolve::<ThrowJavaException>()
}
