//! The generated `matchConditions` are sound (issue 22): evaluated by a
//! real CEL implementation (the `cel` crate) over generated maps — every
//! rule kind, the repository's maps files, keep lists, pull secrets — and
//! generated Pod CREATEs and UPDATEs, whenever CEL says "skip" the server's
//! own answer (`admission::decide` with the real engine) has no patch and
//! no warning; no expression ever errors. The share of no-patch reviews
//! that CEL skips is printed (and must stay a large one).

use std::sync::atomic::{AtomicUsize, Ordering};

use imageswap::admission::{self, ImageDecision, Options, PullSecrets};

use super::cel_cost;
use imageswap::conditions::{self, Inputs};
use imageswap::settings::SettingValue;
use imageswap::swap::{Engine, MapsFile};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const LABEL: &str = "k8s.twr.io/imageswap";
const MIRROR: &str = "mirror.example";

/// The repository's maps files: the spec's, the fixtures', the examples'.
const FILES: [&str; 6] = [
    include_str!("../../fixtures/maps/spec-a.conf"),
    include_str!("../../fixtures/maps/spec-b.conf"),
    include_str!("../../fixtures/maps/fixtures.conf"),
    include_str!("../../../loadtest/imageswap-maps.conf"),
    include_str!("../../../examples/imageswap-maps.conf"),
    include_str!("../../../deploy/manifests/imageswap-maps.conf"),
];

const HOSTS: [&str; 11] = [
    "docker.io",
    "quay.io",
    "ghcr.io",
    MIRROR,
    "mirror.example:5000",
    "gcr.io:443",
    "registry.k8s.io",
    "localhost:5000",
    "harbor.example.com",
    "mirror.example.com",
    "default.example.com",
];

fn host() -> impl Strategy<Value = String> {
    prop::sample::select(HOSTS.to_vec()).prop_map(str::to_owned)
}

/// A rule value: empty, a mirror with or without path, a `-` prefix, a
/// host (possibly the key itself), or one that gives invalid images.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        host(),
        host().prop_map(|h| format!("{h}/mirror")),
        host().prop_map(|h| format!("{h}/hub-")),
        Just("harbor.corp.example:8443/quay".to_owned()),
        Just("https://bad.example".to_owned()),
    ]
}

/// One rule line of any kind.
fn rule() -> impl Strategy<Value = String> {
    prop_oneof![
        (host(), value()).prop_map(|(h, v)| format!("{h}::{v}")),
        (host(), "[a-z]{1,3}", value()).prop_map(|(h, p, v)| format!("{h}/{p}::{v}")),
        (host(), value()).prop_map(|(h, v)| format!("{h}/{h}::{v}")),
        value().prop_map(|v| format!("default::{v}")),
        prop::collection::vec(
            prop_oneof![
                host(),
                Just("twr.io".to_owned()),
                Just("example".to_owned()),
                Just(":5".to_owned())
            ],
            0..3
        )
        .prop_map(|w| format!("noswap_wildcards::{}", w.join(","))),
        (image(), value()).prop_map(|(i, v)| format!("[EXACT]{i}::{v}")),
        (
            host(),
            prop::sample::select(vec!["*", "a*", "?/*", "[ab]*", "x/*"]),
            value()
        )
            .prop_map(|(h, g, v)| format!("[REPLACE]{h}/{g}::{v}")),
        Just("[REPLACE]*::mirror.example/all".to_owned()),
    ]
}

/// A maps file: generated rules, or one of the repository's, with a few
/// generated rules appended.
fn maps() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(rule(), 0..8).prop_map(|r| r.join("\n")),
        1 => (prop::sample::select(FILES.to_vec()), prop::collection::vec(rule(), 0..2))
            .prop_map(|(f, r)| format!("{f}\n{}", r.join("\n"))),
        // The common shape: everything to the mirror, the mirror opted out.
        2 => (value(), prop::collection::vec(rule(), 0..3))
            .prop_map(|(v, r)| format!("default::{MIRROR}/{v}\n{MIRROR}::\n{}", r.join("\n"))),
    ]
}

/// An image: under a host of the pool or Docker Hub's shorthand, a
/// placeholder, or something that is not a reference.
fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (host(), "[a-z]{1,3}(/[a-z]{1,3})?", prop::option::of("[a-z0-9]{1,3}"))
            .prop_map(|(h, p, t)| format!("{h}/{p}{}", t.map(|t| format!(":{t}")).unwrap_or_default())),
        2 => "[a-z]{1,3}(:[0-9])?",
        1 => Just("auto".to_owned()),
        1 => prop::sample::select(vec!["mirror.example/UPPER", "mirror.example//x", "", "a b"]).prop_map(str::to_owned),
        1 => (host(), "[a-z]{1,3}").prop_map(|(h, p)| format!("{h}/{h}/{p}")),
        // A host on another port, and a Docker Hub name that looks like one
        // (`registry.local:1` is the image `registry.local`, tag 1).
        1 => (host(), "[0-9]{1,4}", prop::option::of("[a-z]{1,3}"))
            .prop_map(|(h, port, p)| format!("{}:{port}{}", h.split(':').next().unwrap(), p.map(|p| format!("/{p}")).unwrap_or_default())),
    ]
}

fn containers() -> impl Strategy<Value = Vec<(Option<String>, Option<String>)>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.95, "c[0-3]"),
            prop::option::weighted(0.95, image()),
        ),
        0..4,
    )
}

#[derive(Clone, Debug)]
struct Pod {
    lists: [Vec<(Option<String>, Option<String>)>; 3],
    secrets: Option<Vec<String>>,
    disabled: bool,
}

fn pod() -> impl Strategy<Value = Pod> {
    (
        containers(),
        prop::option::weighted(0.3, containers()),
        prop::option::weighted(0.1, containers()),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["mirror-pull", "quay-pull", "other"]).prop_map(str::to_owned),
            0..3,
        )),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(c, i, e, secrets, disabled)| Pod {
            lists: [c, i.unwrap_or_default(), e.unwrap_or_default()],
            secrets,
            disabled,
        })
}

impl Pod {
    fn json(&self) -> Value {
        let mut spec = serde_json::Map::new();
        for (list, entries) in ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .zip(&self.lists)
        {
            if entries.is_empty() && *list != "containers" {
                continue;
            }
            let entries: Vec<Value> = entries
                .iter()
                .map(|(name, image)| {
                    let mut c = serde_json::Map::new();
                    if let Some(name) = name {
                        c.insert("name".into(), json!(name));
                    }
                    if let Some(image) = image {
                        c.insert("image".into(), json!(image));
                    }
                    Value::Object(c)
                })
                .collect();
            spec.insert((*list).into(), Value::Array(entries));
        }
        if let Some(secrets) = &self.secrets {
            let list: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
            spec.insert("imagePullSecrets".into(), Value::Array(list));
        }
        let mut metadata = json!({"name": "p", "namespace": "n"});
        if self.disabled {
            metadata["labels"] = json!({LABEL: "disabled", "app": "x"});
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }
}

/// A review: a CREATE, or an UPDATE from an old pod that is the same, the
/// same with other labels, or another generated one.
fn review() -> impl Strategy<Value = (Value, Option<Value>)> {
    prop_oneof![
        2 => pod().prop_map(|p| (p.json(), None)),
        1 => pod().prop_map(|p| {
            let mut old = p.clone();
            old.disabled = !p.disabled;
            (p.json(), Some(old.json()))
        }),
        1 => pod().prop_map(|p| (p.json(), Some(p.json()))),
        1 => (pod(), pod()).prop_map(|(p, old)| (p.json(), Some(old.json()))),
        1 => (pod(), 0usize..3, image()).prop_map(|(p, list, image)| {
            let mut new = p.clone();
            if let Some(first) = new.lists[list].first_mut() {
                first.1 = Some(image);
            }
            (new.json(), Some(p.json()))
        }),
    ]
}

fn keep() -> impl Strategy<Value = Vec<String>> {
    prop::sample::select(vec![vec![], vec!["auto"], vec!["auto", "mirror.example/kept:1"]])
        .prop_map(|k| k.into_iter().map(str::to_owned).collect())
}

fn pull_secrets() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "mirror.example=mirror-pull",
        "mirror.example=mirror-pull,quay.io=quay-pull",
        "harbor.example.com=mirror-pull,docker.io=other",
    ])
    .prop_map(str::to_owned)
}

#[derive(Default)]
struct Counts {
    reviews: AtomicUsize,
    no_patch: AtomicUsize,
    skipped: AtomicUsize,
}

/// The conditions compiled by the CEL implementation.
fn compile(generated: &[conditions::MatchCondition]) -> Vec<(String, cel::Program)> {
    generated
        .iter()
        .map(|c| {
            let program = cel::Program::compile(&c.expression)
                .unwrap_or_else(|e| panic!("{} does not compile: {e:?}\n{}", c.name, c.expression));
            (c.name.clone(), program)
        })
        .collect()
}

/// The request the API server would evaluate the conditions on.
fn pod_request(object: &Value, old: Option<&Value>) -> Value {
    json!({
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": if old.is_some() { "UPDATE" } else { "CREATE" }, "object": object, "oldObject": old,
    })
}

/// Whether the API server skips the call (some condition false), or the
/// name and outcome of a condition that did not give a boolean.
fn cel_skips(programs: &[(String, cel::Program)], request: &Value) -> Result<bool, String> {
    let mut context = cel::Context::default();
    for variable in ["object", "oldObject"] {
        context.add_variable_from_value(variable, cel::to_value(&request[variable]).unwrap());
    }
    context.add_variable_from_value("request", cel::to_value(request).unwrap());
    let mut skip = false;
    for (name, program) in programs {
        match program.execute(&context) {
            Ok(cel::Value::Bool(send)) => skip |= !send,
            other => return Err(format!("{name} gave {other:?}")),
        }
    }
    Ok(skip)
}

fn review_of(request: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// The server's answer: whether it patches or warns.
fn server_patches_or_warns(maps: &Engine, secrets: &PullSecrets, body: &Value) -> (bool, bool) {
    let mut bytes = serde_json::to_vec(body).unwrap();
    let decider = |image: &str| ImageDecision::from(maps.decide(image));
    let options = Options {
        disable_label: LABEL,
        shadow: false,
        deadline: None,
    };
    let admission = admission::decide(&mut bytes, &options, secrets, &decider)
        .unwrap()
        .answer(&[]);
    let answer: Value = serde_json::from_slice(&admission.body).unwrap();
    let response = &answer["response"];
    (
        response.get("patch").is_some(),
        response.get("warnings").is_some(),
    )
}

#[test]
fn a_review_cel_skips_is_never_one_the_server_patches() {
    let counts = Counts::default();
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    let case = (
        maps(),
        keep(),
        pull_secrets(),
        prop::collection::vec(review(), 1..8),
    );
    let result = runner.run(&case, |(maps_text, keep, secrets, reviews)| {
        let maps = MapsFile::parse(&maps_text);
        let (engine, _) = Engine::from_maps_file(&maps);
        let engine = engine.keeping(&keep);
        let secrets = PullSecrets::parse_setting(&secrets).unwrap();
        let generated = conditions::generate(&Inputs {
            maps: Some(&maps),
            keep: &keep,
            pull_secrets: &secrets,
            disable_label: LABEL,
        });
        let programs = compile(&generated);
        for (object, old) in reviews {
            let request = pod_request(&object, old.as_ref());
            let skip = cel_skips(&programs, &request)
                .map_err(|e| TestCaseError::fail(format!("{e} for {object} (maps: {maps_text:?})")))?;
            let body = review_of(&request);
            let (patches, warns) = server_patches_or_warns(&engine, &secrets, &body);
            counts.reviews.fetch_add(1, Ordering::Relaxed);
            if !patches && !warns {
                counts.no_patch.fetch_add(1, Ordering::Relaxed);
                if skip {
                    counts.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if skip && (patches || warns) {
                return Err(TestCaseError::fail(format!(
                    "CEL skips a review the server {}: {object}\nold: {old:?}\nmaps: {maps_text:?}\nkeep: {keep:?}\nconditions: {generated:#?}",
                    if patches { "patches" } else { "warns about" }
                )));
            }
        }
        Ok(())
    });
    result.unwrap();
    let reviews = counts.reviews.load(Ordering::Relaxed);
    let no_patch = counts.no_patch.load(Ordering::Relaxed);
    let skipped = counts.skipped.load(Ordering::Relaxed);
    println!(
        "{reviews} reviews, {no_patch} with no patch, CEL skips {skipped} of them ({:.1}%)",
        100.0 * skipped as f64 / no_patch.max(1) as f64
    );
    assert!(reviews >= 5000, "{reviews} reviews");
    // The generated maps often swap every image; the skipped share is of the
    // reviews that need nothing, and it must be a real share.
    assert!(
        skipped * 2 >= no_patch,
        "CEL skips only {skipped} of {no_patch} no-patch reviews"
    );
}

/// Pods with hundreds of containers: every condition evaluates without an
/// error (no recursion, no unguarded field), skips the pod whose images are
/// all on the mirror and its label-only UPDATE, and sends the one whose last
/// image needs a swap.
#[test]
fn pods_with_hundreds_of_containers_evaluate_and_skip() {
    let maps = MapsFile::parse("default::mirror.example\nmirror.example::\nquay.io::\n");
    let generated = conditions::generate(&Inputs {
        maps: Some(&maps),
        keep: &["auto".to_owned()],
        pull_secrets: &PullSecrets::parse_setting("mirror.example=mirror-pull").unwrap(),
        disable_label: LABEL,
    });
    let containers = |last: &str| -> Value {
        let mut list: Vec<Value> = (0..400)
            .map(|i| json!({"name": format!("c{i}"), "image": format!("mirror.example/app{i}:1")}))
            .collect();
        list.push(json!({"name": "last", "image": last}));
        Value::Array(list)
    };
    let pod = |last: &str| {
        json!({"kind": "Pod", "metadata": {"name": "big"}, "spec": {
            "containers": containers(last), "initContainers": containers("auto"),
            "imagePullSecrets": [{"name": "mirror-pull"}]}})
    };
    let programs = compile(&generated);
    let skips =
        |object: &Value, old: Option<&Value>| cel_skips(&programs, &pod_request(object, old)).unwrap();
    assert!(skips(&pod("quay.io/org/tool:1"), None));
    assert!(!skips(&pod("ghcr.io/org/tool:1"), None));
    let mut relabelled = pod("ghcr.io/org/tool:1");
    relabelled["metadata"]["labels"] = json!({"team": "a"});
    assert!(skips(&relabelled, Some(&pod("ghcr.io/org/tool:1"))));
    assert!(!skips(
        &pod("ghcr.io/org/tool:2"),
        Some(&pod("ghcr.io/org/tool:1"))
    ));
}

/// The load test's images (loadtest/lib/images.js, its fixed pool) with
/// whether the load test's maps swap each.
fn load_test_images() -> Vec<(String, bool)> {
    let text = include_str!("../../../loadtest/lib/images.js");
    let digest = |name: &str| {
        let start = text.find(&format!("const {name} = '")).unwrap() + name.len() + 10;
        text[start..start + 71].to_owned()
    };
    let (a, b) = (digest("DIGEST_A"), digest("DIGEST_B"));
    let pool = &text[text.find("export const POOL").unwrap()..text.find("export const UNIQUE_POOL").unwrap()];
    let mut images = Vec::new();
    for entry in pool.split('[').skip(2) {
        let Some((image, rest)) = entry[1..].split_once(['\'', '`']) else {
            continue;
        };
        let image = image.replace("${DIGEST_A}", &a).replace("${DIGEST_B}", &b);
        images.push((image, rest.starts_with(", true")));
    }
    images
}

/// The load test's maps and keep list, the engine they make, and the
/// conditions generated from them.
fn load_test_setup() -> (Engine, Vec<conditions::MatchCondition>) {
    let maps_text = include_str!("../../../loadtest/imageswap-maps.conf");
    let maps = MapsFile::parse(maps_text);
    let keep = vec!["auto".to_owned()];
    let engine = Engine::from_maps_file(&maps).0.keeping(&keep);
    let generated = conditions::generate(&Inputs {
        maps: Some(&maps),
        keep: &keep,
        pull_secrets: &PullSecrets::NONE,
        disable_label: LABEL,
    });
    (engine, generated)
}

/// Issue 22's realistic mix: the load test's image pool; 50 % pod CREATEs
/// drawn from the pool (1 to 4 containers), 20 % CREATEs of pods already on
/// the mirror (a re-invocation, or pods of a template already swapped: each
/// image replaced by the server's own result), 30 % pod UPDATEs that change
/// only labels. The requests, in a fixed order (a fixed seed).
fn load_test_mix(engine: &Engine, images: &[(String, bool)], reviews: usize) -> Vec<Value> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    (0..reviews)
        .map(|_| {
            let count = 1 + next(4);
            let mut containers: Vec<String> =
                (0..count).map(|_| images[next(images.len())].0.clone()).collect();
            let kind = next(10);
            if (5..7).contains(&kind) {
                for image in &mut containers {
                    if let Some(result) = engine.decide(image).result {
                        *image = result;
                    }
                }
            }
            let labels = if kind >= 7 {
                json!({"app": "a", "rollout": "2"})
            } else {
                json!({"app": "a"})
            };
            let object = pod_of(&containers, labels);
            let old = (kind >= 7).then(|| pod_of(&containers, json!({"app": "a"})));
            pod_request(&object, old.as_ref())
        })
        .collect()
}

/// A Pod with these images, its containers named c0, c1, ….
fn pod_of(images: &[String], labels: Value) -> Value {
    let list: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({"kind": "Pod", "metadata": {"name": "p", "labels": labels}, "spec": {"containers": list}})
}

/// Issue 22's measure, on the realistic mix of [`load_test_mix`]: prints the
/// share of all admissions, and of those with no patch, that the API server
/// would skip; every skip is checked against the server's answer.
#[test]
fn on_the_load_test_mix_most_calls_that_need_nothing_are_skipped() {
    let images = load_test_images();
    assert!(images.len() > 50, "{images:?}");
    let (engine, generated) = load_test_setup();
    for (image, swapped) in &images {
        assert_eq!(
            engine.decide(image).changed(),
            *swapped,
            "{image}: images.js disagrees with the engine"
        );
    }
    let secrets = PullSecrets::NONE;
    let programs = compile(&generated);
    let (mut total, mut skipped, mut no_patch, mut skipped_no_patch) = (0, 0, 0, 0);
    for request in load_test_mix(&engine, &images, 5_000) {
        let skip = cel_skips(&programs, &request).unwrap();
        let (patches, warns) = server_patches_or_warns(&engine, &secrets, &review_of(&request));
        assert!(
            !(skip && (patches || warns)),
            "CEL skips a review the server changes: {request}"
        );
        total += 1;
        skipped += usize::from(skip);
        if !patches {
            no_patch += 1;
            skipped_no_patch += usize::from(skip);
        }
    }
    println!(
        "load-test mix: {total} admissions, {skipped} skipped ({:.1}%); {no_patch} need no patch, {skipped_no_patch} of them skipped ({:.1}%)",
        100.0 * skipped as f64 / total as f64,
        100.0 * skipped_no_patch as f64 / no_patch as f64
    );
    // The UPDATEs alone are 30 % of the mix and all skipped.
    assert!(skipped * 10 >= total * 3, "{skipped} of {total}");
}

/// The API server's budget for one webhook's matchConditions on one object
/// (`RuntimeCELCostBudgetMatchConditions`, k8s.io/apiserver/pkg/apis/cel).
const MATCH_CONDITIONS_BUDGET: u64 = 2_500_000;
/// Its limit for one expression (`PerCallLimit`).
const PER_CALL_LIMIT: u64 = 1_000_000;

/// The cost of evaluating every condition on `request` (the API server
/// evaluates them all, against one budget), each result checked against the
/// `cel` crate's; with the cost of the dearest condition.
fn review_cost(programs: &[(String, cel::Program)], request: &Value) -> (u64, u64) {
    let roots = [
        ("object", &request["object"]),
        ("oldObject", &request["oldObject"]),
        ("request", request),
    ];
    let (mut total, mut dearest) = (0, 0);
    for (name, program) in programs {
        let (value, cost) = cel_cost::evaluate(program.expression(), &roots)
            .unwrap_or_else(|e| panic!("{name}: cannot cost {e} on {request}"));
        let mut context = cel::Context::default();
        for (variable, value) in roots {
            context.add_variable_from_value(variable, cel::to_value(value).unwrap());
        }
        let expected = match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{name} gave {other:?}"),
        };
        assert_eq!(
            value,
            Value::Bool(expected),
            "{name}: the costing evaluator disagrees on {request}"
        );
        total += cost;
        dearest = dearest.max(cost);
    }
    (total, dearest)
}

/// Issue 22's measure, the cost: the API server's runtime cost of the
/// generated conditions (neither the `cel` crate nor cel-python reports one,
/// so `cel_cost` computes it by cel-go's rules), per review of the load-test
/// mix, and for pods of 4 and 300 containers in their dearest realistic
/// shape (every image on the mirror by its last proved prefix, so no
/// condition stops early; an UPDATE that changes only labels, so both image
/// lists are built and compared). Printed, and held far inside the budget.
#[test]
fn the_conditions_cost_stays_far_inside_the_api_servers_budget() {
    let images = load_test_images();
    let (engine, generated) = load_test_setup();
    let programs = compile(&generated);
    // The first 1,000 reviews of the mix (the costing evaluator is slow in a
    // debug build; the shares of the kinds of review are the same).
    let mix = load_test_mix(&engine, &images, 1_000);
    let costs: Vec<u64> = mix.iter().map(|r| review_cost(&programs, r).0).collect();
    let mean = costs.iter().sum::<u64>() as f64 / costs.len() as f64;
    let mut sorted = costs.clone();
    sorted.sort_unstable();
    println!(
        "cost per review, load-test mix ({} reviews): mean {mean:.0}, median {}, p99 {}, max {}",
        costs.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 99 / 100],
        sorted[sorted.len() - 1]
    );
    for containers in [4, 300] {
        // The maps' last proved prefix, with a port: the dearest way to be stable.
        let mirror: Vec<String> = (0..containers)
            .map(|i| format!("registry.local:5000/platform/service-{i:03}:1.2.3"))
            .collect();
        assert!(mirror.iter().all(|image| !engine.decide(image).changed()));
        let create = pod_request(&pod_of(&mirror, json!({"app": "a"})), None);
        let update = pod_request(
            &pod_of(&mirror, json!({"app": "a", "rollout": "2"})),
            Some(&pod_of(&mirror, json!({"app": "a"}))),
        );
        for (what, request) in [("CREATE", &create), ("label-only UPDATE", &update)] {
            let (total, dearest) = review_cost(&programs, request);
            println!(
                "cost, a pod of {containers} containers, {what}: {total} ({:.2}% of the budget {MATCH_CONDITIONS_BUDGET}; dearest condition {dearest}, {:.2}% of the per-call limit {PER_CALL_LIMIT})",
                100.0 * total as f64 / MATCH_CONDITIONS_BUDGET as f64,
                100.0 * dearest as f64 / PER_CALL_LIMIT as f64,
            );
            assert!(
                total * 10 < MATCH_CONDITIONS_BUDGET,
                "{total}: within a tenth of the budget"
            );
        }
    }
}
