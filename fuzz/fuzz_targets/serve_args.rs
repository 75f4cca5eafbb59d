//! The serve app's request arguments as the guest parses them (`see_abi::serve`): the host
//! chooses every byte. `Args::parse` and, for `OP_RUN_WASM`, `parse_wasm_tasks` must never
//! panic, must bound what they return (at most `MAX_WASM_TASKS` tasks), and whatever parses
//! must encode back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

use see_abi::serve::{
    encode_args, encode_wasm_tasks, parse_wasm_tasks, Args, MAX_WASM_TASKS, OP_RUN_WASM,
    WASM_TASK_WORDS,
};

fuzz_target!(|data: &[u8]| {
    let Ok(args) = Args::parse(data) else {
        return;
    };
    let words: Vec<u64> = args.words().collect();
    assert_eq!(words.len(), args.len());
    assert_eq!(encode_args(args.op, &words), data);
    let parsed = parse_wasm_tasks(&words).map(|tasks| tasks.collect::<Vec<_>>());
    if let Ok(tasks) = parsed {
        assert!(!tasks.is_empty() && tasks.len() <= MAX_WASM_TASKS);
        assert_eq!(tasks.len() * WASM_TASK_WORDS, words.len());
        if args.op == OP_RUN_WASM {
            assert_eq!(encode_wasm_tasks(&tasks), data);
        }
    }
});
