//! Stopping flows from the owner inward: the owner of a set of tasks (a tracker, a node, a
//! role run from Python) holds a [`Shutdown`] and hands each task a [`StopSignal`]. Every
//! task selects on its signal beside its work; the owner flips it, then waits until every
//! signal has been dropped, that is until every task has ended (as tokio's mini-redis does).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The owner's side: asks its tasks to stop and waits for them.
#[derive(Debug)]
pub struct Shutdown {
    stop: watch::Sender<bool>,
    /// Each signal holds a clone; when all are dropped, `ended` yields `None`.
    alive: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

/// A task's side: resolves when the owner asks it to stop; dropping it tells the owner that
/// the task has ended.
#[derive(Clone, Debug)]
pub struct StopSignal {
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// An owner with no tasks yet.
    pub fn new() -> Shutdown {
        let (alive, ended) = mpsc::channel(1);
        Shutdown { stop: watch::channel(false).0, alive, ended }
    }

    /// A signal for one more task.
    pub fn signal(&self) -> StopSignal {
        StopSignal { stop: self.stop.subscribe(), _alive: self.alive.clone() }
    }

    /// Asks every task to stop, without waiting for them.
    pub fn request(&self) {
        self.stop.send_replace(true);
    }

    /// Whether a stop has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Asks every task to stop and waits until each has ended, or `grace` has passed (tasks
    /// still running then are left to end on their own). True if every task ended in time.
    pub async fn stop(self, grace: Duration) -> bool {
        let Shutdown { stop, alive, mut ended } = self;
        stop.send_replace(true);
        drop(alive);
        // `recv` yields `None` once every signal is gone; nothing is ever sent.
        tokio::time::timeout(grace, ended.recv()).await.is_ok()
    }
}

impl StopSignal {
    /// Resolves when the owner asks to stop, or is gone.
    pub async fn requested(&mut self) {
        // An error means the owner was dropped, which is a stop too.
        let _ = self.stop.wait_for(|&stop| stop).await;
    }

    /// Whether the owner has asked to stop.
    pub fn is_requested(&self) -> bool {
        *self.stop.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_owner_waits_for_every_task_and_no_longer() {
        let owner = Shutdown::new();
        let (mut a, mut b) = (owner.signal(), owner.signal());
        let (told, mut heard) = mpsc::channel(2);
        for mut signal in [a.clone(), b.clone()] {
            let told = told.clone();
            tokio::spawn(async move {
                signal.requested().await;
                told.send(()).await.unwrap();
            });
        }
        assert!(!a.is_requested());
        // Two signals are still held here, so the wait ends at the grace, not before.
        let waited = tokio::spawn(owner.stop(Duration::from_millis(50)));
        a.requested().await;
        b.requested().await;
        heard.recv().await.unwrap();
        heard.recv().await.unwrap();
        assert!(!waited.await.unwrap(), "a held signal counts as a task still running");

        let owner = Shutdown::new();
        let signal = owner.signal();
        tokio::spawn(async move {
            let mut signal = signal;
            signal.requested().await;
        });
        assert!(owner.stop(Duration::from_secs(10)).await, "every task ended");
    }
}
