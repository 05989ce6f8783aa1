//! The parser's scratch memory, kept per thread between reviews: simd-json's
//! buffers (a padded copy of the input, the structural index, its stack)
//! and the tape. Reusing them saves half a dozen allocations per review.
//! They are only borrowed for the synchronous parse-decide-answer step, so
//! a task moving between threads never holds them across an `.await`.

use std::cell::RefCell;

use simd_json::{Buffers, Tape};

/// Reviews longer than this parse into fresh memory that is then dropped,
/// so one huge request does not pin megabytes on every worker thread.
const KEEP_SCRATCH_MAX_INPUT_BYTES: usize = 256 * 1024;

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
