//! The swap rules of `../shared/spec/maps.md`, section by section: every
//! example table of §5, each **fix** (a case that shows the fixed behaviour)
//! and each **extension**, with the rule word of §6 for every decision.

use imageswap::swap::{Engine, Rule};

const SPEC_A: &str = include_str!("../../fixtures/maps/spec-a.conf");
const SPEC_B: &str = include_str!("../../fixtures/maps/spec-b.conf");
const DIGEST: &str = "sha256:15d3fa0b0e4d1b7c31dbb2c7bd6e6c6ba0a4f3ec4fe4c52cd0fa1d1e5b6a32a7";

/// `(result or the image itself, rule word, key)` for `image` under `maps`.
fn swap(maps: &str, image: &str) -> (String, &'static str, Option<String>) {
    let (engine, _) = Engine::from_maps_text(maps);
    let d = engine.decide(image);
    (
        d.result.clone().unwrap_or_else(|| image.to_owned()),
        d.rule.as_str(),
        d.key.map(str::to_owned),
    )
}

/// Asserts a table of `(image, expected result, rule word)`.
fn check_table(maps: &str, table: &[(&str, &str, &str)]) {
    let (engine, _) = Engine::from_maps_text(maps);
    for (image, expected, rule) in table {
        let d = engine.decide(image);
        let result = d.result.as_deref().unwrap_or(image);
        assert_eq!((result, d.rule.as_str()), (*expected, *rule), "image {image}");
        assert_eq!(d.changed(), expected != image, "changed flag for {image}");
    }
}

// ---------------------------------------------------------------- §5 tables

#[test]
fn section5_map_file_a() {
    let kindest = format!("kindest/node@{DIGEST}");
    let kindest_swapped = format!("my.example.com/mirror-docker.io/kindest/node@{DIGEST}");
    check_table(
        SPEC_A,
        &[
            ("alpine", "my.example.com/mirror-docker.io/alpine", "registry"),
            (
                "ubuntu/ubuntu:latest",
                "my.example.com/mirror-docker.io/ubuntu/ubuntu:latest",
                "registry",
            ),
            (
                "docker.io/tmobile/magtape:latest",
                "my.example.com/mirror-docker.io/tmobile/magtape:latest",
                "registry",
            ),
            (
                "quay.io/solo/gloo:v1.0",
                "quay.example3.com/solo/gloo:v1.0",
                "registry",
            ),
            (
                "gcr.io:443/istio/istiod:latest",
                "default.example.com/istio/istiod:latest",
                "default",
            ),
            (
                "myregistry.com/some/deep/path:1",
                "default.example.com/some/deep/path:1",
                "default",
            ),
            (
                "gitlab.com/org/app:1",
                "registry.example.com/gitlab/org/app:1",
                "registry",
            ),
            (
                "cool.io:443/istio/istiod:latest",
                "cool.io:443/istio/istiod:latest",
                "registry",
            ),
            (
                "harbor.geo.k8s.twr.io/stuff/magtape:latest",
                "harbor.geo.k8s.twr.io/stuff/magtape:latest",
                "wildcard",
            ),
            (
                "registry.internal.twr.io:443/istio/istiod:latest",
                "registry.example.com:443/istio/istiod:latest",
                "registry",
            ),
            (
                "registry.waldo.com:8443/a/b:1",
                "registry.garply.com/a/b:1",
                "registry",
            ),
            (
                "ghcr.io/fantasy/coolstuff:v1.0",
                "my-local-registry.com/patched-coolstuff:latest",
                "exact",
            ),
            (
                "ghcr.io/public-org/tool:2",
                "my-local-registry.com/tool:2",
                "replace",
            ),
            (&kindest, &kindest_swapped, "registry"),
            ("localhost:5000/app:dev", "default.example.com/app:dev", "default"),
        ],
    );
}

#[test]
fn section5_map_file_b() {
    check_table(
        SPEC_B,
        &[
            ("nginx:latest", "harbor.example.com/library/nginx:latest", "path"),
            (
                "rabbitmq:3.8.18-management",
                "harbor.example.com/library/rabbitmq:3.8.18-management",
                "path",
            ),
            (
                "docker.io/library/nginx:1.25",
                "harbor.example.com/library/nginx:1.25",
                "path",
            ),
            (
                "docker.io/nginx:1.25",
                "harbor.example.com/library/nginx:1.25",
                "path",
            ),
            (
                "tmobile/magtape:latest",
                "harbor.example.com/tmobile/magtape:latest",
                "registry",
            ),
            ("quay.io/x/y", "quay.io/x/y", "default"),
        ],
    );
}

#[test]
fn section5_keys_that_decided() {
    assert_eq!(swap(SPEC_A, "alpine").2.as_deref(), Some("docker.io"));
    assert_eq!(
        swap(SPEC_A, "registry.internal.twr.io:443/a").2.as_deref(),
        Some("registry.internal.twr.io")
    );
    assert_eq!(
        swap(SPEC_A, "registry.waldo.com:8443/a").2.as_deref(),
        Some("registry.waldo.com:8443")
    );
    assert_eq!(swap(SPEC_A, "harbor.twr.io/a").2.as_deref(), Some("twr.io"));
    assert_eq!(
        swap(SPEC_A, "ghcr.io/public-org/tool:2").2.as_deref(),
        Some("ghcr.io/public*")
    );
    assert_eq!(
        swap(SPEC_A, "ghcr.io/fantasy/coolstuff:v1.0").2.as_deref(),
        Some("ghcr.io/fantasy/coolstuff:v1.0")
    );
    assert_eq!(swap(SPEC_A, "gcr.io/a").2.as_deref(), Some("default"));
    assert_eq!(swap(SPEC_B, "nginx").2.as_deref(), Some("docker.io/library"));
    assert_eq!(swap("docker.io::x.io\n", "nginx").2, None, "no default: no key");
}

// ---------------------------------------------------------------- §1 file format

#[test]
fn section1_fix_trailing_comment_cut_at_the_first_hash() {
    // The original cut at the last `#`, leaving `quay.io::q.example.com#x`.
    let maps = "default::\nquay.io::q.example.com # x # y\n";
    assert_eq!(swap(maps, "quay.io/a").0, "q.example.com/a");
}

#[test]
fn section1_fix_tabs_are_whitespace() {
    // The original removed only spaces, so this rule was silently dead.
    let maps = "default::\nquay.io::\tq.example.com\t\n";
    assert_eq!(swap(maps, "quay.io/a").0, "q.example.com/a");
}

#[test]
fn section1_whitespace_inside_values_is_removed() {
    let maps = "default::d.example.com\nnoswap_wildcards::a.io, b.io\n";
    assert_eq!(swap(maps, "x.b.io/app").1, "wildcard");
    assert_eq!(swap(maps, "x.c.io/app").0, "d.example.com/app");
}

#[test]
fn section1_deprecated_single_colon_still_works() {
    let maps = "default:d.example.com\nquay.io:q.example.com\n";
    assert_eq!(swap(maps, "quay.io/a").0, "q.example.com/a");
    assert_eq!(swap(maps, "gcr.io/a").0, "d.example.com/a");
}

#[test]
fn section1_invalid_lines_are_skipped_and_the_rest_applies() {
    let maps = "default::d.io\nregistry.io:5000:mirror.io\nbroken\nquay.io::q.io\n";
    let (engine, findings) = Engine::from_maps_text(maps);
    assert_eq!(engine.decide("quay.io/a").result.as_deref(), Some("q.io/a"));
    // The invalid port line is not a rule: its image goes to the default.
    assert_eq!(
        engine.decide("registry.io:5000/a").result.as_deref(),
        Some("d.io/a")
    );
    let lines: Vec<Option<usize>> = findings.iter().map(|f| f.line).collect();
    assert_eq!(lines, vec![Some(2), Some(3)]);
    assert!(
        findings[0]
            .message
            .contains("a port in the key or value requires the `::` separator")
    );
}

#[test]
fn section1_later_key_wins_and_replace_keeps_first_position() {
    let maps = "default::\n\
                quay.io::first.io\n\
                [REPLACE]ghcr.io/team/*::team-first\n\
                [REPLACE]ghcr.io/*::all\n\
                quay.io::second.io\n\
                [REPLACE]ghcr.io/team/*::team-second\n";
    assert_eq!(swap(maps, "quay.io/a").0, "second.io/a");
    // Line 3's pattern keeps its place before line 4's, with line 6's value.
    assert_eq!(swap(maps, "ghcr.io/team/app").0, "team-second/app");
    assert_eq!(swap(maps, "ghcr.io/other/app").0, "all/app");
}

#[test]
fn section1_loading_never_fails_on_garbage() {
    let (engine, findings) = Engine::from_maps_text("::::\n[REPLACE][::x\n\u{0}\u{7f}\n#only\n");
    assert!(!findings.is_empty());
    assert_eq!(engine.decide("nginx").rule, Rule::None);
}

// ---------------------------------------------------------------- §2 references

#[test]
fn section2_fix_invalid_references_are_unchanged() {
    // The original gave `mirror/gcr.io/` for `gcr.io/` and crashed on `(`, `[`, `\`.
    let maps = "default::mirror\n";
    for image in [
        "gcr.io/", "app(1)", "app[1]", "a\\b", "", "UPPER", "nginx:", "a b",
    ] {
        assert_eq!(
            swap(maps, image),
            (image.to_owned(), "invalid", None),
            "{image:?}"
        );
    }
}

#[test]
fn section2_fix_registry_with_port_but_no_dot() {
    // The original took these for Docker Hub images.
    let maps = "default::d.io\ndocker.io::hub.example.com\nlocalhost:5000::local.example.com\n";
    assert_eq!(swap(maps, "localhost:5000/app").0, "local.example.com/app");
    assert_eq!(swap(maps, "myhost:5000/app").0, "d.io/app");
    assert_eq!(swap(maps, "localhost/app").0, "d.io/app");
    assert_eq!(swap(maps, "MyHost/app").0, "d.io/app");
    assert_eq!(swap(maps, "myhost/app").0, "hub.example.com/myhost/app");
}

#[test]
fn section2_fix_docker_io_single_name_is_a_library_image() {
    // The original's issues #77 and #119.
    let maps = "default::\ndocker.io/library::hub.example.com/library\n";
    assert_eq!(
        swap(maps, "docker.io/nginx:1").0,
        "hub.example.com/library/nginx:1"
    );
    assert_eq!(swap(maps, "nginx:1").0, "hub.example.com/library/nginx:1");
}

// ---------------------------------------------------------------- §3.1 exact

#[test]
fn section3_1_exact_rules() {
    let maps = "default::d.io\n[EXACT]nginx:1.25::mirror.io/nginx:1.25-patched\n";
    assert_eq!(
        swap(maps, "nginx:1.25"),
        (
            "mirror.io/nginx:1.25-patched".into(),
            "exact",
            Some("nginx:1.25".into())
        )
    );
    // Only the exact string: another tag goes on to the default.
    assert_eq!(swap(maps, "nginx:1.26").1, "default");
}

#[test]
fn section3_1_fix_identity_exact_rule_is_unchanged() {
    let (engine, _) = Engine::from_maps_text("default::d.io\n[EXACT]gcr.io/keep:v1::gcr.io/keep:v1\n");
    let d = engine.decide("gcr.io/keep:v1");
    assert_eq!((d.result, d.rule), (None, Rule::Exact));
}

#[test]
fn section3_1_choice_empty_exact_value_opts_out() {
    // Choice: an empty value would write an empty image; like every other
    // empty value, it means "leave this image alone".
    let (engine, _) = Engine::from_maps_text("default::d.io\n[EXACT]gcr.io/keep:v1::\n");
    let d = engine.decide("gcr.io/keep:v1");
    assert_eq!((d.result, d.rule), (None, Rule::Exact));
}

#[test]
fn section3_1_exact_applies_before_everything_and_without_default() {
    let maps = "[EXACT]quay.io/a:1::x.io/a:1\n[REPLACE]quay.io/*::y.io\n";
    assert_eq!(swap(maps, "quay.io/a:1").0, "x.io/a:1");
    assert_eq!(swap(maps, "quay.io/b:1").0, "y.io/b:1");
}

// ---------------------------------------------------------------- §3.2 replace

#[test]
fn section3_2_replace_rules() {
    let maps = "default::d.io\n\
                [REPLACE]quay.io/team-?/*::slash.io/\n\
                [REPLACE]quay.io/[!x]*::class.io\n\
                [REPLACE]*/strip-me*::\n\
                [REPLACE]*::everything.io/all\n";
    // `*` crosses `/`; a value ending in `/` gets no extra `/`.
    assert_eq!(swap(maps, "quay.io/team-a/deep/app:1").0, "slash.io/app:1");
    assert_eq!(swap(maps, "quay.io/y/app").0, "class.io/app");
    // An empty value gives `last` alone.
    assert_eq!(swap(maps, "gcr.io/x/strip-me:2").0, "strip-me:2");
    // The first rule in file order decides; `last` of a one-part image is itself.
    assert_eq!(swap(maps, "nginx").0, "everything.io/all/nginx");
    assert_eq!(swap(maps, "quay.io/xyz/app").0, "everything.io/all/app");
}

#[test]
fn section3_2_replace_is_case_sensitive_and_whole_image() {
    let maps = "default::\n[REPLACE]Quay.io/*::a.io\n[REPLACE]quay.io::b.io\n";
    assert_eq!(swap(maps, "quay.io/x").1, "default");
}

// ---------------------------------------------------------------- §3.3 none

#[test]
fn section3_3_no_default_no_swap() {
    let maps = "docker.io::hub.example.com\nnoswap_wildcards::x\n";
    let (engine, findings) = Engine::from_maps_text(maps);
    let d = engine.decide("nginx");
    assert_eq!((d.result, d.rule, d.key), (None, Rule::None, None));
    assert!(findings.iter().any(|f| f.message.contains("no `default` key")));
}

// ---------------------------------------------------------------- §3.4 path keys

#[test]
fn section3_4_extension_path_keys_for_any_registry() {
    let maps = "default::d.io\n\
                ghcr.io::ghcr-mirror.io\n\
                ghcr.io/my-org::internal.io/my-org-mirror\n\
                registry.k8s.io/ingress-nginx::internal.io/ingress\n\
                registry.k8s.io/ingress-nginx/controller::internal.io/ctrl\n";
    assert_eq!(
        swap(maps, "ghcr.io/my-org/app:1").0,
        "internal.io/my-org-mirror/app:1"
    );
    assert_eq!(
        swap(maps, "ghcr.io/my-org/team/app:1").0,
        "internal.io/my-org-mirror/team/app:1"
    );
    assert_eq!(
        swap(maps, "ghcr.io/my-organisation/app:1").0,
        "ghcr-mirror.io/my-organisation/app:1"
    );
    // The longest matching path key wins.
    assert_eq!(
        swap(maps, "registry.k8s.io/ingress-nginx/controller/chroot:v1.9.4").0,
        "internal.io/ctrl/chroot:v1.9.4"
    );
    // A path key matches `K/`, never the repository `K` itself (as the spec
    // says): the shorter key takes `controller:v1.9.4`.
    assert_eq!(
        swap(maps, "registry.k8s.io/ingress-nginx/controller:v1.9.4").0,
        "internal.io/ingress/controller:v1.9.4"
    );
    assert_eq!(
        swap(maps, "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1").0,
        "internal.io/ingress/kube-webhook-certgen:v1"
    );
    assert_eq!(swap(maps, "registry.k8s.io/pause:3.9").1, "default");
}

#[test]
fn section3_4_library_path_key_covers_every_spelling() {
    // The original used the `docker.io` rule for the last two.
    let maps = "default::\ndocker.io::hub.io\ndocker.io/library::hub.io/lib\n";
    for image in [
        "nginx:1",
        "docker.io/nginx:1",
        "library/nginx:1",
        "docker.io/library/nginx:1",
    ] {
        assert_eq!(
            swap(maps, image),
            (
                "hub.io/lib/nginx:1".into(),
                "path",
                Some("docker.io/library".into())
            ),
            "{image}"
        );
    }
    assert_eq!(swap(maps, "bitnami/nginx:1").0, "hub.io/bitnami/nginx:1");
}

#[test]
fn section3_4_path_key_values() {
    let maps = "default::d.io\n\
                ghcr.io/opt-out::\n\
                gcr.io:443/team::dash.io/mirror-\n\
                docker.io/bitnami::hub.io/bn\n";
    assert_eq!(
        swap(maps, "ghcr.io/opt-out/app"),
        (
            "ghcr.io/opt-out/app".into(),
            "path",
            Some("ghcr.io/opt-out".into())
        )
    );
    // `-` value: V + reg_noport + "/" + rest.
    assert_eq!(
        swap(maps, "gcr.io:443/team/app").0,
        "dash.io/mirror-gcr.io/team/app"
    );
    // Implicit registries match through `full` = docker.io/<rest>.
    assert_eq!(swap(maps, "bitnami/redis:7").0, "hub.io/bn/redis:7");
}

// ---------------------------------------------------------------- §3.4 registry keys

#[test]
fn section3_4_registry_key_with_and_without_port() {
    let maps = "default::d.io\nregistry.internal::mirror.example\nregistry.internal:5000::five.example\n";
    // K = reg_noport keeps the port, as in the original and its tests.
    assert_eq!(swap(maps, "registry.internal:443/a").0, "mirror.example:443/a");
    // K = reg (with port) replaces the registry and its port.
    assert_eq!(swap(maps, "registry.internal:5000/a").0, "five.example/a");
    assert_eq!(swap(maps, "registry.internal/a").0, "mirror.example/a");
}

#[test]
fn section3_4_fix_dash_value_keeps_every_path_segment_with_a_port() {
    // The original dropped everything from the first `:` to the last `/`.
    let maps = "default::\nregistry.local::mirror.io/cache-\n";
    assert_eq!(
        swap(maps, "registry.local:5000/team/sub/app:1").0,
        "mirror.io/cache-registry.local/team/sub/app:1"
    );
}

#[test]
fn section3_4_fix_key_is_not_a_regex_and_only_the_leading_registry_changes() {
    let maps = "default::\ngcr.io::mirror.io\n";
    // Dots are dots: `gcrxio` is another registry (and not explicit at all).
    assert_eq!(swap(maps, "gcrxio.com/app").1, "default");
    // Only the leading registry is replaced, never a later occurrence.
    assert_eq!(swap(maps, "gcr.io/gcr.io/app").0, "mirror.io/gcr.io/app");
}

#[test]
fn section3_4_fix_library_path_key_without_docker_io_key() {
    // The original crashed here; now the image goes on to the default.
    let maps = "default::d.io\ndocker.io/library::hub.io/lib\n";
    assert_eq!(
        swap(maps, "bitnami/redis:7"),
        ("d.io/bitnami/redis:7".into(), "default", Some("default".into()))
    );
}

#[test]
fn section3_4_registry_key_opt_out_beats_wildcards_and_default() {
    let maps = "default::d.io\nmirror.example::\nnoswap_wildcards::nothing\n";
    assert_eq!(
        swap(maps, "mirror.example/a/b:1"),
        (
            "mirror.example/a/b:1".into(),
            "registry",
            Some("mirror.example".into())
        )
    );
}

// ---------------------------------------------------------------- §3.5 wildcards

#[test]
fn section3_5_fix_trailing_comma_does_not_disable_swapping() {
    let maps = "default::d.io\nnoswap_wildcards::twr.io,\n";
    assert_eq!(swap(maps, "gcr.io/a").0, "d.io/a");
    assert_eq!(swap(maps, "x.twr.io/a").1, "wildcard");
    let maps = "default::d.io\nnoswap_wildcards::,\n";
    assert_eq!(swap(maps, "gcr.io/a").0, "d.io/a");
}

#[test]
fn section3_5_wildcards_are_substrings_of_the_whole_image() {
    let maps = "default::d.io\nnoswap_wildcards::-internal,:debug\n";
    assert_eq!(swap(maps, "gcr.io/app-internal:1").1, "wildcard");
    assert_eq!(swap(maps, "gcr.io/app:debug").1, "wildcard");
    assert_eq!(swap(maps, "gcr.io/app:1").1, "default");
}

// ---------------------------------------------------------------- §3.6 default

#[test]
fn section3_6_default_values() {
    let implicit = "default::mirror.io/hub\n";
    assert_eq!(swap(implicit, "nginx").0, "mirror.io/hub/nginx");
    assert_eq!(swap(implicit, "team/app:1").0, "mirror.io/hub/team/app:1");
    // The explicit registry, port included, is replaced.
    assert_eq!(swap(implicit, "gcr.io:443/a/b").0, "mirror.io/hub/a/b");
    assert_eq!(
        swap("default::\n", "gcr.io/a"),
        ("gcr.io/a".into(), "default", Some("default".into()))
    );
}

#[test]
fn section3_6_fix_dash_default_drops_the_registry_from_the_path() {
    // The original gave `mirror-gcr.io/gcr.io/app`.
    let maps = "default::mirror-\n";
    assert_eq!(swap(maps, "gcr.io/app").0, "mirror-gcr.io/app");
    assert_eq!(swap(maps, "gcr.io:443/app").0, "mirror-gcr.io/app");
    assert_eq!(swap(maps, "nginx").0, "mirror-docker.io/nginx");
}

#[test]
fn section3_result_equal_to_image_is_unchanged() {
    let (engine, _) = Engine::from_maps_text("default::\ngcr.io::gcr.io\n");
    let d = engine.decide("gcr.io/a");
    assert_eq!((d.result, d.rule), (None, Rule::Registry));
}

// ---------------------------------------------------------------- §4 legacy

#[test]
fn section4_legacy_mode() {
    let cases = [
        // prefix, image, result
        (Some("mirror.io"), "nginx", "mirror.io/nginx"),
        (Some("mirror.io"), "gcr.io/team/app:1", "mirror.io/app:1"),
        (Some("mirror.io"), "mirror.io/app:1", "mirror.io/app:1"),
        (
            Some("mirror.io/cache-"),
            "gcr.io/team/app",
            "mirror.io/cache-gcr.io/team/app",
        ),
        (Some(""), "nginx", "nginx"),
        (None, "nginx", "nginx"),
        (Some("mirror.io"), "gcr.io/", "gcr.io/"),
    ];
    for (prefix, image, expected) in cases {
        let engine = Engine::legacy(prefix);
        let d = engine.decide(image);
        assert_eq!(
            d.result.as_deref().unwrap_or(image),
            expected,
            "{prefix:?} {image}"
        );
        let rule = if image == "gcr.io/" {
            Rule::Invalid
        } else {
            Rule::Legacy
        };
        assert_eq!(d.rule, rule, "{prefix:?} {image}");
    }
}

// ---------------------------------------------------------------- §6 words

#[test]
fn section6_rule_words() {
    let words: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        words,
        [
            "invalid",
            "exact",
            "replace",
            "none",
            "path",
            "registry",
            "wildcard",
            "default",
            "legacy",
            "invalid-result",
            "kept-placeholder"
        ]
    );
}

#[test]
fn engine_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Engine>();
    let engine = std::sync::Arc::new(Engine::from_maps_text(SPEC_A).0);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || engine.decide("alpine").result)
        })
        .collect();
    for h in handles {
        assert_eq!(
            h.join().unwrap().as_deref(),
            Some("my.example.com/mirror-docker.io/alpine")
        );
    }
}

// ------------------------------------------------ §3 step 7 and the keep list

/// issue 21: a changed result that is not a valid reference leaves the
/// image unchanged with `invalid-result`, naming the rule's key and the
/// result it gave; the original's own rules can do it (a port carried into
/// the path).
#[test]
fn section3_step7_only_valid_results() {
    let cases = [
        (
            "docker.io::http://mirror.example.com\ndefault::",
            "nginx:1.25",
            "docker.io",
            "http://mirror.example.com/nginx:1.25",
        ),
        (
            "quay.io::mirror.example.com/Team\ndefault::",
            "quay.io/org/app:1",
            "quay.io",
            "mirror.example.com/Team/org/app:1",
        ),
        (
            "gcr.io::mirror.example.com/a//b\ndefault::",
            "gcr.io/x/y",
            "gcr.io",
            "mirror.example.com/a//b/x/y",
        ),
        (
            "quay.io::harbor.corp.example:8443/quay\ndefault::",
            "quay.io:443/prometheus/x",
            "quay.io",
            "harbor.corp.example:8443/quay:443/prometheus/x",
        ),
        (
            "default::Mirror.example.com/Hub",
            "nginx",
            "default",
            "Mirror.example.com/Hub/nginx",
        ),
        ("[EXACT]nginx:1::nginx:", "nginx:1", "nginx:1", "nginx:"),
        (
            "[REPLACE]ghcr.io/*::mirror.example.com//",
            "ghcr.io/org/tool:2",
            "ghcr.io/*",
            "mirror.example.com//tool:2",
        ),
    ];
    for (maps, image, key, rejected) in cases {
        let (engine, _) = Engine::from_maps_text(maps);
        let d = engine.decide(image);
        assert_eq!(
            (d.result, d.rule, d.key, d.rejected.as_deref()),
            (None, Rule::InvalidResult, Some(key), Some(rejected)),
            "{maps:?} {image}"
        );
    }
    // The same rules still swap what they can swap validly.
    let (engine, _) = Engine::from_maps_text("quay.io::harbor.corp.example:8443/quay\ndefault::");
    assert_eq!(
        engine.decide("quay.io/prometheus/x").result.as_deref(),
        Some("harbor.corp.example:8443/quay/prometheus/x")
    );
    // LEGACY mode too.
    let legacy = Engine::legacy(Some("mirror.io/Team"));
    let d = legacy.decide("nginx");
    assert_eq!((d.result, d.rule), (None, Rule::InvalidResult));
}

/// Before step 1: an image of the keep list is never rewritten, whatever
/// rule would match it, and only the exact string is kept.
#[test]
fn keep_list_before_step1() {
    let (engine, _) = Engine::from_maps_text("[EXACT]auto::x.example/auto\ndefault::harbor.example.com");
    let engine = engine.keeping(&["auto".to_owned()]);
    let d = engine.decide("auto");
    assert_eq!(
        (d.result, d.rule, d.key),
        (None, Rule::KeptPlaceholder, Some("auto"))
    );
    assert_eq!(
        engine.decide("auto:1").result.as_deref(),
        Some("harbor.example.com/auto:1")
    );
    assert_eq!(
        engine.decide("docker.io/auto").result.as_deref(),
        Some("harbor.example.com/auto")
    );
    let legacy = Engine::legacy(Some("mirror.io")).keeping(&["auto".to_owned()]);
    assert_eq!(legacy.decide("auto").rule, Rule::KeptPlaceholder);
}
