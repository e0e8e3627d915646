//! Parsing request heads with `httparse`. Every head gets an outcome: parsed, or one of the
//! counted reasons it could not be.

use serde::Serialize;

/// The most headers a head may have. Synapse's own clients send about a dozen, nginx adds
/// four; a head with more is counted as `too_many_headers`, not parsed.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head. Borrows the captured bytes: the agent derives what it keeps
/// (addresses, fingerprints, endpoint) and drops the bytes, which may hold a token.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The request-target as sent (path and query, percent-encoded).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(&'a str, &'a [u8])>,
}

// No derived Debug: the headers may hold a token.
impl std::fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// Why a head was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadError {
    /// The head did not end (`\r\n\r\n`) before the response started or the connection
    /// closed: a client that sent a partial head, or chunks lost.
    Incomplete,
    /// Longer than the capture budget (`HEAD_CAPTURE`); cut by the kernel.
    Cut,
    /// More than `MAX_HEADERS` headers.
    TooManyHeaders,
    /// Not HTTP/1.x, or not valid HTTP/1.x (httparse's error: bad method, target, version,
    /// header name or value, new line).
    Malformed,
}

impl HeadError {
    pub const ALL: [HeadError; 4] = [
        HeadError::Incomplete,
        HeadError::Cut,
        HeadError::TooManyHeaders,
        HeadError::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HeadError::Incomplete => "incomplete",
            HeadError::Cut => "cut",
            HeadError::TooManyHeaders => "too_many_headers",
            HeadError::Malformed => "malformed",
        }
    }
}

/// Parses a captured head. `cut` says the kernel cut it at its capture budget.
pub fn parse(buf: &[u8], cut: bool) -> Result<RequestHead<'_>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if cut => return Err(HeadError::Cut),
        Ok(httparse::Status::Partial) => return Err(HeadError::Incomplete),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Incomplete);
    };
    Ok(RequestHead {
        method,
        target,
        version,
        headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Synapse receives from nginx with the reverse-proxy configuration of Synapse's
    /// documentation (proxy_set_header Host, X-Forwarded-For, X-Forwarded-Proto; HTTP/1.1 with
    /// `Connection: close`), then the client's own headers.
    const NGINX_HEAD: &[u8] =
        b"GET /_matrix/client/v3/sync?timeout=30000&since=s1_2_3 HTTP/1.1\r\n\
Host: matrix.example.org\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
X-Forwarded-Proto: https\r\n\
Connection: close\r\n\
user-agent: mautrix-python/0.20.4 aiohttp/3.9.1 Python/3.11.2\r\n\
accept: */*\r\n\
accept-encoding: gzip, deflate\r\n\
authorization: Bearer syt_YWxpY2U_qWkcnDhFoCFbYgMTpbRk_0JrhLt\r\n\r\n";

    #[test]
    fn parses_a_proxied_head() {
        let h = parse(NGINX_HEAD, false).unwrap();
        assert_eq!(h.method, "GET");
        assert!(h.target.starts_with("/_matrix/client/v3/sync?"));
        assert_eq!(h.version, 1);
        assert_eq!(h.headers.len(), 8);
        assert_eq!(h.headers[1], ("X-Forwarded-For", &b"203.0.113.7"[..]));
        // Debug never shows header values.
        assert!(!format!("{h:?}").contains("syt_"));
    }

    #[test]
    fn every_failure_has_an_outcome() {
        let cut_short = &NGINX_HEAD[..100];
        assert_eq!(parse(cut_short, false), Err(HeadError::Incomplete));
        assert_eq!(parse(cut_short, true), Err(HeadError::Cut));
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\n\r\n", false),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", false),
            Err(HeadError::Malformed)
        );
        assert_eq!(parse(b"", false), Err(HeadError::Incomplete));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many, false), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A small deterministic fuzz: every prefix and every single-byte corruption.
        for end in 0..NGINX_HEAD.len() {
            let _ = parse(&NGINX_HEAD[..end], false);
        }
        let mut buf = NGINX_HEAD.to_vec();
        for i in 0..buf.len() {
            for b in [0u8, b'\n', b'\r', b':', 0xff, b' '] {
                let old = buf[i];
                buf[i] = b;
                let _ = parse(&buf, false);
                buf[i] = old;
            }
        }
    }
}
