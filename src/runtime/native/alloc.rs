//! Assigns the lowered program's logical buffers to as few physical buffers as their lifetimes allow,
//! so that a run's workspace is a handful of reused buffers.

use super::ir::{Operand, Step};

/// Assigns logical buffers to as few physical buffers as their lifetimes allow (greedy, best fit).
pub(super) fn allocate(
    mut steps: Vec<Step>,
    mut outputs: Vec<Operand>,
    sizes: &[usize],
    input: usize,
) -> (Vec<Step>, Vec<Operand>, Vec<usize>, usize) {
    let logical_of = |o: &Operand| match o {
        Operand::Buffer { id, .. } => Some(*id),
        Operand::Const(_) => None,
    };
    // The last step reading each logical buffer; outputs live to the end.
    let mut last_use = vec![None; sizes.len()];
    for (i, step) in steps.iter_mut().enumerate() {
        for operand in step.operands_mut() {
            if let Some(id) = logical_of(operand) {
                last_use[id] = Some(i);
            }
        }
    }
    for output in &outputs {
        if let Some(id) = logical_of(output) {
            last_use[id] = Some(usize::MAX);
        }
    }
    let mut physical_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut physical = vec![usize::MAX; sizes.len()];
    let take = |size: usize, physical_sizes: &mut Vec<usize>, free: &mut Vec<usize>| -> usize {
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, &p)| physical_sizes[p] >= size)
            .min_by_key(|(_, &p)| physical_sizes[p])
            .or_else(|| free.iter().enumerate().max_by_key(|(_, &p)| physical_sizes[p]))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let p = free.swap_remove(i);
                physical_sizes[p] = physical_sizes[p].max(size);
                p
            }
            None => {
                physical_sizes.push(size);
                physical_sizes.len() - 1
            }
        }
    };
    physical[input] = take(sizes[input], &mut physical_sizes, &mut free);
    if last_use[input].is_none() {
        free.push(physical[input]);
    }
    for (i, step) in steps.iter_mut().enumerate() {
        physical[step.output] = take(sizes[step.output], &mut physical_sizes, &mut free);
        let mut released: Vec<usize> = step.operands_mut().into_iter().filter_map(|o| logical_of(o)).collect();
        released.push(step.output);
        released.sort_unstable();
        released.dedup();
        for id in released {
            if last_use[id].is_none_or(|last| last == i) {
                free.push(physical[id]);
            }
        }
    }
    let remap = |operand: &mut Operand| {
        if let Operand::Buffer { id, .. } = operand {
            *id = physical[*id];
        }
    };
    for step in &mut steps {
        step.operands_mut().into_iter().for_each(remap);
        step.output = physical[step.output];
    }
    outputs.iter_mut().for_each(remap);
    (steps, outputs, physical_sizes, physical[input])
}
