//! The text side at the terminal: `gyre text embed` (embed and cache a recipe's corpus, with a
//! progress bar, and print the throughput) and the cache warm-up that `gyre train` runs before a
//! language-level recipe.

use gyre_train::irc::language::TextConfig;
use gyre_train::irc::IrcLevel;
use gyre_train::recipe::Recipe;
use indicatif::{ProgressBar, ProgressStyle};

/// The recipe's `[text]`, when its plug-in runs at language level.
pub fn language_text(r: &Recipe) -> Option<&TextConfig> {
    match (&r.irc, &r.text) {
        (Some(irc), Some(t)) if irc.level == IrcLevel::Language => Some(t),
        _ => None,
    }
}

/// Embeds the corpus into its cache (a bar on stderr unless `quiet`); returns the cache's meta
/// and whether it was a hit, as one JSON object.
pub fn warm_cache(r: &Recipe, t: &TextConfig, quiet: bool) -> anyhow::Result<serde_json::Value> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "embedding the corpus {elapsed_precise} [{bar:30}] {pos}/{len} texts ETA {eta}",
            )
            .expect("valid template"),
        );
        b
    };
    let side = r.text_side(t, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(serde_json::json!({
        "kind": "text_embed",
        "cache": side_folder(t, &side),
        "outcome": format!("{:?}", side.outcome),
        "meta": side.meta,
    }))
}

fn side_folder(t: &TextConfig, side: &gyre_train::irc::language::TextSide) -> String {
    gyre_text::cache::cache_folder(&t.cache, &t.model, &side.model, &side.corpus)
        .display()
        .to_string()
}
