//! Pagination as `Stream`s: items one by one, following cursors page after page.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde_json::Value;

use crate::client::{AggregatePages, EventPages};
use crate::error::Result;

/// Fetches the next page's items from a pager, handing the pager back with the result.
type Fetch<S> = Pin<Box<dyn Future<Output = (S, Result<Option<Vec<Value>>>)> + Send>>;

/// A `Stream` of parsed items (aggregates or events) that follows cursors.
///
/// Items come in server order, one page fetched at a time. An error is yielded once; polling
/// again retries the same page, so a caller may skip past a transient failure.
pub struct ItemStream<S> {
    source: Option<S>,
    buffer: VecDeque<Value>,
    pending: Option<Fetch<S>>,
    fetch: fn(S) -> Fetch<S>,
}

impl<S> std::fmt::Debug for ItemStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("buffered", &self.buffer.len())
            .field("fetching", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Unpin + 'static> Stream for ItemStream<S> {
    type Item = Result<Value>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            let fetch = match this.pending.as_mut() {
                Some(fetch) => fetch,
                None => match this.source.take() {
                    Some(source) => this.pending.insert((this.fetch)(source)),
                    None => return Poll::Ready(None),
                },
            };
            let (source, result) = match fetch.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            this.pending = None;
            match result {
                Ok(Some(items)) => {
                    this.buffer.extend(items);
                    this.source = Some(source);
                }
                // The last page was read: the pager is done.
                Ok(None) => return Poll::Ready(None),
                Err(err) => {
                    this.source = Some(source);
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

impl AggregatePages {
    /// The aggregates of every page, one by one, as a `Stream`.
    pub fn into_stream(self) -> ItemStream<AggregatePages> {
        ItemStream {
            source: Some(self),
            buffer: VecDeque::new(),
            pending: None,
            fetch: |mut pages| {
                Box::pin(async move {
                    let items = match pages.next_page().await {
                        Ok(Some(page)) => page.aggregates().map(Some),
                        Ok(None) => Ok(None),
                        Err(err) => Err(err),
                    };
                    (pages, items)
                })
            },
        }
    }
}

impl EventPages {
    /// The events of every page, one by one, as a `Stream`.
    pub fn into_stream(self) -> ItemStream<EventPages> {
        ItemStream {
            source: Some(self),
            buffer: VecDeque::new(),
            pending: None,
            fetch: |mut pages| {
                Box::pin(async move {
                    let items = match pages.next_page().await {
                        Ok(Some(page)) => page.events().map(Some),
                        Ok(None) => Ok(None),
                        Err(err) => Err(err),
                    };
                    (pages, items)
                })
            },
        }
    }
}
