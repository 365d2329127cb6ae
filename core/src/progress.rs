//! [`Progress`]: the progress line of a training epoch (tqdm's bar, in a few lines and no
//! dependency: a progress-bar crate would more than double what a build of torchlet compiles).
//!
//! When stderr is a terminal, the line
//!
//! ```text
//! epoch 3/10 [=======>          ] 412/938 loss 0.3121, 15234 samples/s, 0:04<0:05
//! ```
//!
//! is redrawn in place (a carriage return, no escape codes) at most ten times a second and
//! cleared when the epoch ends; the bar narrows to keep the line within `$COLUMNS` (80 when
//! unset), and what still does not fit is cut off. Otherwise (a pipe, a file, a CI log)
//! nothing is drawn, and one summary line per epoch goes to stderr when it ends.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The shortest time between two redraws.
const REDRAW: Duration = Duration::from_millis(100);
/// The width of the bar when the terminal is wide enough, and the least it narrows to.
const BAR: usize = 30;
const MIN_BAR: usize = 10;

/// The progress of one epoch: batches done out of `total`, samples seen, the running loss.
pub struct Progress {
    prefix: String,
    total: usize,
    done: usize,
    samples: usize,
    loss: f64,
    start: Instant,
    last_draw: Option<Instant>,
    /// Whether stderr is a terminal, its width, the bar's, and the width of the line on it
    /// now (0: none).
    terminal: bool,
    columns: usize,
    bar: usize,
    drawn: usize,
}

impl Progress {
    /// Starts the line of epoch `epoch` (0-based) of `epochs`, which has `total` batches:
    /// `epoch 3/10 [====>   ] …`.
    ///
    /// ```no_run
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::progress::Progress;
    ///
    /// let batches = [0.9, 0.7, 0.6];
    /// let mut bar = Progress::epoch(0, 5, batches.len());
    /// for (i, loss) in batches.iter().enumerate() {
    ///     bar.batch(64, *loss / (i + 1) as f64);
    /// }
    /// bar.finish();
    /// ```
    pub fn epoch(epoch: usize, epochs: usize, total: usize) -> Progress {
        Progress::new(format!("epoch {}/{epochs}", epoch + 1), total)
    }

    /// Starts a line that begins with `prefix` for a loop of `total` batches.
    pub fn new(prefix: impl Into<String>, total: usize) -> Progress {
        let prefix = prefix.into();
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|&c| c > 0)
            .unwrap_or(80);
        // `prefix [bar] stats` one column short of the terminal, so that it never wraps, with
        // room for stats as wide as they usually get; fixed, so that the bar does not jitter.
        let stats = 2 * total.to_string().len() + " loss 0.0000, 100000 samples/s, 0:00<0:00".len();
        let room = columns.saturating_sub(prefix.chars().count() + stats + 5);
        let mut p = Progress {
            prefix,
            total,
            done: 0,
            samples: 0,
            loss: f64::NAN,
            start: Instant::now(),
            last_draw: None,
            terminal: std::io::stderr().is_terminal(),
            columns,
            bar: room.clamp(MIN_BAR, BAR),
            drawn: 0,
        };
        p.draw();
        p
    }

    /// Records one more batch of `samples` samples; `loss` is the mean loss of the epoch so
    /// far. Redraws the line if the last redraw is long enough ago.
    pub fn batch(&mut self, samples: usize, loss: f64) {
        self.done += 1;
        self.samples += samples;
        self.loss = loss;
        if self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    /// Ends the epoch: clears the line on a terminal, prints the summary line elsewhere.
    pub fn finish(self) {
        if !self.terminal {
            let (elapsed, rate) = self.timing();
            eprintln!(
                "{}: {}/{} batches, loss {:.4}, {rate:.0} samples/s, {elapsed:.1} s",
                self.prefix, self.done, self.total, self.loss
            );
        }
        // `drop` clears the line.
    }

    /// Seconds since the start, and samples per second.
    fn timing(&self) -> (f64, f64) {
        let elapsed = self.start.elapsed().as_secs_f64();
        (elapsed, self.samples as f64 / elapsed.max(1e-9))
    }

    /// `412/938 loss 0.3121, 15234 samples/s, 0:04<0:05`: everything but the prefix and the
    /// bar; the loss and the rate once a batch is done, the time left once it can be told.
    fn stats(&self) -> String {
        let (elapsed, rate) = self.timing();
        let digits = self.total.to_string().len();
        let mut s = format!("{:>digits$}/{}", self.done, self.total);
        if self.done > 0 {
            s += &format!(" loss {:.4}, {rate:.0} samples/s,", self.loss);
        }
        s += &format!(" {}", clock(elapsed));
        if self.done > 0 {
            let left = elapsed / self.done as f64 * self.total.saturating_sub(self.done) as f64;
            s += &format!("<{}", clock(left));
        }
        s
    }

    fn draw(&mut self) {
        self.last_draw = Some(Instant::now());
        if !self.terminal {
            return;
        }
        let line = self.line();
        let width = line.chars().count();
        let pad = self.drawn.saturating_sub(width);
        self.drawn = width;
        write_stderr(&format!("\r{line}{}", " ".repeat(pad)));
    }

    /// `prefix [bar] stats`, cut to one column short of the terminal.
    fn line(&self) -> String {
        let width = self.bar;
        let filled = (self.done * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width);
        let mut bar = "=".repeat(filled);
        if filled < width {
            bar.push('>');
            bar += &" ".repeat(width - filled - 1);
        }
        let line = format!("{} [{bar}] {}", self.prefix, self.stats());
        line.chars().take(self.columns.saturating_sub(1)).collect()
    }
}

impl Drop for Progress {
    /// Clears the line, so that what is printed next starts on an empty one.
    fn drop(&mut self) {
        if self.drawn > 0 {
            write_stderr(&format!("\r{}\r", " ".repeat(self.drawn)));
        }
    }
}

/// One write, so that the line never shows half drawn; a closed stderr is not an error here.
fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_bar_counts_loss_and_times() {
        let mut p = Progress::epoch(2, 10, 4);
        (p.terminal, p.columns, p.bar) = (false, 200, 8);
        assert!(
            p.line().starts_with("epoch 3/10 [>       ] 0/4 0:00"),
            "{}",
            p.line()
        );
        p.batch(64, 0.5);
        p.batch(64, 0.25);
        let line = p.line();
        assert!(
            line.starts_with("epoch 3/10 [====>   ] 2/4 loss 0.2500, "),
            "{line}"
        );
        assert!(line.contains(" samples/s, 0:00<0:00"), "{line}");
        p.columns = 12;
        assert_eq!(p.line(), "epoch 3/10 ");
    }

    #[test]
    fn a_prefix_beyond_ascii_is_cut_between_characters() {
        let mut p = Progress::new("époque ①", 1);
        // Byte 9 is inside `①`: cutting bytes there would panic.
        (p.terminal, p.columns) = (false, 10);
        assert_eq!(p.line(), "époque ① ");
    }

    #[test]
    fn clock_reads_minutes_then_hours() {
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(-1.0), "0:00");
    }
}
