//! Validated privacy parameters.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

fn check(name: &'static str, value: f64, ok: bool, allowed: &str) -> Result<f64> {
    if value.is_finite() && ok {
        Ok(value)
    } else {
        Err(Error::InvalidParameter { name, message: format!("expected {allowed}, found {value}") })
    }
}

/// ε of (ε, δ)-DP: finite and positive.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Epsilon(f64);

impl Epsilon {
    /// Checks 0 < ε < ∞.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] otherwise.
    pub fn new(value: f64) -> Result<Self> {
        check("epsilon", value, value > 0.0, "a finite number > 0").map(Epsilon)
    }

    /// The value.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// δ of (ε, δ)-DP: in (0, 1). Conventionally far below 1 / number of subjects.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Delta(f64);

impl Delta {
    /// Checks 0 < δ < 1.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] otherwise.
    pub fn new(value: f64) -> Result<Self> {
        check("delta", value, value > 0.0 && value < 1.0, "a number in (0, 1)").map(Delta)
    }

    /// The value.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// ρ of ρ-zCDP: finite and positive.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Rho(f64);

impl Rho {
    /// Checks 0 < ρ < ∞.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] otherwise.
    pub fn new(value: f64) -> Result<Self> {
        check("rho", value, value > 0.0, "a finite number > 0").map(Rho)
    }

    /// The value.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A target guarantee: (ε, δ)-DP per subject.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Target ε.
    pub epsilon: Epsilon,
    /// Target δ.
    pub delta: Delta,
}

impl Budget {
    /// A budget from raw numbers.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the bad one.
    pub fn new(epsilon: f64, delta: f64) -> Result<Self> {
        Ok(Budget { epsilon: Epsilon::new(epsilon)?, delta: Delta::new(delta)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced_with_named_errors() {
        assert!(Epsilon::new(0.5).is_ok());
        assert_eq!(
            Epsilon::new(0.0).unwrap_err().to_string(),
            "invalid epsilon: expected a finite number > 0, found 0"
        );
        assert_eq!(Delta::new(1.0).unwrap_err().to_string(), "invalid delta: expected a number in (0, 1), found 1");
        assert!(Rho::new(f64::NAN).is_err());
        assert!(Budget::new(1.0, 1e-6).is_ok());
    }
}
