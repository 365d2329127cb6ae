//! The progress line of one epoch, by hand rather than with a progress-bar crate, so that
//! building the examples stays quick.
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
    /// Starts the line of epoch `epoch` (0-based) of `epochs`, which has `total` batches.
    pub fn new(epoch: usize, epochs: usize, total: usize) -> Progress {
        let prefix = format!("epoch {}/{epochs}", epoch + 1);
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|&c| c > 0)
            .unwrap_or(80);
        // `prefix [bar] stats` one column short of the terminal, so that it never wraps, with
        // room for stats as wide as they usually get; fixed, so that the bar does not jitter.
        let stats = 2 * total.to_string().len() + " loss 0.0000, 100000 samples/s, 0:00<0:00".len();
        let room = columns.saturating_sub(prefix.len() + stats + 5);
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
        let mut line = format!("{} [{bar}] {}", self.prefix, self.stats());
        line.truncate(self.columns.saturating_sub(1));
        let pad = self.drawn.saturating_sub(line.len());
        self.drawn = line.len();
        write_stderr(&format!("\r{line}{}", " ".repeat(pad)));
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
