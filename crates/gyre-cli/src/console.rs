//! What `gyre train` shows on the terminal: the run's set-up, the kNN baselines, a progress bar
//! with the loss, learning rate and images/s, a line per evaluation — an observer of the
//! trainer. Warnings are printed even with `--quiet`; everything else goes with it.

use gyre_train::observe::{Epoch, Observer, Run, Start, Step};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Console {
    quiet: bool,
    bar: ProgressBar,
}

impl Console {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: ProgressBar::hidden(),
        }
    }

    /// A line above the bar (or on stderr when there is none).
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Observer for Console {
    fn start(&mut self, s: &Start, run: &mut Run) -> anyhow::Result<()> {
        if !self.quiet {
            let r = run.recipe;
            eprintln!(
                "gyre: {} · {} · {}",
                r.name,
                run.method.name(),
                s.description
            );
            eprintln!("gyre: run folder {}", run.run_dir.display());
            if s.normalisation != "recipe" {
                eprintln!(
                    "gyre: normalisation ({}): mean {:?}, std {:?}",
                    s.normalisation, s.mean, s.std
                );
            }
            let bad = &s.report.bad_samples;
            if bad.count > 0 {
                eprintln!(
                    "gyre: skipped {} bad sample(s), first: {}",
                    bad.count,
                    bad.first.join("; ")
                );
            }
            if s.report.grey_to_rgb > 0 {
                eprintln!(
                    "gyre: converted {} grey image(s) to RGB, first: {}",
                    s.report.grey_to_rgb,
                    s.report.grey_to_rgb_first.join("; ")
                );
            }
            if s.resumed && run.position.step == run.total_steps {
                eprintln!(
                    "gyre: the run had already finished (step {} of {}): nothing to train",
                    run.position.step, run.total_steps
                );
            }
        }
        for w in &s.report.warnings {
            eprintln!("gyre: warning: {w}");
        }
        if let (false, Some((raw, init))) = (self.quiet, run.state.baselines) {
            eprintln!(
                "gyre: kNN top-1 before training: raw pixels {:.2}%, random-init encoder {:.2}%",
                100.0 * raw,
                100.0 * init
            );
        }
        if !self.quiet {
            self.bar = ProgressBar::new(run.total_steps);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            self.bar.set_position(run.position.step);
        }
        Ok(())
    }

    fn step(&mut self, s: &Step, _run: &mut Run) -> anyhow::Result<()> {
        if let Some(ips) = s.images_per_second {
            self.bar
                .set_message(format!("loss {:.4} lr {:.4} {ips:.0} img/s", s.loss, s.lr));
        }
        self.bar.inc(1);
        Ok(())
    }

    fn epoch(&mut self, e: &mut Epoch, run: &mut Run) -> anyhow::Result<()> {
        if e.evaluate && !self.quiet {
            let done = run.position.epoch;
            let mut line = match e.knn {
                Some(a) => format!("gyre: epoch {done}: kNN top-1 {:.2}%", 100.0 * a),
                None => format!("gyre: epoch {done}"),
            };
            // Fractions go on the console line; counts only into the log.
            for (key, v) in &e.stats {
                if let Some(x) = v.as_f64().filter(|_| v.is_f64()) {
                    line.push_str(&format!(", {key} {x:.4}"));
                }
            }
            self.say(line);
        }
        Ok(())
    }

    fn end(&mut self, _summary: &serde_json::Value, _run: &mut Run) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        Ok(())
    }
}

impl Drop for Console {
    /// A run that stops with an error leaves no half-drawn bar behind.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
