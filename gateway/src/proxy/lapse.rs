//! Cutting exchanges that outlive their request. A forwarded request is judged once, but an
//! upgraded connection or a streaming response can stay open for hours; the caller hands the
//! proxy a [`Lapse`] (a future that resolves when the admission no longer holds) and the proxy
//! ends the exchange when it resolves: the upgraded connection is closed on both sides, and a
//! response body fails mid-stream, so the client sees an aborted response (a reset connection
//! or stream), never a truncated one that looks complete.

use super::error::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use sync_wrapper::SyncWrapper;

/// Resolves, with a short reason for the log, when the admission a forwarded exchange rests on
/// has lapsed.
pub type Lapse = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// A response body that fails as soon as its [`Lapse`] resolves. The lapse is first polled when
/// the body has to wait for the upstream: a short response, complete in its first poll, never
/// pays for it; from then on it is polled with every frame.
pub(crate) struct LapsingBody<B> {
    inner: B,
    /// Only ever polled through `&mut`, so the body can be shared (as the boxed response body
    /// must) while the future itself is only `Send`.
    lapse: SyncWrapper<Lapse>,
    watching: bool,
}

impl<B> LapsingBody<B> {
    pub(crate) fn new(inner: B, lapse: Lapse) -> Self {
        Self {
            inner,
            lapse: SyncWrapper::new(lapse),
            watching: false,
        }
    }

    /// The error that aborts the response, if the lapse has resolved.
    fn cut(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        self.watching = true;
        match self.lapse.get_mut().as_mut().poll(cx) {
            Poll::Ready(reason) => Some(format!("response cut: {reason}").into()),
            Poll::Pending => None,
        }
    }
}

impl<B> Body for LapsingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => match self.cut(cx) {
                Some(error) => Poll::Ready(Some(Err(error))),
                None => Poll::Pending,
            },
            Poll::Ready(Some(Ok(frame))) => {
                if self.watching
                    && let Some(error) = self.cut(cx)
                {
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
