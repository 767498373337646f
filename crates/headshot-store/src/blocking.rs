//! The stores' traits are synchronous (the server calls them on its blocking pool, like file
//! and redb I/O), while network clients are async. The bridge runs their futures on a small
//! runtime of its own and waits for the answer, which works from any thread: a blocking-pool
//! thread, a plain thread, or a test without tokio.

use std::future::Future;

use headshot_core::store::StoreError;
use tokio::runtime::{Builder, Runtime};

pub(crate) struct AsyncBridge {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
}

impl Drop for AsyncBridge {
    /// A runtime dropped inside async code panics; shutting it down in the background does not.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl AsyncBridge {
    pub(crate) fn new(name: &str) -> Result<Self, StoreError> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: format!("the {name} runtime"),
                source,
            })?;
        Ok(AsyncBridge {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to completion on the bridge's runtime; `Err` only if it panicked.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            let _ = send.send(future.await);
        });
        receive.recv().map_err(|_| {
            StoreError::Config("a store request panicked; see the log for its message".into())
        })
    }
}
