//! The statistics of the one-run audit: how likely `v` correct guesses out
//! of `r` are under an (ε, δ)-DP algorithm, and the largest ε that this
//! likelihood rules out.
//!
//! # The bound (Steinke, Nasr & Jagielski 2023, Theorem 5.2)
//! Let m canaries be included independently with probability ½, let the
//! auditor make r guesses (abstaining on the other m − r) from the output of
//! an (ε, δ)-DP algorithm, and let W count the correct ones. With
//! q = e^ε / (1 + e^ε) and f(v) = P[Binomial(r, q) ≥ v],
//!
//! P[W ≥ v] ≤ f(v) + 2mδ · max_{i = 1..v} (f(v − i) − f(v)) / i.
//!
//! For δ = 0 this is the stochastic dominance of W by Binomial(r, q)
//! (Theorem 3.1). The right-hand side is the p-value of observing v correct
//! guesses ([`p_value`]); the ε lower bound at confidence 1 − β is the
//! largest ε whose p-value is still below β ([`epsilon_lower_bound`]).
//!
//! The guesses (how many, and which canaries) must be fixed by a rule that
//! sees only the output and public information: searching over several
//! abstention thresholds and keeping the best bound is a multiple test and
//! voids the confidence unless it is accounted for. hush fixes the number
//! of guesses in advance.
//!
//! # Floating point
//! Binomial probabilities are summed in `f64` from log-factorials; their
//! relative error is around 1e-12 for the sizes an audit uses. Rounding
//! could make a p-value look smaller than it is, which would make the
//! reported ε larger, the unsafe direction: a p-value is only taken as below
//! β when it is below β by a relative margin of 1e-9.

use crate::error::invalid;
use crate::Result;

/// Relative margin by which a p-value must undercut β (see the module's
/// note on floating point).
const MARGIN: f64 = 1e-9;

/// No audit bound is searched beyond this ε: a bound of 64 would need about
/// e^64 guesses.
const EPSILON_CEILING: f64 = 64.0;

/// Binomial(n, q) probabilities, with q given by its logarithms so that q
/// close to 1 keeps its precision in 1 − q.
struct Binomial {
    n: usize,
    ln_q: f64,
    ln_one_minus_q: f64,
    ln_factorials: Vec<f64>,
}

impl Binomial {
    /// Binomial(n, e^ε / (1 + e^ε)): the accuracy of ε-DP randomized response.
    fn randomized_response(n: usize, epsilon: f64) -> Self {
        // ln q = −ln(1 + e^−ε), ln(1 − q) = −ε − ln(1 + e^−ε).
        let softplus = (-epsilon).exp().ln_1p();
        let mut ln_factorials = Vec::with_capacity(n + 1);
        let mut acc = 0.0f64;
        ln_factorials.push(acc);
        for k in 1..=n {
            acc += (k as f64).ln();
            ln_factorials.push(acc);
        }
        Binomial { n, ln_q: -softplus, ln_one_minus_q: -epsilon - softplus, ln_factorials }
    }

    /// P[X = k].
    fn pmf(&self, k: usize) -> f64 {
        let n = self.n;
        let lf = &self.ln_factorials;
        (lf[n] - lf[k] - lf[n - k] + k as f64 * self.ln_q + (n - k) as f64 * self.ln_one_minus_q).exp()
    }

    /// P[X ≥ k].
    fn tail(&self, k: usize) -> f64 {
        (k..=self.n).map(|j| self.pmf(j)).sum::<f64>().min(1.0)
    }
}

fn check_counts(canaries: usize, guesses: usize, correct: usize) -> Result<()> {
    if guesses > canaries {
        return invalid("guesses", format!("{guesses} guesses among {canaries} canaries: at most one guess each"));
    }
    if correct > guesses {
        return invalid("correct", format!("{correct} correct guesses out of {guesses}"));
    }
    Ok(())
}

fn check_delta(delta: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&delta) {
        return invalid("delta", format!("{delta} is not within [0, 1]"));
    }
    Ok(())
}

/// The probability that an (ε, δ)-DP algorithm lets an auditor make at
/// least `correct` correct guesses out of `guesses` about `canaries`
/// canaries, each included independently with probability ½.
///
/// # Arguments
/// - `canaries`: m, the number of canaries (included or not).
/// - `guesses`: r, how many were guessed (the rest abstained), r ≤ m.
/// - `correct`: v, how many guesses were right, v ≤ r.
/// - `epsilon`, `delta`: the guarantee under test (the null hypothesis).
///
/// # Privacy
/// The right-hand side of Theorem 5.2 of Steinke, Nasr & Jagielski (2023):
/// f(v) + 2mδ · max_{i=1..v} (f(v − i) − f(v)) / i with
/// f(v) = P[Binomial(r, e^ε/(1 + e^ε)) ≥ v], capped at 1.
///
/// # Errors
/// [`crate::Error::InvalidParam`] if r > m, v > r, ε is negative or not
/// finite, or δ is outside [0, 1].
pub fn p_value(canaries: usize, guesses: usize, correct: usize, epsilon: f64, delta: f64) -> Result<f64> {
    check_counts(canaries, guesses, correct)?;
    check_delta(delta)?;
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return invalid("epsilon", format!("{epsilon} is not a finite number >= 0"));
    }
    let binomial = Binomial::randomized_response(guesses, epsilon);
    let tail = binomial.tail(correct);
    // max over i of P[v − i ≤ X < v] / i, the δ term's slope.
    let mut slope = 0.0f64;
    let mut below = 0.0f64;
    for i in 1..=correct {
        below += binomial.pmf(correct - i);
        slope = slope.max(below / i as f64);
    }
    Ok((tail + 2.0 * canaries as f64 * delta * slope).min(1.0))
}

/// The largest ε such that `correct` correct guesses out of `guesses` about
/// `canaries` canaries would have had probability below `beta` under an
/// (ε, `delta`)-DP algorithm: with confidence 1 − β the audited algorithm is
/// not (ε', δ)-DP for any ε' below the returned value. 0 when the guesses
/// are no better than chance allows.
///
/// # Arguments
/// As [`p_value`], and `beta` in (0, 1): one minus the confidence.
///
/// # Privacy
/// A lower bound: an algorithm that is (ε, δ)-DP reports a value above ε
/// with probability at most β. The search keeps the invariant that the
/// returned ε has a p-value below β (by a relative margin, see the module
/// notes), and bisects to within 1e-9.
///
/// # Errors
/// As [`p_value`], and [`crate::Error::InvalidParam`] for β outside (0, 1).
pub fn epsilon_lower_bound(canaries: usize, guesses: usize, correct: usize, delta: f64, beta: f64) -> Result<f64> {
    check_counts(canaries, guesses, correct)?;
    check_delta(delta)?;
    if !(beta > 0.0 && beta < 1.0) {
        return invalid("beta", format!("{beta} is not within (0, 1)"));
    }
    let rejected = |epsilon: f64| -> Result<bool> {
        Ok(p_value(canaries, guesses, correct, epsilon, delta)? * (1.0 + MARGIN) < beta)
    };
    if guesses == 0 || !rejected(0.0)? {
        return Ok(0.0);
    }
    // Invariant: `low` is rejected; `high` is not (or is the ceiling).
    let mut low = 0.0f64;
    let mut high = 1.0f64;
    while rejected(high)? {
        low = high;
        if high >= EPSILON_CEILING {
            return Ok(low);
        }
        high = (high * 2.0).min(EPSILON_CEILING);
    }
    while high - low > 1e-9 {
        let mid = 0.5 * (low + high);
        if rejected(mid)? {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn binomial_probabilities_sum_to_one_and_match_a_direct_computation() {
        let b = Binomial::randomized_response(10, 0.0);
        let total: f64 = (0..=10).map(|k| b.pmf(k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // C(10, 3) / 2^10.
        assert!((b.pmf(3) - 120.0 / 1024.0).abs() < 1e-14);
        assert!((b.tail(0) - 1.0).abs() < 1e-12);
        let b = Binomial::randomized_response(5, 2.0);
        let q = 2.0f64.exp() / (1.0 + 2.0f64.exp());
        assert!((b.pmf(5) - q.powi(5)).abs() < 1e-14);
    }

    #[test]
    fn all_correct_with_delta_zero_has_the_closed_form_bound() {
        // q^r = β at the bound, so ε = ln(q / (1 − q)) with q = β^(1/r).
        for r in [10usize, 100, 1000] {
            let q = 0.05f64.powf(1.0 / r as f64);
            let expected = (q / (1.0 - q)).ln();
            let got = epsilon_lower_bound(r, r, r, 0.0, 0.05).unwrap();
            assert!((got - expected).abs() < 1e-6, "r = {r}: {got} vs {expected}");
        }
    }

    #[test]
    fn figures_of_the_paper_setting() {
        // 1000 guesses with 100% and 90% accuracy at 95% confidence.
        let perfect = epsilon_lower_bound(1000, 1000, 1000, 1e-5, 0.05).unwrap();
        let ninety = epsilon_lower_bound(1000, 1000, 900, 1e-5, 0.05).unwrap();
        assert!(perfect > 5.5 && perfect < 6.0, "{perfect}");
        assert!(ninety > 1.9 && ninety < 2.1, "{ninety}");
        // δ only ever lowers the bound.
        assert!(epsilon_lower_bound(1000, 1000, 900, 0.0, 0.05).unwrap() >= ninety);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_field_named() {
        let field = |r: Result<f64>| match r {
            Err(crate::Error::InvalidParam { field, .. }) => field,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        assert_eq!(field(epsilon_lower_bound(10, 11, 0, 0.0, 0.05)), "guesses");
        assert_eq!(field(epsilon_lower_bound(10, 5, 6, 0.0, 0.05)), "correct");
        assert_eq!(field(epsilon_lower_bound(10, 5, 5, 2.0, 0.05)), "delta");
        assert_eq!(field(epsilon_lower_bound(10, 5, 5, 0.0, 1.0)), "beta");
        assert_eq!(field(p_value(10, 5, 5, f64::NAN, 0.0)), "epsilon");
        assert_eq!(field(p_value(10, 5, 5, -1.0, 0.0)), "epsilon");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_bound_is_finite_and_monotone_in_correct_guesses(
            m in 1usize..150,
            r_frac in 0.0f64..=1.0,
            delta in prop_oneof![Just(0.0), 1e-9f64..1e-3],
            beta in 0.001f64..0.5,
        ) {
            let r = ((m as f64) * r_frac).round() as usize;
            let mut previous = 0.0f64;
            for v in 0..=r {
                let epsilon = epsilon_lower_bound(m, r, v, delta, beta).unwrap();
                prop_assert!(epsilon.is_finite() && epsilon >= 0.0, "v = {v}: {epsilon}");
                prop_assert!(epsilon >= previous - 1e-8, "v = {v}: {epsilon} < {previous}");
                // No better than chance: no evidence against ε = 0.
                if 2 * v <= r {
                    prop_assert_eq!(epsilon, 0.0);
                }
                previous = epsilon;
            }
        }

        #[test]
        fn the_p_value_is_a_probability_that_grows_with_epsilon(
            m in 1usize..300,
            r_frac in 0.0f64..=1.0,
            v_frac in 0.0f64..=1.0,
            delta in prop_oneof![Just(0.0), 1e-9f64..1e-2],
            epsilon in 0.0f64..20.0,
        ) {
            let r = ((m as f64) * r_frac).round() as usize;
            let v = ((r as f64) * v_frac).round() as usize;
            let p = p_value(m, r, v, epsilon, delta).unwrap();
            prop_assert!((0.0..=1.0).contains(&p), "{p}");
            let p_more = p_value(m, r, v, epsilon + 0.5, delta).unwrap();
            prop_assert!(p_more >= p - 1e-12, "{p_more} < {p}");
        }

        #[test]
        fn the_bound_is_where_the_p_value_crosses_beta(
            m in 2usize..300,
            v_frac in 0.5f64..=1.0,
            beta in 0.01f64..0.2,
        ) {
            let v = ((m as f64) * v_frac).round() as usize;
            let epsilon = epsilon_lower_bound(m, m, v, 1e-6, beta).unwrap();
            if epsilon > 0.0 {
                prop_assert!(p_value(m, m, v, epsilon, 1e-6).unwrap() < beta);
                prop_assert!(p_value(m, m, v, epsilon + 1e-6, 1e-6).unwrap() >= beta * (1.0 - 1e-6));
            }
        }
    }
}
