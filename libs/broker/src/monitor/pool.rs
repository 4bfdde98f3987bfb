//! The pool's size: how many tasks run at once, grown and shrunk by `pool_grow` / `pool_shrink`
//! as a stock prefork pool is. Growing adds permits at once; shrinking takes permits back as
//! running tasks give them up (a running task is never cut short). Never below one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
    size: Arc<AtomicUsize>,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        Pool {
            permits: Arc::new(Semaphore::new(size)),
            size: Arc::new(AtomicUsize::new(size)),
        }
    }

    /// The semaphore a task's slot comes from.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    pub fn grow(&self, n: usize) {
        self.size.fetch_add(n, Ordering::Relaxed);
        self.permits.add_permits(n);
    }

    /// Shrinks by up to `n`, keeping at least one.
    pub fn shrink(&self, n: usize) {
        let mut taken = 0;
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |size| {
                taken = n.min(size.saturating_sub(1));
                Some(size - taken)
            });
        if taken == 0 {
            return;
        }
        let permits = self.permits.clone();
        let Ok(count) = u32::try_from(taken) else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(held) = permits.acquire_many_owned(count).await {
                held.forget();
            }
        });
    }
}
