//! Criterion benches of the pure swap core: one uncached decision over a
//! realistic mix of images with the 10-rule file of maps.md §5 (A), the same
//! with 10,000 more rules (registry, exact and path keys), and loading and
//! compiling a 10,000-rule file.
//!
//! Run: `cargo bench --bench swap`
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark may panic on what it did not expect.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use imageswap::swap::Engine;

const SPEC_A: &str = include_str!("../tests/fixtures/maps/spec-a.conf");

/// What a cluster's pods name: Hub library and org images, the big public
/// registries, a private registry with a port, digests, opted-out mirrors.
const IMAGES: &[&str] = &[
    "nginx:1.25",
    "docker.io/library/redis:7.2",
    "bitnami/postgresql:16.1.0",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "gcr.io/google-containers/pause:3.9",
    "registry.k8s.io/ingress-nginx/controller:v1.9.4",
    "ghcr.io/public-org/tool:2",
    "ghcr.io/fantasy/coolstuff:v1.0",
    "harbor.geo.k8s.twr.io/stuff/magtape:latest",
    "registry.internal.twr.io:443/istio/istiod:1.20.1",
    "gitlab.com/org/app:1",
    "localhost:5000/app:dev",
    "mcr.microsoft.com/dotnet/aspnet:8.0",
    "public.ecr.aws/eks/coredns:v1.11.1-eksbuild.4",
    "kindest/node@sha256:15d3fa0b0e4d1b7c31dbb2c7bd6e6c6ba0a4f3ec4fe4c52cd0fa1d1e5b6a32a7",
    "cool.io:443/istio/istiod:latest",
];

/// The 10-rule file plus `extra` rules of each kind: registry, exact, path.
fn large_maps(extra_per_kind: usize) -> String {
    let mut text = String::from(SPEC_A);
    for i in 0..extra_per_kind {
        text.push_str(&format!("reg{i}.example.com::mirror.example.com/reg{i}\n"));
        text.push_str(&format!(
            "[EXACT]reg{i}.example.com/team/app:v{i}::mirror.example.com/pinned/app:v{i}\n"
        ));
        text.push_str(&format!(
            "reg{i}.example.com/team{i}::mirror.example.com/teams/{i}\n"
        ));
    }
    text
}

fn decide_mix(c: &mut Criterion, name: &str, engine: &Engine) {
    let mut next = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            next = (next + 1) % IMAGES.len();
            black_box(engine.decide(black_box(IMAGES[next])))
        })
    });
}

fn benches(c: &mut Criterion) {
    let (small, _) = Engine::from_maps_text(SPEC_A);
    decide_mix(c, "decide/10_rules", &small);

    let large_text = large_maps(3_334);
    let (large, _) = Engine::from_maps_text(&large_text);
    decide_mix(c, "decide/10k_rules", &large);

    c.bench_function("load/10k_rules", |b| {
        b.iter(|| black_box(Engine::from_maps_text(black_box(&large_text))))
    });
}

criterion_group!(swap, benches);
criterion_main!(swap);
