//! The cost of crossing JNI with a batch: `NativeLib.process` from a JVM (started in this process)
//! against `Pipeline::process` called directly, on the same 32 inputs of 72 KB that fail at once
//! (unrecognised format), so the difference is the crossing itself: copying the byte arrays out of the
//! JVM, packing the rows and returning them as a Java byte[].
//!
//!     cargo bench --bench jni

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use imgfeat::jni::{open, Java_ai_imgfeat_NativeLib_process as process};
use imgfeat::{Config, Pipeline};
use jni::objects::{JByteArray, JClass, JObjectArray};
use jni::vm::{InitArgsBuilder, JavaVM};
use jni::{EnvUnowned, JNIVersion};

fn crossing(c: &mut Criterion) {
    let inputs: Vec<Vec<u8>> = (0..32).map(|i| vec![b'x' + (i % 2) as u8; 72 * 1024]).collect();
    let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let pipeline = Pipeline::new(Config::from_json(r#"{"threads": 1}"#).unwrap()).unwrap();
    let handle = open(Pipeline::new(Config::from_json(r#"{"threads": 1}"#).unwrap()).unwrap());
    let jvm = JavaVM::new(InitArgsBuilder::new().version(JNIVersion::V1_8).build().unwrap()).unwrap();

    let mut group = c.benchmark_group("batch of 32 × 72 KB");
    group.bench_function("Pipeline::process, direct", |b| b.iter(|| pipeline.process(black_box(&slices))));
    jvm.attach_current_thread(|env| -> jni::errors::Result<()> {
        let batch = JObjectArray::<JByteArray>::new(env, inputs.len(), JByteArray::null())?;
        for (i, input) in inputs.iter().enumerate() {
            let element = env.byte_array_from_slice(input)?;
            batch.set_element(env, i, &element)?;
        }
        group.bench_function("NativeLib.process through JNI", |b| {
            b.iter(|| {
                // A local frame per call frees the call's local references, as a JVM does per native call.
                env.with_local_frame(4, |env| -> jni::errors::Result<()> {
                    // SAFETY: the raw env belongs to this attached thread for the duration of the call.
                    let unowned = unsafe { EnvUnowned::from_raw(env.get_raw()) };
                    let images: JObjectArray<JByteArray> = env.new_local_ref(&batch)?;
                    black_box(process(unowned, JClass::null(), handle, images));
                    Ok(())
                })
                .unwrap()
            })
        });
        Ok(())
    })
    .unwrap();
    group.finish();
}

criterion_group!(benches, crossing);
criterion_main!(benches);
