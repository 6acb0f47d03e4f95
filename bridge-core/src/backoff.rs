//! Reconnect pacing for adapters: exponential backoff with jitter.

use std::time::Duration;

/// Delays between reconnect attempts: each one a random fraction (half to all) of a step that
/// doubles from `min` up to `max`, so that many clients cut off at once do not all come back at
/// once. [`Backoff::reset`] after a successful connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Backoff starting at `min`, never longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            step: min,
        }
    }

    /// The delay before the next attempt; the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.step.mul_f64(rand::random_range(0.5..=1.0));
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Starts again from `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(400));
        for step in [100, 200, 400, 400] {
            let delay = backoff.next_delay();
            assert!(
                delay >= ms(step / 2) && delay <= ms(step),
                "{delay:?} for a step of {step} ms"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(100));
    }
}
