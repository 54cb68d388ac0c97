//! Body types: the streaming request body handed to the client, which reports how far the
//! upload got (so the response-head timer can pause during uploads), and the response body.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use tokio::sync::watch;

use super::error::BoxError;

/// Body of a proxied response: the upstream's body streamed through frame by frame (data and
/// trailers), or empty (`101 Switching Protocols`). Convert with `axum::body::Body::new`.
/// A body cut by a lapse fails with its reason, hence the boxed error.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub(crate) fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// How far the request body has been sent upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not yet polled: the client is still connecting / handshaking.
    Pending,
    /// Being streamed: the upload is in progress.
    Streaming,
    /// Fully sent, failed, or abandoned.
    Done,
}

/// The request body as sent upstream: the caller's body, type-erased, reporting its [`Phase`].
pub(crate) struct RequestBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    phase: watch::Sender<Phase>,
}

impl RequestBody {
    pub(crate) fn new<B>(body: B) -> (Self, watch::Receiver<Phase>)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let initial = if body.is_end_stream() {
            Phase::Done
        } else {
            Phase::Pending
        };
        let (phase, rx) = watch::channel(initial);
        (
            Self {
                inner: body.map_err(Into::into).boxed_unsync(),
                phase,
            },
            rx,
        )
    }

    fn mark(&self, p: Phase) {
        self.phase.send_if_modified(|cur| {
            let changed = *cur != p && *cur != Phase::Done;
            if changed {
                *cur = p;
            }
            changed
        });
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.mark(Phase::Streaming);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.mark(Phase::Done),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.mark(Phase::Done),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.mark(Phase::Done);
    }
}

/// Resolves when the response-head timeout has expired, following the request body's [`Phase`]:
/// the timer runs from the start while the body is pending, is suspended while it streams, and
/// restarts in full once it is done.
pub(crate) async fn head_deadline(mut phase: watch::Receiver<Phase>, timeout: Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let current = *phase.borrow_and_update();
        match current {
            Phase::Pending => {
                tokio::select! {
                    () = tokio::time::sleep_until(started + timeout) => return,
                    changed = phase.changed() => if changed.is_err() { break },
                }
            }
            Phase::Streaming => {
                if phase.changed().await.is_err() {
                    break;
                }
            }
            Phase::Done => break,
        }
    }
    tokio::time::sleep(timeout).await;
}
