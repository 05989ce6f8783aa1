//! The Helm chart's `webhook.excludeSelectors` (issue 22): the CEL
//! matchConditions it renders (tests/fixtures/helm/exclude-selectors.yaml,
//! which scripts/check-helm.py holds equal to what the real Helm engine
//! renders) evaluated by a CEL implementation (the `cel` crate) over
//! generated pods: each condition is false exactly when the pod's labels
//! match its selector by Kubernetes' label-selector rules (so the pod is not
//! sent), never errors, and a pod without labels or metadata is handled as
//! the API server would (NotIn and DoesNotExist match it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::support::read;

/// One requirement of a label selector, as the API defines them.
#[derive(Debug)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Self::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
        }
    }

    fn key(&self) -> &str {
        match self {
            Self::In(key, _) | Self::NotIn(key, _) | Self::Exists(key) | Self::DoesNotExist(key) => key,
        }
    }
}

struct Exclusion {
    name: String,
    requirements: Vec<Requirement>,
    program: cel::Program,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fixture's selectors, each with the condition the chart renders for it.
fn exclusions() -> Vec<Exclusion> {
    let fixture: Value =
        serde_saphyr::from_str(&read("tests/fixtures/helm/exclude-selectors.yaml")).expect("fixture is YAML");
    let selectors = fixture["excludeSelectors"].as_array().expect("excludeSelectors");
    let conditions = fixture["matchConditions"].as_array().expect("matchConditions");
    assert_eq!(selectors.len(), conditions.len(), "one condition per selector");
    selectors
        .iter()
        .zip(conditions)
        .map(|(selector, condition)| {
            let name = selector["name"].as_str().expect("name").to_owned();
            assert_eq!(condition["name"], format!("exclude-{name}"));
            let mut requirements: Vec<Requirement> = selector["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.as_str().expect("value").to_owned()]))
                .collect();
            for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
                let key = expression["key"].as_str().expect("key").to_owned();
                let values = strings(&expression["values"]);
                requirements.push(match expression["operator"].as_str().expect("operator") {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => panic!("operator {other}"),
                });
            }
            let expression = condition["expression"].as_str().expect("expression");
            let program = cel::Program::compile(expression)
                .unwrap_or_else(|e| panic!("exclude-{name} does not compile: {e:?}\n{expression}"));
            Exclusion {
                name,
                requirements,
                program,
            }
        })
        .collect()
}

/// Whether the API server sends the pod, by this condition (an error is a
/// test failure: with failurePolicy Fail it would reject the pod).
fn sends(exclusion: &Exclusion, object: &Value) -> Result<bool, String> {
    let mut context = cel::Context::default();
    context.add_variable_from_value("object", cel::to_value(object).map_err(|e| e.to_string())?);
    context.add_variable_from_value("oldObject", cel::Value::Null);
    match exclusion.program.execute(&context) {
        Ok(cel::Value::Bool(send)) => Ok(send),
        other => Err(format!("exclude-{} gave {other:?} on {object}", exclusion.name)),
    }
}

fn pod(labels: Option<&BTreeMap<String, String>>) -> Value {
    let mut metadata = json!({"name": "p", "namespace": "db"});
    if let Some(labels) = labels {
        metadata["labels"] = json!(labels);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": [{"name": "c", "image": "ghcr.io/cloudnative-pg/postgresql:16"}]}})
}

#[test]
fn exclude_selectors_follow_label_selector_semantics() {
    let exclusions = exclusions();
    // Each key a selector names (and others), absent or set to a value some
    // requirement on that key names, or to another, so every requirement is
    // met and missed often.
    let mut values_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for requirement in exclusions.iter().flat_map(|e| e.requirements.iter()) {
        let values = values_of.entry(requirement.key().to_owned()).or_default();
        if let Requirement::In(_, v) | Requirement::NotIn(_, v) = requirement {
            values.extend(v.iter().cloned());
        }
    }
    values_of.insert("app".to_owned(), vec![]);
    values_of.insert("cnpg.io/instanceName".to_owned(), vec!["pg-1".to_owned()]);
    let per_key: Vec<_> = values_of
        .into_iter()
        .map(|(key, mut values)| {
            values.extend(["other".to_owned(), String::new()]);
            values.dedup();
            prop::option::of(prop::sample::select(values)).prop_map(move |v| v.map(|v| (key.clone(), v)))
        })
        .collect();
    let labels = prop::option::weighted(
        0.9,
        per_key.prop_map(|pairs| pairs.into_iter().flatten().collect::<BTreeMap<_, _>>()),
    );

    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    // Per condition: how many generated pods it excluded and sent.
    let counts: Vec<[AtomicUsize; 2]> = exclusions.iter().map(|_| Default::default()).collect();
    runner
        .run(&labels, |labels| {
            let object = pod(labels.as_ref());
            let empty = BTreeMap::new();
            let labels = labels.as_ref().unwrap_or(&empty);
            for (exclusion, count) in exclusions.iter().zip(&counts) {
                let matches = exclusion.requirements.iter().all(|r| r.matches(labels));
                let send = sends(exclusion, &object).map_err(TestCaseError::fail)?;
                prop_assert_eq!(
                    send,
                    !matches,
                    "exclude-{} on labels {:?}",
                    exclusion.name,
                    labels
                );
                count[usize::from(send)].fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    for (exclusion, [excluded, sent]) in exclusions.iter().zip(counts) {
        let (excluded, sent) = (excluded.into_inner(), sent.into_inner());
        println!(
            "exclude-{}: {excluded} generated pods excluded, {sent} sent",
            exclusion.name
        );
        assert!(
            excluded >= 30 && sent >= 30,
            "exclude-{}: both outcomes covered ({excluded} excluded, {sent} sent)",
            exclusion.name
        );
    }
}

#[test]
fn the_cloudnativepg_preset_excludes_instances_only() {
    let exclusions = exclusions();
    let cnpg = exclusions
        .iter()
        .find(|e| e.name == "cnpg")
        .expect("the CNPG preset");
    // The labels CloudNativePG puts on an instance pod.
    let instance: BTreeMap<String, String> = [
        ("cnpg.io/cluster", "pg"),
        ("cnpg.io/instanceName", "pg-1"),
        ("cnpg.io/instanceRole", "primary"),
        ("cnpg.io/podRole", "instance"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(sends(cnpg, &pod(Some(&instance))), Ok(false));
    let app: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    assert_eq!(sends(cnpg, &pod(Some(&app))), Ok(true));
    assert_eq!(sends(cnpg, &pod(None)), Ok(true), "a pod without labels is sent");
    // Not a pod at all (the object of another request kind): sent, no error.
    assert_eq!(sends(cnpg, &json!({"kind": "Scale"})), Ok(true));
    assert_eq!(sends(cnpg, &Value::Null), Ok(true));
}
