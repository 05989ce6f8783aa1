//! The MutatingWebhookConfiguration (spec §2): read the template, set the
//! named webhook's `clientConfig.caBundle`, then create the object, update it
//! when it differs from the template in any field the template sets, or leave
//! it alone when it matches.
//!
//! Why GET, compare, PUT and not server-side apply: every replica runs this on
//! every start, and "no drift" must cost no write. An apply that changes
//! nothing is still a PATCH through admission and audit on the API server;
//! here an object in sync costs exactly one GET. The comparison is "the
//! template is a subset of the live object", so fields the API server defaults
//! (`matchPolicy`, `timeoutSeconds`, selectors) or others add (labels,
//! annotations) never count as drift. The update merges the template into the
//! live object and PUTs it with the `resourceVersion` that was read; a `409`
//! means another replica updated it, so the loop reads and compares again.
//! What apply would do and this does not: prune a field that was removed
//! from the template (edit or delete the object by hand in that case).
//!
//! Template compatibility with the original: its `caBundle: $CA_BUNDLE`
//! placeholder (not base64) on the named webhook is dropped before parsing,
//! and `admissionReviewVersions: "v1"` (a string, where the API has a list) is
//! read as `["v1"]`.

use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MatchCondition, MutatingWebhookConfiguration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::api::{Api, PostParams};
use serde_json::Value;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::api_error::ApiError;
use super::settings::InitSettings;
use crate::conditions;

/// Create/update conflicts with other replicas settle in a round or two.
const MAX_ROUNDS: usize = 5;
/// The label the API server sets on every namespace (Kubernetes 1.22+).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Never sent to the webhook, with ImageSwap's own namespace.
const KUBE_SYSTEM: &str = "kube-system";
const KIND: &str = "MutatingWebhookConfiguration";

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error(
        "cannot read the webhook configuration template {path}: {source} (set IMAGESWAP_MWC_TEMPLATE, or IMAGESWAP_DISABLE_AUTO_MWC=true)"
    )]
    ReadTemplate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook configuration template {path} is not a valid {KIND}: {reason}")]
    ParseTemplate { path: PathBuf, reason: String },
    #[error(
        "the webhook configuration template {path} has no webhook named {name:?} (it has: {found}): \
         fix the template or set IMAGESWAP_WEBHOOK_NAME"
    )]
    WebhookMissing {
        path: PathBuf,
        name: String,
        found: String,
    },
    #[error("cannot {action} MutatingWebhookConfiguration {name}: {source}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error(
        "MutatingWebhookConfiguration {name} kept changing under {rounds} attempts to update it: find what else writes it"
    )]
    Unsettled { name: String, rounds: usize },
}

/// What happened to the live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MwcOutcome {
    /// `IMAGESWAP_DISABLE_AUTO_MWC`: not looked at.
    Disabled,
    Created,
    Updated,
    Unchanged,
    /// `--watch` found no object and left it so: after the first pass a
    /// deletion is deliberate (`helm uninstall`'s hook, break glass), and a
    /// sidecar putting it back would leave a webhook calling a Service that
    /// is gone. A pod start (`init`) creates it again.
    Absent,
}

/// Whether [`ensure_by`] creates a missing object (`init`) or leaves it
/// missing (`--watch`, see [`MwcOutcome::Absent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMissing {
    Create,
    Leave,
}

/// The `caBundle` of the webhook `webhook_name` in `mwc` (the live object).
pub fn ca_bundle_of(mwc: Option<&MutatingWebhookConfiguration>, webhook_name: &str) -> Option<Vec<u8>> {
    mwc.and_then(|mwc| mwc.webhooks.as_ref())
        .and_then(|hooks| hooks.iter().find(|hook| hook.name == webhook_name))
        .and_then(|hook| hook.client_config.ca_bundle.as_ref())
        .map(|bundle| bundle.0.clone())
}

/// The live `caBundle` of the webhook `webhook_name` in the object `name`
/// (`None` when either is missing): what the API server trusts right now.
pub async fn live_ca_bundle(
    client: &kube::Client,
    name: &str,
    webhook_name: &str,
) -> Result<Option<Vec<u8>>, WebhookError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let live = api.get_opt(name).await.map_err(|source| WebhookError::Api {
        action: "read",
        name: name.to_owned(),
        source: ApiError(source),
    })?;
    Ok(ca_bundle_of(live.as_ref(), webhook_name))
}

/// The parsed template, its named webhook found, no CA yet.
#[derive(Clone, Debug)]
pub struct Template {
    mwc: MutatingWebhookConfiguration,
    webhook_index: usize,
}

impl Template {
    /// Reads and checks the template file named in the settings, with the
    /// generated matchConditions (when the settings name their source)
    /// merged into the named webhook.
    pub fn load(settings: &InitSettings) -> Result<Self, WebhookError> {
        let template = Self::load_template(settings)?;
        Ok(match &settings.conditions {
            Some(source) => template.with_conditions(&source.generate_or_fewer()),
            None => template,
        })
    }

    fn load_template(settings: &InitSettings) -> Result<Self, WebhookError> {
        let text =
            std::fs::read_to_string(&settings.mwc_template).map_err(|source| WebhookError::ReadTemplate {
                path: settings.mwc_template.clone(),
                source,
            })?;
        let template = Self::parse(
            &text,
            &settings.mwc_template,
            &settings.webhook_name,
            &settings.mwc_name,
        )?;
        Ok(template.excluding_namespaces(&[KUBE_SYSTEM, &settings.namespace]))
    }

    /// The template whose named webhook never selects `namespaces`: their
    /// names are added to a `kubernetes.io/metadata.name NotIn` expression
    /// of its `namespaceSelector` (the template's own one, or a new one
    /// after its others) unless it lists them already. Whatever selector an
    /// operator writes, an opt-out one included, ImageSwap then never gates
    /// the control plane's add-ons or its own restart (a labelled own
    /// namespace with `failurePolicy: Fail` would leave no pod to answer).
    /// The API server ANDs the expressions, so the rest of the selector keeps
    /// its meaning.
    pub fn excluding_namespaces(mut self, namespaces: &[&str]) -> Self {
        let Some(hook) = self
            .mwc
            .webhooks
            .as_mut()
            .and_then(|hooks| hooks.get_mut(self.webhook_index))
        else {
            return self;
        };
        let selector = hook.namespace_selector.get_or_insert_with(Default::default);
        let expressions = selector.match_expressions.get_or_insert_with(Vec::new);
        let position = expressions
            .iter()
            .position(|e| e.key == NAMESPACE_NAME_LABEL && e.operator == "NotIn");
        let index = position.unwrap_or_else(|| {
            expressions.push(LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(Vec::new()),
            });
            expressions.len() - 1
        });
        let values = expressions[index].values.get_or_insert_with(Vec::new);
        let missing: Vec<&str> = namespaces
            .iter()
            .copied()
            .filter(|name| !values.iter().any(|v| v == name))
            .collect();
        if !missing.is_empty() {
            info!(
                namespaces = %missing.join(","),
                "The template's namespaceSelector selects these namespaces; excluding them from the webhook."
            );
            values.extend(missing.iter().map(|name| (*name).to_owned()));
        }
        self
    }

    /// Parses template text; `path` only names it in errors. The object is
    /// named `mwc_name` whatever the template says.
    pub fn parse(text: &str, path: &Path, webhook_name: &str, mwc_name: &str) -> Result<Self, WebhookError> {
        let parse_error = |reason: String| WebhookError::ParseTemplate {
            path: path.to_owned(),
            reason,
        };
        let mut value: Value =
            serde_saphyr::from_str(text).map_err(|err| parse_error(one_line(&err.to_string())))?;
        let Some(object) = value.as_object_mut() else {
            return Err(parse_error("expected a YAML mapping".to_owned()));
        };
        if let Some(kind) = object.get("kind").and_then(Value::as_str)
            && kind != KIND
        {
            return Err(parse_error(format!("its kind is {kind}")));
        }
        let webhooks = object
            .get_mut("webhooks")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| parse_error("it has no \"webhooks\" list".to_owned()))?;
        let names: Vec<String> = webhooks
            .iter()
            .map(|hook| hook.get("name").and_then(Value::as_str).unwrap_or("").to_owned())
            .collect();
        let Some(webhook_index) = names.iter().position(|name| name == webhook_name) else {
            return Err(WebhookError::WebhookMissing {
                path: path.to_owned(),
                name: webhook_name.to_owned(),
                found: if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
            });
        };
        for (index, hook) in webhooks.iter_mut().enumerate() {
            let Some(hook) = hook.as_object_mut() else {
                continue;
            };
            if index == webhook_index
                && let Some(client_config) = hook.get_mut("clientConfig").and_then(Value::as_object_mut)
            {
                client_config.remove("caBundle");
            }
            if let Some(Value::String(version)) = hook.get("admissionReviewVersions") {
                let list = Value::Array(vec![Value::String(version.clone())]);
                hook.insert("admissionReviewVersions".to_owned(), list);
            }
        }

        let mut mwc: MutatingWebhookConfiguration =
            serde_json::from_value(value).map_err(|err| parse_error(err.to_string()))?;
        if let Some(name) = mwc.metadata.name.as_deref()
            && name != mwc_name
        {
            info!(template = %name, mwc = %mwc_name, "The template names another object; using IMAGESWAP_MWC_NAME.");
        }
        // A template exported from a cluster carries server bookkeeping that
        // a create or a comparison must not see.
        let metadata = &mut mwc.metadata;
        metadata.name = Some(mwc_name.to_owned());
        metadata.resource_version = None;
        metadata.uid = None;
        metadata.creation_timestamp = None;
        metadata.generation = None;
        metadata.managed_fields = None;
        metadata.self_link = None;
        Ok(Self { mwc, webhook_index })
    }

    /// The template with `generated` added to the named webhook's
    /// `matchConditions`: the template's own first, and theirs win on a name
    /// clash (an operator's condition is never overwritten). Equal inputs
    /// give an equal list, so a sidecar in sync writes nothing.
    pub fn with_conditions(mut self, generated: &[conditions::MatchCondition]) -> Self {
        if let Some(hook) = self
            .mwc
            .webhooks
            .as_mut()
            .and_then(|hooks| hooks.get_mut(self.webhook_index))
        {
            let own: Vec<conditions::MatchCondition> = hook
                .match_conditions
                .iter()
                .flatten()
                .map(|c| conditions::MatchCondition {
                    name: c.name.clone(),
                    expression: c.expression.clone(),
                })
                .collect();
            let merged = conditions::merge(&own, generated);
            hook.match_conditions = (!merged.is_empty()).then(|| {
                merged
                    .into_iter()
                    .map(|c| MatchCondition {
                        name: c.name,
                        expression: c.expression,
                    })
                    .collect()
            });
        }
        self
    }

    /// The desired object: the template with the CA bundle (PEM) set.
    pub fn with_ca_bundle(&self, ca_pem: &[u8]) -> MutatingWebhookConfiguration {
        let mut mwc = self.mwc.clone();
        if let Some(hook) = mwc
            .webhooks
            .as_mut()
            .and_then(|hooks| hooks.get_mut(self.webhook_index))
        {
            hook.client_config.ca_bundle = Some(ByteString(ca_pem.to_vec()));
        }
        mwc
    }
}

/// Creates, updates or leaves the live object so that it matches `desired`.
pub async fn ensure(
    client: &kube::Client,
    desired: &MutatingWebhookConfiguration,
) -> Result<MwcOutcome, WebhookError> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let outcome = ensure_by(client, &name, IfMissing::Create, |_| desired.clone()).await?;
    if outcome == MwcOutcome::Unchanged {
        info!(mwc = %name, "The webhook configuration matches the template.");
    }
    Ok(outcome)
}

/// [`ensure`] where what is desired depends on the live object (`None` when
/// there is none), read afresh in every round: `--watch` keeps a retiring CA
/// in the `caBundle` only while the live object still carries it. Logs what
/// it writes; an object in sync is left without a word (`--watch` looks every
/// minute).
pub async fn ensure_by(
    client: &kube::Client,
    name: &str,
    if_missing: IfMissing,
    mut desire: impl FnMut(Option<&MutatingWebhookConfiguration>) -> MutatingWebhookConfiguration,
) -> Result<MwcOutcome, WebhookError> {
    let name = name.to_owned();
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let api_error = |action: &'static str| {
        let name = name.clone();
        move |source: kube::Error| WebhookError::Api {
            action,
            name,
            source: ApiError(source),
        }
    };
    for _ in 0..MAX_ROUNDS {
        let live = api.get_opt(&name).await.map_err(api_error("read"))?;
        let desired = desire(live.as_ref());
        let wanted = to_value(&desired);
        let Some(live) = live else {
            if if_missing == IfMissing::Leave {
                return Ok(MwcOutcome::Absent);
            }
            match api
                .create(&PostParams::default(), &desired)
                .await
                .map_err(ApiError)
            {
                Ok(_) => {
                    info!(mwc = %name, "Created the webhook configuration.");
                    return Ok(MwcOutcome::Created);
                }
                Err(err) if err.is_already_exists() => continue,
                Err(source) => {
                    return Err(WebhookError::Api {
                        action: "create",
                        name,
                        source,
                    });
                }
            }
        };
        let live = to_value(&live);
        if is_subset(&wanted, &live) {
            debug!(mwc = %name, "The webhook configuration matches the template.");
            return Ok(MwcOutcome::Unchanged);
        }
        let merged: MutatingWebhookConfiguration = match serde_json::from_value(merge(live, &wanted)) {
            Ok(merged) => merged,
            // Cannot happen for two valid objects; fall back to the template,
            // which at worst drops fields the template does not set.
            Err(err) => {
                warn!(mwc = %name, error = %err, "Cannot merge the template into the live object; replacing it.");
                desired
            }
        };
        match api
            .replace(&name, &PostParams::default(), &merged)
            .await
            .map_err(ApiError)
        {
            Ok(_) => {
                info!(mwc = %name, "Updated the webhook configuration to match the template.");
                return Ok(MwcOutcome::Updated);
            }
            Err(err) if err.is_conflict() || err.is_not_found() => continue,
            Err(source) => {
                return Err(WebhookError::Api {
                    action: "update",
                    name,
                    source,
                });
            }
        }
    }
    Err(WebhookError::Unsettled {
        name,
        rounds: MAX_ROUNDS,
    })
}

fn to_value(mwc: &MutatingWebhookConfiguration) -> Value {
    // Serializing a k8s-openapi object cannot fail (string keys, no NaN).
    serde_json::to_value(mwc).unwrap_or(Value::Null)
}

/// Whether every field set in `wanted` has the same value in `live`: maps
/// key by key, lists element by element with the same length (so a list the
/// template sets is matched whole), scalars by equality.
pub fn is_subset(wanted: &Value, live: &Value) -> bool {
    match (wanted, live) {
        (Value::Object(wanted), Value::Object(live)) => wanted
            .iter()
            .all(|(key, value)| live.get(key).is_some_and(|live| is_subset(value, live))),
        (Value::Array(wanted), Value::Array(live)) => {
            wanted.len() == live.len()
                && wanted
                    .iter()
                    .zip(live)
                    .all(|(wanted, live)| is_subset(wanted, live))
        }
        (wanted, live) => wanted == live,
    }
}

/// `live` with every field `wanted` sets taken from `wanted`: maps merge,
/// lists and scalars are replaced.
pub fn merge(live: Value, wanted: &Value) -> Value {
    match (live, wanted) {
        (Value::Object(mut live), Value::Object(wanted)) => {
            for (key, value) in wanted {
                let merged = match live.remove(key) {
                    Some(existing) => merge(existing, value),
                    None => value.clone(),
                };
                live.insert(key.clone(), merged);
            }
            Value::Object(live)
        }
        (_, wanted) => wanted.clone(),
    }
}

/// Parser errors can span lines (a snippet with a caret); the failure line
/// must stay one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ORIGINAL: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: imageswap-webhook
  labels:
    app: imageswap
webhooks:
  - name: imageswap.webhook.k8s.twr.io
    clientConfig:
      service:
        name: imageswap
        namespace: imageswap-system
        path: "/"
      caBundle: $CA_BUNDLE
    rules:
      - operations: [CREATE, UPDATE]
        apiGroups: ["*"]
        apiVersions: ["*"]
        resources: ["pods"]
    sideEffects: None
    admissionReviewVersions: "v1"
    failurePolicy: Fail
    reinvocationPolicy: IfNeeded
    namespaceSelector:
      matchLabels:
        k8s.twr.io/imageswap: "enabled"
"#;

    fn parse(text: &str, webhook: &str) -> Result<Template, WebhookError> {
        Template::parse(text, Path::new("t.yaml"), webhook, "imageswap-webhook")
    }

    #[test]
    fn the_originals_template_parses_and_takes_the_ca() {
        let template = parse(ORIGINAL, "imageswap.webhook.k8s.twr.io").unwrap();
        let mwc = template.with_ca_bundle(b"PEM");
        let hook = &mwc.webhooks.as_ref().unwrap()[0];
        assert_eq!(hook.client_config.ca_bundle, Some(ByteString(b"PEM".to_vec())));
        assert_eq!(hook.admission_review_versions, ["v1"]);
        let value = to_value(&mwc);
        assert_eq!(value["webhooks"][0]["clientConfig"]["caBundle"], "UEVN");
    }

    #[test]
    fn a_missing_webhook_is_named_with_what_is_there() {
        let err = parse(ORIGINAL, "other.example.com").unwrap_err();
        let line = err.to_string();
        assert!(line.contains("no webhook named \"other.example.com\""), "{line}");
        assert!(line.contains("it has: imageswap.webhook.k8s.twr.io"), "{line}");
    }

    #[test]
    fn bad_templates_fail_in_one_line() {
        for text in [
            "webhooks: [",
            "- a\n- b\n",
            "kind: Secret\nwebhooks: []\n",
            "metadata: {}\n",
        ] {
            let err = parse(text, "x").unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(
                err.starts_with("the webhook configuration template t.yaml"),
                "{err}"
            );
        }
    }

    fn namespace_selector(template: Template) -> serde_json::Value {
        to_value(&template.with_ca_bundle(b"PEM"))["webhooks"][0]["namespaceSelector"].clone()
    }

    #[test]
    fn kube_system_and_the_own_namespace_are_excluded_from_any_selector() {
        // The original's opt-in selector: the expression is added beside it.
        let template = parse(ORIGINAL, "imageswap.webhook.k8s.twr.io").unwrap();
        assert_eq!(
            namespace_selector(template.excluding_namespaces(&["kube-system", "swap"])),
            json!({"matchLabels": {"k8s.twr.io/imageswap": "enabled"}, "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "swap"]}]})
        );
        // An opt-out selector with its own exclusions: merged into them, once.
        let opt_out = ORIGINAL.replace(
            "      matchLabels:\n        k8s.twr.io/imageswap: \"enabled\"\n",
            "      matchExpressions:\n        - {key: k8s.twr.io/imageswap, operator: NotIn, values: [disabled]}\n        \
             - {key: kubernetes.io/metadata.name, operator: NotIn, values: [monitoring, swap]}\n",
        );
        let template = parse(&opt_out, "imageswap.webhook.k8s.twr.io").unwrap();
        let twice = template
            .excluding_namespaces(&["kube-system", "swap"])
            .excluding_namespaces(&["kube-system", "swap"]);
        assert_eq!(
            namespace_selector(twice),
            json!({"matchExpressions": [
                {"key": "k8s.twr.io/imageswap", "operator": "NotIn", "values": ["disabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": ["monitoring", "swap", "kube-system"]}]})
        );
        // No selector at all (every namespace): one that excludes the two.
        let every = ORIGINAL.replace(
            "    namespaceSelector:\n      matchLabels:\n        k8s.twr.io/imageswap: \"enabled\"\n",
            "",
        );
        let template = parse(&every, "imageswap.webhook.k8s.twr.io").unwrap();
        assert_eq!(
            namespace_selector(template.excluding_namespaces(&["kube-system", "imageswap-system"])),
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                         "values": ["kube-system", "imageswap-system"]}]})
        );
    }

    #[test]
    fn server_defaults_are_not_drift() {
        let wanted = json!({"a": {"b": [1, {"c": 2}]}, "d": "x"});
        let live = json!({"a": {"b": [1, {"c": 2, "defaulted": true}], "more": 1}, "d": "x", "e": 0});
        assert!(is_subset(&wanted, &live));
        assert!(!is_subset(&json!({"d": "y"}), &live));
        assert!(!is_subset(&json!({"a": {"b": [1]}}), &live));
        assert!(!is_subset(&json!({"missing": 1}), &live));
    }

    #[test]
    fn merge_keeps_live_fields_and_takes_the_template() {
        let live = json!({"metadata": {"name": "m", "resourceVersion": "7"}, "webhooks": [{"old": 1}]});
        let wanted = json!({"metadata": {"name": "m", "labels": {"app": "x"}}, "webhooks": [{"new": 2}]});
        assert_eq!(
            merge(live, &wanted),
            json!({"metadata": {"name": "m", "resourceVersion": "7", "labels": {"app": "x"}}, "webhooks": [{"new": 2}]})
        );
    }
}
