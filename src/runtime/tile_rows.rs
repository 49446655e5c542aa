//! The register tiles' row dispatch, shared by the int8 and bf16 products: a tile keeps its
//! accumulators in registers, so its row count must be a constant, and each kernel is compiled for
//! every count up to 14; a product's last rows pick the one that fits.

/// `$tile.$run::<R>(args)` for R = `$rows` (1 to 14; more than 14 is a caller's bug, 0 runs one row).
macro_rules! run_rows {
    ($rows:expr, $tile:ident . $run:ident ( $($arg:expr),* $(,)? )) => {
        match $rows {
            14 => $tile.$run::<14>($($arg),*),
            13 => $tile.$run::<13>($($arg),*),
            12 => $tile.$run::<12>($($arg),*),
            11 => $tile.$run::<11>($($arg),*),
            10 => $tile.$run::<10>($($arg),*),
            9 => $tile.$run::<9>($($arg),*),
            8 => $tile.$run::<8>($($arg),*),
            7 => $tile.$run::<7>($($arg),*),
            6 => $tile.$run::<6>($($arg),*),
            5 => $tile.$run::<5>($($arg),*),
            4 => $tile.$run::<4>($($arg),*),
            3 => $tile.$run::<3>($($arg),*),
            2 => $tile.$run::<2>($($arg),*),
            _ => $tile.$run::<1>($($arg),*),
        }
    };
}
pub(crate) use run_rows;
