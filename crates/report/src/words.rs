//! What a privacy guarantee means, in words a privacy officer or a customer
//! can follow. Shared by model cards and sweep reports.

/// How far a model trained with one customer's data can be told apart from
/// one trained without it, stated three ways.
pub fn epsilon_in_words(epsilon: f64, delta: f64) -> String {
    let factor = epsilon.exp();
    format!(
        "For any set of possible models, the probability that training produces one in it is at most e^ε = \
         {factor} times what it would be without any one customer's data, plus δ = {delta:e}. Put differently: \
         someone who knew everything else about the data and had to guess whether one customer was in it, \
         starting from even odds (50%), would guess right with probability at most {}.",
        worst_confidence(epsilon, delta),
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

/// The best accuracy of any guess, from the model, of whether one customer's
/// data was used, starting at even odds: (e^ε + δ) / (1 + e^ε), since any
/// test's true-positive rate is at most e^ε times its false-positive rate
/// plus δ under (ε, δ)-DP.
pub fn worst_confidence(epsilon: f64, delta: f64) -> String {
    let factor = epsilon.exp();
    let percent = 100.0 * ((factor + delta) / (1.0 + factor)).min(1.0);
    if percent > 99.9 {
        "over 99.9%".into()
    } else {
        format!("{percent:.1}%")
    }
}

/// The privacy unit and what the guarantee does not cover. `iterations`:
/// those one model ran, or `None` for several models whose rules chose
/// their own (a sweep).
pub fn assumptions(max_items_per_subject: usize, clip_norm: f64, iterations: Option<u32>) -> Vec<String> {
    vec![
        "The privacy unit is one customer (user-level privacy): all of a customer's events together, not one \
         event at a time."
            .into(),
        format!(
            "Each customer contributes at most {max_items_per_subject} items to training (a sample of their \
             history when they have more), and their latent vector is clipped to norm {clip_norm}: this bounds how \
             much any one customer can move the released statistics, which is what makes the noise sufficient."
        ),
        if iterations.is_none() {
            "Every iteration a model runs releases the item-side statistics with Gaussian noise, each from its own \
             noise stream; how many each model runs is chosen from its noisy item counts, and a model that runs none \
             (popularity only) releases the item counts a second time instead, with the same loss. Item counts and \
             the rating total are first released once, as integers, with exact discrete Gaussian noise. The stated \
             ε is the smaller of the exact Gaussian-DP curve's and OpenDP's zCDP conversion."
                .into()
        } else if iterations == Some(0) {
            "No iteration ran: the noisy item counts showed that personalized factors would be mostly noise at this \
             ε, so the budget planned for them went to a second release of the item counts, with Gaussian noise from \
             its own stream; the model ranks by the precision-weighted mean of both releases (DP popularity). The \
             first release is an integer with exact discrete Gaussian noise. The stated ε is the smaller of the \
             exact Gaussian-DP curve's and OpenDP's zCDP conversion."
                .into()
        } else {
            let iterations = iterations.unwrap_or_default();
            format!(
                "Every one of the {iterations} iterations releases the item-side statistics with Gaussian noise, \
                 each from its own noise stream; item counts and the rating total are released once, as integers, \
                 with exact discrete Gaussian noise. The Gaussian releases compose exactly into one Gaussian \
                 mechanism (Gaussian DP); the stated ε is the smaller of that exact curve's and OpenDP's zCDP \
                 conversion."
            )
        },
        "Every random choice about a customer (which items the contribution bound keeps, which are held out) \
         depends on that customer's data and a secret drawn for the run alone, never on other customers."
            .into(),
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

/// What a model or its card reveals that the guarantee does not cover.
pub fn outside_the_guarantee() -> Vec<&'static str> {
    vec![
        "The item list: the storefront's public catalogue, in sorted order (models whose item list came from \
         private rows are refused by the server).",
        "The settings (rank, bounds, budget, iterations) and the consent snapshot time: public choices. Settings \
         tuned on private held-out data leak through them: hush charges every evaluation and sweep run on the \
         store's data to the same lifetime cap as its releases (`hush budget show`), and research data to none.",
        "When the model was trained and by which hush version.",
        "What this model reveals about customers who did not grant training consent: nothing, since none of \
         their data is read.",
        "Recommendations shown to a customer, which use that customer's own data (joint DP).",
    ]
}
