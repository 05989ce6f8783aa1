//! The parser's scratch memory, kept per thread between reviews: simd-json's
//! buffers (a padded copy of the input, the structural index, its stack)
//! and the tape. Reusing them saves half a dozen allocations per review.
//! They are only borrowed for the synchronous parse-decide-answer step, so
//! a task moving between threads never holds them across an `.await`.
//!
//! Also what a parse costs in memory at most ([`parse_memory_bound`]), so
//! the server can charge it before parsing a large review: for a review
//! dense with JSON nodes it is many times the review's size.

use std::cell::RefCell;

use simd_json::{Buffers, Tape};

/// Reviews up to this size (real Pod reviews are a few KiB) parse in the
/// thread's kept scratch memory; longer ones parse into fresh memory that
/// is then dropped, so one huge request does not pin megabytes on every
/// worker thread (the server charges their parse to its parse budget).
pub const SMALL_REVIEW_MAX_BYTES: usize = 64 * 1024;
const KEEP_SCRATCH_MAX_INPUT_BYTES: usize = SMALL_REVIEW_MAX_BYTES;

/// Bytes that can precede a structural of simd-json's stage 1: its
/// structural characters, the quote (a string's first structural; a
/// scalar right after a closing quote is one too) and whitespace (a
/// scalar after it starts a structural, even in invalid JSON).
const STRUCTURAL_NEIGHBOURS: [bool; 256] = {
    let mut table = [false; 256];
    let bytes = b"{}[]:,\" \t\n\r";
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
};

/// At most how many structurals stage 1 finds in `input` (the tape has
/// one node per structural at most and is reserved for all of them, even
/// when stage 2 then finds the JSON invalid). Each structural is one of
/// [`STRUCTURAL_NEIGHBOURS`] or comes right after one (or starts the
/// input), hence at most twice their count, plus one. One pass over the
/// bytes, for large reviews only.
pub fn structurals_bound(input: &[u8]) -> usize {
    let neighbours: usize = input
        .iter()
        .map(|&b| usize::from(STRUCTURAL_NEIGHBOURS[usize::from(b)]))
        .sum();
    neighbours
        .saturating_mul(2)
        .saturating_add(1)
        .min(input.len() + 1)
}

/// Most bytes parsing `len` bytes with `structurals` structurals allocates
/// (simd-json 0.19's `fill_tape` into fresh buffers): the padded input
/// copy and the string buffer (`len` each, with padding), the structural
/// index (`u32`s, grown by doubling from `len / 8`, so up to twice the
/// count), the tape (a 24-byte node per structural, reserved up front) and
/// the stage-2 stack (one entry per structural, up to the depth limit).
fn parse_memory(len: usize, structurals: usize) -> usize {
    const NODE_BYTES: usize = std::mem::size_of::<simd_json::Node<'static>>();
    const PADDING_BYTES: usize = 256;
    let index = (len / 8).max(structurals.saturating_mul(2)).saturating_mul(4);
    let stack = structurals.min(simd_json::DEFAULT_MAX_DEPTH).saturating_mul(32);
    len.saturating_mul(2)
        .saturating_add(PADDING_BYTES)
        .saturating_add(index)
        .saturating_add(structurals.saturating_mul(NODE_BYTES))
        .saturating_add(stack)
}

/// Most bytes parsing `input` allocates (see [`parse_memory`]).
pub fn parse_memory_bound(input: &[u8]) -> usize {
    parse_memory(input.len(), structurals_bound(input))
}

/// Most bytes parsing any input of `len` bytes allocates: the parse
/// budget that lets the largest review through, however dense.
pub fn parse_memory_worst(len: usize) -> usize {
    parse_memory(len, len.saturating_add(1))
}

/// Typical review size; the buffers grow beyond it when needed.
const INITIAL_INPUT_BYTES: usize = 8 * 1024;

struct Scratch {
    buffers: Buffers,
    /// Empty between uses (`reset`), so it holds no borrowed data.
    tape: Tape<'static>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            buffers: Buffers::new(INITIAL_INPUT_BYTES),
            tape: Tape(Vec::new()),
        }
    }
}

thread_local! {
    /// `None` while in use (or before first use).
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Parses `input` into a tape and hands it to `f`; the tape's memory goes
/// back to the thread's scratch afterwards.
pub(super) fn with_tape<'i, R>(input: &'i mut [u8], f: impl FnOnce(simd_json::Result<&Tape<'i>>) -> R) -> R {
    let keep = input.len() <= KEEP_SCRATCH_MAX_INPUT_BYTES;
    // Taken out of the cell while in use: a nested call (there is none
    // today) would find `None` and allocate, never a borrowed cell.
    let taken = if keep {
        SCRATCH.with(|cell| cell.try_borrow_mut().ok().and_then(|mut slot| slot.take()))
    } else {
        None
    };
    let mut scratch = taken.unwrap_or_default();
    let mut tape: Tape<'i> = std::mem::replace(&mut scratch.tape, Tape(Vec::new())).reset();
    let parsed = simd_json::fill_tape(input, &mut scratch.buffers, &mut tape);
    let result = f(parsed.map(|()| &tape));
    if keep {
        scratch.tape = tape.reset();
        SCRATCH.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = Some(scratch);
            }
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use simd_json::prelude::*;

    use super::*;

    fn first_key_value(json: &str) -> Result<String, String> {
        let mut input = json.as_bytes().to_vec();
        with_tape(&mut input, |tape| {
            let tape = tape.map_err(|e| e.to_string())?;
            let value = tape.as_value();
            Ok(value
                .get("k")
                .and_then(|v| v.into_string())
                .unwrap_or_default()
                .to_owned())
        })
    }

    #[test]
    fn reused_memory_never_leaks_a_previous_document() {
        assert_eq!(
            first_key_value(r#"{"k":"first","pad":[1,2,3,4,5,6,7,8]}"#),
            Ok("first".into())
        );
        assert!(first_key_value(r#"{"k":"broken","#).is_err());
        assert_eq!(first_key_value(r#"{"k":"second"}"#), Ok("second".into()));
        assert_eq!(first_key_value(r#"{"x":1}"#), Ok(String::new()));
        let big = format!(
            r#"{{"k":"big","pad":"{}"}}"#,
            "x".repeat(KEEP_SCRATCH_MAX_INPUT_BYTES)
        );
        assert_eq!(first_key_value(&big), Ok("big".into()));
        assert_eq!(first_key_value(r#"{"k":"after big"}"#), Ok("after big".into()));
    }

    /// The bound is never below what stage 1 finds, on dense, sparse,
    /// nested and invalid inputs (a tape is reserved even for those).
    #[test]
    fn the_structurals_bound_holds_and_is_tight_for_dense_input() {
        let dense = format!("[1{}]", ",1".repeat(10_000));
        let inputs = [
            dense.clone(),
            format!(r#"{{"k":"{}","a":[true,null,"x"]}}"#, "s".repeat(5_000)),
            format!("{}{}", "[".repeat(500), "]".repeat(500)),
            "1 2 3 4 5 6 7 8 9 ".repeat(1_000),
            r#""a""b"1"c" x y"#.repeat(1_000),
            "\"\\\"\"{}:,".repeat(1_000),
            String::new(),
        ];
        let found = |input: &str| {
            let mut bytes = input.as_bytes().to_vec();
            let mut buffers = Buffers::new(bytes.len());
            let mut tape = Tape(Vec::new());
            let _ = simd_json::fill_tape(&mut bytes, &mut buffers, &mut tape);
            buffers.structural_indexes().len()
        };
        for input in inputs {
            let (found, bound) = (found(&input), structurals_bound(input.as_bytes()));
            assert!(found <= bound, "{found} > {bound} for {:.40}", input);
        }
        // `[1,1,…]`: a structural a byte, and the bound is that (plus one).
        assert_eq!(structurals_bound(dense.as_bytes()), found(&dense) + 1);
        // About 36 bytes of parse state per byte of `[1,1,…]`, 2.5 for a string.
        let worst = parse_memory_worst(3 << 20);
        assert!((100 << 20..120 << 20).contains(&worst), "{worst}");
        let long_string = format!(r#"{{"k":"{}"}}"#, "s".repeat(3 << 20));
        assert!(parse_memory_bound(long_string.as_bytes()) < 8 << 20);
    }

    #[test]
    fn a_nested_parse_uses_its_own_memory() {
        let mut outer = br#"{"k":"outer"}"#.to_vec();
        let inner = with_tape(&mut outer, |tape| {
            let outer_value = tape.ok().and_then(|t| {
                t.as_value()
                    .get("k")
                    .and_then(|v| v.into_string())
                    .map(str::to_owned)
            });
            (outer_value, first_key_value(r#"{"k":"inner"}"#))
        });
        assert_eq!(inner, (Some("outer".into()), Ok("inner".into())));
    }
}
