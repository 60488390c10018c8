//! Scripted task lifecycles: what a simulated task answers, poll after poll.

use std::time::Duration;

use tokio::time::Instant;

use crate::Phase;

/// What one step of a [`Lifecycle`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// A documented body of this phase (queued, running, succeeded, cancelled).
    ///
    /// A phase the provider cannot express is served as the nearest one it
    /// can (see [`super::served_phase`]): Deepomatic has no running status, so
    /// "running" is answered with its `pending` body.
    Phase(Phase),
    /// A documented failure body, with the message (if any) written at the
    /// spec's first error pointer.
    Fail(Option<String>),
    /// A body whose raw status is exactly this value (e.g. `REVOKED`, or an
    /// undocumented value to exercise unknown statuses).
    Status(String),
    /// The documented example of this name, served as documented (status code
    /// included), with the task id patched in. `STATUS:NAME` picks among
    /// examples of the same name under several statuses (`401:spec_error`);
    /// a bare name prefers a 2xx example. A name matches exactly, or as the
    /// end of an example name (`business_error` finds `success_business_error`).
    /// In a batch page, a task whose example is not a task body is left out.
    Example(String),
}

/// How long a step lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lasts {
    /// This many reads of the task.
    Polls(u32),
    /// This long (tokio time), counted from the first read that sees the step.
    For(Duration),
    /// For ever.
    Forever,
}

/// One step of a lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Step {
    /// What the task answers during the step.
    pub answer: Answer,
    /// How long the step lasts.
    pub lasts: Lasts,
}

/// The scripted life of a simulated task: a list of steps, each answering for
/// a number of reads or a length of (tokio) time. The last step lasts for
/// ever; an empty lifecycle succeeds at once.
///
/// Every step is seen by at least one read: a timed step's clock starts at the
/// first read that sees it, and a step of zero polls or zero time is skipped.
/// Reads answered with an injected fault do not advance the script.
///
/// ```
/// use std::time::Duration;
/// use taskpoll::simulator::Lifecycle;
///
/// let script = Lifecycle::new()
///     .queued_for_polls(2)
///     .running_for(Duration::from_secs(1))
///     .then_succeed();
/// # let _ = script;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    steps: Vec<Step>,
}

impl Lifecycle {
    /// An empty lifecycle (the task succeeds at once unless steps are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Queued for `polls` reads, then running for `polls` reads, then succeeded.
    pub fn quick(polls: u32) -> Self {
        Self::new().queued_for_polls(polls).running_for_polls(polls).then_succeed()
    }

    /// Adds any step.
    pub fn step(mut self, answer: Answer, lasts: Lasts) -> Self {
        self.steps.push(Step { answer, lasts });
        self
    }

    /// Queued for this many reads.
    pub fn queued_for_polls(self, polls: u32) -> Self {
        self.step(Answer::Phase(Phase::Queued), Lasts::Polls(polls))
    }

    /// Queued for this long.
    pub fn queued_for(self, duration: Duration) -> Self {
        self.step(Answer::Phase(Phase::Queued), Lasts::For(duration))
    }

    /// Running for this many reads.
    pub fn running_for_polls(self, polls: u32) -> Self {
        self.step(Answer::Phase(Phase::Running), Lasts::Polls(polls))
    }

    /// Running for this long.
    pub fn running_for(self, duration: Duration) -> Self {
        self.step(Answer::Phase(Phase::Running), Lasts::For(duration))
    }

    /// This raw status for this many reads.
    pub fn status_for_polls(self, raw: impl Into<String>, polls: u32) -> Self {
        self.step(Answer::Status(raw.into()), Lasts::Polls(polls))
    }

    /// This raw status for this long.
    pub fn status_for(self, raw: impl Into<String>, duration: Duration) -> Self {
        self.step(Answer::Status(raw.into()), Lasts::For(duration))
    }

    /// The named documented example for this many reads.
    pub fn example_for_polls(self, name: impl Into<String>, polls: u32) -> Self {
        self.step(Answer::Example(name.into()), Lasts::Polls(polls))
    }

    /// Queued for ever (at Celery-backed providers this is also what an
    /// unknown or expired id looks like).
    pub fn pending_forever(self) -> Self {
        self.step(Answer::Phase(Phase::Queued), Lasts::Forever)
    }

    /// Running for ever.
    pub fn running_forever(self) -> Self {
        self.step(Answer::Phase(Phase::Running), Lasts::Forever)
    }

    /// Then succeeded, for ever.
    pub fn then_succeed(self) -> Self {
        self.step(Answer::Phase(Phase::Succeeded), Lasts::Forever)
    }

    /// Then failed with this message (empty: the documented message), for ever.
    pub fn then_fail(self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.step(Answer::Fail(Some(message).filter(|m| !m.is_empty())), Lasts::Forever)
    }

    /// Then cancelled, for ever (served as failed where the provider has no
    /// cancelled status).
    pub fn then_cancel(self) -> Self {
        self.step(Answer::Phase(Phase::Cancelled), Lasts::Forever)
    }

    /// Then this raw status, for ever (e.g. `REVOKED`, or a value the spec
    /// does not list, which reads as [`Phase::Unknown`]).
    pub fn then_status(self, raw: impl Into<String>) -> Self {
        self.step(Answer::Status(raw.into()), Lasts::Forever)
    }

    /// Then the named documented example, for ever (e.g. `business_error` for
    /// FactPulse's Celery SUCCESS with a business ERROR).
    pub fn then_example(self, name: impl Into<String>) -> Self {
        self.step(Answer::Example(name.into()), Lasts::Forever)
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// Where a task is in its script.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    lifecycle: Lifecycle,
    index: usize,
    polls_in_step: u32,
    step_started: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(lifecycle: Lifecycle) -> Self {
        Self { lifecycle, index: 0, polls_in_step: 0, step_started: None }
    }

    /// The answer for one read at `now`, advancing the script.
    pub(crate) fn read(&mut self, now: Instant) -> Answer {
        loop {
            let Some(step) = self.lifecycle.steps.get(self.index) else {
                return Answer::Phase(Phase::Succeeded);
            };
            let last = self.index + 1 >= self.lifecycle.steps.len();
            let current = match step.lasts {
                _ if last => true,
                Lasts::Forever => true,
                Lasts::Polls(n) => self.polls_in_step < n,
                Lasts::For(d) if d.is_zero() => false,
                Lasts::For(d) => match self.step_started {
                    None => true,
                    Some(start) => now.saturating_duration_since(start) < d,
                },
            };
            if current {
                self.polls_in_step = self.polls_in_step.saturating_add(1);
                self.step_started.get_or_insert(now);
                return step.answer.clone();
            }
            self.index += 1;
            self.polls_in_step = 0;
            self.step_started = None;
        }
    }

    /// The answer a read at `now` would get, without advancing the script.
    pub(crate) fn peek(&self, now: Instant) -> Answer {
        self.clone().read(now)
    }

    /// The current step.
    #[cfg(test)]
    pub(crate) fn step_index(&self) -> usize {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_then_time_then_final() {
        let mut p =
            Progress::new(Lifecycle::new().queued_for_polls(2).running_for(Duration::from_secs(1)).then_fail("boom"));
        let t0 = Instant::now();
        assert_eq!(p.read(t0), Answer::Phase(Phase::Queued));
        assert_eq!(p.read(t0), Answer::Phase(Phase::Queued));
        assert_eq!(p.read(t0), Answer::Phase(Phase::Running));
        assert_eq!(p.read(t0 + Duration::from_millis(999)), Answer::Phase(Phase::Running));
        assert_eq!(p.read(t0 + Duration::from_secs(1)), Answer::Fail(Some("boom".into())));
        assert_eq!(p.read(t0 + Duration::from_secs(100)), Answer::Fail(Some("boom".into())));
        assert_eq!(p.step_index(), 2);
    }

    #[test]
    fn empty_succeeds_and_last_step_lasts() {
        let t0 = Instant::now();
        assert_eq!(Progress::new(Lifecycle::new()).read(t0), Answer::Phase(Phase::Succeeded));
        let mut p = Progress::new(Lifecycle::new().queued_for_polls(1));
        assert_eq!(p.read(t0), Answer::Phase(Phase::Queued));
        assert_eq!(p.read(t0), Answer::Phase(Phase::Queued));
        let mut z = Progress::new(Lifecycle::new().queued_for_polls(0).running_for(Duration::ZERO).then_succeed());
        assert_eq!(z.peek(t0), Answer::Phase(Phase::Succeeded));
        assert_eq!(z.read(t0), Answer::Phase(Phase::Succeeded));
    }
}
