//! What a privacy guarantee means, in words a privacy officer or a customer
//! can follow. Shared by model cards and sweep reports.

/// How far a model trained with one customer's data can be told apart from
/// one trained without it, stated three ways.
pub fn epsilon_in_words(epsilon: f64, delta: f64) -> String {
    let factor = epsilon.exp();
    format!(
        "Whether or not any one customer's data was used, the probability of any result of training changes \
         by at most a factor of e^ε = {factor}, except with probability δ = {delta:e}. Put differently: someone \
         who knew everything else about the data and started at even odds (50%) on whether one customer was in it \
         could end, after seeing the model, at no more than {} confidence.",
        worst_confidence(epsilon),
        factor = format_factor(factor),
    )
}

/// e^ε, short.
pub fn format_factor(factor: f64) -> String {
    if factor < 100.0 {
        format!("{factor:.2}")
    } else {
        format!("{factor:.3e}")
    }
}

/// The most an adversary who knows everything else, starting at even odds
/// that a customer's data was used, can believe after seeing the model
/// (ignoring δ): e^ε / (1 + e^ε).
pub fn worst_confidence(epsilon: f64) -> String {
    let factor = epsilon.exp();
    let percent = 100.0 * factor / (1.0 + factor);
    if percent > 99.9 {
        "over 99.9%".into()
    } else {
        format!("{percent:.1}%")
    }
}

/// The privacy unit and what the guarantee does not cover.
pub fn assumptions(max_items_per_subject: usize, clip_norm: f64, iterations: u32) -> Vec<String> {
    vec![
        "The privacy unit is one customer (user-level privacy): all of a customer's events together, not one \
         event at a time."
            .into(),
        format!(
            "Each customer contributes at most {max_items_per_subject} items to training (a sample of their \
             history when they have more), and their latent vector is clipped to norm {clip_norm}: this bounds how \
             much any one customer can move the released statistics, which is what makes the noise sufficient."
        ),
        format!(
            "Every one of the {iterations} iterations releases the item-side statistics with Gaussian noise; the \
             releases compose in zero-concentrated DP (ρ adds up) and are converted to (ε, δ) by OpenDP."
        ),
        "Only the item side is released. A customer's own vector is computed at request time from their own \
         events and is never stored, so recommendations shown to one customer are not covered by, and do not \
         need, the guarantee towards the others (joint differential privacy)."
            .into(),
        "The guarantee assumes the noise is drawn from a cryptographically seeded generator; models trained with \
         a fixed noise seed are for research only."
            .into(),
        "Several models trained on the same customers add up: the budget ledger (`hush budget`) sums their ρ \
         against the dataset's lifetime cap."
            .into(),
    ]
}
