//! A progress bar for long CLI commands, drawn on stderr only when stderr is a terminal:
//! piped output, logs and `--json` consumers never see it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 30;
const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub struct ProgressBar {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    drawn_at: Option<Instant>,
    out: Option<std::io::Stderr>,
}

impl ProgressBar {
    /// A bar for `total` items, drawn if stderr is a terminal.
    pub fn new(label: &str, total: u64) -> ProgressBar {
        let stderr = std::io::stderr();
        let out = stderr.is_terminal().then_some(stderr);
        ProgressBar { label: label.to_string(), total, done: 0, started: Instant::now(), drawn_at: None, out }
    }

    /// Moves the bar to `done` of `total`, redrawing at most ten times a second.
    pub fn set(&mut self, done: u64, total: u64) {
        self.done = done;
        self.total = total;
        if self.drawn_at.is_none_or(|at| at.elapsed() >= REDRAW_EVERY) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self) {
        self.draw();
        if let Some(out) = &mut self.out {
            let _ = writeln!(out);
        }
    }

    fn draw(&mut self) {
        self.drawn_at = Some(Instant::now());
        let line = render(&self.label, self.done, self.total, self.started.elapsed());
        if let Some(out) = &mut self.out {
            // \r and erase-line: the bar rewrites itself in place.
            let _ = write!(out, "\r\x1b[2K{line}");
            let _ = out.flush();
        }
    }
}

/// A bar per stage of a command (a table copied, a phase of a sync): a new stage ends
/// the previous stage's bar.
#[derive(Default)]
pub struct Stages {
    current: Option<(String, ProgressBar)>,
}

impl Stages {
    pub fn set(&mut self, stage: &str, done: u64, total: u64) {
        if self.current.as_ref().is_none_or(|(name, _)| name != stage) {
            self.finish();
            self.current = Some((stage.to_string(), ProgressBar::new(stage, total)));
        }
        if let Some((_, bar)) = &mut self.current {
            bar.set(done, total);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, mut bar)) = self.current.take() {
            bar.finish();
        }
    }
}

/// `importing [#########-----]  60% 6000/10000 1500/s ETA 3s`
fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let share = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
    let filled = (share * WIDTH as f64).round() as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if done >= total || rate <= 0.0 {
        String::new()
    } else {
        format!(" ETA {}", crate::status::human_duration(((total - done) as f64 / rate).ceil() as i64))
    };
    format!(
        "{label} [{}{}] {:>3.0}% {done}/{total} {rate:.0}/s{eta}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        share * 100.0
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_share_rate_and_eta() {
        let line = super::render("importing", 6_000, 10_000, std::time::Duration::from_secs(4));
        assert_eq!(line, format!("importing [{}{}]  60% 6000/10000 1500/s ETA 3s", "#".repeat(18), "-".repeat(12)));
        let done = super::render("importing", 10, 10, std::time::Duration::from_secs(1));
        assert!(done.ends_with("100% 10/10 10/s"), "{done}");
        assert!(super::render("x", 0, 0, std::time::Duration::ZERO).contains("100%"));
    }
}
