//! From membership scores to guesses, and from guesses to a count of the
//! correct ones.

use crate::error::invalid;
use crate::{Error, Result};

/// The auditor's guess about one canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guess {
    /// The canary was in the training data.
    In,
    /// The canary was not.
    Out,
    /// No guess.
    Abstain,
}

/// How many guesses were made and how many of them were right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// r: guesses made (abstentions excluded).
    pub guesses: usize,
    /// v: correct guesses.
    pub correct: usize,
}

/// Guesses "in" for the `per_side` highest scores, "out" for the
/// `per_side` lowest, and abstains on the rest (k₊ = k₋ = `per_side`,
/// fixed before the scores are seen).
///
/// Ties are broken by position (a lower position ranks higher), which is
/// fine as long as positions are independent of which canaries were
/// included: the guesses must depend on the released output and public
/// information only.
///
/// # Errors
/// [`Error::InvalidParam`] if 2·`per_side` exceeds the number of scores;
/// [`Error::NotANumber`] for a NaN score.
pub fn guess_by_rank(scores: &[f64], per_side: usize) -> Result<Vec<Guess>> {
    if per_side.checked_mul(2).is_none_or(|both| both > scores.len()) {
        return invalid(
            "guesses",
            format!(
                "{per_side} guesses on each side need at least {} canaries, there are {}",
                2 * per_side,
                scores.len()
            ),
        );
    }
    if let Some(canary) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::NotANumber { canary });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable: equal scores keep their positions' order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut guesses = vec![Guess::Abstain; scores.len()];
    for &c in &order[..per_side] {
        guesses[c] = Guess::In;
    }
    for &c in &order[scores.len() - per_side..] {
        guesses[c] = Guess::Out;
    }
    Ok(guesses)
}

/// Counts the guesses and the correct ones against the truth.
///
/// # Errors
/// [`Error::LengthMismatch`] if `guesses` and `included` differ in length.
pub fn tally(guesses: &[Guess], included: &[bool]) -> Result<Tally> {
    if guesses.len() != included.len() {
        return Err(Error::LengthMismatch { what: "inclusion flags", expected: guesses.len(), got: included.len() });
    }
    let mut tally = Tally { guesses: 0, correct: 0 };
    for (&guess, &was_in) in guesses.iter().zip(included) {
        let right = match guess {
            Guess::Abstain => continue,
            Guess::In => was_in,
            Guess::Out => !was_in,
        };
        tally.guesses += 1;
        tally.correct += usize::from(right);
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_and_bottom_are_guessed_and_the_middle_abstains() {
        let scores = [0.5, 3.0, -1.0, 2.0, 0.0, 1.0];
        let guesses = guess_by_rank(&scores, 2).unwrap();
        use Guess::*;
        assert_eq!(guesses, vec![Abstain, In, Out, In, Out, Abstain]);
        let truth = [true, true, false, false, false, true];
        assert_eq!(tally(&guesses, &truth).unwrap(), Tally { guesses: 4, correct: 3 });
        assert_eq!(tally(&guess_by_rank(&scores, 0).unwrap(), &truth).unwrap(), Tally { guesses: 0, correct: 0 });
    }

    #[test]
    fn ties_are_broken_by_position_and_bad_input_is_refused() {
        let guesses = guess_by_rank(&[1.0, 1.0, 1.0, 1.0], 1).unwrap();
        assert_eq!(guesses, vec![Guess::In, Guess::Abstain, Guess::Abstain, Guess::Out]);
        assert!(matches!(guess_by_rank(&[1.0, 2.0, 3.0], 2), Err(Error::InvalidParam { field: "guesses", .. })));
        assert!(matches!(guess_by_rank(&[1.0, f64::NAN], 1), Err(Error::NotANumber { canary: 1 })));
        assert!(matches!(tally(&[Guess::In], &[]), Err(Error::LengthMismatch { .. })));
    }
}
