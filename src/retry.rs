//! The one retry policy: exponential backoff with jitter. Every retry in mailsync (IMAP
//! reconnects, outbound sends and Sent copies, recording an attempt in a busy store, a
//! throttled Google API) waits `base * 2^attempt`, capped at `max`, times a random factor
//! in 0.8..1.2, so that many clients failing together do not retry together.

use std::time::Duration;

/// The delay before retry number `attempt` (0 for the first retry).
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let capped = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let mut r = [0u8; 2];
    let _ = crate::secrets::random_bytes(&mut r);
    let jitter = 0.8 + 0.4 * f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
    capped.mul_f64(jitter)
}

/// A run of retries: each [`Backoff::next_delay`] is longer, [`Backoff::reset`] after a
/// success starts over.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = delay(self.base, self.max, self.attempt);
        self.attempt += 1;
        delay
    }

    /// Retries so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200), "{first:?}");
        let second = b.next_delay();
        assert!(second >= Duration::from_millis(1600), "{second:?}");
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(72));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
