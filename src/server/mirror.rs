//! The request path's side of mirror verification (verify.md "The
//! answer"): ask the verifier about the targets of a review's changes
//! within the admission's budget, and turn each outcome, with the on-error
//! policy, into what phase 2 of the review does with the change. Each kept
//! or unverified image gets one WARN line and a count in
//! `imageswap_verify_fallbacks_total`. Nothing here changes readiness: a
//! mirror that is down costs answers, never the webhook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Change, Checked, Decided};
use crate::telemetry::metrics::Fallback;
use crate::verify::{CheckError, CheckImages, CheckOutcome, MirrorHosts, OnError};

use super::state::AppState;

/// Time kept between the end of the checks and the admission's deadline.
/// After the checks the answer is built (microseconds) and sent; the
/// deadline's own margin already covers the trip to the API server. This
/// one covers the timer that ends the wait firing late and this task
/// waiting for a worker on a saturated node (tens of milliseconds on two
/// busy cores), so the wait never pushes the answer past the deadline,
/// where the stack's timeout would answer 503 instead. The same 50 ms as
/// the deadline's smallest margin (`server::deadline`).
pub const VERIFY_ANSWER_MARGIN: Duration = Duration::from_millis(50);

/// How much longer than the budget this side's own bound of the wait
/// lasts. The verifier answers at the budget with every answer it has; if
/// this bound fired first (the same instant, or a task that ran out of
/// its cooperative budget walking ~130 pending checks), it dropped them
/// all, and a cached image was reported as timed out. Taken from the
/// answer margin, so a verifier that never answers still leaves 25 ms.
pub const VERIFY_WAIT_GRACE: Duration = Duration::from_millis(25);

/// How long this admission may wait for its checks: the verify timeout,
/// or less when the deadline leaves less (minus [`VERIFY_ANSWER_MARGIN`]).
pub fn budget(verify_timeout: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    match deadline {
        Some(deadline) => verify_timeout.min(
            deadline
                .saturating_duration_since(now)
                .saturating_sub(VERIFY_ANSWER_MARGIN),
        ),
        None => verify_timeout,
    }
}

/// Checks the targets of `decided`'s changes and says, per change, what
/// phase 2 does with it. The wait is bounded here too (a verifier that
/// never answers is answered "timeout" at the budget), whatever the
/// verifier promises.
pub async fn check(
    state: &AppState,
    verifier: &dyn CheckImages,
    decided: &Decided<'_, '_>,
    mirrors: &MirrorHosts,
    deadline: Option<Instant>,
) -> Vec<Checked> {
    let policy = state.verify_policy;
    let budget = budget(policy.timeout, deadline, Instant::now());
    let outcomes = if budget.is_zero() {
        Vec::new()
    } else {
        let targets: Vec<Arc<str>> = decided.changes.iter().map(|c| c.to.clone()).collect();
        // Only a verifier that breaks its promise meets this bound; then no
        // answer is known and every target falls to the policy.
        tokio::time::timeout(
            budget + VERIFY_WAIT_GRACE,
            verifier.check_on(targets, &decided.platforms, mirrors, budget),
        )
        .await
        .unwrap_or_default()
    };
    let mut outcomes = outcomes.into_iter();
    decided
        .changes
        .iter()
        .map(|change| {
            let outcome = outcomes
                .next()
                .unwrap_or(CheckOutcome::Error(CheckError::Timeout(budget)));
            judge(state, decided, change, outcome, policy.on_error)
        })
        .collect()
}

/// One change's fate, logged and counted when the original is kept or the
/// swap goes unverified.
fn judge(
    state: &AppState,
    decided: &Decided<'_, '_>,
    change: &Change<'_>,
    outcome: CheckOutcome,
    on_error: OnError,
) -> Checked {
    let uid = decided.request.uid;
    let container = format_args!("{}[{}]", change.field.as_str(), change.index);
    match outcome {
        CheckOutcome::Present => Checked::Present,
        CheckOutcome::Missing => {
            state.metrics.verify_fallback(Fallback::missing);
            tracing::warn!(uid, %container, image = change.from, target = %change.to,
                reason = "not in the mirror", "Kept the original image: the mirror does not have the swapped one.");
            Checked::Missing
        }
        CheckOutcome::NoPlatform(platform) => {
            state.metrics.verify_fallback(Fallback::platform);
            tracing::warn!(uid, %container, image = change.from, target = %change.to, platform = platform.as_str(),
                reason = "platform", "Kept the original image: the mirror's image lacks a platform the pod may run on.");
            Checked::MissingPlatform(platform)
        }
        CheckOutcome::Error(error) => {
            state.metrics.verify_fallback(Fallback::error);
            let reason = error.to_string();
            let keep = on_error == OnError::Keep;
            if keep {
                tracing::warn!(uid, %container, image = change.from, target = %change.to,
                    reason = reason.as_str(), "Kept the original image: its mirror check could not answer.");
            } else {
                tracing::warn!(uid, %container, image = change.from, target = %change.to,
                    reason = reason.as_str(), "Swapped an image its mirror check could not confirm.");
            }
            Checked::Unverified { reason, keep }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_timeout_or_what_the_deadline_leaves() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(budget(second, None, now), second);
        assert_eq!(budget(second, Some(now + 10 * second), now), second);
        assert_eq!(
            budget(second, Some(now + Duration::from_millis(300)), now),
            Duration::from_millis(250)
        );
        assert_eq!(
            budget(second, Some(now + Duration::from_millis(30)), now),
            Duration::ZERO
        );
        assert_eq!(
            budget(second, Some(now), now + second),
            Duration::ZERO,
            "a passed deadline"
        );
    }
}
