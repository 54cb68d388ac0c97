//! A real upstream for gateway tests: answers every request with JSON describing what it
//! received (path and query, headers), so a test sees exactly what the gateway forwarded.

use anyhow::Result;
use axum::{Router, extract::Request, routing::any};
use std::{collections::HashMap, net::SocketAddr};

/// Starts the echo upstream on a free loopback port; it runs until the test process ends.
pub async fn echo() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new().fallback(any(|req: Request| async move {
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
    }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}
