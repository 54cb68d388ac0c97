//! A real upstream for gateway tests: answers every request with JSON describing what it
//! received (path and query, headers), so a test sees exactly what the gateway forwarded.
//!
//! Two paths behave like the long-lived exchanges real apps hold open: any path ending in
//! `/stream-forever` answers with a body that sends a line every 100 ms and never ends, and any
//! path ending in `/socket-echo` accepts a WebSocket upgrade and echoes the bytes it receives.

use anyhow::Result;
use axum::{
    Router,
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
    routing::any,
};
use hyper_util::rt::TokioIo;
use std::{collections::HashMap, net::SocketAddr, time::Duration};

/// Starts the echo upstream on a free loopback port; it runs until the test process ends.
pub async fn echo() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new().fallback(any(|req: Request| async move {
        if req.uri().path().ends_with("/stream-forever") {
            return stream_forever();
        }
        if req.uri().path().ends_with("/socket-echo") {
            return socket_echo(req);
        }
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        axum::Json(serde_json::json!({ "path": req.uri().to_string(), "headers": headers }))
            .into_response()
    }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// A body that sends `tick N` every 100 ms and never ends.
fn stream_forever() -> Response {
    let ticks = futures::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(format!("tick {n}\n")), n + 1))
    });
    Body::from_stream(ticks).into_response()
}

/// Switches to the WebSocket protocol (no framing: the raw bytes are echoed), as an app's
/// live channel would stay open.
fn socket_echo(mut req: Request) -> Response {
    let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return http::StatusCode::BAD_REQUEST.into_response();
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(Body::empty())
        .unwrap_or_default()
}
