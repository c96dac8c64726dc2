//! The aggregate lock stripes: a write holds its aggregate's stripe from the read of its record
//! until it is answered, so the next write to that aggregate reads the state it left (module
//! docs of `redb_store`, "Concurrency").
//!
//! A stripe is held by an owned [`StripeGuard`], not a `MutexGuard`: a write queued with
//! [`crate::EventStore::write_then`] returns before its round commits, and its stripe is
//! released by whichever thread answers it (the round's leader), once its record is synced.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One stripe: whether it is held, and how many threads wait for it (a release with none
/// waiting skips the wake-up, a system call).
#[derive(Default)]
struct Stripe {
    state: Mutex<StripeState>,
    freed: Condvar,
}

#[derive(Default)]
struct StripeState {
    held: bool,
    waiting: u32,
}

impl Stripe {
    fn state(&self) -> MutexGuard<'_, StripeState> {
        // A poisoned stripe only means a writer panicked; the data it guards is redb's.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store's stripes.
pub(crate) struct Stripes(Arc<[Stripe]>);

impl Stripes {
    pub(crate) fn new(count: usize) -> Self {
        Stripes((0..count).map(|_| Stripe::default()).collect())
    }

    /// Whether stripe `index` is held now.
    pub(crate) fn is_held(&self, index: usize) -> bool {
        self.0[index].state().held
    }

    /// Waits for stripe `index` to be free and takes it.
    pub(crate) fn lock(&self, index: usize) -> StripeGuard {
        let stripe = &self.0[index];
        let mut state = stripe.state();
        while state.held {
            state.waiting += 1;
            state = stripe.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting -= 1;
        }
        state.held = true;
        StripeGuard {
            stripes: Arc::clone(&self.0),
            index,
        }
    }
}

/// A held stripe, released when dropped, on any thread.
pub(crate) struct StripeGuard {
    stripes: Arc<[Stripe]>,
    index: usize,
}

impl Drop for StripeGuard {
    fn drop(&mut self) {
        let stripe = &self.stripes[self.index];
        let mut state = stripe.state();
        state.held = false;
        if state.waiting > 0 {
            stripe.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_stripe_released_on_another_thread_lets_the_waiting_writer_in() {
        let stripes = Arc::new(Stripes::new(4));
        let held = stripes.lock(2);
        let (took, taken) = mpsc::channel();
        let waiter = {
            let stripes = Arc::clone(&stripes);
            std::thread::spawn(move || {
                let _guard = stripes.lock(2);
                took.send(()).expect("send");
            })
        };
        // Another stripe is free meanwhile.
        drop(stripes.lock(1));
        assert!(taken.try_recv().is_err(), "the stripe is still held");
        std::thread::spawn(move || drop(held))
            .join()
            .expect("release");
        taken.recv().expect("the waiter took the stripe");
        waiter.join().expect("waiter");
    }
}
