//! The parser's scratch memory, kept per thread between reviews: simd-json's
//! buffers (a padded copy of the input, the structural index, its stack)
//! and the tape. Reusing them saves half a dozen allocations per review.
//! They are only borrowed for the synchronous parse-decide-answer step, so
//! a task moving between threads never holds them across an `.await`.
//!
//! Large reviews share one scratch instead: the server parses them one at
//! a time, and their parse state can be many times their size (about
//! 36 bytes a byte for a review dense with JSON nodes: a 24-byte tape node
//! and a 4-byte index entry per structural, reserved up front).

use std::cell::RefCell;
use std::sync::Mutex;

use simd_json::{Buffers, Tape};

/// Reviews up to this size (real Pod reviews are a few KiB) parse in the
/// thread's kept scratch memory; longer ones in [`LARGE_SCRATCH`], so one
/// huge request does not pin megabytes on every worker thread.
pub const SMALL_REVIEW_MAX_BYTES: usize = 64 * 1024;
const KEEP_SCRATCH_MAX_INPUT_BYTES: usize = SMALL_REVIEW_MAX_BYTES;

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

/// The scratch of reviews over [`SMALL_REVIEW_MAX_BYTES`], shared: the
/// server parses them one at a time (`server::stack`), so big reviews in a
/// row reuse one tape and one set of buffers instead of each allocating
/// and freeing up to ~100 MiB. Freed, such memory stays committed a while
/// (mimalloc's purge delay) and the next parse's comes on top: the memory
/// test measured ~45 MiB more at peak. `None` while in use, and once
/// [`release_large_scratch`] dropped it (the server does, a while after
/// the last big review).
static LARGE_SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// Frees the large reviews' scratch: the server calls it once no big
/// review has come for a while, so the memory is held only while they come.
pub fn release_large_scratch() {
    let released = LARGE_SCRATCH.lock().map(|mut slot| slot.take());
    drop(released);
}

/// Takes a kept scratch for `input_len` bytes: the thread's, or the shared
/// one of large reviews (`None` when in use: a parse outside the server's
/// one-at-a-time, such as a test's, then allocates its own).
fn take(input_len: usize) -> Option<Scratch> {
    if input_len <= KEEP_SCRATCH_MAX_INPUT_BYTES {
        SCRATCH.with(|cell| cell.try_borrow_mut().ok().and_then(|mut slot| slot.take()))
    } else {
        LARGE_SCRATCH.try_lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Gives a scratch back to where [`take`] found it (a second one, made
/// while the slot's was in use, is dropped).
fn give_back(input_len: usize, scratch: Scratch) {
    if input_len <= KEEP_SCRATCH_MAX_INPUT_BYTES {
        SCRATCH.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = Some(scratch);
            }
        });
    } else if let Ok(mut slot) = LARGE_SCRATCH.lock()
        && slot.is_none()
    {
        *slot = Some(scratch);
    }
}

/// Parses `input` into a tape and hands it to `f`; the tape's memory goes
/// back to the thread's scratch afterwards.
#[cfg(test)]
pub(super) fn with_tape<'i, R>(input: &'i mut [u8], f: impl FnOnce(simd_json::Result<&Tape<'i>>) -> R) -> R {
    let len = input.len();
    with_tape_padded(input, len, f)
}

/// [`with_tape`] of `input[..len]`. When `input` has at least
/// [`simd_json::INPUT_PADDING`] bytes after `len` (the server reads bodies
/// so), the parser works in `input` itself instead of first copying it into
/// a padded buffer of its own: the body is then copied once, from the
/// socket's frames, before the parse.
pub(super) fn with_tape_padded<'i, R>(
    input: &'i mut [u8],
    len: usize,
    f: impl FnOnce(simd_json::Result<&Tape<'i>>) -> R,
) -> R {
    let len = len.min(input.len());
    // Taken out of its slot while in use: a nested call (there is none
    // today) would find `None` and allocate, never a borrowed cell.
    let mut scratch = take(len).unwrap_or_default();
    let mut tape: Tape<'i> = std::mem::replace(&mut scratch.tape, Tape(Vec::new())).reset();
    let parsed = if input.len() - len >= simd_json::INPUT_PADDING {
        simd_json::fill_tape_padded(input, len, &mut scratch.buffers, &mut tape)
    } else {
        simd_json::fill_tape(&mut input[..len], &mut scratch.buffers, &mut tape)
    };
    let result = f(parsed.map(|()| &tape));
    scratch.tape = tape.reset();
    give_back(len, scratch);
    result
}

/// Bytes the large reviews' scratch holds (its tape; 0 when released).
#[cfg(test)]
fn large_scratch_tape_bytes() -> usize {
    LARGE_SCRATCH.lock().map_or(0, |slot| {
        slot.as_ref().map_or(0, |s| {
            s.tape.0.capacity() * std::mem::size_of::<simd_json::Node<'static>>()
        })
    })
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

    /// Big reviews in a row reuse one scratch, which is freed on request.
    #[test]
    fn large_reviews_share_a_scratch_until_it_is_released() {
        let dense = format!(
            r#"{{"k":"dense","x":[1{}]}}"#,
            ",1".repeat(SMALL_REVIEW_MAX_BYTES)
        );
        assert_eq!(first_key_value(&dense), Ok("dense".into()));
        let kept = large_scratch_tape_bytes();
        // A tape node per structural: two a value of `[1,1,…]`.
        assert!(kept >= 2 * SMALL_REVIEW_MAX_BYTES * 24, "{kept}");
        let sparse = format!(
            r#"{{"k":"sparse","pad":"{}"}}"#,
            "x".repeat(2 * SMALL_REVIEW_MAX_BYTES)
        );
        assert_eq!(first_key_value(&sparse), Ok("sparse".into()));
        assert_eq!(large_scratch_tape_bytes(), kept, "the same memory, reused");
        release_large_scratch();
        assert_eq!(large_scratch_tape_bytes(), 0);
        assert_eq!(first_key_value(&sparse), Ok("sparse".into()));
    }

    /// The server's bodies carry the parser's padding: parsed in place,
    /// whatever the padding holds, with escapes undone in the document.
    #[test]
    fn a_padded_input_parses_in_place_and_its_padding_is_not_read() {
        let document = br#"{"k":"pad\"ded","n":[1,2]}"#;
        for padding in [simd_json::INPUT_PADDING, simd_json::INPUT_PADDING + 7] {
            for filler in [b'}', b'"', b' ', 0] {
                let mut input = document.to_vec();
                input.resize(document.len() + padding, filler);
                let key = with_tape_padded(&mut input, document.len(), |tape| {
                    let tape = tape.map_err(|e| e.to_string())?;
                    Ok::<_, String>(
                        tape.as_value()
                            .get("k")
                            .and_then(|v| v.into_string())
                            .map(str::to_owned),
                    )
                });
                assert_eq!(
                    key,
                    Ok(Some("pad\"ded".to_owned())),
                    "{padding} bytes of {filler}"
                );
            }
        }
        // Less room than the padding: parsed from the parser's own copy,
        // the bytes past `len` ignored all the same.
        let mut short = document.to_vec();
        short.extend_from_slice(b"}}}");
        let key = with_tape_padded(&mut short, document.len(), |tape| {
            tape.ok().and_then(|t| {
                t.as_value()
                    .get("k")
                    .and_then(|v| v.into_string())
                    .map(str::to_owned)
            })
        });
        assert_eq!(key, Some("pad\"ded".to_owned()));
        // A broken document is an error with or without the padding.
        let mut broken = br#"{"k":"#.to_vec();
        let len = broken.len();
        broken.resize(len + simd_json::INPUT_PADDING, b'}');
        assert!(with_tape_padded(&mut broken, len, |tape| tape.is_err()));
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
