//! Stream helpers shared by operators.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};

use super::BatchStream;
use crate::error::Result;

/// Sends batches from a generator body to its stream.
#[derive(Debug, Clone)]
pub struct Emitter(mpsc::Sender<Result<RecordBatch>>);

impl Emitter {
    /// Hands one batch downstream, waiting until the consumer wants it.
    /// Returns `false` when the consumer has gone away (stop producing).
    pub async fn emit(&mut self, batch: RecordBatch) -> bool {
        use futures::SinkExt;
        if batch.num_rows() == 0 {
            return true;
        }
        self.0.send(Ok(batch)).await.is_ok()
    }
}

/// Turns an async body that pushes batches into a [`BatchStream`], without
/// spawning: the body runs when the consumer polls (an async generator).
pub fn generate<F, Fut>(body: F) -> BatchStream
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    let fut = body(Emitter(tx));
    Box::pin(GenStream {
        fut: Some(Box::pin(fut)),
        rx,
    })
}

struct GenStream {
    fut: Option<Pin<Box<dyn Future<Output = Result<()>> + Send>>>,
    rx: mpsc::Receiver<Result<RecordBatch>>,
}

impl Stream for GenStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Poll::Ready(Some(item)) = this.rx.poll_next_unpin(cx) {
                return Poll::Ready(Some(item));
            }
            match this.fut.as_mut() {
                Some(f) => match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => {
                        this.fut = None;
                        // drain anything sent just before finishing
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        this.fut = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Pending => {
                        // the body may have just sent something
                        if let Poll::Ready(Some(item)) = this.rx.poll_next_unpin(cx) {
                            return Poll::Ready(Some(item));
                        }
                        return Poll::Pending;
                    }
                },
                None => {
                    return match this.rx.poll_next_unpin(cx) {
                        Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
                        Poll::Ready(None) => Poll::Ready(None),
                        // sender dropped with the future; nothing pending
                        Poll::Pending => Poll::Ready(None),
                    };
                }
            }
        }
    }
}

/// Collects a stream into a vector.
pub async fn collect(mut s: BatchStream) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        let b = b?;
        if b.num_rows() > 0 {
            out.push(b);
        }
    }
    Ok(out)
}

/// Memory footprint of a batch's buffers.
pub fn batch_size(b: &RecordBatch) -> usize {
    b.get_array_memory_size()
}
