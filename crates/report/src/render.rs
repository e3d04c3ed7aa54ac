//! `report.html`: the sweep as one self-contained page a product team and
//! its privacy officer can read: the recommendation first, then the curves,
//! who pays for privacy, what consent costs in data, and what the guarantee
//! means for one customer.

use std::fmt::Write as _;

use hush_features::Feedback;

use crate::html::{escape, markdown_to_html, md_text, page};
use crate::plot::{render_svg, LineChart, Series, SeriesKind};
use crate::sweep::{higher_is_better, metric_label, Arm, SweepResults};
use crate::{words, Result};

const WIDTH: u32 = 760;
const HEIGHT: u32 = 400;

/// A rendered figure: its SVG inside a `<figure>` that states how many
/// series it draws (`data-series`), so tests and tools can check the plot.
fn figure(id: &str, chart: &LineChart, caption: &str) -> Result<String> {
    let svg = render_svg(chart, WIDTH, HEIGHT)?;
    Ok(format!(
        "<figure id=\"fig-{id}\" data-series=\"{}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
        chart.series.len(),
        escape(caption)
    ))
}

/// The sorted epsilons that have DP results.
fn epsilons(r: &SweepResults) -> Vec<f64> {
    let mut e: Vec<f64> = r.spec.epsilons.clone();
    e.retain(|&x| r.cells.iter().any(|c| c.arm == Arm::Dp && c.epsilon == Some(x)));
    e.sort_by(f64::total_cmp);
    e
}

fn mean(r: &SweepResults, arm: Arm, epsilon: Option<f64>, metric: &str) -> Option<f64> {
    r.summary_of(arm, epsilon, metric).map(|s| s.mean)
}

/// DP mean line and its min–max band over seeds.
fn dp_series(r: &SweepResults, metric: &str, color: usize) -> Vec<Series> {
    let rows: Vec<_> = epsilons(r).into_iter().filter_map(|e| r.summary_of(Arm::Dp, Some(e), metric)).collect();
    let n = rows.first().map_or(0, |s| s.n);
    vec![
        Series {
            label: format!("DP: range over {n} seeds"),
            kind: SeriesKind::Band { upper: rows.iter().map(|s| (s.epsilon.unwrap_or(0.0), s.max)).collect() },
            points: rows.iter().map(|s| (s.epsilon.unwrap_or(0.0), s.min)).collect(),
            color,
        },
        Series {
            label: format!("DP: mean of {n} seeds"),
            kind: SeriesKind::Line,
            points: rows.iter().map(|s| (s.epsilon.unwrap_or(0.0), s.mean)).collect(),
            color,
        },
    ]
}

/// A horizontal reference line across the epsilon range.
fn reference(r: &SweepResults, value: Option<f64>, label: &str, color: usize) -> Option<Series> {
    let value = value?;
    let e = epsilons(r);
    let (lo, hi) = (*e.first()?, *e.last()?);
    Some(Series { label: label.into(), kind: SeriesKind::Reference, points: vec![(lo, value), (hi, value)], color })
}

fn baseline_label(metric: &str) -> &'static str {
    if metric == "rmse" || metric == "mae" {
        "item-mean baseline"
    } else {
        "popularity baseline"
    }
}

fn utility_chart(r: &SweepResults, metric: &str) -> LineChart {
    let label = metric_label(metric);
    let mut series = dp_series(r, metric, 0);
    series.extend(reference(r, mean(r, Arm::NonPrivate, None, metric), "non-private twin", 3));
    series.extend(reference(r, mean(r, Arm::Baseline, None, metric), baseline_label(metric), 7));
    LineChart { title: format!("{label} against epsilon"), y_label: label, series }
}

/// Each group's DP metric as a share of the twin's, against epsilon.
fn who_pays_chart(r: &SweepResults, prefix: &str, groups: &[&str], metric: &str, title: &str) -> Option<LineChart> {
    let mut series = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let key = format!("{prefix}_{g}_{metric}");
        let twin = mean(r, Arm::NonPrivate, None, &key).filter(|t| *t != 0.0)?;
        let points: Vec<(f64, f64)> =
            epsilons(r).into_iter().filter_map(|e| Some((e, mean(r, Arm::Dp, Some(e), &key)? / twin))).collect();
        series.push(Series { label: g.to_string(), kind: SeriesKind::Line, points, color: i + 1 });
    }
    series.extend(reference(r, Some(1.0), "non-private twin (= 1)", 7));
    let label = metric_label(metric);
    Some(LineChart { title: title.into(), y_label: format!("{label}, DP ÷ twin"), series })
}

fn simple_chart(r: &SweepResults, metric: &str) -> LineChart {
    let label = metric_label(metric);
    let mut series = vec![Series {
        label: "DP: mean over seeds".into(),
        kind: SeriesKind::Line,
        points: epsilons(r).into_iter().filter_map(|e| Some((e, mean(r, Arm::Dp, Some(e), metric)?))).collect(),
        color: 0,
    }];
    series.extend(reference(r, mean(r, Arm::NonPrivate, None, metric), "non-private twin", 3));
    series.extend(reference(r, mean(r, Arm::Baseline, None, metric), "popularity baseline", 7));
    LineChart { title: format!("{label} against epsilon"), y_label: label, series }
}

/// The page.
///
/// # Errors
/// [`crate::Error::Plot`] if a chart cannot be drawn.
pub fn report_html(r: &SweepResults) -> Result<String> {
    let s = &r.spec;
    let k = s.k;
    let primary = s.primary_metric();
    let secondary = match s.feedback {
        Feedback::Explicit => format!("ndcg_at_{k}"),
        Feedback::Implicit => format!("recall_at_{k}"),
    };
    let mut body = String::new();

    let mut md = format!("# Privacy budget sweep: {}\n\n", md_text(&s.name));
    let _ = writeln!(
        md,
        "{} feedback · split `{}` · epsilons {} at δ = {:e} · {} seeds each · the non-private twin per seed · \
         made by hush {} on {}.\n",
        match s.feedback {
            Feedback::Explicit => "Explicit (ratings)",
            Feedback::Implicit => "Implicit (views, carts, purchases)",
        },
        md_text(&s.split),
        epsilons(r).iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
        s.delta,
        s.seeds.len(),
        md_text(&s.hush_version),
        md_text(&r.created_at)
    );
    body += &markdown_to_html(&md);
    let _ = writeln!(
        body,
        "<div class=\"headline\" id=\"recommendation\"><strong>Recommendation.</strong> {}</div>",
        escape(&r.recommendation.sentence)
    );
    let note = if s.research_only {
        "Research data: no consent ledger stands behind it, and nothing trained in this sweep can be served."
            .to_string()
    } else {
        format!("Every model of this sweep is exploratory and NOT FOR RELEASE. {}", s.budget_note)
    };
    let _ = writeln!(body, "<p class=\"warning\">{}</p>", escape(&note));

    body += &markdown_to_html(&format!(
        "## Privacy and utility\n\nHow much recommendation quality each epsilon keeps. The shaded band is the \
         range over seeds (each seed draws its own noise and initialization); the dashed lines are the non-private \
         twin and the non-personalized baseline. {} is {}.\n",
        metric_label(&primary),
        if higher_is_better(&primary) { "better when higher" } else { "better when lower" }
    ));
    for metric in [&primary, &secondary] {
        let caption = format!(
            "{} of the DP model against epsilon (log axis), with the twin and the baseline.",
            metric_label(metric)
        );
        body += &figure(&format!("utility-{metric}"), &utility_chart(r, metric), &caption)?;
    }
    body += &relative_table(r);

    let group_metric = match s.feedback {
        Feedback::Explicit => "rmse".to_string(),
        Feedback::Implicit => format!("ndcg_at_{k}"),
    };
    body += &markdown_to_html(&format!(
        "## Who pays for privacy\n\nThe same {} per group, as a share of the non-private twin's value for that \
         group (1 means no loss{}). Noise falls hardest on customers with little history and on items few people \
         touch.\n",
        metric_label(&group_metric),
        if higher_is_better(&group_metric) { "; below 1 is worse" } else { "; above 1 is worse" }
    ));
    let who = [
        ("activity", &["light", "medium", "heavy"][..], "By customer activity (thirds of customers by history length)"),
        ("items", &["head", "tail"][..], "By item popularity (head: the most popular items)"),
    ];
    for (prefix, groups, title) in who {
        match who_pays_chart(r, prefix, groups, &group_metric, title) {
            Some(chart) => body += &figure(&format!("who-pays-{prefix}"), &chart, title)?,
            None => body += "<p>No breakdown: the non-private twin has no value for a group.</p>\n",
        }
    }

    body += &markdown_to_html(
        "## Catalogue coverage and popularity bias\n\nCoverage is the share of the catalogue that appears in some \
         customer's top list; popularity bias is the mean popularity percentile of recommended items (1 = only the \
         most popular). Under heavy noise a model drifts towards recommending what is popular.\n",
    );
    body += &figure("coverage", &simple_chart(r, "coverage"), "Catalogue coverage against epsilon.")?;
    body += &figure("popularity-bias", &simple_chart(r, "popularity_bias"), "Popularity bias against epsilon.")?;

    body += &markdown_to_html(
        "## All results\n\nMean ± standard deviation over seeds; `results.csv` and `results.json` hold every cell.\n",
    );
    body += &results_table(r, &[primary.as_str(), secondary.as_str(), "coverage", "popularity_bias"]);

    body += &markdown_to_html(&data_story(r));
    body += &markdown_to_html(&privacy_impact(r));
    body += &markdown_to_html(&method(r));
    Ok(page(&format!("Privacy budget sweep: {}", s.name), &body))
}

fn relative_table(r: &SweepResults) -> String {
    let rec = &r.recommendation;
    let mut md = format!(
        "| epsilon | {} as % of the twin (mean) | 95% interval | within {:.0}%? |\n|---:|---:|---:|---|\n",
        metric_label(&rec.metric),
        rec.tolerance * 100.0
    );
    for row in &rec.relative {
        let _ = writeln!(
            md,
            "| {} | {:.1}% | {:.1}% to {:.1}% | {} |",
            row.epsilon,
            row.mean * 100.0,
            row.low * 100.0,
            row.high * 100.0,
            match (row.within, row.confidently_within) {
                (_, true) => "yes, whole interval",
                (true, false) => "on average",
                _ => "no",
            }
        );
    }
    markdown_to_html(&md)
}

fn results_table(r: &SweepResults, metrics: &[&str]) -> String {
    let mut html = String::from("<table id=\"results\">\n<thead><tr><th>model</th><th class=\"num\">achieved ε</th>");
    for m in metrics {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(&metric_label(m)));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    let mut rows: Vec<(Arm, Option<f64>, String)> =
        epsilons(r).into_iter().map(|e| (Arm::Dp, Some(e), format!("DP, epsilon {e}"))).collect();
    rows.push((Arm::NonPrivate, None, "non-private twin".into()));
    rows.push((Arm::Baseline, None, "baseline (popularity; item mean for RMSE)".into()));
    for (arm, epsilon, name) in rows {
        let achieved = r
            .cells
            .iter()
            .filter(|c| c.arm == arm && c.epsilon == epsilon)
            .filter_map(|c| c.achieved_epsilon)
            .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))));
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td>",
            escape(&name),
            achieved.map_or("–".into(), |e| format!("{e:.4}"))
        );
        for m in metrics {
            match r.summary_of(arm, epsilon, m) {
                Some(s) => {
                    let _ = write!(
                        html,
                        "<td class=\"num\" data-arm=\"{}\" data-epsilon=\"{}\" data-metric=\"{}\" data-mean=\"{}\">{:.4} ± {:.4}</td>",
                        arm.as_str(),
                        epsilon.map(|e| e.to_string()).unwrap_or_default(),
                        escape(m),
                        s.mean,
                        s.mean,
                        s.std
                    );
                }
                None => html.push_str("<td class=\"num\">–</td>"),
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
    html
}

fn data_story(r: &SweepResults) -> String {
    let d = &r.data;
    let mut md = String::from("## What consent costs in data\n\n");
    let _ = writeln!(
        md,
        "Every cell trains on the same {} customers ({} interactions, {} items) and is tested on {} customers' \
         held-out {} interactions.\n",
        d.train_subjects, d.train_interactions, d.items, d.test_subjects, d.test_interactions
    );
    let Some(x) = &r.extraction else {
        md.push_str(
            "The extraction report of this feature set was not found beside it, so what consent filtering dropped \
             is not shown here.\n\n",
        );
        return md;
    };
    if x.research_data {
        md.push_str(
            "**Research data**: read without a consent ledger, so no consent filtering took place. A storefront's \
             own data would lose the customers below who did not grant training consent.\n\n",
        );
    }
    let dropped_subjects: u64 = x.dropped_subjects.values().sum();
    let total_subjects = x.subjects + dropped_subjects;
    let dropped_events = x.dropped_total();
    let share = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    let _ = writeln!(
        md,
        "Consent filtering as of {} kept **{} of {} customers ({:.1}%)** and **{} of {} input rows ({:.1}%)**; \
         every dropped row is counted below by reason.\n",
        x.snapshot_at,
        x.subjects,
        total_subjects,
        share(x.subjects, total_subjects),
        x.events_kept,
        x.rows_in,
        share(x.events_kept, x.rows_in)
    );
    md.push_str("| Rows dropped because | rows | share of input |\n|---|---:|---:|\n");
    for (reason, n) in x.dropped_events.iter().filter(|(_, n)| **n > 0) {
        let _ = writeln!(md, "| {} | {n} | {:.1}% |", reason.name().replace('_', " "), share(*n, x.rows_in));
    }
    let _ = writeln!(md, "| **total dropped** | **{dropped_events}** | {:.1}% |\n", share(dropped_events, x.rows_in));
    if dropped_subjects > 0 {
        md.push_str("| Customers left out because | customers |\n|---|---:|\n");
        for (reason, n) in x.dropped_subjects.iter().filter(|(_, n)| **n > 0) {
            let _ = writeln!(md, "| {} | {n} |", reason.name().replace('_', " "));
        }
        md.push('\n');
    }
    md
}

fn privacy_impact(r: &SweepResults) -> String {
    let s = &r.spec;
    let p = &s.dp_params;
    let mut md = String::from("## What epsilon means for one customer\n\n");
    md.push_str(
        "Each model here is trained with user-level differential privacy: the guarantee covers everything one \
         customer contributed, not just one of their clicks. The table reads each epsilon as a bound on what \
         anyone can learn about a single customer from the model.\n\n",
    );
    md.push_str(
        "| epsilon | outcomes can shift by at most (e^ε) | an attacker at 50% odds ends at most at |\n|---:|---:|---:|\n",
    );
    for e in epsilons(r) {
        let _ = writeln!(md, "| {e} | {}× | {} |", words::format_factor(e.exp()), words::worst_confidence(e, s.delta));
    }
    let subjects = r.data.train_subjects.max(1);
    let _ = writeln!(
        md,
        "\nδ = {:e} is the probability that the guarantee fails outright; it should be far below one in the number \
         of customers (here 1/{subjects} = {:.1e}).\n",
        s.delta,
        1.0 / subjects as f64
    );
    if let Some(first) = epsilons(r).first() {
        let _ = writeln!(md, "At the smallest epsilon of the sweep: {}\n", words::epsilon_in_words(*first, s.delta));
    }
    md.push_str("**Assumptions behind the guarantee.**\n\n");
    for a in words::assumptions(p.max_items_per_subject, p.clip_norm, None) {
        let _ = writeln!(md, "- {a}");
    }
    md.push('\n');
    md
}

fn method(r: &SweepResults) -> String {
    let s = &r.spec;
    let (p, q) = (&s.dp_params, &s.params);
    format!(
        "## How this was measured\n\n\
         - Split `{}`, the same for every cell; top-{} lists exclude items the customer already has.\n\
         - {} seeds ({}) per epsilon; each seed sets the initialization, the contribution-bound sample and the \
           noise stream, so cells are reproducible and comparable across epsilons.\n\
         - DP models: rank {}, at most {} iterations (each model's rules choose how many from its noisy counts \
           unless the config fixes them; none makes a popularity-only model, as its card says), λ = {}, clip norm \
           {}, at most {} items per customer. The \
           non-private twin: rank {}, {} iterations, λ = {} (each with the settings that suit it).\n\
         - The recommendation compares each seed's DP model with the twin of the same seed; the interval is a 95% \
           Student-t interval over seeds. Tolerance {:.0}%.\n\
         - {}\n\
         - Sweep wall time: {:.1} s (cells resumed from an earlier run count as zero). Data digest `{}`, sweep \
           fingerprint `{}`.\n",
        md_text(&s.split),
        s.k,
        s.seeds.len(),
        s.seeds.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "),
        p.rank,
        p.iterations,
        p.lambda,
        p.clip_norm,
        p.max_items_per_subject,
        q.rank,
        q.iterations,
        q.lambda,
        s.tolerance * 100.0,
        md_text(&s.budget_note),
        r.wall_seconds,
        md_text(&s.data_digest),
        s.fingerprint()
    )
}
