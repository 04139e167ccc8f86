//! What `fit` tells the world while it runs: progress, epoch figures, resumption. The loop
//! reports events to a [`FitObserver`]; printing is the [`ConsoleReporter`]'s business, not the
//! loop's, and an observer can also end a phase early.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use super::history::EpochStats;

/// Whether training goes on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// End the phase now (its checkpoint, if any, is written first, so the run can resume).
    Stop,
}

/// The running figures of the epoch in progress, after each training batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// Batches done in this epoch.
    pub batches_done: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Mean training loss so far.
    pub loss: f64,
    /// Training accuracy so far.
    pub accuracy: f64,
    /// Training images per second so far.
    pub images_per_second: f64,
}

/// Receives `fit`'s events. Every method has a do-nothing default: implement what you need.
pub trait FitObserver {
    /// The phase resumes from `checkpoint` after `epochs_done` epochs.
    fn resumed(&mut self, _phase: &str, _checkpoint: &Path, _epochs_done: usize) {}

    /// A frozen backbone's features of the `what` set (`training`, `validation`) are being
    /// computed once, in `batches` batches.
    fn caching_started(&mut self, _what: &str, _batches: usize) {}

    /// One more batch of features cached.
    fn caching_step(&mut self) {}

    /// The features are cached.
    fn caching_finished(&mut self) {}

    /// Epoch `epoch` (counted over the whole run, from 0) of `phase` starts, `batches` batches.
    fn epoch_started(&mut self, _epoch: usize, _phase: &str, _batches: usize) {}

    /// A training batch is done.
    fn batch_done(&mut self, _progress: &BatchProgress) {}

    /// An epoch is done, trained and validated. Return [`Control::Stop`] to end the phase.
    fn epoch_finished(&mut self, _stats: &EpochStats) -> Control {
        Control::Continue
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl FitObserver for Silent {}

/// Progress bars while caching and training, one line per epoch, a line when resuming: what
/// `fit` shows unless [`FitConfig::quiet`](super::FitConfig::quiet).
#[derive(Debug, Default)]
pub struct ConsoleReporter {
    bar: Option<ProgressBar>,
}

impl ConsoleReporter {
    fn start_bar(&mut self, len: usize, label: String) {
        let bar = ProgressBar::new(len as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label);
        self.bar = Some(bar);
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl FitObserver for ConsoleReporter {
    fn resumed(&mut self, phase: &str, checkpoint: &Path, epochs_done: usize) {
        println!(
            "resuming '{phase}' from {} after {epochs_done} epoch(s)",
            checkpoint.display()
        );
    }

    fn caching_started(&mut self, what: &str, batches: usize) {
        self.start_bar(batches, format!("caching {what} features"));
    }

    fn caching_step(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn caching_finished(&mut self) {
        self.clear_bar();
    }

    fn epoch_started(&mut self, epoch: usize, phase: &str, batches: usize) {
        self.start_bar(batches, format!("epoch {:>2} {phase}", epoch + 1));
    }

    fn batch_done(&mut self, progress: &BatchProgress) {
        if let Some(bar) = &self.bar {
            bar.set_position(progress.batches_done as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.3} {:.1} img/s",
                progress.loss, progress.accuracy, progress.images_per_second
            ));
        }
    }

    fn epoch_finished(&mut self, stats: &EpochStats) -> Control {
        self.clear_bar();
        println!(
            "epoch {:>2} [{}] train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | lr {:.1e} | {:.1}s ({:.1} img/s)",
            stats.epoch + 1,
            stats.phase,
            stats.train_loss,
            stats.train_accuracy,
            stats.val_loss,
            stats.val_accuracy,
            stats.learning_rate,
            stats.seconds,
            stats.images_per_second
        );
        Control::Continue
    }
}

/// Ends the phase after a number of epochs of this `fit_with` call, as an interruption would
/// (e.g. to test resuming from the checkpoint); reports nothing.
#[derive(Debug, Clone, Copy)]
pub struct StopAfter {
    epochs: usize,
    seen: usize,
}

impl StopAfter {
    /// Stops after `epochs` epochs (at least one runs: the observer speaks after an epoch).
    pub fn epochs(epochs: usize) -> Self {
        Self { epochs, seen: 0 }
    }
}

impl FitObserver for StopAfter {
    fn epoch_finished(&mut self, _stats: &EpochStats) -> Control {
        self.seen += 1;
        if self.seen >= self.epochs {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}
