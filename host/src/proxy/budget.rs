//! `max_buffered_bytes`: one count of the request body bytes held in memory across all
//! calls. A call reserves its declared length before its body is read (or grows its
//! reservation frame by frame when the length is not declared) and gives it back when the
//! call ends; a reservation that would pass the limit is refused, and the client gets 503
//! with `Retry-After` instead of placerd's memory growing with every stalled upload.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes held now and the limit.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    used: AtomicUsize,
    /// `max_buffered_bytes`; a reload may change it (reservations held stay).
    limit: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        BodyBudget { used: AtomicUsize::new(0), limit: AtomicUsize::new(limit) }
    }

    /// A new limit for reservations from now on.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes reserved now, across all calls.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown with [`Held::grow`].
    pub(crate) fn hold(&self) -> Held<'_> {
        Held { budget: self, bytes: 0 }
    }

    fn take(&self, n: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok()
    }
}

/// Bytes one call holds; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Held<'_> {
    /// Makes the reservation at least `total` bytes; false (and unchanged) if the budget
    /// cannot give that many.
    pub(crate) fn grow(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        if !self.budget.take(more) {
            return false;
        }
        self.bytes = total;
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_are_given_back_when_dropped() {
        let budget = BodyBudget::new(100);
        let mut a = budget.hold();
        assert!(a.grow(60));
        assert!(a.grow(40), "shrinking is a no-op");
        let mut b = budget.hold();
        assert!(!b.grow(41), "60 + 41 > 100");
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        assert!(!a.grow(61));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow(100));
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
