//! Synthetic task modules of a chosen size, all of it real code: what the benchmarks compile to
//! see how compile time grows with a module (a padded module would compile as fast as its
//! code, whatever its size).

use std::fmt::Write as _;

/// A module of `functions` distinct functions of 24 arithmetic steps each (compiled eagerly,
/// all of them) and `run`, which sets its result from the first.
pub fn module_with(functions: usize) -> Vec<u8> {
    let mut wat = String::from(
        "(module\n (import \"see\" \"result\" (func $result (param i64)))\n (memory (export \"memory\") 1)\n",
    );
    for f in 0..functions {
        let _ = writeln!(
            wat,
            " (func $f{f} (param $x i64) (result i64) (local $a i64)"
        );
        for step in 0..24u64 {
            let c = (f as u64)
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(step * 7919)
                % 1_000_003;
            let op = ["i64.add", "i64.mul", "i64.xor", "i64.sub"][step as usize % 4];
            let _ = writeln!(
                wat,
                "  (local.set $a ({op} (local.get $a) (i64.rotl (local.get $x) (i64.const {c}))))"
            );
        }
        wat.push_str("  (local.get $a))\n");
    }
    wat.push_str(
        " (func (export \"run\") (result i32)\n  (call $result (call $f0 (i64.const 1)))\n  (i32.const 0)))\n",
    );
    wat::parse_str(&wat).expect("generated WAT parses")
}

/// A module of about `target` bytes, and its number of functions.
pub fn module_of_size(target: usize) -> (usize, Vec<u8>) {
    let probe = module_with(100);
    let per_function = probe.len() as f64 / 100.0;
    let functions = ((target as f64 / per_function).round() as usize).max(1);
    (functions, module_with(functions))
}
