//! `sample-app`: the app the in-cluster tests put behind Portcullis.
//!
//! It answers every request with a JSON description of what reached it (its own name, the
//! method, the host, the path and every header), so a test reads exactly which identity headers
//! the ingress passed on and that none a client forged survived. Plain HTTP/1.1, one thread per
//! connection and `Connection: close`: an app behind an ingress, not a load-bearing server, and
//! with no dependency beyond the standard library it is a static binary in a one-file image.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

/// The most a request head may take; a bigger one is answered 431.
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Answers every HTTP request with a JSON description of it")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Name reported in every answer (which app answered).
    #[arg(long, default_value = "sample-app")]
    name: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let listener =
        TcpListener::bind(cli.listen).with_context(|| format!("binding {}", cli.listen))?;
    eprintln!("sample-app {}: listening on {}", cli.name, cli.listen);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = cli.name.clone();
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, &name) {
                eprintln!("sample-app: {error:#}");
            }
        });
    }
    Ok(())
}

/// Reads one request head and answers it.
fn serve(stream: TcpStream, name: &str) -> Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let (status, body) = match read_head(&mut reader) {
        Ok(head) => (200, describe(name, &head)),
        Err(error) => (
            if error.to_string().contains("too large") {
                431
            } else {
                400
            },
            serde_json::json!({ "error": format!("{error:#}") }),
        ),
    };
    let body = serde_json::to_vec_pretty(&body)?;
    let reason = match status {
        200 => "OK",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()?;
    Ok(())
}

/// A request head: the request line's parts and the header fields in order.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

fn read_head(reader: &mut impl BufRead) -> Result<Head> {
    let mut taken = 0;
    let mut line = String::new();
    let mut next_line = |line: &mut String| -> Result<()> {
        line.clear();
        let n = reader.read_line(line).context("reading the request")?;
        taken += n;
        if n == 0 {
            bail!("connection closed before the end of the head");
        }
        if taken > MAX_HEAD {
            bail!("request head too large");
        }
        Ok(())
    };
    next_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("malformed request line");
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        next_line(&mut line)?;
        let field = line.trim_end_matches(['\r', '\n']);
        if field.is_empty() {
            return Ok(Head {
                method,
                target,
                headers,
            });
        }
        let Some((name, value)) = field.split_once(':') else {
            bail!("malformed header field");
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// The answer's body. Repeated header fields are joined with `, `.
fn describe(name: &str, head: &Head) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (field, value) in &head.headers {
        let joined = match headers.get(field).and_then(|v| v.as_str()) {
            Some(before) => format!("{before}, {value}"),
            None => value.clone(),
        };
        headers.insert(field.clone(), joined.into());
    }
    let host = headers.get("host").cloned().unwrap_or_default();
    serde_json::json!({
        "app": name,
        "method": head.method,
        "host": host,
        "path": head.target,
        "headers": headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_described_with_repeated_fields_joined() {
        let raw = "GET /wiki?x=1 HTTP/1.1\r\nHost: wiki.test\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let head = read_head(&mut raw.as_bytes()).expect("head");
        let body = describe("wiki", &head);
        assert_eq!(body["app"], "wiki");
        assert_eq!(body["path"], "/wiki?x=1");
        assert_eq!(body["host"], "wiki.test");
        assert_eq!(body["headers"]["x-a"], "1, 2");
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            "GET\r\n\r\n",
            "GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            "GET / HTTP/1.1\r\n",
        ] {
            assert!(read_head(&mut raw.as_bytes()).is_err(), "{raw:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let error = read_head(&mut huge.as_bytes()).err().expect("refused");
        assert!(error.to_string().contains("too large"), "{error}");
    }
}
