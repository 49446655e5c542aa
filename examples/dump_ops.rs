use tract_onnx::prelude::*;
fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut model = tract_onnx::onnx().model_for_path(&args[1])?;
    let shape: Vec<usize> = args[3].split(',').map(|s| s.parse().unwrap()).collect();
    let dt = if args[2] == "u8" { DatumType::U8 } else { DatumType::F32 };
    model.set_input_fact(0, InferenceFact::dt_shape(dt, shape))?;
    let typed = model.into_typed()?.into_decluttered()?;
    for node in typed.nodes() {
        let fact = typed.outlet_fact(OutletId::new(node.id, 0)).map(|f| format!("{:?}", f)).unwrap_or_default();
        println!("{} {} [{}] in={:?} -> {}  :: {:?}", node.id, node.op.name(), node.name, node.inputs, fact, node.op);
    }
    Ok(())
}
