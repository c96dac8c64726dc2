//! Progress of commands that wait: an `indicatif` spinner on stderr when it is a terminal; a
//! start and an end line otherwise, so logs and pipes get plain text without control codes.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner labelled with what is being waited for, with the time elapsed.
pub struct Spinner {
    bar: ProgressBar,
    started: Instant,
}

impl Spinner {
    /// Starts spinning (or prints `label...` when stderr is not a terminal).
    pub fn start(label: String) -> Spinner {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if bar.is_hidden() {
            eprintln!("{label}...");
        } else {
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style.tick_chars("|/-\\ "));
            }
            bar.set_message(label);
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Spinner {
            bar,
            started: Instant::now(),
        }
    }

    /// Removes the spinner and says how long the wait took.
    pub fn finish(self) {
        self.end("done");
    }

    /// Removes the spinner after a wait that did not end as hoped (the caller says why).
    pub fn give_up(self) {
        self.end("gave up");
    }

    fn end(self, outcome: &str) {
        self.bar.finish_and_clear();
        eprintln!(
            "{outcome} after {:.1}s",
            self.started.elapsed().as_secs_f64()
        );
    }
}
