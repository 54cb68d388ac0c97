//! Asking again: after a conflict (someone else wrote first), and after an answer that may change
//! on a second try (the API server unreachable or timing out, 5xx, 429). Both are bounded, so a
//! run of failures ends in the last error, never in a hang.

use std::future::Future;
use std::time::Duration;

use crate::error::Error;

/// Attempts at one write before giving up on a run of conflicts.
pub const MAX_CONFLICTS: u32 = 20;

/// Attempts at one request that keeps failing transiently: 0.25 + 0.5 + 1 + 2 s of pauses (plus
/// jitter) before the last.
pub const TRANSIENT_ATTEMPTS: u32 = 5;

/// Sleeps a little longer after each conflict, with jitter so that two racing writers part.
pub async fn after_conflict(attempt: u32) {
    sleep(20, attempt).await;
}

/// Sleeps before asking again after a transient failure.
pub async fn after_transient(attempt: u32) {
    sleep(250, attempt).await;
}

async fn sleep(base_ms: u64, attempt: u32) {
    let base = base_ms.saturating_mul(1 << attempt.min(6));
    let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=base / 2);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Runs `request` until it succeeds, fails for good, or has failed transiently
/// [`TRANSIENT_ATTEMPTS`] times. Only for requests that are safe to repeat (reads).
pub async fn transient<T, F, Fut>(mut request: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(e) if e.is_transient() && attempt + 1 < TRANSIENT_ATTEMPTS => {
                after_transient(attempt).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn unavailable() -> Error {
        Error::Refused {
            verb: "list",
            target: "accesssessions".into(),
            code: 503,
            reason: "ServiceUnavailable".into(),
            message: "try later".into(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let calls = Cell::new(0);
        let result: Result<(), Error> = transient(|| {
            calls.set(calls.get() + 1);
            async { Err(unavailable()) }
        })
        .await;
        assert!(matches!(result, Err(Error::Refused { code: 503, .. })));
        assert_eq!(calls.get(), TRANSIENT_ATTEMPTS);

        calls.set(0);
        let result = transient(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.ok(), Some(3));
    }

    #[tokio::test]
    async fn a_lasting_answer_is_not_asked_again() {
        let calls = Cell::new(0);
        let result: Result<(), Error> = transient(|| {
            calls.set(calls.get() + 1);
            async { Err(Error::Usage("no".into())) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }
}
