//! The library's log records on the JVM's logger. imgfeat logs through the `log` facade from any
//! thread (rayon's included); here the records wait in a bounded queue, and each JNI call hands the
//! waiting ones to `NativeLib.log` on its own thread, which the JVM already knows, before it returns:
//! no Rust thread is ever attached to the JVM. The level is the one the JVM's `ai.imgfeat.native`
//! logger has (`NativeLib.logLevel`), read again at each `create`; the dependencies' records only from
//! warnings up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use jni::objects::JValue;
use jni::{jni_sig, jni_str, Env};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Records kept between two JNI calls; more are counted and reported as one line.
const CAPACITY: usize = 1000;

static QUEUE: Mutex<VecDeque<(Level, String)>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct JvmQueue;

static LOGGER: JvmQueue = JvmQueue;

impl Log for JvmQueue {
    /// imgfeat's own records at the JVM logger's level; its dependencies' (tract logs every rewrite
    /// of a graph at debug level, thousands a model) only from warnings up.
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && (metadata.target().starts_with("imgfeat") || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() < CAPACITY {
            queue.push_back((record.level(), record.args().to_string()));
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// Makes the queue the `log` logger (unless the host process installed its own, which is kept) at
/// the level of the JVM's logger.
pub(super) fn install(env: &mut Env) {
    let _ = log::set_logger(&LOGGER);
    if let Some(level) = jvm_level(env) {
        log::set_max_level(level);
    }
}

/// `NativeLib.logLevel()`: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace; warnings where the JVM has
/// no `NativeLib` (a bare JVM, as in tests/jni.rs); `None` (the level stays) while a Java exception is
/// pending, when no Java method may be called.
fn jvm_level(env: &mut Env) -> Option<LevelFilter> {
    if env.exception_check() {
        return None;
    }
    match env.call_static_method(jni_str!("ai/imgfeat/NativeLib"), jni_str!("logLevel"), jni_sig!("()I"), &[]).and_then(|v| v.i()) {
        Ok(level) => Some(match level {
            i32::MIN..=0 => LevelFilter::Off,
            1 => LevelFilter::Error,
            2 => LevelFilter::Warn,
            3 => LevelFilter::Info,
            4 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        }),
        Err(_) => {
            env.exception_clear();
            Some(LevelFilter::Warn)
        }
    }
}

/// Hands the waiting records to `NativeLib.log(int level, String message)`. Does nothing while a Java
/// exception is pending (the call that raised it returns first; the records wait for the next call);
/// drops them where the JVM has no `NativeLib`.
pub(super) fn forward(env: &mut Env) {
    if env.exception_check() {
        return;
    }
    let mut records: Vec<(Level, String)> = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        records.push((Level::Warn, format!("{dropped} more native log lines were dropped (over {CAPACITY} between two calls)")));
    }
    for (level, message) in records {
        let level = match level {
            Level::Error => 1,
            Level::Warn => 2,
            Level::Info => 3,
            Level::Debug => 4,
            Level::Trace => 5,
        };
        let Ok(message) = env.new_string(&message) else {
            env.exception_clear();
            return;
        };
        let sent = env.call_static_method(
            jni_str!("ai/imgfeat/NativeLib"),
            jni_str!("log"),
            jni_sig!("(ILjava/lang/String;)V"),
            &[JValue::Int(level), JValue::Object(&message)],
        );
        // One local reference per record would pile up over a thousand records.
        env.delete_local_ref(message);
        if sent.is_err() {
            env.exception_clear();
            return;
        }
    }
}
