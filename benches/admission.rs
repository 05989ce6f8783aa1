//! The admission hot path, bytes in → bytes out: a ~5 KB Pod review with 4
//! containers, decided through a warm cache (the steady state of a cluster).
//! Target (issue 14): ≤ 2 µs median. `parse` compares the two simd-json
//! front ends the core could use (the tape is what `admit` uses). The
//! binary's allocator (mimalloc), so the figures are the server's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark may panic on what it did not expect.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imageswap::admission::{self, Options};
use imageswap::cache::RulesState;
use imageswap::swap::Engine;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REVIEW: &[u8] = include_bytes!("fixtures/pod-4-containers.review.json");
const MAPS: &str = include_str!("../tests/fixtures/maps/fixtures.conf");

fn admit_warm(c: &mut Criterion) {
    let state = RulesState::new(Engine::from_maps_text(MAPS).0, 10_000);
    let options = Options {
        disable_label: "k8s.twr.io/imageswap",
        shadow: false,
        deadline: None,
    };
    // Warm the cache, and check the bench measures a review that patches.
    let mut body = REVIEW.to_vec();
    let warm = admission::admit(&mut body, &options, &state.decider()).expect("bench review is valid");
    assert_eq!(warm.changes.len(), 4, "every container changes");

    c.bench_function("admit/pod_4_containers/cache_warm", |b| {
        b.iter_batched_ref(
            || REVIEW.to_vec(),
            |body| {
                let decider = state.decider();
                let admission = admission::admit(body, &options, &decider).map(|a| a.body.len());
                black_box(admission.ok())
            },
            BatchSize::SmallInput,
        )
    });
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.bench_function("tape", |b| {
        b.iter_batched_ref(
            || REVIEW.to_vec(),
            |body| black_box(simd_json::to_tape(body).map(|t| t.0.len()).ok()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("borrowed_value", |b| {
        b.iter_batched_ref(
            || REVIEW.to_vec(),
            |body| black_box(simd_json::to_borrowed_value(body).is_ok()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, admit_warm, parse);
criterion_main!(benches);
