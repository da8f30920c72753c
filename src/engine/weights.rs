//! Traffic weights of the canary strategy: the next step and the promotion shift. Pure.

use crate::api::canary::CanaryAnalysis;

/// The weight added at the next step from `current` (Flagger's `nextStepWeight`): `stepWeight`,
/// or the next entry of `stepWeights`, never more than what is left to 100 (and at least 1).
pub fn next_step_weight(analysis: &CanaryAnalysis, current: i32) -> i32 {
    let step = analysis.step_weight.unwrap_or(0);
    let steps = analysis.step_weights.as_deref().unwrap_or_default();
    if step > 0 || steps.is_empty() {
        return step;
    }
    let max_step = match 100 - current {
        0 => 1,
        left => left,
    };
    if current == 0 {
        return steps[0].min(max_step);
    }
    match steps.iter().position(|w| *w == current) {
        Some(i) if i + 1 < steps.len() => (steps[i + 1] - current).min(max_step),
        _ => max_step,
    }
}

/// The weights after one promotion step: `(primary, canary)`, moving `step` back to the primary
/// (everything at once when `step` is 0).
pub fn promotion_step(primary: i32, step: i32) -> (i32, i32) {
    if step <= 0 {
        return (100, 0);
    }
    let primary = (primary + step).min(100);
    (primary, 100 - primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(step: Option<i32>, steps: Option<Vec<i32>>) -> CanaryAnalysis {
        CanaryAnalysis {
            step_weight: step,
            step_weights: steps,
            ..Default::default()
        }
    }

    #[test]
    fn next_step_weights() {
        type Case = (Option<i32>, Option<Vec<i32>>, i32, i32);
        let cases: Vec<Case> = vec![
            (Some(10), None, 0, 10),
            (Some(10), None, 30, 10),
            (Some(20), Some(vec![1, 5]), 0, 20),
            (None, Some(vec![1, 5, 10, 50]), 0, 1),
            (None, Some(vec![1, 5, 10, 50]), 1, 4),
            (None, Some(vec![1, 5, 10, 50]), 10, 40),
            (None, Some(vec![1, 5, 10, 50]), 50, 50),
            (None, Some(vec![5, 80]), 30, 70),
            (None, Some(vec![5, 100]), 100, 1),
            (None, None, 0, 0),
        ];
        for (step, steps, current, want) in cases {
            assert_eq!(
                next_step_weight(&analysis(step, steps.clone()), current),
                want,
                "step {step:?} steps {steps:?} at {current}"
            );
        }
    }

    #[test]
    fn promotion_steps() {
        assert_eq!(promotion_step(0, 0), (100, 0));
        assert_eq!(promotion_step(0, 50), (50, 50));
        assert_eq!(promotion_step(50, 50), (100, 0));
        assert_eq!(promotion_step(70, 50), (100, 0));
    }
}
